//! `rcache hook install|uninstall` on real git repositories: after every
//! checkout, merge, rebase, amend and `git worktree add` each pyc is what
//! CPython takes as its own, switching back compiles nothing, a hook that
//! was there runs first and comes back on uninstall, `core.hooksPath` is
//! honoured, and rcache's failures never fail git.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::materialize::{differing_from_pristine, loader_problems};
use crate::support::{Python, TestEnv, code, covered, py_files, rcache_command, stderr};

/// A repository in a test env, and git run as the hooks will see it:
/// isolated from the user's git config, with the store and Python in the
/// environment (git passes it on to the hooks).
struct Repo<'a> {
    env: &'a TestEnv,
    python: &'a Python,
    dir: PathBuf,
}

impl<'a> Repo<'a> {
    fn new(env: &'a TestEnv, python: &'a Python) -> Self {
        let dir = env.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        let repo = Self { env, python, dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.write(".gitignore", "__pycache__/\n");
        repo
    }

    fn environment(&self, command: &mut Command) {
        crate::support::isolated_git(command, self.env.path(), &self.env.store, self.python);
    }

    /// `git ARGS` in `dir`; returns its output, whatever its status.
    fn git_in(&self, dir: &Path, args: &[&str]) -> Output {
        let mut command = Command::new("git");
        self.environment(&mut command);
        command.args(args).current_dir(dir).output().unwrap()
    }

    /// `git ARGS` in the repository, which must succeed; returns its stderr
    /// (where the hooks print).
    fn git(&self, args: &[&str]) -> String {
        let output = self.git_in(&self.dir, args);
        assert_eq!(code(&output), 0, "git {args:?}: {}", stderr(&output));
        stderr(&output)
    }

    /// `rcache --json ARGS` run in `dir`.
    fn rcache_json(&self, dir: &Path, args: &[&str]) -> Value {
        let mut command = rcache_command(dir);
        self.environment(&mut command);
        command.arg("--json").args(args);
        let (value, output) = crate::support::run_json(&mut command);
        assert_eq!(code(&output), 0, "rcache {args:?}: {}", stderr(&output));
        value
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }

    fn commit(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-qm", message]);
    }

    fn hooks(&self) -> PathBuf {
        self.dir.join(".git/hooks")
    }

    /// Every `.py` under `dir` has a pyc CPython's loader takes without
    /// recompiling, equal to its compile (on 3.11+ byte-identical to what
    /// CPython writes).
    fn assert_pycs_valid(&self, dir: &Path, after: &str) {
        let sources = py_files(dir);
        let sources: Vec<&PathBuf> = sources.iter().collect();
        let problems = loader_problems(self.python, &sources);
        assert!(problems.is_empty(), "after {after}: {problems}");
        if self.python.version >= (3, 11) {
            let differing = differing_from_pristine(self.python, &sources);
            assert!(differing.is_empty(), "after {after}: {differing:?}");
        }
    }

    fn entries(&self) -> i64 {
        self.env.count("entries")
    }
}

/// The materialize summary a hook printed: `(files, compiled)`.
fn hook_summary(stderr: &str) -> Option<(u64, u64)> {
    let line = stderr
        .lines()
        .find(|line| line.starts_with("Materialized "))?;
    let number = |before: &str| -> u64 {
        let head = line.split(before).next().unwrap();
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    Some((number(" file"), number(" compiled")))
}

/// The `action` of each hook in an install or uninstall report.
fn actions(report: &Value) -> Vec<&str> {
    report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hook| hook["action"].as_str().unwrap())
        .collect()
}

/// main, and three branches made from its first commit: `feature` changes
/// `core.py` and `other.py`, adds `new.py`, deletes `old.py` and the
/// package `gone`; `topic` adds `topic.py`; main changes `other.py`.
fn make_branches(repo: &Repo) {
    repo.write("app/__init__.py", "");
    repo.write("app/core.py", "VALUE = 1\n");
    repo.write("app/old.py", "OLD = True\n");
    repo.write("app/other.py", "OTHER = 1\n");
    repo.write("gone/__init__.py", "GONE = True\n");
    repo.commit("one");
    repo.git(&["checkout", "-qb", "feature"]);
    repo.write("app/core.py", "VALUE = 2\n");
    repo.write("app/new.py", "NEW = True\n");
    std::fs::remove_file(repo.dir.join("app/old.py")).unwrap();
    std::fs::remove_dir_all(repo.dir.join("gone")).unwrap();
    repo.commit("two");
    repo.git(&["checkout", "-q", "main", "-b", "topic"]);
    repo.write("app/topic.py", "TOPIC = 1\n");
    repo.commit("topic");
    repo.git(&["checkout", "-q", "main"]);
    repo.write("app/other.py", "OTHER = 2\n");
    repo.commit("three");
}

/// A repo whose branches differ in some files (changed, added, deleted, a
/// whole package gone), switched between with rcache's hooks installed and
/// a hook of the user's already there.
#[test]
fn every_switch_leaves_valid_pycs_and_switching_back_compiles_nothing() {
    let python = crate::support::any_python();
    switch_around(&python);
    covered(
        "every_switch_leaves_valid_pycs_and_switching_back_compiles_nothing",
        &[python],
    );
}

fn switch_around(python: &Python) {
    let env = TestEnv::new();
    let repo = Repo::new(&env, python);
    make_branches(&repo);

    let log = env.path().join("user-hook.log");
    let user_hook = format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.to_str().unwrap());
    std::fs::write(repo.hooks().join("post-checkout"), &user_hook).unwrap();
    make_executable(&repo.hooks().join("post-checkout"));

