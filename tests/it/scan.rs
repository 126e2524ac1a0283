//! Which files `warm` finds: ignore rules, virtualenvs, excludes, hidden
//! and special directories, symlinks, odd names and unreadable entries.
//!
//! Most sources here do not compile, so that every file walked shows up in
//! `failures` under the path it was walked by.

use std::collections::BTreeSet;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::Output;

use serde_json::Value;

use crate::support::{
    Python, TestEnv, any_python, code, covered, pythons, pythons_from, run_json, stderr,
    system_python, unprivileged,
};

/// A source that never compiles.
const BROKEN: &str = "def broken(:\n";

/// What one `warm --json` saw.
struct Walk {
    /// Files walked (all [`BROKEN`]), relative to the test's directory.
    files: BTreeSet<String>,
    /// Every other failure: (relative path, type, message).
    errors: Vec<(String, String, String)>,
    summary: Value,
    output: Output,
}

/// Runs `warm --json ARGS` in `env`, where every source is [`BROKEN`].
fn walk(env: &TestEnv, python: &Python, args: &[&str]) -> Walk {
    let (summary, output) = env.warm_json(python, args);
    let root = format!("{}/", env.path().display());
    let mut files = BTreeSet::new();
    let mut errors = Vec::new();
    for failure in summary["failures"].as_array().unwrap() {
        let path = failure["path"].as_str().unwrap();
        let relative = path.strip_prefix(&root).unwrap_or(path).to_owned();
        let error_type = failure["type"].as_str().unwrap().to_owned();
        if error_type == "SyntaxError" {
            files.insert(relative);
        } else {
            let message = failure["message"].as_str().unwrap().to_owned();
            errors.push((relative, error_type, message));
        }
    }
    assert_eq!(
        summary["files"],
        files.len(),
        "every source seen is reported: {summary}"
    );
    Walk {
        files,
        errors,
        summary,
        output,
    }
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|path| (*path).to_owned()).collect()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `.gitignore` and `.ignore` rules apply to what is found by walking, with
/// no `.git` directory anywhere; a named ignored file is taken anyway;
/// `--no-ignore` walks everything.
#[test]
fn ignore_files_apply_to_walked_paths_only() {
    let python = any_python();
    let env = TestEnv::new();
    for file in [
        "proj/kept.py",
        "proj/ignored.py",
        "proj/build/gen.py",
        "proj/scratch_1.py",
        "proj/sub/deep.py",
        "proj/sub/ignored.py",
    ] {
        env.write(file, BROKEN);
    }
    env.write("proj/.gitignore", "ignored.py\nbuild/\n");
    env.write("proj/.ignore", "scratch_*.py\n");
    assert!(!env.path().join(".git").exists() && !env.path().join("proj/.git").exists());

    let walked = walk(&env, &python, &["proj"]);
    assert_eq!(walked.files, set(&["proj/kept.py", "proj/sub/deep.py"]));
    assert_eq!(code(&walked.output), 1);
    assert!(walked.errors.is_empty(), "{:?}", walked.errors);

    let named = walk(
        &env,
        &python,
        &["proj/ignored.py", "proj/build/gen.py", "proj/scratch_1.py"],
    );
    assert_eq!(
        named.files,
        set(&["proj/build/gen.py", "proj/ignored.py", "proj/scratch_1.py"]),
        "named paths are always taken"
    );

    let everything = walk(&env, &python, &["--no-ignore", "proj"]);
    assert_eq!(everything.files.len(), 6, "{:?}", everything.files);
    covered("ignore_files_apply_to_walked_paths_only", &[python]);
}

/// The `site-packages` directory of the virtualenv at `venv`.
fn site_packages(venv: &Path) -> std::path::PathBuf {
    let lib = venv.join("lib");
    let python_dir = std::fs::read_dir(&lib)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("python")
        })
        .unwrap_or_else(|| panic!("no lib/pythonX.Y in {}", venv.display()));
    python_dir.join("site-packages")
}

