//! `rcache gc` and the automatic size limit: least recently used code goes
//! first, the file gives the space back, other processes keep working, and
//! records of files and interpreters that are gone are forgotten.

use std::collections::BTreeSet;
use std::path::Path;

use rusqlite::{Connection, params};

use crate::support::{
    KeyParams, Python, TestEnv, any_python, code, covered, hex, pythons_from, run_json, stderr,
};

/// `count` modules under `dir` whose code compresses badly (noise, as a
/// hex string of `2 * size` characters), seeded by `seed`.
fn write_noisy_modules(dir: &Path, count: usize, size: usize, seed: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for index in 0..count {
        let mut noise = vec![0; size];
        blake3::Hasher::new()
            .update(&[seed, index as u8])
            .finalize_xof()
            .fill(&mut noise);
        std::fs::write(
            dir.join(format!("m{index}.py")),
            format!("DATA = bytes.fromhex('{}')\n", hex(&noise)),
        )
        .unwrap();
    }
}

/// The keys (hex) of every `.py` directly under `dir`, at level 0.
fn keys_of(python: &Python, dir: &Path) -> BTreeSet<String> {
    let params = KeyParams::of(python);
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "py"))
        .map(|path| hex(&params.key(0, &std::fs::read(path).unwrap()).0))
        .collect()
}

fn stored_keys(store: &Path) -> BTreeSet<String> {
    crate::support::blobs(store).into_keys().collect()
}

/// Moves the last use of every entry of `keys` back by `days`.
fn age(store: &Path, keys: &BTreeSet<String>, days: i64) {
    let conn = Connection::open(store).unwrap();
    for key in keys {
        conn.execute(
            "UPDATE entries SET last_used = last_used - ?1 WHERE hex(key) = upper(?2)",
            params![days * 86_400, key],
        )
        .unwrap();
    }
}