    let installed = repo.rcache_json(&repo.dir, &["hook", "install"]);
    assert_eq!(actions(&installed), ["installed"; 3], "{installed}");
    assert_eq!(
        installed["hooks"][0]["chained"],
        repo.hooks()
            .join("post-checkout.rcache-chained")
            .to_str()
            .unwrap()
    );
    let again = repo.rcache_json(&repo.dir, &["hook", "install"]);
    assert_eq!(
        actions(&again),
        ["unchanged"; 3],
        "installing twice changes nothing: {again}"
    );

    repo.rcache_json(&repo.dir, &["materialize"]);
    repo.assert_pycs_valid(&repo.dir, "materialize");

    let to_feature = repo.git(&["checkout", "-q", "feature"]);
    assert_eq!(
        hook_summary(&to_feature),
        Some((3, 3)),
        "only core.py, new.py and other.py (v1): {to_feature}"
    );
    repo.assert_pycs_valid(&repo.dir, "checkout feature");
    assert!(
        !repo.dir.join("gone").exists(),
        "the deleted package's dir went with its __pycache__"
    );
    let old_pyc = crate::materialize::cache_path(python, &repo.dir.join("app/old.py"));
    assert!(!old_pyc.exists(), "the deleted source's pyc is removed");

    let entries = repo.entries();
    let back = repo.git(&["checkout", "-q", "main"]);
    assert_eq!(hook_summary(&back).map(|s| s.1), Some(0), "{back}");
    repo.assert_pycs_valid(&repo.dir, "checkout main");
    let forth = repo.git(&["checkout", "-q", "feature"]);
    assert_eq!(hook_summary(&forth).map(|s| s.1), Some(0), "{forth}");
    repo.assert_pycs_valid(&repo.dir, "checkout feature again");
    assert_eq!(repo.entries(), entries, "switching back compiles nothing");

    repo.git(&["checkout", "-q", "main"]);
    let merged = repo.git(&["merge", "-q", "--no-edit", "feature"]);
    assert_eq!(
        hook_summary(&merged),
        Some((2, 0)),
        "post-merge: core.py and new.py: {merged}"
    );
    repo.assert_pycs_valid(&repo.dir, "merge");

    repo.git(&["checkout", "-q", "topic"]);
    repo.git(&["rebase", "-q", "main"]);
    repo.assert_pycs_valid(&repo.dir, "rebase");
    repo.write("app/topic.py", "TOPIC = 22\n");
    let amended = repo.git(&["commit", "-qa", "--amend", "--no-edit"]);
    assert_eq!(hook_summary(&amended), Some((1, 1)), "{amended}");
    repo.assert_pycs_valid(&repo.dir, "commit --amend");
    assert_eq!(repo.entries(), entries + 2, "topic.py twice");