/// A virtualenv carries `*` in its own `.gitignore` (`python -m venv` on
/// 3.13, uv): walking its parent skips it, naming it walks it anyway.
#[test]
fn a_named_virtualenv_is_walked_despite_its_own_gitignore() {
    // 3.13 is the first `venv` to write the `.gitignore` itself.
    let python = pythons_from(13).first().cloned().unwrap_or_else(any_python);
    let env = TestEnv::new();
    env.write("proj/app.py", BROKEN);

    // A real one, made by the interpreter; `*` added as 3.13 and uv do.
    let venv = env.path().join("proj/.venv");
    make_venv(&python, &venv);
    if !venv.join(".gitignore").exists() {
        env.write("proj/.venv/.gitignore", "*\n");
    }
    let module = site_packages(&venv).join("pkg/mod.py");
    std::fs::create_dir_all(module.parent().unwrap()).unwrap();
    std::fs::write(&module, BROKEN).unwrap();

    // One as uv writes it.
    let (major, minor) = python.version;
    env.write(
        "proj/uv-env/pyvenv.cfg",
        format!(
            "home = {}\nimplementation = CPython\nuv = 0.5.0\nversion_info = {}\ninclude-system-site-packages = false\n",
            python.path.parent().unwrap().display(),
            python.full_version
        ),
    );
    env.write("proj/uv-env/.gitignore", "*\n");
    env.write(
        &format!("proj/uv-env/lib/python{major}.{minor}/site-packages/uvpkg/mod.py"),
        BROKEN,
    );

    let parent = walk(&env, &python, &["proj"]);
    assert_eq!(parent.files, set(&["proj/app.py"]), "{}", parent.summary);

    let relative_module = module
        .strip_prefix(env.path())
        .unwrap()
        .display()
        .to_string();
    let named = walk(&env, &python, &["proj/.venv"]);
    assert!(
        named.files.contains(&relative_module),
        "{relative_module} not in {:?}",
        named.files
    );
    assert!(
        named
            .files
            .iter()
            .all(|file| file.starts_with("proj/.venv/"))
    );
    let uv = walk(&env, &python, &["proj/uv-env"]);
    assert_eq!(
        uv.files,
        set(&[&format!(
            "proj/uv-env/lib/python{major}.{minor}/site-packages/uvpkg/mod.py"
        )])
    );
    for run in [&parent, &named, &uv] {
        assert!(
            !stderr(&run.output).contains("warning"),
            "made for this Python: {}",
            stderr(&run.output)
        );
    }
    covered(
        "a_named_virtualenv_is_walked_despite_its_own_gitignore",
        &[python],
    );
}

/// A directory inside a virtualenv named on the command line (its
/// `site-packages`, say) is walked: the virtualenv's own `*` `.gitignore`
/// does not hide what the user named.
#[test]
fn a_named_directory_inside_a_virtualenv_is_walked() {
    let python = any_python();
    let env = TestEnv::new();
    let venv = env.path().join(".venv");
    make_venv(&python, &venv);
    if !venv.join(".gitignore").exists() {
        env.write(".venv/.gitignore", "*\n");
    }
    let site = site_packages(&venv);
    std::fs::create_dir_all(site.join("pkg")).unwrap();
    std::fs::write(site.join("pkg/mod.py"), BROKEN).unwrap();
    let site = site.strip_prefix(env.path()).unwrap().display().to_string();
    let walked = walk(&env, &python, &[&site]);
    assert_eq!(walked.files, set(&[&format!("{site}/pkg/mod.py")]));
    covered("a_named_directory_inside_a_virtualenv_is_walked", &[python]);
}

/// `--exclude GLOB` (repeatable) leaves paths out; `__pycache__` and `.git`
/// are never walked, even with `--no-ignore`; other hidden directories are.
#[test]
fn excludes_pycache_hidden_and_git() {
    let python = any_python();
    let env = TestEnv::new();
    for file in [
        "proj/a.py",
        "proj/pkg/m.py",
        "proj/tests/test_a.py",
        "proj/gen/x_pb2.py",
        "proj/pkg/__pycache__/stale.py",
        "proj/.hidden/h.py",
        "proj/.git/hooks/hook.py",
    ] {
        env.write(file, BROKEN);
    }
    let all = set(&[
        "proj/.hidden/h.py",
        "proj/a.py",
        "proj/gen/x_pb2.py",
        "proj/pkg/m.py",
        "proj/tests/test_a.py",
    ]);
    assert_eq!(walk(&env, &python, &["proj"]).files, all);
    assert_eq!(walk(&env, &python, &["--no-ignore", "proj"]).files, all);
    let excluded = walk(
        &env,
        &python,
        &["--exclude", "tests/", "--exclude", "*_pb2.py", "proj"],
    );
    assert_eq!(
        excluded.files,
        set(&["proj/.hidden/h.py", "proj/a.py", "proj/pkg/m.py"])
    );
    covered("excludes_pycache_hidden_and_git", &[python]);
}

