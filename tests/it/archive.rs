//! `rcache export` and `rcache import`: archives that carry a store's code
//! (or what some trees use) to another store, refused whole when damaged,
//! and merged without ever replacing good code with bad.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::Value;

use crate::support::{
    KeyParams, Python, TestEnv, any_python, blobs, code, covered, hex, pythons, run_json, stderr,
};

/// The bytes of a trailer: type, length, record count, checksum.
const TRAILER_BYTES: usize = 1 + 4 + 8 + 32;

/// Small modules of their own under `dir` (`NAME0.py`...), plus
/// `dir/broken.py` when `broken` is set, which does not compile. Returns
/// the module paths and their contents, the broken one aside.
fn tree(
    env: &TestEnv,
    dir: &str,
    name: &str,
    count: usize,
    broken: bool,
) -> Vec<(PathBuf, String)> {
    if broken {
        env.write(&format!("{dir}/broken.py"), format!("def {name}(:\n"));
    }
    (0..count)
        .map(|index| {
            let source = format!(
                "\"\"\"{name} {index}.\"\"\"\nVALUE = {index}\n\n\ndef {name}_{index}(x):\n    return [x + VALUE for _ in range(3)]\n"
            );
            (env.write(&format!("{dir}/{name}{index}.py"), &source), source)
        })
        .collect()
}

/// Runs `rcache --json ARGS` on `env`'s store; checks the exit code.
fn run(env: &TestEnv, python: &Python, args: &[&str], expected: i32) -> (Value, String) {
    let mut command = env.rcache(python, &[&["--json"], args].concat());
    let (summary, output) = run_json(&mut command);
    assert_eq!(code(&output), expected, "{args:?}: {}", stderr(&output));
    (summary, stderr(&output))
}

fn export(
    env: &TestEnv,
    python: &Python,
    archive: &Path,
    extra: &[&str],
    expected: i32,
) -> (Value, String) {
    let archive = archive.to_str().unwrap();
    run(
        env,
        python,
        &[&["export", archive], extra].concat(),
        expected,
    )
}

fn import(env: &TestEnv, python: &Python, archive: &Path, expected: i32) -> (Value, String) {
    run(
        env,
        python,
        &["import", archive.to_str().unwrap()],
        expected,
    )
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    crate::support::snapshot(dir)
        .into_keys()
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path.strip_prefix(dir).unwrap().to_owned(), bytes)
        })
        .collect()
}

/// The keys of a store's entries and of its failures, as hex.
fn keys(store: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let conn = Connection::open(store).unwrap();
    let read = |table: &str| -> BTreeSet<String> {
        let mut statement = conn.prepare(&format!("SELECT key FROM {table}")).unwrap();
        statement
            .query_map([], |row| row.get::<_, Vec<u8>>(0))
            .unwrap()
            .map(|key| hex(&key.unwrap()))
            .collect()
    };
    (read("entries"), read("failures"))
}