    let worktree = env.path().join("worktree");
    let entries = repo.entries();
    let added = repo.git(&[
        "worktree",
        "add",
        "-q",
        worktree.to_str().unwrap(),
        "feature",
    ]);
    let (files, compiled) = hook_summary(&added).expect("post-checkout ran in the worktree");
    assert_eq!((files, compiled), (4, 0), "{added}");
    repo.assert_pycs_valid(&worktree, "worktree add");
    let in_worktree = repo.git_in(&worktree, &["checkout", "-q", "--detach", "main"]);
    assert_eq!(code(&in_worktree), 0, "{}", stderr(&in_worktree));
    repo.assert_pycs_valid(&worktree, "checkout in the worktree");
    assert_eq!(repo.entries(), entries, "every content was known");

    let ran = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        ran.lines().count(),
        8,
        "the user's hook ran at every checkout (rebase and worktree included):\n{ran}"
    );

    assert_uninstall_restores(&repo, &user_hook);
}

/// `rcache hook uninstall` leaves the hooks dir as it was before install:
/// the user's `post-checkout`, byte for byte, and nothing of rcache's.
fn assert_uninstall_restores(repo: &Repo, user_hook: &str) {
    let removed = repo.rcache_json(&repo.dir, &["hook", "uninstall"]);
    assert_eq!(
        actions(&removed),
        ["restored", "removed", "removed"],
        "{removed}"
    );
    let mut left: Vec<String> = std::fs::read_dir(repo.hooks())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with(".sample"))
        .collect();
    left.sort();
    assert_eq!(left, ["post-checkout"]);
    assert_eq!(
        std::fs::read_to_string(repo.hooks().join("post-checkout")).unwrap(),
        user_hook,
        "restored exactly"
    );
}

