//! Whole standard libraries: every file of every installed 3.8–3.13.
//!
//! * a cold warm compiles every file, a rewarm hits every one and starts no
//!   Python;
//! * on 3.11+ every stored blob equals what a pristine interpreter
//!   (`python -S -s`, `PYTHONHASHSEED=0`, nothing compiled before, one
//!   process per file) writes through the import system's own calls;
//! * on every version, warming in another order with other `-j` gives the
//!   same bytes, and each blob loads equal to CPython's own compile.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::support::{KeyParams, Python, TestEnv, code, copy_stdlib, covered, pythons, stderr};

/// Compiles `path` like the import system does, in a fresh interpreter, under
/// `filename`; returns the marshal bytes after the pyc header. No name in
/// this script is one character long (see DESIGN.md: interning).
const PRISTINE: &str = "import sys
external = sys.modules['_frozen_importlib_external']
with open(sys.argv[1], 'rb') as source_file:
    data = source_file.read()
code = external.SourceLoader.source_to_code(None, data, sys.argv[2])
sys.stdout.buffer.write(external._code_to_timestamp_pyc(code)[16:])
";

struct Warmed {
    env: TestEnv,
    root: PathBuf,
    files: usize,
    failed: u64,
}

fn warm_stdlib(python: &Python) -> Warmed {
    let env = TestEnv::new();
    let root = env.path().join("lib");
    let files = copy_stdlib(python, &root);
    assert!(files > 1000, "{}: only {files} files", python.label());
    let (cold, output) = env.warm_json(python, &["lib"]);
    assert!(
        code(&output) <= 1,
        "{}: {}",
        python.label(),
        stderr(&output)
    );
    assert_eq!(cold["files"], files as u64, "{}", python.label());
    let failed = cold["failed"].as_u64().unwrap();
    // The stdlib ships a few files that do not compile on purpose (lib2to3
    // and test data); everything else must compile.
    assert!(
        failed < 20,
        "{}: {failed} failures: {}",
        python.label(),
        cold["failures"]
    );
    assert_eq!(
        cold["compiled"].as_u64().unwrap() + cold["hits"].as_u64().unwrap() + failed,
        files as u64
    );

    let (rewarm, output) = env.warm_json(python, &["lib"]);
    assert_eq!(code(&output), code(&output).min(1));
    assert_eq!(rewarm["compiled"], 0, "{}", python.label());
    assert_eq!(
        rewarm["workers_started"],
        0,
        "{}: a rewarm starts no Python",
        python.label()
    );
    assert_eq!(
        rewarm["failed"], cold["failed"],
        "failures are remembered, not recompiled"
    );
    assert_eq!(
        rewarm["failures"], cold["failures"],
        "and reported identically"
    );
    Warmed {
        env,
        root,
        files,
        failed,
    }
}

/// Cold warm, rewarm, and on 3.11+ byte-identity with a pristine
/// interpreter for every file.
#[test]
fn stdlib_warms_and_matches_a_pristine_interpreter() {
    let mut covered_versions = Vec::new();
    for python in pythons() {
        let warmed = warm_stdlib(python);
        if python.version >= (3, 11) {
            let mismatches = compare_with_pristine(python, &warmed);
            assert!(
                mismatches.is_empty(),
                "{}: {} files differ, e.g. {:?}",
                python.label(),
                mismatches.len(),
                &mismatches[..mismatches.len().min(5)]
            );
        }
        covered_versions.push(python.clone());
    }
    covered(
        "stdlib_warms_and_matches_a_pristine_interpreter",
        &covered_versions,
    );
}

/// Runs the pristine compile of every stdlib file, in parallel processes,
/// and returns the files whose stored bytes differ.
fn compare_with_pristine(python: &Python, warmed: &Warmed) -> Vec<PathBuf> {
    let blobs = warmed.env.blobs();
    let files = crate::support::py_files(&warmed.root);
    assert_eq!(files.len(), warmed.files);
    let next = Mutex::new(files.iter());
    let mismatches = Mutex::new(Vec::new());
    let compared = Mutex::new(0usize);
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) + 1;
    let context = KeyParams::of(python);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(path) = next.lock().unwrap().next() else {
                        return;
                    };
                    let source = std::fs::read(path).unwrap();
                    let key = context.key(0, &source);
                    let Some(stored) = blobs.get(&key.to_hex()) else {
                        continue; // a file that does not compile
                    };
                    let pristine = pristine_compile(python, path, &key.placeholder_filename());
                    *compared.lock().unwrap() += 1;
                    if &pristine != stored {
                        mismatches.lock().unwrap().push(path.clone());
                    }
                }
            });
        }
    });
    let compared = compared.into_inner().unwrap();
    assert_eq!(
        compared as u64 + warmed.failed,
        warmed.files as u64,
        "every compiled file was compared"
    );
    mismatches.into_inner().unwrap()
}

fn pristine_compile(python: &Python, path: &Path, filename: &str) -> Vec<u8> {
    let output = python
        .command()
        .args(["-S", "-s", "-c", PRISTINE])
        .arg(path)
        .arg(filename)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}
