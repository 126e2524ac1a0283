//! `rcache materialize`: pycs that CPython takes as its own.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::support::{Python, TestEnv, code, copy_stdlib, covered, py_files, pythons, stderr};

/// Writes the pyc a pristine interpreter's import system writes for
/// `argv[1]` (timestamp mode) to stdout. Uses only built-in modules, and no
/// one-character name (see DESIGN.md: interning).
const PRISTINE_PYC: &str = "import posix, sys
external = sys.modules['_frozen_importlib_external']
path = sys.argv[1]
with open(path, 'rb') as source_file:
    data = source_file.read()
stat = posix.stat(path)
code = external.SourceLoader.source_to_code(None, data, path)
sys.stdout.buffer.write(external._code_to_timestamp_pyc(code, int(stat.st_mtime), stat.st_size))
";

/// Reads source paths on stdin; loads each through the import system's own
/// `SourceFileLoader.get_code`, with recompiling forbidden, and checks the
/// code equals a fresh compile (`support::SAME_CODE`, prepended). Prints
/// what fails.
pub(crate) const ACCEPTED: &str = r"
import sys
from importlib import machinery
from importlib import _bootstrap_external as external
original = external.SourceLoader.source_to_code
def refuse(*args, **kwargs):
    raise AssertionError('recompiled')
for line in sys.stdin:
    path = line.rstrip('\n')
    loader = machinery.SourceFileLoader('module_under_test', path)
    external.SourceLoader.source_to_code = refuse
    try:
        loaded = loader.get_code('module_under_test')
    except AssertionError:
        print('not accepted:', path)
        continue
    finally:
        external.SourceLoader.source_to_code = original
    with open(path, 'rb') as handle:
        fresh = compile(handle.read(), path, 'exec', dont_inherit=True)
    if not same(loaded, fresh):
        print('differs:', path)
";

/// Every file of every installed standard library: materialized from a
/// store warmed by another copy, each pyc is accepted by CPython's loader
/// without recompiling and loads equal to CPython's compile; on 3.11+ it is
/// byte-identical to what a pristine interpreter writes. A second run writes
/// nothing.
#[test]
fn stdlib_pycs_are_cpythons_own() {
    for python in pythons() {
        let files = materialize_and_check(python, |dest| copy_stdlib(python, dest));
        eprintln!("{}: {files} stdlib files", python.label());
    }
    covered("stdlib_pycs_are_cpythons_own", pythons());
}

/// The same for real PyPI packages (Django, SymPy and their dependencies),
/// in versions that support each interpreter.
#[test]
fn pypi_package_pycs_are_cpythons_own() {
    for python in pythons() {
        let installed = crate::support::pypi_packages(python);
        let files =
            materialize_and_check(python, |dest| crate::support::copy_tree(&installed, dest));
        eprintln!("{}: {files} package files", python.label());
    }
    covered("pypi_package_pycs_are_cpythons_own", pythons());
}