/// A relative `core.hooksPath` is taken from the top level, as git does,
/// even when installing from a subdirectory; `[tool.rcache]` excludes are
/// honoured; the user's hook's exit status
/// is git's, with rcache or without; and rcache failing (no such Python,
/// a bad pyproject.toml) is reported once, never a failed git command.
#[test]
fn hooks_path_exit_status_and_failures() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let repo = Repo::new(&env, &python);
    repo.write("a.py", "A = 1\n");
    repo.write("sub/b.py", "B = 1\n");
    repo.write("pyproject.toml", "[tool.rcache]\nexclude = [\"vendor\"]\n");
    repo.commit("one");
    repo.git(&["checkout", "-qb", "other"]);
    repo.write("a.py", "A = 2\n");
    repo.write("vendor/v.py", "V = 2\n");
    repo.commit("two");
    repo.git(&["config", "core.hooksPath", "githooks"]);
    let hooks = repo.dir.join("githooks");
    std::fs::create_dir(&hooks).unwrap();
    std::fs::write(hooks.join("post-checkout"), "#!/bin/sh\nexit 3\n").unwrap();
    make_executable(&hooks.join("post-checkout"));
    let plain_status = code(&repo.git_in(&repo.dir, &["checkout", "-q", "main"]));
    assert_ne!(plain_status, 0, "git reports the failed post-checkout");

    let installed = repo.rcache_json(&repo.dir.join("sub"), &["hook", "install"]);
    assert_eq!(
        installed["hooks_dir"],
        hooks.to_str().unwrap(),
        "{installed}"
    );
    assert!(hooks.join("post-merge").is_file() && !repo.hooks().join("post-merge").exists());
    repo.rcache_json(&repo.dir, &["materialize"]);

    let switched = repo.git_in(&repo.dir, &["checkout", "-q", "other"]);
    assert_eq!(code(&switched), plain_status, "{}", stderr(&switched));
    assert_eq!(
        hook_summary(&stderr(&switched)),
        Some((1, 1)),
        "a.py; vendor/v.py is excluded by pyproject.toml"
    );
    assert!(!repo.dir.join("vendor/__pycache__").exists());
    std::fs::remove_dir_all(repo.dir.join("vendor")).unwrap();
    repo.assert_pycs_valid(&repo.dir, "checkout with core.hooksPath");

    std::fs::write(hooks.join("post-checkout.rcache-chained"), "#!/bin/sh\n").unwrap();
    let mut broken = Command::new("git");
    repo.environment(&mut broken);
    let output = broken
        .env("RCACHE_PYTHON", env.path().join("no-such-python"))
        .args(["checkout", "-q", "main"])
        .current_dir(&repo.dir)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let warnings: Vec<&str> = std::str::from_utf8(&output.stderr)
        .unwrap()
        .lines()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with("rcache: warning: post-checkout hook:")
            && warnings[0].contains("no-such-python"),
        "{warnings:?}"
    );

    repo.write("pyproject.toml", "[tool.rcache]\nno-such-key = 1\n");
    let output = repo.git_in(&repo.dir, &["checkout", "-q", "other"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let said = stderr(&output);
    assert!(
        said.starts_with("rcache: error: in `") && said.contains("no-such-key"),
        "reported as any command reports it: {said}"
    );
    assert!(!said.contains("hook failed"), "and only once: {said}");
    covered("hooks_path_exit_status_and_failures", &[python]);
}

/// `examples/worktrees/run.sh`: two worktrees of one repository share one
/// store; the second is materialized with nothing compiled, and so is a
/// third, by the post-checkout hook.
#[test]
fn example_two_worktrees_share_one_store() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/worktrees/run.sh");
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_rcache")).parent().unwrap();
    let path = std::env::join_paths(std::iter::once(binary_dir.to_owned()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .unwrap();
    let mut command = Command::new("sh");
    let repo = Repo {
        env: &env,
        python: &python,
        dir: env.path().to_owned(),
    };
    repo.environment(&mut command);
    let output = command
        .arg(&example)
        .env("PATH", path)
        .env("WORK", env.path().join("work"))
        .current_dir(env.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(code(&output), 0, "{stdout}\n{}", stderr(&output));
    for line in [
        "worktree 1: 4 compiled, 4 pyc written",
        "worktree 2: 0 compiled, 4 pyc written",
        "worktree 3, by the post-checkout hook: Materialized 4 files in",
    ] {
        assert!(
            stdout.contains(line),
            "{line}?\n{stdout}\n{}",
            stderr(&output)
        );
    }
    assert!(
        stdout.contains(": 0 compiled, 4 from the store"),
        "{stdout}"
    );
    for worktree in ["worktree-2", "worktree-3"] {
        repo.assert_pycs_valid(&env.path().join("work").join(worktree), "the example");
    }
    covered("example_two_worktrees_share_one_store", &[python]);
}

#[cfg(unix)]
fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A repository that commits a directory symlink (`src/compat ->
/// ../vendor/compat`): git lists changes under the real path only, the
/// hook writes the pyc the full walk would (named for `vendor/compat`), and
/// a `materialize` after the checkout writes nothing.
#[test]
fn a_committed_directory_symlink_gets_the_walks_pycs_from_the_hook() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let repo = Repo::new(&env, &python);
    repo.write("vendor/compat/__init__.py", "");
    repo.write("vendor/compat/six.py", "SIX = 1\n");
    repo.write("src/app.py", "import compat\n");
    std::os::unix::fs::symlink("../vendor/compat", repo.dir.join("src/compat")).unwrap();
    repo.commit("one");
    repo.git(&["checkout", "-qb", "feature"]);
    repo.write("vendor/compat/six.py", "SIX = 2\n");
    repo.commit("two");
    repo.git(&["checkout", "-q", "main"]);
    repo.rcache_json(&repo.dir, &["hook", "install"]);
    let first = repo.rcache_json(&repo.dir, &["materialize"]);
    assert_eq!(first["files"], 3, "{first}");
    assert_eq!(first["aliases"], 2, "{first}");

    let switched = repo.git(&["checkout", "-q", "feature"]);
    assert_eq!(hook_summary(&switched), Some((1, 1)), "{switched}");
    repo.assert_pycs_valid(&repo.dir.join("vendor"), "checkout feature");
    let after = repo.rcache_json(&repo.dir, &["materialize"]);
    assert_eq!(
        after["written"], 0,
        "the hook wrote the walk's pyc: {after}"
    );
    covered(
        "a_committed_directory_symlink_gets_the_walks_pycs_from_the_hook",
        &[python],
    );
}
