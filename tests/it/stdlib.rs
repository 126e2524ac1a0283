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

/// Cold warm, rewarm, on 3.11+ byte-identity with a pristine interpreter,
/// and on every version determinism and load-equality, for every file.
#[test]
fn stdlib_of_every_python() {
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
        check_deterministic_and_load_equal(python, &warmed);
        covered_versions.push(python.clone());
    }
    covered("stdlib_of_every_python", &covered_versions);
}

/// Runs the pristine compile of every stdlib file, in parallel processes,
/// and returns the files whose stored bytes differ.
fn compare_with_pristine(python: &Python, warmed: &Warmed) -> Vec<PathBuf> {
    let blobs = warmed.env.blobs();
    let files = crate::support::py_files(&warmed.root);
    assert_eq!(files.len(), warmed.files);
    let context = KeyParams::of(python);
    let compared = crate::support::parallel_filter_map(&files, |path| {
        let source = std::fs::read(path).unwrap();
        let key = context.key(0, &source);
        // A file that does not compile has no blob.
        let stored = blobs.get(&key.to_hex())?;
        let pristine = pristine_compile(python, path, &key.placeholder_filename());
        Some((path.clone(), &pristine == stored))
    });
    assert_eq!(
        compared.len() as u64 + warmed.failed,
        warmed.files as u64,
        "every compiled file was compared"
    );
    compared
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(path, _)| path)
        .collect()
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

/// Loads each stored blob and compares it (`support::SAME_CODE`, prepended)
/// with the code object the interpreter compiles itself. Reads `source\tblob\tfilename` lines on stdin and prints
/// the sources that differ.
const LOAD_EQUAL: &str = r"
import marshal, sys
for line in sys.stdin:
    source, blob, filename = line.rstrip('\n').split('\t')
    with open(source, 'rb') as handle:
        expected = compile(handle.read(), filename, 'exec', dont_inherit=True)
    with open(blob, 'rb') as handle:
        stored = marshal.loads(handle.read())
    if not same(expected, stored):
        print(source)
";

/// Warming in another order, with another `-j`, gives the same bytes for
/// every file; and every blob loads equal to what the interpreter compiles
/// itself.
fn check_deterministic_and_load_equal(python: &Python, warmed: &Warmed) {
    use std::fmt::Write as _;
    {
        let (env, root) = (&warmed.env, &warmed.root);

        // Other order: a few packages first, three workers (the first warm
        // ran one per CPU), separate store.
        let other = TestEnv::new();
        for part in ["lib/xml", "lib/asyncio", "lib/email", "lib"] {
            let mut command = other.rcache(python, &["--json", "-j", "3", "warm"]);
            command.arg(root.join(part.trim_start_matches("lib/").trim_start_matches("lib")));
            command.current_dir(env.path());
            let (summary, output) = crate::support::run_json(&mut command);
            assert!(
                code(&output) <= 1,
                "{}: {}",
                python.label(),
                stderr(&output)
            );
            assert!(summary["files"].as_u64().unwrap() > 0, "{part}");
        }
        let (ours, theirs) = (env.blobs(), other.blobs());
        assert_eq!(ours.len(), theirs.len(), "{}", python.label());
        let differing: Vec<&String> = ours
            .iter()
            .filter(|(key, blob)| theirs.get(*key) != Some(blob))
            .map(|(key, _)| key)
            .collect();
        assert!(
            differing.is_empty(),
            "{}: {} blobs differ",
            python.label(),
            differing.len()
        );

        // Every blob loads equal to the interpreter's own compile.
        let params = KeyParams::of(python);
        let blob_dir = env.path().join("blobs");
        std::fs::create_dir_all(&blob_dir).unwrap();
        let mut listing = String::new();
        for path in crate::support::py_files(root) {
            let key = params.key(0, &std::fs::read(&path).unwrap());
            if let Some(blob) = ours.get(&key.to_hex()) {
                let blob_path = blob_dir.join(key.to_hex());
                std::fs::write(&blob_path, blob).unwrap();
                let _ = writeln!(
                    listing,
                    "{}\t{}\t{}",
                    path.display(),
                    blob_path.display(),
                    key.placeholder_filename()
                );
            }
        }
        let script = format!("{}{LOAD_EQUAL}", crate::support::SAME_CODE);
        let differing = crate::support::python_with_input(python, &["-S", "-s"], &script, &listing);
        assert!(
            differing.trim().is_empty(),
            "{}: load differently:\n{differing}",
            python.label()
        );
    }
}
