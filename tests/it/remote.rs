//! Remote caches: stores on "different machines" (different store files)
//! sharing code through a directory, a real nginx with WebDAV and a real
//! redis-server on loopback, and servers that fail in every way a network
//! can. Whatever a remote does, the pycs are the ones a local compile
//! writes and the exit status is the one the sources call for.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::{Python, TestEnv, code, covered, module_source, run_json, stderr};

/// Modules that compile, and one that does not.
const MODULES: usize = 12;

/// A project of [`MODULES`] modules and `bad.py`, a syntax error.
fn project(env: &TestEnv, name: &str) -> PathBuf {
    for index in 0..MODULES {
        env.write(&format!("{name}/pkg/m{index}.py"), module_source(index));
    }
    env.write(&format!("{name}/pkg/__init__.py"), "");
    env.write(&format!("{name}/bad.py"), "def broken(:\n");
    env.path().join(name)
}

/// `rcache --store STORE --json [ARGS] materialize TREE` with `remote`;
/// returns its summary and output.
fn materialize(
    env: &TestEnv,
    python: &Python,
    store: &str,
    remote: &str,
    args: &[&str],
    tree: &Path,
) -> (Value, std::process::Output) {
    let store = env.path().join(store).join("store.sqlite3");
    let mut command = env.rcache_with_store(&store, python, &["--json", "--remote", remote]);
    command.args(args).arg("materialize").arg(tree);
    run_json(&mut command)
}

/// Every pyc under `tree`, by path, with its bytes.
fn pycs(tree: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "pyc") {
                found.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    found
}

/// Removes every `__pycache__` under `tree`.
fn remove_pycaches(tree: &Path) {
    for path in pycs(tree).keys() {
        let dir = path.parent().unwrap();
        if dir.exists() {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }
}

/// The lines of `stderr` that warn about a remote.
fn remote_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("warning: remote"))
        .collect()
}

/// Two stores share code through a `file://` directory: the second
/// compiles nothing (the syntax error included) and writes the same pycs.
/// Objects tampered with on the share (another object's bytes, cut short,
/// junk, a flipped byte) are refused with one warning, compiled locally
/// instead, and the pycs are still the same.
#[test]
fn a_shared_directory_serves_a_second_store_and_refuses_tampered_objects() {
    let python = crate::support::any_python();
    let env = TestEnv::new();
    let tree = project(&env, "proj");
    let share = env.path().join("share");
    let remote = format!("file://{}", share.display());

    let (first, output) = materialize(&env, &python, "one", &remote, &[], &tree);
    assert_eq!(code(&output), 1, "bad.py fails: {}", stderr(&output));
    assert_eq!(first["compiled"], MODULES as u64 + 1, "{first}");
    assert_eq!(first["remote"]["uploaded"], MODULES as u64 + 2, "{first}");
    let objects: Vec<PathBuf> = std::fs::read_dir(share.join("ac"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(objects.len(), MODULES + 2, "code, __init__ and the failure");
    assert!(objects.iter().all(|object| {
        let name = object.file_name().unwrap().to_string_lossy().into_owned();
        name.len() == 64 && name.bytes().all(|byte| byte.is_ascii_hexdigit())
    }));
    let expected = pycs(&tree);
    assert_eq!(expected.len(), MODULES + 1);

    remove_pycaches(&tree);
    let (second, output) = materialize(&env, &python, "two", &remote, &[], &tree);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "{text}");
    assert!(
        text.contains("bad.py:1:"),
        "the failure, from the remote: {text}"
    );
    assert_eq!(second["compiled"], 0, "{second}");
    assert_eq!(second["workers_started"], 0, "{second}");
    assert_eq!(second["from_remote"], MODULES as u64 + 1, "{second}");
    assert_eq!(second["remote"]["hits"], MODULES as u64 + 2, "{second}");
    assert_eq!(second["remote"]["uploaded"], 0, "{second}");
    assert!(remote_warnings(&text).is_empty(), "{text}");
    assert_eq!(pycs(&tree), expected);

    // Tamper with four objects on the share.
    let mut code_objects: Vec<&PathBuf> = objects
        .iter()
        .filter(|object| {
            !std::fs::read_to_string(object).is_ok_and(|text| text.contains(r#""kind":"failure""#))
        })
        .collect();
    code_objects.sort();
    let [other, cut, junk, flipped, ..] = code_objects[..] else {
        panic!("{code_objects:?}");
    };
    std::fs::copy(code_objects[4], other).unwrap();
    let bytes = std::fs::read(cut).unwrap();
    std::fs::write(cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(junk, b"<html><body>502 Bad Gateway</body></html>\n").unwrap();
    let mut bytes = std::fs::read(flipped).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(flipped, bytes).unwrap();

    remove_pycaches(&tree);
    let (third, output) = materialize(&env, &python, "three", &remote, &["-j", "2"], &tree);
    let text = stderr(&output);
    assert_eq!(code(&output), 1, "only bad.py fails: {text}");
    let compiled = third["compiled"].as_u64().unwrap();
    assert!(compiled >= 4, "the four tampered ones at least: {third}");
    assert_eq!(
        compiled + third["from_remote"].as_u64().unwrap(),
        MODULES as u64 + 1,
        "{third}"
    );
    assert!(third["remote"]["errors"].as_u64().unwrap() >= 1, "{third}");
    assert_eq!(remote_warnings(&text).len(), 1, "warned once: {text}");
    assert_eq!(
        pycs(&tree),
        expected,
        "the same pycs whatever the share holds"
    );
    let verify = env
        .rcache_with_store(
            &env.path().join("three/store.sqlite3"),
            &python,
            &["verify"],
        )
        .output()
        .unwrap();
    assert_eq!(code(&verify), 0, "{}", stderr(&verify));
    covered(
        "remote::a_shared_directory_serves_a_second_store_and_refuses_tampered_objects",
        &[python],
    );
}