/// Symlinks to files and directories are followed and their files known by
/// the path as walked (a directory walked under two paths by the one
/// without a symlink); a loop is reported once (even when reached from two
/// named roots) and the rest of the tree is done.
#[test]
fn symlinks_are_followed_and_a_loop_is_reported_once() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("real/a.py", BROKEN);
    env.write("loop/sub/b.py", BROKEN);
    std::fs::create_dir_all(env.path().join("links")).unwrap();
    symlink("../real/a.py", env.path().join("links/to_file.py")).unwrap();
    symlink("../real", env.path().join("links/to_dir")).unwrap();
    symlink("..", env.path().join("loop/sub/back")).unwrap();

    let linked = walk(&env, &python, &["links"]);
    assert_eq!(
        linked.files,
        set(&["links/to_dir/a.py", "links/to_file.py"])
    );
    assert!(linked.errors.is_empty(), "{:?}", linked.errors);

    // `links/to_dir` is `real`, walked too: one path for its one pyc.
    let looped = walk(&env, &python, &["loop", "."]);
    assert_eq!(code(&looped.output), 1);
    assert_eq!(
        looped.files,
        set(&["links/to_file.py", "loop/sub/b.py", "real/a.py"])
    );
    assert_eq!(looped.summary["aliases"], 1, "{}", looped.summary);
    assert_eq!(looped.errors.len(), 1, "{:?}", looped.errors);
    let (path, error_type, message) = &looped.errors[0];
    assert_eq!(path, "loop/sub/back");
    assert_eq!(error_type, "OSError");
    assert!(message.contains("loop"), "{message}");
    assert_eq!(
        stderr(&looped.output).matches("loop/sub/back").count(),
        1,
        "{}",
        stderr(&looped.output)
    );
    covered(
        "symlinks_are_followed_and_a_loop_is_reported_once",
        &[python],
    );
}

/// A broken symlink named `x.py` and a named path that does not exist are
/// reported as `FileNotFoundError`, a directory named `x.py` is walked like
/// any directory, and everything else is done.
#[test]
fn dangling_links_missing_paths_and_odd_directories() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("ok.py", BROKEN);
    env.write("weird.py/inner.py", BROKEN);
    symlink("nowhere.py", env.path().join("dangling.py")).unwrap();

    let walked = walk(&env, &python, &[".", "missing.py", "gone/dir"]);
    assert_eq!(code(&walked.output), 1);
    assert_eq!(walked.files, set(&["ok.py", "weird.py/inner.py"]));
    let not_found = "[Errno 2] No such file or directory";
    assert_eq!(
        walked.errors,
        [
            ("dangling.py", "FileNotFoundError", not_found),
            ("gone/dir", "FileNotFoundError", not_found),
            ("missing.py", "FileNotFoundError", not_found),
        ]
        .map(|(path, error_type, message)| {
            (
                String::from(path),
                String::from(error_type),
                String::from(message),
            )
        })
    );
    let text = stderr(&walked.output);
    let missing_line = format!(
        "{}: FileNotFoundError: {not_found}",
        env.path().join("missing.py").display()
    );
    assert!(text.lines().any(|line| line == missing_line), "{text}");

    let named = walk(&env, &python, &["dangling.py", "weird.py"]);
    assert_eq!(named.files, set(&["weird.py/inner.py"]));
    assert_eq!(named.errors.len(), 1, "{:?}", named.errors);
    assert_eq!(named.errors[0].1, "FileNotFoundError");
    covered(
        "dangling_links_missing_paths_and_odd_directories",
        &[python],
    );
}

/// File and directory names that are not UTF-8 or hold spaces compile like
/// any other, walked or named.
#[test]
fn odd_file_names_work() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let python = any_python();
    let env = TestEnv::new();
    let latin1 = OsStr::from_bytes(b"caf\xe9.py");
    std::fs::create_dir_all(env.path().join("src/dir with space")).unwrap();
    std::fs::write(env.path().join("src").join(latin1), "A = 1\n").unwrap();
    std::fs::write(env.path().join("src/with space.py"), "B = 2\n").unwrap();
    std::fs::write(env.path().join("src/dir with space/m.py"), "C = 3\n").unwrap();
    std::fs::write(env.path().join("src/ünïcode.py"), "D = 4\n").unwrap();

    let (summary, output) = env.warm_json(&python, &["src"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["files"], 4, "{summary}");
    assert_eq!(summary["compiled"], 4);

    let mut command = env.rcache(&python, &["--json", "warm"]);
    command
        .arg(Path::new("src").join(latin1))
        .arg("src/with space.py");
    let (named, output) = run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(named["files"], 2, "{named}");
    assert_eq!(named["hits"], 2);
    covered("odd_file_names_work", &[python]);
}

