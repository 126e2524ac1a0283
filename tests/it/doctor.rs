//! `rcache doctor`: each verdict against what CPython really does with the
//! pyc (`python -v` says when a pyc "matches" its source and is used), the
//! store's hit rate, and that doctor writes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::{
    Python, TestEnv, code, covered, pythons, run_json, running_as_root, stderr, unprivileged,
};

/// Builds every case with the interpreter's own `py_compile` (run in the
/// tree): each module prints its name and `OLD`; the edits below make the
/// sources print `NEWER`.
const BUILD: &str = r"
import os, py_compile
from py_compile import PycInvalidationMode as Mode
def build(name, **options):
    py_compile.compile(name + '.py', doraise=True, **options)
for name in ['valid', 'stale', 'corrupt', 'broken', 'gone']:
    build(name)
build('opt_only', optimize=1)
build('checked', invalidation_mode=Mode.CHECKED_HASH)
build('unchecked', invalidation_mode=Mode.UNCHECKED_HASH)
build('legacy', cfile='legacy.pyc')
build('lonely', cfile='lonely.pyc')
os.remove('gone.py')
os.remove('lonely.py')
";

/// The modules, with the state doctor must give each at level 0.
const EXPECTED: [(&str, &str); 8] = [
    ("valid", "valid"),
    ("stale", "stale"),
    ("corrupt", "corrupt"),
    ("broken", "broken"),
    ("opt_only", "missing"),
    ("checked", "stale"),
    ("unchecked", "unchecked_stale"),
    ("legacy", "missing"),
];

fn module(name: &str, value: &str) -> String {
    format!("print({name:?}, {value:?})\n")
}

