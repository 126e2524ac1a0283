//! `rcache verify [--repair]` against real damage: bytes flipped inside
//! stored blobs and anywhere in the file, pages of the file overwritten.
//! Bad code is found, reported and never written as a pyc; `--repair`
//! leaves a store that verifies clean; no input crashes rcache.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use serde_json::Value;

use crate::support::{
    Python, TestEnv, any_python, code, copy_tree, covered, pythons_from, run_json, stderr,
};

/// A small deterministic generator (xorshift64*), so every run flips the
/// same bytes; the seed is printed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

const SEED: u64 = 0x5EED_F11B;

/// A copy of two packages of `python`'s standard library.
fn stdlib_slice(python: &Python, dest: &Path) -> PathBuf {
    let output = python
        .command()
        .args([
            "-c",
            "import json, os; print(os.path.dirname(os.path.dirname(json.__file__)))",
        ])
        .output()
        .unwrap();
    let lib = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    for package in ["json", "email"] {
        copy_tree(&lib.join(package), &dest.join(package));
    }
    dest.to_owned()
}

/// A project holding a stdlib slice (`lib`) and a store warmed with it.
fn warmed_slice(python: &Python) -> TestEnv {
    let env = TestEnv::new();
    stdlib_slice(python, &env.path().join("lib"));
    let (_, output) = env.warm_json(python, &["lib"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    env
}

/// `verify --repair` answers (exit 0 or 1), and then `verify` is clean.
fn repair_until_clean(env: &TestEnv, python: &Python, case: &str) {
    let (_, output) = verify(env, python, &["--repair"]);
    assert!(
        matches!(code(&output), 0 | 1),
        "{case}: {}",
        stderr(&output)
    );
    let (clean, output) = verify(env, python, &[]);
    assert_eq!(code(&output), 0, "{case}: {clean}");
}

fn verify(env: &TestEnv, python: &Python, extra: &[&str]) -> (Value, std::process::Output) {
    let mut command = env.rcache(python, &["--json", "verify"]);
    command.args(extra);
    run_json(&mut command)
}

/// Flips one bit inside the stored bytes of up to `count` entries of
/// `python`'s profile, in the file itself (found by their bytes: the store
/// is checkpointed). Returns the keys (hex) whose blob was hit.
fn flip_blob_bytes(store: &Path, python: &Python, count: usize, noise: &mut Noise) -> Vec<String> {
    let blobs: Vec<(String, Vec<u8>)> = {
        let conn = Connection::open(store).unwrap();
        let mut statement = conn
            .prepare(
                "SELECT lower(hex(e.key)), e.data FROM entries e
                 JOIN profiles p ON p.id = e.profile_id
                 WHERE p.cache_tag = ?1 ORDER BY e.key",
            )
            .unwrap();
        let tag = format!("cpython-{}{}", python.version.0, python.version.1);
        statement
            .query_map([tag], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let mut file = std::fs::read(store).unwrap();
    let mut hit = Vec::new();
    for _ in 0..count {
        let (key, data) = &blobs[noise.below(blobs.len())];
        // One flip per blob, in blobs that sit whole on one page.
        if hit.contains(key) || data.len() > 3000 {
            continue;
        }
        let Some(at) = memchr::memmem::find(&file, data) else {
            continue;
        };
        file[at + noise.below(data.len())] ^= 1 << noise.below(8);
        hit.push(key.clone());
    }
    std::fs::write(store, file).unwrap();
    hit.sort();
    hit
}

fn problem_keys(verified: &Value) -> Vec<String> {
    let mut keys: Vec<String> = verified["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|problem| problem["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// A store warmed with two stdlib packages for two interpreters verifies
/// clean, every entry loaded by its own interpreter. Bits flipped inside
/// stored blobs, in the file: `verify` reports exactly those entries
/// (exit 1); `materialize` warns about each, compiles it again and writes
/// the very pycs a sound store gives. Flipped again (the other
/// interpreter's entries): `--repair` removes them, the next `verify` is
/// clean and the next warm compiles exactly those again.
#[test]
fn flipped_bytes_in_blobs_are_found_and_never_written() {
    let installed = pythons_from(8);
    let (Some(first), Some(last)) = (installed.first(), installed.last()) else {
        panic!("no CPython found");
    };
    let env = TestEnv::new();
    let tree = stdlib_slice(first, &env.path().join("lib"));
    for python in [first, last] {
        let (_, output) = env.warm_json(python, &["lib"]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    }
    let (clean, output) = verify(&env, first, &[]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let entries = clean["entries"].as_u64().unwrap();
    assert!(entries > 40, "{clean}");
    assert_eq!(clean["unmarshalled"].as_u64(), Some(entries), "{clean}");

    // The pycs a sound store gives, then none.
    let args = ["materialize", "--mode", "checked-hash", "lib"];
    let output = env.rcache(first, &args).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let sound = crate::support::pycs(&tree);
    for path in sound.keys() {
        std::fs::remove_file(path).unwrap();
    }

    eprintln!("flip seed {SEED:#x}");
    let mut noise = Noise(SEED);
    let flipped = flip_blob_bytes(&env.store, first, 30, &mut noise);
    assert!(flipped.len() >= 10, "only {} blobs flipped", flipped.len());
    let (found, output) = verify(&env, first, &[]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(problem_keys(&found), flipped, "{found}");
    assert!(found["integrity"].as_array().unwrap().is_empty(), "{found}");
    let output = env.rcache(first, &args).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let warned = stderr(&output).matches("compiling it again").count();
    assert_eq!(warned, flipped.len(), "{}", stderr(&output));
    assert_eq!(
        crate::support::pycs(&tree),
        sound,
        "a pyc differs from the sound store's"
    );
    let (healed, output) = verify(&env, first, &[]);
    assert_eq!(code(&output), 0, "{healed}");

    let again = flip_blob_bytes(&env.store, last, 30, &mut noise);
    let (repaired, output) = verify(&env, first, &["--repair"]);
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert_eq!(problem_keys(&repaired), again, "{repaired}");
    assert_eq!(
        repaired["repaired"]["entries_removed"].as_u64(),
        Some(again.len() as u64)
    );
    let (after, output) = verify(&env, first, &[]);
    assert_eq!(code(&output), 0, "{after}");
    assert_eq!(
        after["entries"].as_u64(),
        Some(entries - again.len() as u64)
    );
    let (rewarmed, output) = env.warm_json(last, &["lib"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        rewarmed["compiled"].as_u64(),
        Some(again.len() as u64),
        "{rewarmed}"
    );
    eprintln!(
        "flips: {} blobs flipped and reported, {warned} recompiled by materialize (pycs identical); {} more flipped and removed by --repair",
        flipped.len(),
        again.len()
    );
    covered(
        "flipped_bytes_in_blobs_are_found_and_never_written",
        &[first.clone(), last.clone()],
    );
}

/// Pages of the store overwritten (the b-tree pages of each table in
/// turn): commands fail with exit 2 and a message naming the fix, or work;
/// `verify` reports the damage (exit 1); `verify --repair` rebuilds the
/// file from what can be read; `verify` is then clean and `warm` works.
#[test]
fn a_damaged_file_is_rebuilt_by_repair() {
    let python = any_python();
    let template = warmed_slice(&python);
    let pages = std::fs::metadata(&template.store).unwrap().len() / 4096;
    let mut damaged = 0;
    for page in (2..pages).step_by(3) {
        let env = TestEnv::new();
        std::fs::create_dir_all(env.store.parent().unwrap()).unwrap();
        std::fs::copy(&template.store, &env.store).unwrap();
        copy_tree(&template.path().join("lib"), &env.path().join("lib"));
        let mut file = std::fs::read(&env.store).unwrap();
        let at = usize::try_from(page * 4096).unwrap();
        file[at..at + 16].fill(0xFF);
        std::fs::write(&env.store, file).unwrap();

        let output = env.rcache(&python, &["warm", "lib"]).output().unwrap();
        assert!(
            matches!(code(&output), 0 | 2),
            "page {page}: {}",
            stderr(&output)
        );
        if code(&output) == 2 {
            assert!(
                stderr(&output).contains("verify --repair"),
                "{}",
                stderr(&output)
            );
        }
        let (found, output) = verify(&env, &python, &[]);
        assert!(
            matches!(code(&output), 0 | 1),
            "page {page}: {}",
            stderr(&output)
        );
        damaged += usize::from(code(&output) == 1);
        repair_until_clean(&env, &python, &format!("page {page}: {found}"));
        let (_, output) = env.warm_json(&python, &["lib"]);
        assert_eq!(code(&output), 0, "page {page}: {}", stderr(&output));
        let (clean, output) = verify(&env, &python, &[]);
        assert_eq!(code(&output), 0, "page {page}: {clean}");
    }
    eprintln!(
        "pages overwritten: {}, found damaged: {damaged}",
        (2..pages).step_by(3).count()
    );
    assert!(damaged > 0);
    covered("a_damaged_file_is_rebuilt_by_repair", &[python]);
}

/// Random bits flipped anywhere in the file, 40 times over: `verify` always
/// answers (exit 0 or 1, never a crash), and after `--repair` the store
/// verifies clean; a flip in the schema's text, which SQLite cannot open at
/// all, is exit 2 with a message saying to delete the store.
#[test]
fn random_flips_never_crash_verify() {
    let python = any_python();
    let template = warmed_slice(&python);
    let pristine = std::fs::read(&template.store).unwrap();
    let mut noise = Noise(SEED ^ 0xABCD);
    let (mut found, mut unopenable) = (0, 0);
    let trials = 40;
    for trial in 0..trials {
        let env = TestEnv::new();
        std::fs::create_dir_all(env.store.parent().unwrap()).unwrap();
        let mut file = pristine.clone();
        for _ in 0..=noise.below(3) {
            let at = 100 + noise.below(file.len() - 100);
            file[at] ^= 1 << noise.below(8);
        }
        std::fs::write(&env.store, &file).unwrap();
        let output = env.rcache(&python, &["verify"]).output().unwrap();
        // A flip in the schema's own text leaves nothing SQLite can open.
        if code(&output) == 2 {
            let message = stderr(&output);
            assert!(
                message.contains("cannot even open it"),
                "trial {trial}: {message}"
            );
            unopenable += 1;
            continue;
        }
        assert!(
            matches!(code(&output), 0 | 1),
            "trial {trial}: {}",
            stderr(&output)
        );
        found += usize::from(code(&output) == 1);
        repair_until_clean(&env, &python, &format!("trial {trial}"));
    }
    eprintln!(
        "random flips: {trials} trials, {found} found something and were repaired, {unopenable} left a schema SQLite cannot open"
    );
    covered("random_flips_never_crash_verify", &[python]);
}

/// `verify` of a file that is not a store, or of a store from a newer
/// rcache, cannot run: exit 2, file untouched.
#[test]
fn verify_of_what_is_not_a_store_exits_2() {
    let python = any_python();
    let env = TestEnv::new();
    let not_a_store = env.write(
        "store/store.sqlite3",
        "just text, long enough to be a header ".repeat(4),
    );
    let before = std::fs::read(&not_a_store).unwrap();
    let output = env.rcache(&python, &["verify"]).output().unwrap();
    assert_eq!(code(&output), 2, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not an rcache store"),
        "{}",
        stderr(&output)
    );
    assert_eq!(std::fs::read(&not_a_store).unwrap(), before);
    covered("verify_of_what_is_not_a_store_exits_2", &[python]);
}