/// `rcache verify` finds nothing wrong.
fn assert_verifies_clean(env: &TestEnv, python: &Python) {
    let output = env.rcache(python, &["verify"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Two trees, one last used 40 days ago: `gc --dry-run` says what it
/// would do and changes nothing; `gc --max-size` evicts the old tree's
/// code first, stops once the store fits, and the file shrinks (the space
/// goes back to the file system); `--max-age` evicts by age alone; the
/// next warm compiles exactly what was evicted.
#[test]
fn gc_evicts_least_recently_used_first_and_shrinks_the_file() {
    let python = any_python();
    let env = TestEnv::new();
    write_noisy_modules(&env.path().join("old"), 12, 16_384, 1);
    write_noisy_modules(&env.path().join("new"), 12, 16_384, 2);
    for tree in ["old", "new"] {
        let (_, output) = env.warm_json(&python, &[tree]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    }
    let (old, new) = (
        keys_of(&python, &env.path().join("old")),
        keys_of(&python, &env.path().join("new")),
    );
    age(&env.store, &old, 40);
    let size_before = file_size(&env.store);
    let blobs_before = env.blobs();

    // Room for the new tree (16 KiB of code each) and the tables, not for
    // the old one too.
    let limit = (size_before / 2 + 100_000).to_string();
    let (dry, output) = run_json(&mut env.rcache(
        &python,
        &["--json", "gc", "--dry-run", "--max-size", &limit],
    ));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(dry["dry_run"], true);
    assert!(dry["entries_removed"].as_u64().unwrap() >= 5, "{dry}");
    assert_eq!(env.blobs(), blobs_before, "a dry run removed something");
    assert_eq!(file_size(&env.store), size_before);

    let (done, output) =
        run_json(&mut env.rcache(&python, &["--json", "gc", "--max-size", &limit]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // The dry run plans from estimates; the real one measures again.
    assert!(
        done["entries_removed"].as_u64() >= dry["entries_removed"].as_u64(),
        "{done}"
    );
    let left = stored_keys(&env.store);
    assert!(
        new.is_subset(&left),
        "recently used code was evicted: {done}"
    );
    assert!(left.len() < old.len() + new.len());
    let size_after = file_size(&env.store);
    assert!(
        size_after <= limit.parse().unwrap(),
        "{size_after} > {limit}"
    );
    assert_eq!(done["bytes_after"].as_u64(), Some(size_after), "{done}");
    assert!(size_after < size_before, "{size_before} -> {size_after}");
    assert_verifies_clean(&env, &python);

    // What is left of the old tree goes by age; nothing recent does.
    let (by_age, output) =
        run_json(&mut env.rcache(&python, &["--json", "gc", "--max-age", "30d"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stored_keys(&env.store), new, "{by_age}");
    let (warmed, output) = env.warm_json(&python, &["old", "new"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        (warmed["compiled"].as_u64(), warmed["hits"].as_u64()),
        (Some(12), Some(12))
    );
    covered(
        "gc_evicts_least_recently_used_first_and_shrinks_the_file",
        &[python],
    );
}

/// With `RCACHE_MAX_SIZE` (or `--max-size`) below what a run stores, the
/// run itself evicts least recently used code afterwards and leaves the
/// store under the limit, with room to grow before the next eviction.
#[test]
fn the_size_limit_is_enforced_after_each_run() {
    let python = any_python();
    let env = TestEnv::new();
    write_noisy_modules(&env.path().join("a"), 10, 16_384, 3);
    write_noisy_modules(&env.path().join("b"), 10, 16_384, 4);
    let (_, output) = env.warm_json(&python, &["a"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let first = stored_keys(&env.store);
    age(&env.store, &first, 2);
    let limit = file_size(&env.store) + 60_000;
    let mut command = env.rcache(&python, &["--json", "warm", "b"]);
    command.env("RCACHE_MAX_SIZE", limit.to_string());
    let (warmed, output) = run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(warmed["compiled"], 10);
    let size = file_size(&env.store);
    assert!(size <= limit, "{size} > {limit}");
    let left = stored_keys(&env.store);
    assert!(keys_of(&python, &env.path().join("b")).is_subset(&left));
    assert!(!first.is_subset(&left), "the older tree's code went first");
    covered("the_size_limit_is_enforced_after_each_run", &[python]);
}

/// `gc` while four other rcache processes warm into the same store: all
/// succeed, nobody sees "database is locked", and the store passes
/// `integrity_check` afterwards.
#[test]
fn gc_runs_while_others_keep_working() {
    let python = any_python();
    let env = TestEnv::new();
    for seed in 0..4 {
        write_noisy_modules(&env.path().join(format!("t{seed}")), 20, 4096, 10 + seed);
    }
    let (_, output) = env.warm_json(&python, &["t0"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let mut warms: Vec<_> = (1..4)
        .map(|seed| {
            env.rcache(&python, &["-j1", "warm", &format!("t{seed}")])
                .spawn()
                .unwrap()
        })
        .collect();
    let gcs: Vec<_> = ["100K", "50K", "0"]
        .iter()
        .map(|size| {
            env.rcache(&python, &["gc", "--max-size", size])
                .output()
                .unwrap()
        })
        .collect();
    for output in &gcs {
        assert_eq!(code(output), 0, "{}", stderr(output));
        assert!(!stderr(output).contains("locked"), "{}", stderr(output));
    }
    for warm in &mut warms {
        let output = warm.wait().unwrap();
        assert!(output.success());
    }
    assert_verifies_clean(&env, &python);
    covered("gc_runs_while_others_keep_working", &[python]);
}

/// `gc` forgets what the store recorded about files that are gone (source
/// records, pycs written); with `--forget-missing-pythons` it also drops an
/// interpreter that was deleted and the code of its profile, while the code
/// of interpreters still installed stays.
#[test]
fn gc_forgets_files_and_interpreters_that_are_gone() {
    let installed = pythons_from(11);
    let [kept, copied, ..] = installed.as_slice() else {
        eprintln!("fewer than two CPython 3.11+ installed: skipped");
        return;
    };
    let env = TestEnv::new();
    env.write("src/a.py", "A = 1\n");
    env.write("src/b.py", "B = 2\n");
    // An interpreter that will be uninstalled: a copy of a real binary.
    let copy = env
        .path()
        .join("gone/bin")
        .join(copied.path.file_name().unwrap());
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&copied.path, &copy).unwrap();
    let mut gone = copied.clone();
    gone.path = copy.clone();
    for python in [kept, &gone] {
        let output = env
            .rcache(python, &["materialize", "src"])
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{}", stderr(&output));
    }
    // b.py and its pycs are deleted, as a branch switch would.
    std::fs::remove_file(env.path().join("src/b.py")).unwrap();
    for pyc in std::fs::read_dir(env.path().join("src/__pycache__")).unwrap() {
        let pyc = pyc.unwrap().path();
        if pyc.file_name().unwrap().to_string_lossy().starts_with("b.") {
            std::fs::remove_file(pyc).unwrap();
        }
    }
    std::fs::remove_file(&copy).unwrap();
    let records = (env.count("sources"), env.count("written_pycs"));

    let (plain, output) = run_json(&mut env.rcache(kept, &["--json", "gc"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    // b.py's two pycs' records (one per interpreter), and its source
    // record if the store kept one (not for a file written within 0.1 s of
    // being read).
    let (sources_gone, written_gone) = (
        records.0 - env.count("sources"),
        records.1 - env.count("written_pycs"),
    );
    assert_eq!(written_gone, 2, "{plain}");
    assert!(sources_gone <= 1, "{plain}");
    assert_eq!(
        plain["records_removed"],
        sources_gone + written_gone,
        "{plain}"
    );
    assert_eq!(
        env.count("entries"),
        4,
        "no code goes without a limit or age"
    );

    let (forgot, output) =
        run_json(&mut env.rcache(kept, &["--json", "gc", "--forget-missing-pythons"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(forgot["forgotten"]["interpreters"], 1, "{forgot}");
    assert_eq!(forgot["forgotten"]["profiles"], 1, "{forgot}");
    assert_eq!(forgot["entries_removed"], 2, "{forgot}");
    assert_eq!(env.count("entries"), 2);
    assert_eq!(env.count("profiles"), 1);
    let (again, output) = env.warm_json(kept, &["src"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(again["hits"], 1, "the installed interpreter's code stayed");
    covered(
        "gc_forgets_files_and_interpreters_that_are_gone",
        &[kept.clone(), copied.clone()],
    );
}