/// Warms a store from one copy of a tree (`copy` makes one and returns its
/// `.py` count), materializes a second copy from it, and checks every pyc
/// as [`stdlib_pycs_are_cpythons_own`] says. Returns the file count.
fn materialize_and_check(python: &Python, copy: impl Fn(&Path) -> usize) -> usize {
    let env = TestEnv::new();
    copy(&env.path().join("first"));
    let (warm, _) = env.warm_json(python, &["first"]);
    let root = env.path().join("lib");
    let files = copy(&root);
    let mut command = env.rcache(python, &["--json", "materialize", "lib"]);
    let (summary, output) = crate::support::run_json(&mut command);
    assert!(
        code(&output) <= 1,
        "{}: {}",
        python.label(),
        stderr(&output)
    );
    assert_eq!(
        summary["compiled"],
        0,
        "{}: all in the store",
        python.label()
    );
    assert_eq!(summary["workers_started"], 0);
    let failed = summary["failed"].as_u64().unwrap();
    assert_eq!(failed, warm["failed"].as_u64().unwrap());
    assert_eq!(
        summary["written"].as_u64().unwrap() + failed,
        files as u64,
        "{summary}"
    );

    let sources = py_files(&root);
    let written: Vec<&PathBuf> = sources
        .iter()
        .filter(|path| cache_path(python, path).is_file())
        .collect();
    assert_eq!(written.len() as u64 + failed, files as u64);
    let problems = loader_problems(python, &written);
    assert!(problems.is_empty(), "{}: {}", python.label(), problems);
    if python.version >= (3, 11) {
        let differing = differing_from_pristine(python, &written);
        assert!(
            differing.is_empty(),
            "{}: {} pycs differ from CPython's, e.g. {:?}",
            python.label(),
            differing.len(),
            &differing[..differing.len().min(5)]
        );
    }
    let mut again = env.rcache(python, &["--json", "materialize", "lib"]);
    let (noop, _) = crate::support::run_json(&mut again);
    assert_eq!(noop["written"], 0, "{}: {noop}", python.label());
    assert_eq!(noop["up_to_date"].as_u64().unwrap() + failed, files as u64);
    files
}

pub(crate) fn cache_path(python: &Python, source: &Path) -> PathBuf {
    let tag = format!("cpython-3{}", python.version.1);
    rcache::pyc::cache_path(source, &tag, 0, None)
}

/// What [`ACCEPTED`] prints for `sources`: empty when CPython's loader takes
/// the pyc of each as it is and it loads equal to a fresh compile.
pub(crate) fn loader_problems(python: &Python, sources: &[&PathBuf]) -> String {
    let mut listing = String::new();
    for source in sources {
        let _ = writeln!(listing, "{}", source.display());
    }
    let script = format!("{}{ACCEPTED}", crate::support::SAME_CODE);
    crate::support::python_with_input(python, &[], &script, &listing)
}

pub(crate) fn differing_from_pristine(python: &Python, sources: &[&PathBuf]) -> Vec<PathBuf> {
    crate::support::parallel_filter_map(sources, |source| {
        let output = python
            .command()
            .args(["-S", "-s", "-c", PRISTINE_PYC])
            .arg(source)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let ours = std::fs::read(cache_path(python, source)).unwrap();
        (ours != output.stdout).then(|| (*source).clone())
    })
}

/// Checks the pycs of the sources read on stdin, at levels 0-2, under each
/// `(prefix, flags)` of `MODES` (prepended, with `support::SAME_CODE`): the
/// header has the flags of its mode and validates against the source as the
/// import system checks it, and the code equals a fresh compile at that
/// level. A source that does not compile at a level must have no pyc.
/// Prints what fails.
const MATRIX_CHECK: &str = r"
import _imp, marshal, os, sys, importlib.util
from importlib import _bootstrap_external as external
for line in sys.stdin:
    source = line.rstrip('\n')
    with open(source, 'rb') as handle:
        data = handle.read()
    stat = os.stat(source)
    for level in (0, 1, 2):
        try:
            fresh = compile(data, source, 'exec', dont_inherit=True, optimize=level)
        except Exception:
            fresh = None
        for prefix, flags in MODES:
            sys.pycache_prefix = prefix
            pyc = importlib.util.cache_from_source(source, optimization=level or '')
            if not os.path.exists(pyc):
                if fresh is not None:
                    print('missing:', pyc)
                continue
            with open(pyc, 'rb') as handle:
                written = handle.read()
            name = 'module_under_test'
            try:
                if int.from_bytes(written[4:8], 'little') != flags:
                    raise ImportError('flags')
                external._classify_pyc(written, name, {})
                if flags == 0:
                    external._validate_timestamp_pyc(written, int(stat.st_mtime), stat.st_size, name, {})
                else:
                    hash = _imp.source_hash(external._RAW_MAGIC_NUMBER, data)
                    external._validate_hash_pyc(written, hash, name, {})
            except ImportError as error:
                print('invalid:', pyc, error)
                continue
            if fresh is None or not same(marshal.loads(written[16:]), fresh):
                print('differs:', pyc)