/// An unreadable file and an unreadable directory (run as `nobody`, since
/// root reads everything) are each reported as `PermissionError` with
/// their path; everything else is compiled; exit 1.
#[test]
fn unreadable_files_and_directories_are_reported() {
    let python = system_python()
        .expect("a /usr/bin/python3.X that an unprivileged user can run (pyenv's are under /root)");
    let env = TestEnv::new();
    env.share_with_nobody();
    env.write("src/ok.py", "A = 1\n");
    env.write("src/pkg/fine.py", "B = 2\n");
    let secret = env.write("src/secret.py", "C = 3\n");
    env.write("src/locked/hidden.py", "D = 4\n");
    let locked = env.path().join("src/locked");
    chmod(&secret, 0o000);
    chmod(&locked, 0o000);

    let command = env.rcache(&python, &["--json", "warm", "src"]);
    let (summary, output) = run_json(&mut unprivileged(&command));
    chmod(&secret, 0o644);
    chmod(&locked, 0o755);

    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(summary["compiled"], 2, "{summary}");
    let denied = "[Errno 13] Permission denied";
    let failures: Vec<(&str, &str, &str)> = summary["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| {
            (
                failure["path"].as_str().unwrap(),
                failure["type"].as_str().unwrap(),
                failure["message"].as_str().unwrap(),
            )
        })
        .collect();
    let locked_path = locked.display().to_string();
    let secret_path = secret.display().to_string();
    assert_eq!(
        failures,
        [
            (locked_path.as_str(), "PermissionError", denied),
            (secret_path.as_str(), "PermissionError", denied),
        ],
        "{summary}"
    );
    let text = stderr(&output);
    assert!(
        text.contains(&format!("{secret_path}: PermissionError: {denied}")),
        "{text}"
    );
    covered("unreadable_files_and_directories_are_reported", &[python]);
}

/// A walked virtualenv made for another Python version than `--python`
/// draws a warning naming it and its version; one made for the same
/// version does not.
#[test]
fn a_virtualenv_for_another_python_is_warned_about() {
    let python = any_python();
    let other = pythons()
        .iter()
        .find(|candidate| candidate.version != python.version)
        .expect("two CPython minor versions installed")
        .clone();
    let env = TestEnv::new();
    env.write("proj/app.py", "A = 1\n");
    let venv = env.path().join("proj/oldenv");
    make_venv(&other, &venv);
    let module = site_packages(&venv).join("pkg/mod.py");
    std::fs::create_dir_all(module.parent().unwrap()).unwrap();
    std::fs::write(&module, "B = 2\n").unwrap();
    // As virtualenvs made before 3.13 are: no `*` to hide it from a walk.
    let _ = std::fs::remove_file(venv.join(".gitignore"));

    for args in [&["proj/oldenv"][..], &["proj"]] {
        let mut command = env.rcache(&python, &["warm"]);
        command.args(args);
        let output = command.output().unwrap();
        assert_eq!(code(&output), 0, "{args:?}: {}", stderr(&output));
        let text = stderr(&output);
        let warning = text
            .lines()
            .find(|line| line.contains("warning"))
            .unwrap_or_else(|| panic!("{args:?}: no warning in {text}"));
        assert!(
            warning.contains(&venv.display().to_string()),
            "{args:?}: names the virtualenv: {warning}"
        );
        assert!(
            warning.contains(&other.full_version),
            "{args:?}: names its version: {warning}"
        );
    }

    let own = env.path().join("proj/ownenv");
    make_venv(&python, &own);
    let output = env
        .rcache(&python, &["warm", "proj/ownenv"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    covered(
        "a_virtualenv_for_another_python_is_warned_about",
        &[python, other],
    );
}

/// A real virtualenv at `dir`, made by `python -m venv` (without pip).
fn make_venv(python: &Python, dir: &Path) {
    let made = python
        .command()
        .args(["-m", "venv", "--without-pip"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
}