/// Everything in a store's `entries` table, row by row, blobs as stored.
fn entry_rows(store: &Path) -> BTreeMap<String, (Vec<u8>, i64)> {
    let conn = Connection::open(store).unwrap();
    let mut statement = conn
        .prepare("SELECT key, data, created FROM entries")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((hex(&row.get::<_, Vec<u8>>(0)?), (row.get(1)?, row.get(2)?)))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// A tree warmed into store A, exported and imported into an empty store
/// B, gives B exactly A's code and failures: materializing the tree from B
/// compiles nothing and starts no worker, and writes the very pycs A gives.
/// Importing it again adds nothing.
#[test]
fn archive_round_trip_restores_every_entry_and_failure() {
    let python = any_python();
    let a = TestEnv::new();
    let b = TestEnv::new();
    tree(&a, "proj", "module", 4, true);
    let (warmed, _) = run(&a, &python, &["-O", "0", "-O", "2", "warm", "proj"], 1);
    assert_eq!(warmed["compiled"], 8, "{warmed}");
    let archive = a.path().join("ci/cache.rcx");
    std::fs::create_dir_all(archive.parent().unwrap()).unwrap();
    let (exported, _) = export(&a, &python, &archive, &[], 0);
    assert_eq!(exported["entries"], 8, "{exported}");
    assert_eq!(exported["failures"], 2);
    assert_eq!(exported["profiles"], 1);
    assert_eq!(exported["skipped_corrupt"], 0);
    assert_eq!(
        exported["bytes"],
        std::fs::metadata(&archive).unwrap().len()
    );
    let leftovers: Vec<_> = std::fs::read_dir(archive.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, ["cache.rcx"], "no temp file is left");

    let (imported, _) = import(&b, &python, &archive, 0);
    assert_eq!(imported["entries_added"], 8, "{imported}");
    assert_eq!(imported["failures_added"], 2);
    assert_eq!(imported["entries_rejected"], 0);
    assert_eq!(blobs(&b.store), blobs(&a.store));
    assert_eq!(keys(&b.store), keys(&a.store));

    let materialize = |env: &TestEnv, prefix: &str| {
        let proj = a.path().join("proj");
        let prefix = env.path().join(prefix);
        let args = ["-O", "0", "-O", "2", "materialize", "--prefix"];
        let mut args = args.map(str::to_owned).to_vec();
        args.push(prefix.display().to_string());
        args.push(proj.display().to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (summary, errors) = run(env, &python, &args, 1);
        assert!(errors.contains("broken.py:1:"), "{errors}");
        (summary, files_under(&prefix))
    };
    let (from_a, pycs_a) = materialize(&a, "pycs-a");
    let (from_b, pycs_b) = materialize(&b, "pycs-b");
    assert_eq!(from_a["compiled"], 0, "{from_a}");
    assert_eq!(from_b["compiled"], 0, "{from_b}");
    assert_eq!(from_b["workers_started"], 0);
    assert_eq!(from_b["hits"], 8);
    assert_eq!(from_b["failed"], 2, "the failure is remembered");
    assert_eq!(from_b["written"], 8);
    assert_eq!(pycs_b.len(), 8);
    assert_eq!(pycs_b, pycs_a, "the same pycs from either store");

    let (again, _) = import(&b, &python, &archive, 0);
    assert_eq!(again["entries_added"], 0, "{again}");
    assert_eq!(again["entries_present"], 8);
    assert_eq!(again["failures_present"], 2);
    assert_eq!(blobs(&b.store), blobs(&a.store));
    covered(
        "archive_round_trip_restores_every_entry_and_failure",
        &[python],
    );
}

/// `export --for tree1` from a store holding two trees' code, for two
/// interpreters, carries tree1's code and failures for both interpreters
/// and all levels, and nothing of tree2; it starts no Python (the one named
/// does not exist).
#[test]
fn archive_for_a_tree_holds_that_trees_code_only() {
    let first = any_python();
    let mut used = vec![first.clone()];
    used.extend(pythons().iter().find(|p| p.path != first.path).cloned());
    let env = TestEnv::new();
    let tree1 = tree(&env, "tree1", "one", 3, true);
    let tree2 = tree(&env, "tree2", "two", 3, false);
    run(
        &env,
        &first,
        &["-O", "0", "-O", "1", "warm", "tree1", "tree2"],
        1,
    );
    if let Some(second) = used.get(1) {
        run(&env, second, &["warm", "tree1"], 1);
    }
    let missing_python = Python {
        path: env.path().join("no/such/python"),
        ..first.clone()
    };
    let archive = env.path().join("tree1.rcx");
    let (exported, _) = export(&env, &missing_python, &archive, &["--for", "tree1"], 0);
    assert_eq!(exported["files"], 4, "{exported}");

    let target = TestEnv::new();
    let (imported, _) = import(&target, &first, &archive, 0);
    let mut entries = BTreeSet::new();
    let mut failures = BTreeSet::new();
    for (index, python) in used.iter().enumerate() {
        let params = KeyParams::of(python);
        let levels: &[u8] = if index == 0 { &[0, 1] } else { &[0] };
        for &level in levels {
            for (_, source) in &tree1 {
                entries.insert(hex(&params.key(level, source.as_bytes()).0));
            }
            failures.insert(hex(&params.key(level, b"def one(:\n").0));
        }
    }
    let tree2_key = hex(&KeyParams::of(&first).key(0, tree2[0].1.as_bytes()).0);
    assert!(
        keys(&env.store).0.contains(&tree2_key),
        "tree2 is in the store"
    );
    assert_eq!(keys(&target.store), (entries, failures.clone()));
    assert_eq!(imported["entries_added"], keys(&target.store).0.len());
    assert_eq!(imported["failures_added"], failures.len());
    assert_eq!(imported["profiles"], used.len());
    covered("archive_for_a_tree_holds_that_trees_code_only", &used);
}

/// Where the code of the entry with `key` starts in an archive: its body
/// holds the key, profile (4), level (1), raw size (8), checksum (32), no
/// warnings (1), created and last used (8 each), then the code.
fn code_offset(archive: &[u8], key: &[u8]) -> usize {
    let at = archive
        .windows(key.len())
        .position(|window| window == key)
        .expect("the key is in the archive");
    at + 32 + 4 + 1 + 8 + 32 + 1 + 8 + 8
}

/// Writes the trailer's checksum again, as a writer of bad code would.
fn reseal(archive: &mut [u8]) {
    let end = archive.len() - TRAILER_BYTES;
    let checksum = *blake3::hash(&archive[..end]).as_bytes();
    let len = archive.len();
    archive[len - 32..].copy_from_slice(&checksum);
}

/// An archive with a byte flipped (in the magic, a record's type, a blob,
/// the trailer's count or checksum), cut short, of format 99, or not an
/// archive at all is refused with exit 2 and a message naming it, and the
/// target store is left exactly as it was.
#[test]
fn archive_damaged_or_foreign_is_refused_whole() {
    let python = any_python();
    let env = TestEnv::new();
    let modules = tree(&env, "proj", "module", 3, true);
    run(&env, &python, &["warm", "proj"], 1);
    let good_path = env.path().join("good.rcx");
    export(&env, &python, &good_path, &[], 0);
    let good = std::fs::read(&good_path).unwrap();

    let target = TestEnv::new();
    target.write("other.py", "OTHER = 1\n");
    run(&target, &python, &["warm", "other.py"], 0);
    let before = (
        target.blobs(),
        keys(&target.store),
        target.count("profiles"),
    );

    let key = KeyParams::of(&python).key(0, modules[1].1.as_bytes());
    let in_blob = code_offset(&good, &key.0) + 20;
    let flipped = |at: usize| {
        let mut damaged = good.clone();
        damaged[at] ^= 0x20;
        damaged
    };
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&99u32.to_le_bytes());
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", flipped(1), "is not an rcache export"),
        ("record type", flipped(12), "is corrupt or truncated"),
        ("blob", flipped(in_blob), "is corrupt or truncated"),
        ("count", flipped(good.len() - 40), "is corrupt or truncated"),
        (
            "checksum",
            flipped(good.len() - 1),
            "is corrupt or truncated",
        ),
        (
            "half",
            good[..good.len() / 2].to_vec(),
            "is corrupt or truncated",
        ),
        (
            "no trailer",
            good[..good.len() - TRAILER_BYTES].to_vec(),
            "is corrupt or truncated: it ends after 5 records, without its trailer",
        ),
        (
            "one byte short",
            good[..good.len() - 1].to_vec(),
            "is corrupt or truncated",
        ),
        ("empty", Vec::new(), "is not an rcache export"),
        (
            "text",
            b"RCACHE is a nice name\n".repeat(20),
            "is not an rcache export",
        ),
        (
            "store",
            std::fs::read(&env.store).unwrap(),
            "is not an rcache export",
        ),
        (
            "newer",
            newer,
            "was written by a newer rcache (format 99, this rcache reads up to 1)",
        ),
    ];
    for (what, bytes, says) in cases {
        let path = env.path().join(format!("{what}.rcx"));
        std::fs::write(&path, bytes).unwrap();
        let output = target
            .rcache(&python, &["--json", "import", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = stderr(&output);
        assert_eq!(code(&output), 2, "{what}: {text}");
        assert!(
            text.contains(&format!("`{}` {says}", path.display())),
            "{what}: {text}"
        );
        assert!(output.stdout.is_empty(), "{what}");
        let after = (
            target.blobs(),
            keys(&target.store),
            target.count("profiles"),
        );
        assert!(after == before, "{what}: the store changed");
    }
    let missing = env.path().join("missing.rcx");
    let output = target
        .rcache(&python, &["import", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains(&missing.display().to_string()));
    covered("archive_damaged_or_foreign_is_refused_whole", &[python]);
}

/// Good code is never replaced by bad: an export leaves out an entry whose
/// blob was corrupted in the store (exit 1); an import rejects the entries
/// of an archive whose code fails its checksum (exit 1), keeps the store's
/// good entry for that key byte for byte, and replaces a corrupt one in the
/// store with the archive's good copy.
#[test]
fn archive_merge_never_replaces_good_code_with_bad() {
    let python = any_python();
    let params = KeyParams::of(&python);
    let a = TestEnv::new();
    let modules = tree(&a, "proj", "module", 4, false);
    run(&a, &python, &["warm", "proj"], 0);
    let archive = a.path().join("all.rcx");
    export(&a, &python, &archive, &[], 0);
    let key = |index: usize| params.key(0, modules[index].1.as_bytes());

    let b = TestEnv::new();
    for (path, source) in &modules[..2] {
        b.write(path.file_name().unwrap().to_str().unwrap(), source);
    }
    run(&b, &python, &["warm", "."], 0);
    let conn = Connection::open(&b.store).unwrap();
    let data: Vec<u8> = conn
        .query_row(
            "SELECT data FROM entries WHERE key = ?1",
            [key(1).0.as_slice()],
            |row| row.get(0),
        )
        .unwrap();
    let mut flipped = data.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    conn.execute(
        "UPDATE entries SET data = ?1 WHERE key = ?2",
        rusqlite::params![flipped, key(1).0.as_slice()],
    )
    .unwrap();
    drop(conn);

    let partial = b.path().join("partial.rcx");
    let (exported, errors) = export(&b, &python, &partial, &[], 1);
    assert_eq!(exported["entries"], 1, "{exported}");
    assert_eq!(exported["skipped_corrupt"], 1);
    assert!(
        errors.contains(&key(1).to_hex()) && errors.contains("not exported"),
        "{errors}"
    );
    let written = std::fs::read(&partial).unwrap();
    assert!(!written.windows(32).any(|window| window == key(1).0));

    let good_row = entry_rows(&b.store)[&key(0).to_hex()].clone();
    let mut tampered = std::fs::read(&archive).unwrap();
    for index in [0, 2] {
        let at = code_offset(&tampered, &key(index).0) + 20;
        tampered[at] ^= 0x20;
    }
    reseal(&mut tampered);
    let tampered_path = a.path().join("tampered.rcx");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let (imported, errors) = import(&b, &python, &tampered_path, 1);
    assert_eq!(imported["entries_rejected"], 2, "{imported}");
    assert_eq!(imported["entries_replaced"], 1, "the corrupt one");
    assert_eq!(imported["entries_added"], 1);
    assert_eq!(imported["entries_present"], 0);
    for index in [0, 2] {
        assert!(errors.contains(&key(index).to_hex()), "{errors}");
    }
    let rows = entry_rows(&b.store);
    assert_eq!(rows[&key(0).to_hex()], good_row, "kept byte for byte");
    assert!(
        !rows.contains_key(&key(2).to_hex()),
        "bad code is not stored"
    );
    let repaired = blobs(&b.store);
    assert_eq!(
        repaired[&key(1).to_hex()],
        blobs(&a.store)[&key(1).to_hex()]
    );

    let (imported, _) = import(&b, &python, &archive, 0);
    assert_eq!(imported["entries_added"], 1, "{imported}");
    assert_eq!(imported["entries_present"], 3);
    assert_eq!(imported["entries_replaced"], 0);
    assert_eq!(blobs(&b.store), blobs(&a.store));
    assert_eq!(entry_rows(&b.store)[&key(0).to_hex()], good_row);
    covered("archive_merge_never_replaces_good_code_with_bad", &[python]);
}