";

/// The hash modes, a prefix and -O 1/2 on a small project with awkward
/// names (and, with `RCACHE_TEST_FULL_MATRIX=1`, on a copy of each standard
/// library): each pyc is where `cache_from_source` says, its header
/// validates as the import system checks it, and its code is CPython's.
/// The three modes share one compile per (file, level).
#[test]
fn modes_prefix_and_levels() {
    let full = std::env::var_os("RCACHE_TEST_FULL_MATRIX").is_some_and(|value| value == "1");
    for python in pythons() {
        let env = TestEnv::new();
        env.write("proj/pkg/__init__.py", "'''doc'''\nassert True\nX = 'é'\n");
        env.write(
            "proj/pkg/with space.py",
            "def f():\n    'doc'\n    return 1\n",
        );
        env.write("proj/pkg/ünï.py", "# -*- coding: latin-1 -*-\nY = 1\n");
        if full {
            copy_stdlib(python, &env.path().join("proj/stdlib"));
        }
        let sources = py_files(&env.path().join("proj"));
        let mut modes = String::from("MODES = [");
        for (mode, flags) in [("timestamp", 0), ("checked-hash", 3), ("unchecked-hash", 1)] {
            let prefix = env.path().join(format!("prefix-{mode}"));
            let levels = ["-O", "0", "-O", "1", "-O", "2"];
            let mut command = env.rcache(
                python,
                &[
                    &["--json"],
                    &levels[..],
                    &["materialize", "--mode", mode, "--prefix"],
                ]
                .concat(),
            );
            command.arg(&prefix).arg("proj");
            let (summary, output) = crate::support::run_json(&mut command);
            assert!(
                code(&output) <= 1,
                "{}: {}",
                python.label(),
                stderr(&output)
            );
            let failed = summary["failed"].as_u64().unwrap();
            assert_eq!(
                summary["written"].as_u64().unwrap() + failed,
                3 * sources.len() as u64,
                "{summary}"
            );
            if mode != "timestamp" {
                assert_eq!(summary["compiled"], 0, "modes share compiles: {summary}");
            }
            let _ = write!(modes, "({:?}, {flags}), ", prefix.display().to_string());
        }
        modes.push_str("]\n");
        let listing = sources.iter().fold(String::new(), |mut listing, source| {
            let _ = writeln!(listing, "{}", source.display());
            listing
        });
        let script = format!("{}{modes}{MATRIX_CHECK}", crate::support::SAME_CODE);
        let problems = crate::support::python_with_input(python, &[], &script, &listing);
        assert!(problems.is_empty(), "{}: {problems}", python.label());
        eprintln!(
            "{}: {} files x 3 levels x 3 modes checked",
            python.label(),
            sources.len()
        );
    }
    covered("modes_prefix_and_levels", pythons());
}

/// A stale pyc (same mtime and size, other content: what `git checkout`
/// can leave) is replaced; a pyc path that is a symlink is never written
/// through; a file that does not compile gets no pyc and exit 1.
#[test]
fn stale_pycs_symlinks_and_failures() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let source = env.write("proj/mod.py", "VALUE = 1\n");
    env.write("proj/bad.py", "def (:\n");
    let (first, output) = {
        let mut command = env.rcache(&python, &["--json", "materialize", "proj"]);
        crate::support::run_json(&mut command)
    };
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(first["written"], 1);
    assert!(
        stderr(&output).contains("bad.py:1:5: SyntaxError"),
        "{}",
        stderr(&output)
    );
    let pyc = cache_path(&python, &source);
    let good = std::fs::read(&pyc).unwrap();
    // Same length, same header, other code.
    let mut stale = good.clone();
    let last = stale.len() - 1;
    stale[last] ^= 0x01;
    std::fs::write(&pyc, &stale).unwrap();
    let mut command = env.rcache(&python, &["--json", "materialize", "proj/mod.py"]);
    let (again, _) = crate::support::run_json(&mut command);
    assert_eq!(again["written"], 1, "{again}");
    assert_eq!(std::fs::read(&pyc).unwrap(), good);

    std::fs::remove_file(&pyc).unwrap();
    let elsewhere = env.write("elsewhere.pyc", "not yours");
    std::os::unix::fs::symlink(&elsewhere, &pyc).unwrap();
    let mut command = env.rcache(&python, &["--json", "materialize", "proj/mod.py"]);
    let (linked, output) = crate::support::run_json(&mut command);
    assert_eq!(code(&output), 1);
    assert_eq!(linked["written"], 0);
    assert!(stderr(&output).contains("symlink"), "{}", stderr(&output));
    assert_eq!(std::fs::read(&elsewhere).unwrap(), b"not yours");
    covered("stale_pycs_symlinks_and_failures", &[python]);
}