/// Runs `python [-O] -v -c 'import NAME'` in `dir` without writing bytecode.
fn import(python: &Python, dir: &Path, name: &str, optimize: bool) -> Output {
    let mut command = python.command();
    if optimize {
        command.arg("-O");
    }
    command
        .args(["-v", "-c", &format!("import {name}")])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Whether `python -v` said that it used a pyc for `name.py`.
fn used_a_pyc(output: &Output, name: &str) -> bool {
    stderr(output)
        .lines()
        .any(|line| line.contains(" matches ") && line.ends_with(&format!("/{name}.py")))
}

fn doctor_json(env: &TestEnv, python: &Python, args: &[&str]) -> (Value, Output) {
    let mut command = env.rcache(python, &["--json", "doctor"]);
    command.args(args);
    run_json(&mut command)
}

/// `path → state` of every verdict at `level`.
fn states(report: &Value, level: u64) -> BTreeMap<String, String> {
    report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|verdict| verdict["level"] == level)
        .map(|verdict| {
            let path = PathBuf::from(verdict["path"].as_str().unwrap());
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            (name, verdict["state"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// `(file name, kind)` of every pyc reported as never read.
fn unused(report: &Value) -> Vec<(String, String)> {
    report["unused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pyc| {
            let path = PathBuf::from(pyc["path"].as_str().unwrap());
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, pyc["kind"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// A tree with a pyc in every state CPython knows, made by CPython itself;
/// doctor's verdict on each, checked against what `python -v` does with it.
#[test]
fn verdicts_are_what_cpython_does() {
    let all = pythons();
    let judged: Vec<Python> = match (all.first(), all.last()) {
        (Some(first), Some(last)) if all.len() > 1 => vec![first.clone(), last.clone()],
        _ => all.to_vec(),
    };
    for (index, python) in judged.iter().enumerate() {
        let other = &judged[(index + 1) % judged.len()];
        check_verdicts(python, (other.version != python.version).then_some(other));
    }
    covered("verdicts_are_what_cpython_does", &judged);
}

fn check_verdicts(python: &Python, other: Option<&Python>) {
    let (env, tag) = build_cases(python, other);
    check_report(&env, python, other, &tag);
    let tree = env.path().join("tree");
    check_imports(python, &tree);
    check_options(&env, python, &tree);
}

/// A tree with every case of [`EXPECTED`] (and more), built by `python`;
/// `other` compiles one more pyc, under its own tag. Returns the tag.
fn build_cases(python: &Python, other: Option<&Python>) -> (TestEnv, String) {
    let env = TestEnv::new();
    let tree = env.path().join("tree");
    for (name, _) in EXPECTED {
        env.write(&format!("tree/{name}.py"), module(name, "OLD"));
    }
    env.write("tree/gone.py", module("gone", "OLD"));
    env.write("tree/lonely.py", module("lonely", "OLD"));
    let built = python
        .command()
        .args(["-c", BUILD])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    let tag = format!("cpython-{}{}", python.version.0, python.version.1);
    let pycache = tree.join("__pycache__");
    // Edits: a new size for the timestamp pyc (a same-size edit in the same
    // second is the timestamp scheme's blind spot), new bytes for the others.
    for name in ["stale", "checked", "unchecked", "legacy"] {
        env.write(&format!("tree/{name}.py"), module(name, "NEWER"));
    }
    let corrupt = pycache.join(format!("corrupt.{tag}.pyc"));
    let mut bytes = std::fs::read(&corrupt).unwrap();
    bytes[..4].copy_from_slice(b"\x00\x00\x0d\x0a");
    std::fs::write(&corrupt, bytes).unwrap();
    let broken = pycache.join(format!("broken.{tag}.pyc"));
    let header = std::fs::read(&broken).unwrap()[..16].to_vec();
    std::fs::write(&broken, header).unwrap();
    if let Some(other) = other {
        let compiled = other
            .command()
            .args(["-m", "py_compile", "valid.py"])
            .current_dir(&tree)
            .output()
            .unwrap();
        assert!(compiled.status.success(), "{}", stderr(&compiled));
    }
    (env, tag)
}

/// Doctor's verdict on every case.
fn check_report(env: &TestEnv, python: &Python, other: Option<&Python>, tag: &str) {
    let (report, output) = doctor_json(env, python, &["tree"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(report["python"]["cache_tag"], tag);
    let judged = states(&report, 0);
    let expected: BTreeMap<String, String> = EXPECTED
        .iter()
        .map(|(name, state)| ((*name).to_owned(), (*state).to_owned()))
        .collect();
    assert_eq!(judged, expected, "{}", python.label());
    assert_eq!(report["counts"]["stale"], 2);
    let mut never_read = unused(&report);
    never_read.sort();
    let mut expected_unused = vec![
        (format!("gone.{tag}.pyc"), "orphan".to_owned()),
        (
            format!("opt_only.{tag}.opt-1.pyc"),
            "other_level".to_owned(),
        ),
        ("legacy.pyc".to_owned(), "beside_source".to_owned()),
    ];
    if let Some(other) = other {
        let other_tag = format!("cpython-{}{}", other.version.0, other.version.1);
        expected_unused.push((format!("valid.{other_tag}.pyc"), "other_tag".to_owned()));
    }
    expected_unused.sort();
    assert_eq!(never_read, expected_unused, "{}", python.label());
    let sourceless = report["sourceless"].as_array().unwrap();
    assert_eq!(sourceless.len(), 1);
    assert!(
        sourceless[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("/lonely.pyc")
    );
    assert_eq!(sourceless[0]["magic_matches"], true);
}

/// What CPython does with each case, as doctor said.
fn check_imports(python: &Python, tree: &Path) {
    for (name, state) in EXPECTED {
        let output = import(python, tree, name, false);
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let uses_pyc = matches!(state, "valid" | "unchecked" | "unchecked_stale" | "broken");
        assert_eq!(
            used_a_pyc(&output, name),
            uses_pyc,
            "{}: {name} is {state}\n{}",
            python.label(),
            stderr(&output)
        );
        match state {
            "broken" => assert!(!output.status.success(), "{name} imported"),
            // The stale code runs: the pyc was made before the edit.
            "unchecked_stale" => assert_eq!(stdout, format!("{name} OLD\n")),
            _ => {
                assert!(output.status.success(), "{}", stderr(&output));
                let now = if matches!(name, "stale" | "checked" | "legacy") {
                    "NEWER"
                } else {
                    "OLD"
                };
                assert_eq!(stdout, format!("{name} {now}\n"), "{}", python.label());
            }
        }
    }
    // The orphan is never read; the sourceless pyc is imported as it is;
    // the -O pyc is what `python -O` uses.
    assert!(!import(python, tree, "gone", false).status.success());
    let lonely = import(python, tree, "lonely", false);
    assert_eq!(String::from_utf8_lossy(&lonely.stdout), "lonely OLD\n");
    assert!(used_a_pyc(
        &import(python, tree, "opt_only", true),
        "opt_only"
    ));
}

/// `-O 1` judges `python -O`; `--check-hash-based-pycs always` as CPython's.
fn check_options(env: &TestEnv, python: &Python, tree: &Path) {
    let (optimized, _) = doctor_json(env, python, &["-O", "1", "tree"]);
    assert_eq!(states(&optimized, 1)["opt_only"], "valid");
    assert!(
        unused(&optimized)
            .iter()
            .all(|(name, _)| !name.contains("opt-1")),
        "{optimized}"
    );
    // CPython's `--check-hash-based-pycs always` checks the unchecked pyc.
    let (always, _) = doctor_json(env, python, &["tree", "--check-hash-based-pycs", "always"]);
    assert_eq!(states(&always, 0)["unchecked"], "stale");
    let mut command = python.command();
    command
        .args([
            "--check-hash-based-pycs",
            "always",
            "-v",
            "-c",
            "import unchecked",
        ])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(tree);
    let checked_run = command.output().unwrap();
    assert!(!used_a_pyc(&checked_run, "unchecked"));
    assert_eq!(
        String::from_utf8_lossy(&checked_run.stdout),
        "unchecked NEWER\n"
    );
}

/// Files, sizes, modification times and contents under `dir`.
fn contents(dir: &Path) -> BTreeMap<PathBuf, (std::time::SystemTime, Vec<u8>)> {
    if !dir.exists() {
        return BTreeMap::new();
    }
    crate::support::walk(dir)
        .into_iter()
        .map(|path| {
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            let bytes = if metadata.is_dir() {
                Vec::new()
            } else {
                std::fs::read(&path).unwrap()
            };
            (path, (metadata.modified().unwrap(), bytes))
        })
        .collect()
}

/// The store's hit rate after warming part of a tree, a store that does not
/// exist (left absent) and one that is refused; doctor changes nothing,
/// neither in the tree nor in the store.
#[test]
fn store_hit_rate_and_nothing_written() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    for index in 0..4 {
        env.write(&format!("tree/m{index}.py"), format!("value = {index}\n"));
    }
    let store_dir = env.store.parent().unwrap().to_owned();

    let (report, output) = doctor_json(&env, &python, &["tree"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(report["store"]["state"], "absent");
    assert_eq!(report["counts"]["missing"], 4);
    assert!(!store_dir.exists(), "doctor created the store's directory");

    let (_, warmed) = env.warm_json(&python, &["tree/m0.py", "tree/m1.py"]);
    assert_eq!(code(&warmed), 0);
    let before = (contents(env.path()), contents(&store_dir));
    let (report, output) = doctor_json(&env, &python, &["tree"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let store = &report["store"];
    assert_eq!(store["state"], "writable");
    assert_eq!(
        (store["hits"].as_u64(), store["lookups"].as_u64()),
        (Some(2), Some(4))
    );
    assert_eq!(store["entries_for_python"], 2);
    assert_eq!(store["lifetime_misses"], 2);
    let in_store: BTreeMap<String, bool> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|verdict| {
            let path = verdict["path"].as_str().unwrap();
            (
                path.rsplit('/').next().unwrap().to_owned(),
                verdict["in_store"] == true,
            )
        })
        .collect();
    let expected: BTreeMap<String, bool> = (0..4)
        .map(|index| (format!("m{index}.py"), index < 2))
        .collect();
    assert_eq!(in_store, expected);
    let text = env.rcache(&python, &["doctor", "tree"]).output().unwrap();
    let summary = String::from_utf8_lossy(&text.stdout);
    assert!(summary.contains("2 of 4"), "{summary}");
    assert!(summary.contains("missing"), "{summary}");
    assert_eq!(
        (contents(env.path()), contents(&store_dir)),
        before,
        "doctor wrote something"
    );

    // A store others can write is refused, and said so; a path that does
    // not exist is an input error, as for every command.
    let shared = std::os::unix::fs::PermissionsExt::from_mode(0o777);
    std::fs::set_permissions(&store_dir, shared).unwrap();
    let (report, output) = doctor_json(&env, &python, &["tree", "nowhere"]);
    assert_eq!(report["store"]["state"], "refused");
    assert!(
        report["store"]["reason"]
            .as_str()
            .unwrap()
            .contains("writable by others")
    );
    assert_eq!(code(&output), 1);
    assert!(stderr(&output).contains("nowhere"), "{}", stderr(&output));
    covered("store_hit_rate_and_nothing_written", &[python]);
}

/// With a pycache prefix, CPython reads the prefix tree only: pycs that
/// `rcache materialize --prefix` wrote there are valid, and the ones in
/// `__pycache__` are never read.
#[test]
fn prefix_tree_is_where_cpython_reads() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    env.write("tree/one.py", module("one", "OLD"));
    let tree = env.path().join("tree");
    let compiled = python
        .command()
        .args(["-m", "py_compile", "one.py"])
        .current_dir(&tree)
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{}", stderr(&compiled));
    let prefix = env.path().join("prefix");
    let prefix_arg = prefix.to_str().unwrap();
    let written = env
        .rcache(&python, &["materialize", "--prefix", prefix_arg, "tree"])
        .output()
        .unwrap();
    assert_eq!(code(&written), 0, "{}", stderr(&written));
    let (report, _) = doctor_json(&env, &python, &["--prefix", prefix_arg, "tree"]);
    assert_eq!(states(&report, 0)["one"], "valid");
    assert!(
        report["sources"][0]["pyc"]
            .as_str()
            .unwrap()
            .starts_with(prefix_arg)
    );
    assert_eq!(unused(&report).len(), 1);
    assert_eq!(unused(&report)[0].1, "outside_prefix");
    let mut command = python.command();
    command
        .args(["-v", "-c", "import one"])
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONPYCACHEPREFIX", &prefix)
        .current_dir(&tree);
    let output = command.output().unwrap();
    assert!(used_a_pyc(&output, "one"), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .lines()
            .any(|line| line.contains(" matches ") && line.contains(prefix_arg)),
        "{}",
        stderr(&output)
    );
    covered("prefix_tree_is_where_cpython_reads", &[python]);
}

/// A root-owned store that another user runs doctor on: trusted, read-only
/// (and why), its hits counted all the same.
#[test]
fn a_store_this_user_cannot_write_is_read_only() {
    use std::os::unix::fs::PermissionsExt;
    let Some(python) = crate::support::system_python().filter(|_| running_as_root()) else {
        eprintln!("not root, or no /usr/bin/python3.X for nobody: skipped");
        return;
    };
    let env = TestEnv::new();
    let open = |path: &Path| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    open(env.path());
    env.write("tree/one.py", "ONE = 1\n");
    let (_, warmed) = env.warm_json(&python, &["tree"]);
    assert_eq!(code(&warmed), 0, "{}", stderr(&warmed));
    open(env.store.parent().unwrap());
    std::fs::set_permissions(&env.store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (report, output) = run_json(&mut unprivileged(
        &env.rcache(&python, &["--json", "doctor", "tree"]),
    ));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let store = &report["store"];
    assert_eq!(store["state"], "read_only", "{store}");
    assert!(
        store["reason"]
            .as_str()
            .unwrap()
            .contains("ermission denied"),
        "{store}"
    );
    assert_eq!(
        (store["hits"].as_u64(), store["lookups"].as_u64()),
        (Some(1), Some(1))
    );
    covered("a_store_this_user_cannot_write_is_read_only", &[python]);
}
