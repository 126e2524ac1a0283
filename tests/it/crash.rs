//! Many rcache processes on one store at once, and `kill -9` at any moment:
//! every run succeeds without "database is locked", the store always opens
//! and verifies clean, nothing committed is lost, and no half-written pyc
//! ever sits under a final name.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::support::{TestEnv, any_python, code, covered, module_source, stderr};

/// Eight rcache processes (with various `-j`) warming overlapping trees
/// into one new store at once all succeed without "database is locked",
/// and the store ends with exactly one entry per distinct content, one
/// profile, and passes `PRAGMA integrity_check`.
#[test]
fn concurrent_runs_share_one_store() {
    const PROCESSES: usize = 8;
    const DISTINCT: usize = 200;
    const PER_TREE: usize = 100;
    let python = any_python();
    let env = TestEnv::new();
    for tree in 0..PROCESSES {
        for slot in 0..PER_TREE {
            let module = (tree * 25 + slot) % DISTINCT;
            env.write(
                &format!("tree{tree}/pkg{}/m{module}.py", module % 8),
                module_source(module),
            );
        }
    }
    let children: Vec<Child> = (0..PROCESSES)
        .map(|tree| {
            let jobs = (1 + tree % 3).to_string();
            let tree = format!("tree{tree}");
            env.rcache(&python, &["--json", "-j", &jobs, "warm", &tree])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut compiled = 0;
    for (tree, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        let text = stderr(&output);
        assert_eq!(code(&output), 0, "tree{tree}: {text}");
        assert!(
            !text.contains("locked") && !text.contains("busy"),
            "tree{tree}: {text}"
        );
        let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(summary["files"], PER_TREE);
        assert_eq!(summary["failed"], 0);
        let done = summary["compiled"].as_u64().unwrap() + summary["hits"].as_u64().unwrap();
        assert_eq!(done, PER_TREE as u64, "tree{tree}: {summary}");
        compiled += summary["compiled"].as_u64().unwrap();
    }
    assert!(compiled >= DISTINCT as u64);
    assert_eq!(env.count("entries"), DISTINCT as i64);
    assert_eq!(env.count("failures"), 0);
    assert_eq!(env.count("profiles"), 1);
    assert_eq!(env.count("interpreters"), 1);
    assert_eq!(env.integrity(), "ok");
    covered("concurrent_runs_share_one_store", &[python]);
}

/// Entries in the store, or 0 while it has no schema yet.
fn entries_so_far(store: &Path) -> i64 {
    Connection::open(store)
        .and_then(|conn| conn.query_row("SELECT count(*) FROM entries", [], |row| row.get(0)))
        .unwrap_or(0)
}

/// `kill -9` of a warming rcache (early, and again just after it committed
/// a batch) leaves a store that passes `integrity_check`, keeps what was
/// committed, and that the next run completes.
#[test]
fn the_store_survives_kill_9() {
    const FILES: usize = 400;
    let python = any_python();
    let env = TestEnv::new();
    for index in 0..FILES {
        env.write(
            &format!("src/pkg{}/m{index}.py", index % 10),
            module_source(index),
        );
    }
    let start = || {
        env.rcache(&python, &["-j", "1", "warm", "src"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };

    let mut early = start();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        early.try_wait().unwrap().is_none(),
        "still warming when killed"
    );
    early.kill().unwrap();
    early.wait().unwrap();
    assert_eq!(env.integrity(), "ok");

    let mut late = start();
    let deadline = Instant::now() + Duration::from_secs(20);
    while entries_so_far(&env.store) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        late.try_wait().unwrap().is_none(),
        "still warming when killed"
    );
    late.kill().unwrap();
    late.wait().unwrap();
    assert_eq!(env.integrity(), "ok");
    let kept = env.count("entries");
    assert!(kept > 0 && kept < FILES as i64, "{kept} entries");

    let (summary, output) = env.warm_json(&python, &["src"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["files"], FILES);
    assert!(
        summary["hits"].as_i64().unwrap() >= kept,
        "committed work is kept: {summary}"
    );
    assert_eq!(
        summary["hits"].as_u64().unwrap() + summary["compiled"].as_u64().unwrap(),
        FILES as u64
    );
    assert_eq!(env.count("entries"), FILES as i64);
    assert_eq!(env.integrity(), "ok");
    covered("the_store_survives_kill_9", &[python]);
}