/// Orphans: when a branch deletes `pkg/`, git leaves `pkg/__pycache__/`
/// behind and CPython would import `pkg` as an empty namespace package.
/// `materialize` removes this interpreter's pycs whose source is gone, and
/// the `__pycache__` left empty; other interpreters' pycs stay. Temp files
/// a killed run left behind go once they are a minute old.
#[test]
fn orphans_are_removed() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    env.write("proj/.gitignore", "__pycache__/\n");
    env.write("proj/keep.py", "A = 1\n");
    let gone = env.write("proj/pkg/__init__.py", "B = 2\n");
    let other = env.write(
        "proj/keep/__pycache__/x.cpython-27.pyc",
        "another interpreter's",
    );
    let mut command = env.rcache(&python, &["--json", "materialize", "proj"]);
    assert_eq!(crate::support::run_json(&mut command).0["written"], 2);
    let orphan = cache_path(&python, &gone);
    assert!(orphan.is_file());
    std::fs::remove_file(&gone).unwrap();
    // What a run killed mid-write leaves, and what a running one has open.
    let dead = env.write("proj/__pycache__/.rcache-dead.tmp", "half a pyc");
    let two_minutes_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(120);
    std::fs::File::options()
        .write(true)
        .open(&dead)
        .unwrap()
        .set_modified(two_minutes_ago)
        .unwrap();
    let live = env.write("proj/__pycache__/.rcache-live.tmp", "being written");
    let mut command = env.rcache(&python, &["--json", "materialize", "proj"]);
    let (summary, output) = crate::support::run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        summary["removed"], 2,
        "the orphan and the dead temp file: {summary}"
    );
    assert!(!orphan.exists());
    assert!(!dead.exists());
    assert!(live.exists());
    assert!(
        !env.path().join("proj/pkg/__pycache__").exists(),
        "left empty, removed"
    );
    assert!(other.is_file());
    let output = python
        .command()
        .current_dir(env.path().join("proj"))
        .args(["-c", "import pkg"])
        .output()
        .unwrap();
    assert!(
        !output.status.success(),
        "pkg is gone, not a namespace package"
    );
    covered("orphans_are_removed", &[python]);
}

/// Under a `PYTHONPYCACHEPREFIX`, orphans are removed from the mirror of
/// the tree, including a deleted package's whole directory (never walked,
/// since the package is gone); pycs of sources that still exist but were
/// not walked, other interpreters' pycs and other files stay.
#[test]
fn orphans_in_a_prefix_tree_are_removed() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    env.write("proj/keep.py", "A = 1\n");
    let gone = env.write("proj/pkg/sub/__init__.py", "B = 2\n");
    let excluded = env.write("proj/excluded/mod.py", "C = 3\n");
    let prefix = env.path().join("prefix");
    let materialize = |extra: &[&str]| {
        let mut command = env.rcache(
            &python,
            &[&["--json", "materialize", "proj"], extra].concat(),
        );
        command.env("PYTHONPYCACHEPREFIX", &prefix);
        let (summary, output) = crate::support::run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        summary
    };
    assert_eq!(materialize(&[])["written"], 3);
    let tag = python_output(
        &python,
        env.path(),
        "import sys; print(sys.implementation.cache_tag)",
    );
    let in_prefix = |source: &Path| {
        let dir = source.parent().unwrap().strip_prefix("/").unwrap();
        let stem = source.file_stem().unwrap().to_str().unwrap();
        prefix.join(dir).join(format!("{stem}.{}.pyc", tag.trim()))
    };
    let other = env
        .path()
        .join("prefix")
        .join(env.path().strip_prefix("/").unwrap())
        .join("proj/x.cpython-27.pyc");
    std::fs::write(&other, "another interpreter's").unwrap();
    assert!(in_prefix(&gone).is_file());
    std::fs::remove_dir_all(env.path().join("proj/pkg")).unwrap();

    let summary = materialize(&["--exclude", "proj/excluded"]);
    assert_eq!(summary["removed"], 1, "{summary}");
    assert_eq!(summary["up_to_date"], 1, "{summary}");
    assert!(!in_prefix(&gone).exists());
    assert!(
        !in_prefix(&gone)
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .exists(),
        "the deleted package's mirror is removed whole"
    );
    assert!(in_prefix(&excluded).is_file(), "its source exists");
    assert!(other.is_file());
    covered("orphans_in_a_prefix_tree_are_removed", &[python]);
}

/// `clean` removes this interpreter's pycs at every level, beside the
/// sources or under a prefix, and nothing else.
#[test]
fn clean_removes_this_interpreters_pycs() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let source = env.write("proj/mod.py", "A = 1\n");
    let other = env.write(
        "proj/__pycache__/mod.cpython-27.pyc",
        "another interpreter's",
    );
    let levels = ["-O", "0", "-O", "1", "-O", "2"];
    let mut command = env.rcache(&python, &[&levels[..], &["materialize", "proj"]].concat());
    assert_eq!(code(&command.output().unwrap()), 0);
    let prefix = env.path().join("prefix");
    let mut command = env.rcache(
        &python,
        &[&levels[..], &["materialize", "proj", "--prefix"]].concat(),
    );
    command.arg(&prefix);
    assert_eq!(code(&command.output().unwrap()), 0);

    let mut command = env.rcache(&python, &["--json", "clean", "proj"]);
    let (summary, output) = crate::support::run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["removed"], 3, "{summary}");
    assert!(!cache_path(&python, &source).exists());
    assert!(other.is_file(), "another interpreter's pyc stays");

    let mut command = env.rcache(&python, &["--json", "clean", "proj", "--prefix"]);
    command.arg(&prefix);
    let (summary, _) = crate::support::run_json(&mut command);
    assert_eq!(summary["removed"], 3, "{summary}");
    assert!(py_files(&prefix).is_empty());
    covered("clean_removes_this_interpreters_pycs", &[python]);
}

/// Switching a git repo between branches and worktrees and materializing
/// after each: only new content is compiled, every pyc is valid for the
/// files on disk, no orphans remain, and switching back compiles nothing.
#[test]
fn git_branches_and_worktrees() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let repo = env.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str], dir: &Path| {
        let output = std::process::Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {}", stderr(&output));
    };
    git(&["init", "-q"], &repo);
    env.write("repo/.gitignore", "__pycache__/\n");
    env.write("repo/app/__init__.py", "");
    env.write("repo/app/core.py", "VALUE = 1\n");
    env.write("repo/app/old.py", "OLD = True\n");
    git(&["add", "."], &repo);
    git(&["commit", "-qm", "one"], &repo);
    git(&["checkout", "-qb", "feature"], &repo);
    env.write("repo/app/core.py", "VALUE = 2\n");
    std::fs::remove_file(repo.join("app/old.py")).unwrap();
    env.write("repo/app/new.py", "NEW = True\n");
    git(&["add", "-A"], &repo);
    git(&["commit", "-qm", "two"], &repo);

    let materialize = |dir: &Path| {
        let mut command = env.rcache(&python, &["--json", "materialize"]);
        command.arg(dir);
        let (summary, output) = crate::support::run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let problems = loader_problems(&python, &py_files(dir).iter().collect::<Vec<_>>());
        assert!(problems.is_empty(), "{problems}");
        summary
    };
    let first = materialize(&repo);
    assert_eq!(first["compiled"], 3, "{first}");
    git(&["checkout", "-q", "main"], &repo);
    let back = materialize(&repo);
    assert_eq!(
        back["compiled"], 2,
        "core.py v1 and old.py are new content: {back}"
    );
    assert_eq!(
        back["removed"], 1,
        "new.py's pyc is an orphan on main: {back}"
    );
    git(&["checkout", "-q", "feature"], &repo);
    let again = materialize(&repo);
    assert_eq!(
        again["compiled"], 0,
        "switching back compiles nothing: {again}"
    );
    assert_eq!(again["removed"], 1, "old.py's pyc: {again}");
    let worktree = env.path().join("worktree");
    git(
        &["worktree", "add", "-q", worktree.to_str().unwrap(), "main"],
        &repo,
    );
    let tree = materialize(&worktree);
    assert_eq!(tree["compiled"], 0, "a worktree of known content: {tree}");
    assert_eq!(tree["written"], 3);
    covered("git_branches_and_worktrees", &[python]);
}

/// A flipped byte in a stored blob is caught by its checksum: never
/// written into a pyc, reported, compiled again and replaced.
#[test]
fn a_corrupt_blob_is_recompiled_not_written() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let source = env.write("proj/mod.py", "VALUE = [1, 2, 3]\n");
    let mut command = env.rcache(&python, &["--json", "materialize", "proj"]);
    assert_eq!(crate::support::run_json(&mut command).0["written"], 1);
    let pyc = cache_path(&python, &source);
    let good = std::fs::read(&pyc).unwrap();
    std::fs::remove_file(&pyc).unwrap();
    let conn = rusqlite::Connection::open(&env.store).unwrap();
    let data: Vec<u8> = conn
        .query_row("SELECT data FROM entries", [], |row| row.get(0))
        .unwrap();
    let mut flipped = data.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    conn.execute("UPDATE entries SET data = ?1", [flipped])
        .unwrap();
    drop(conn);

    let mut command = env.rcache(&python, &["--json", "materialize", "proj"]);
    let (summary, output) = crate::support::run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("compiling it again"),
        "{}",
        stderr(&output)
    );
    assert_eq!(summary["compiled"], 1, "{summary}");
    assert_eq!(summary["written"], 1);
    assert_eq!(std::fs::read(&pyc).unwrap(), good);
    assert_eq!(env.blobs().len(), 1, "the bad blob was replaced");
    covered("a_corrupt_blob_is_recompiled_not_written", &[python]);
}

/// A `__pycache__` that is a file, and one the user cannot write (run as
/// `nobody`: root writes anywhere), are reported with the path; every other
/// pyc is written and the run exits 1.
#[test]
fn unwritable_pycache_is_reported_and_the_rest_done() {
    use std::os::unix::fs::PermissionsExt;
    let Some(python) = crate::support::system_python() else {
        eprintln!("skipped: no /usr/bin/python3.X usable by nobody");
        return;
    };
    let env = TestEnv::new();
    env.share_with_nobody();
    let ok = env.write("proj/ok/mod.py", "A = 1\n");
    env.write("proj/file/mod.py", "B = 2\n");
    env.write("proj/file/__pycache__", "a file, not a directory");
    env.write("proj/locked/mod.py", "C = 3\n");
    let locked = env.path().join("proj/locked/__pycache__");
    std::fs::create_dir_all(&locked).unwrap();
    for dir in ["proj", "proj/ok", "proj/file", "proj/locked"] {
        let dir = env.path().join(dir);
        std::os::unix::fs::chown(
            &dir,
            Some(crate::support::NOBODY),
            Some(crate::support::NOBODY),
        )
        .unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let command = env.rcache(&python, &["--json", "materialize", "proj"]);
    let mut command = crate::support::unprivileged(&command);
    let (summary, output) = crate::support::run_json(&mut command);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(summary["written"], 1, "{summary}");
    let text = stderr(&output);
    assert!(text.contains("proj/file/mod.py"), "{text}");
    assert!(
        text.contains("proj/locked/mod.py: PermissionError"),
        "{text}"
    );
    assert!(cache_path(&python, &ok).is_file());
    covered(
        "unwritable_pycache_is_reported_and_the_rest_done",
        &[python],
    );
}

/// A source whose identity is unchanged since rcache read it is keyed from
/// the store's record without being read; an edit that keeps size and mtime
/// (a same-second `git checkout`) still changes ctime and is seen; and a hash-mode
/// header for a recalled source hashes the bytes read then.
#[test]
fn unchanged_sources_are_not_read_and_edits_are_seen() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let edited = env.write("proj/edited.py", "X = 1\n");
    env.write("proj/kept.py", "Y = 1\n");
    // Files changed less than 100 ms before they are read (src/source.rs,
    // RACY_MARGIN) are never recalled.
    std::thread::sleep(std::time::Duration::from_millis(150));
    let materialize = |args: &[&str]| {
        let mut command = env.rcache(
            &python,
            &[&["--json", "materialize"], args, &["proj"]].concat(),
        );
        command.env("RCACHE_LOG", "debug");
        let (summary, output) = crate::support::run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        (summary, stderr(&output))
    };
    let (first, log) = materialize(&[]);
    assert_eq!(first["written"], 2, "{first}");
    assert!(log.contains("keyed 2 sources: 2 read"), "{log}");
    let (_, log) = materialize(&[]);
    assert!(log.contains("keyed 2 sources: 0 read"), "{log}");

    rewrite_keeping_mtime(&edited, "X = 2\n");
    let (after_edit, log) = materialize(&[]);
    assert!(log.contains("keyed 2 sources: 1 read"), "{log}");
    assert_eq!(after_edit["compiled"], 1, "{after_edit}");
    assert_eq!(after_edit["written"], 1, "{after_edit}");
    let imported = python_output(
        &python,
        &env.path().join("proj"),
        "import edited; print(edited.X)",
    );
    assert_eq!(imported, "2\n");
    // Read again once the edit is past the margin, then remembered.
    std::thread::sleep(std::time::Duration::from_millis(150));
    materialize(&[]);
    let (_, log) = materialize(&[]);
    assert!(log.contains("keyed 2 sources: 0 read"), "{log}");

    let (hashed, _) = materialize(&["--mode", "checked-hash"]);
    assert_eq!(hashed["written"], 2, "{hashed}");
    let kept = env.path().join("proj/kept.py");
    let problems = loader_problems(&python, &[&kept, &edited]);
    assert!(problems.is_empty(), "{problems}");
    covered(
        "unchanged_sources_are_not_read_and_edits_are_seen",
        &[python],
    );
}

/// Rewrites `path` with `contents` and sets its mtime back: with the same
/// size, only ctime tells the file changed (a same-second `git checkout`).
fn rewrite_keeping_mtime(path: &Path, contents: &str) {
    let mtime = std::fs::metadata(path).unwrap().modified().unwrap();
    std::fs::write(path, contents).unwrap();
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// What `python -c script` prints, run in `dir` with the bytecode it finds
/// there (and writing none).
fn python_output(python: &Python, dir: &Path, script: &str) -> String {
    let output = python
        .command()
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", script])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout).unwrap()
}

/// A source edited (keeping size and mtime, as a same-second checkout can)
/// or removed while rcache compiles something else gets no pyc: the code
/// and header describe the old bytes. Both are reported, the rest is
/// written, the run exits 1, and the next run writes the new code.
#[test]
fn sources_edited_or_removed_during_the_run_get_no_pyc() {
    use std::fmt::Write as _;
    let python = crate::support::any_python();
    let env = TestEnv::new();
    env.write("other/warm.py", "W = 1\n");
    let mut command = env.rcache(&python, &["warm", "other"]);
    assert_eq!(code(&command.output().unwrap()), 0, "profile now cached");
    // About two seconds of compiling: the window for the edits.
    let slow = (0..60_000).fold(String::from("# slow\n"), |mut text, line| {
        let _ = writeln!(text, "x{line} = {line}");
        text
    });
    env.write("proj/slow.py", slow);
    let edited = env.write("proj/edited.py", "X = 1\n");
    let removed = env.write("proj/removed.py", "Z = 1\n");
    let mut child = env
        .rcache(&python, &["--json", "-vv", "materialize", "proj"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The edits land once every source is read and looked up (the debug
    // log says so), while slow.py compiles: no guess at timing.
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    while !text.contains("to compile") {
        let read = std::io::BufRead::read_line(&mut log, &mut text).unwrap();
        assert_ne!(read, 0, "the run ended before compiling: {text}");
    }
    rewrite_keeping_mtime(&edited, "X = 2\n");
    std::fs::remove_file(&removed).unwrap();
    std::io::Read::read_to_string(&mut log, &mut text).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 1, "{text}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["written"], 1, "only slow.py: {summary}");
    for source in [&edited, &removed] {
        assert!(
            text.contains(&format!(
                "{}: OSError: the file changed or vanished during the run",
                source.display()
            )),
            "{text}"
        );
        assert!(!cache_path(&python, source).exists());
    }
    let mut again = env.rcache(&python, &["--json", "materialize", "proj"]);
    let (summary, output) = crate::support::run_json(&mut again);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["written"], 1, "{summary}");
    let imported = python_output(
        &python,
        &env.path().join("proj"),
        "import edited; print(edited.X)",
    );
    assert_eq!(imported, "2\n");
    covered(
        "sources_edited_or_removed_during_the_run_get_no_pyc",
        &[python],
    );
}

/// `--dry-run` says which pycs it would write (new or changed sources) and
/// remove (orphans), and changes nothing in the tree.
#[test]
fn dry_run_says_what_it_would_do_and_does_nothing() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let gone = env.write("proj/gone.py", "A = 1\n");
    let edited = env.write("proj/edited.py", "B = 1\n");
    env.write("proj/kept.py", "C = 1\n");
    let mut command = env.rcache(&python, &["materialize", "proj"]);
    assert_eq!(code(&command.output().unwrap()), 0);
    std::fs::remove_file(&gone).unwrap();
    std::fs::write(&edited, "B = 22\n").unwrap();
    let added = env.write("proj/added.py", "D = 1\n");
    let before = crate::support::snapshot(&env.path().join("proj"));

    let output = env
        .rcache(&python, &["materialize", "--dry-run", "proj"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let mut said: Vec<&str> = stdout.lines().collect();
    said.sort_unstable();
    let mut expected = vec![
        format!("would remove {}", cache_path(&python, &gone).display()),
        format!("would write {}", cache_path(&python, &added).display()),
        format!("would write {}", cache_path(&python, &edited).display()),
    ];
    expected.sort_unstable();
    assert_eq!(said, expected);
    assert_eq!(crate::support::snapshot(&env.path().join("proj")), before);

    let mut command = env.rcache(&python, &["--json", "materialize", "--dry-run", "proj"]);
    let (summary, _) = crate::support::run_json(&mut command);
    assert_eq!(summary["written"], 2, "{summary}");
    assert_eq!(summary["up_to_date"], 1, "{summary}");
    assert_eq!(summary["removed"], 1, "{summary}");
    assert_eq!(crate::support::snapshot(&env.path().join("proj")), before);
    covered("dry_run_says_what_it_would_do_and_does_nothing", &[python]);
}
