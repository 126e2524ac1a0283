//! The store file: where it lives, what it refuses, and how it holds up to
//! being copied alone. Many processes at once and `kill -9`: `crash.rs`.

use std::path::Path;

use rusqlite::Connection;

use crate::support::{
    TestEnv, any_python, code, covered, module_source, pythons, rcache_command, run_json, stderr,
};

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A file at the store path that is no database, another program's
/// database, a store from a newer rcache, or a store cut short is refused
/// by `warm` and `stats` with exit 2 and a message naming it, and left
/// byte for byte.
#[test]
fn foreign_and_newer_files_are_refused_untouched() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let not_sqlite = env.write(
        "stores/not_sqlite.sqlite3",
        "a text file that happens to sit where the store should be\n".repeat(40),
    );
    let short = env.write("stores/short.sqlite3", "hello\n");
    let foreign = env.path().join("stores/foreign.sqlite3");
    Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('mine');")
        .unwrap();
    let newer = env.path().join("stores/newer.sqlite3");
    let output = rcache_command(env.path())
        .arg("--store")
        .arg(&newer)
        .arg("--python")
        .arg(&python.path)
        .args(["warm", "a.py"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    {
        let conn = Connection::open(&newer).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .unwrap();
        assert!(version > 0, "a store counts its migrations");
        conn.pragma_update(None, "user_version", version + 1)
            .unwrap();
    }

    // A real store cut short, as a copy that ran out of space leaves it.
    let truncated = env.path().join("stores/truncated.sqlite3");
    let (_, output) = crate::support::run_json(
        rcache_command(env.path())
            .arg("--store")
            .arg(&truncated)
            .arg("--python")
            .arg(&python.path)
            .args(["--json", "warm", "a.py"]),
    );
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let whole = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();

    for (path, why) in [
        (&not_sqlite, "not"),
        (&short, "not"),
        (&foreign, "not"),
        (&newer, "newer"),
        (&truncated, "truncated"),
    ] {
        let before = std::fs::read(path).unwrap();
        for args in [&["warm", "a.py"][..], &["stats"]] {
            let output = rcache_command(env.path())
                .arg("--store")
                .arg(path)
                .arg("--python")
                .arg(&python.path)
                .args(args)
                .output()
                .unwrap();
            let text = stderr(&output);
            assert_eq!(code(&output), 2, "{}: {args:?}: {text}", path.display());
            assert!(
                text.contains(&path.display().to_string()),
                "names the file: {text}"
            );
            assert!(
                text.contains(why) && text.contains("store"),
                "says why: {text}"
            );
            assert!(output.stdout.is_empty(), "{args:?}");
            assert_eq!(
                std::fs::read(path).unwrap(),
                before,
                "{}: {args:?} changed the file",
                path.display()
            );
        }
    }
    covered("foreign_and_newer_files_are_refused_untouched", &[python]);
}

/// `RCACHE_STORE` works like `--store` (which wins over it); without
/// either, the store is `$XDG_CACHE_HOME/rcache/store.sqlite3`, else
/// `~/.cache/rcache/store.sqlite3`, created private: directory 0700, file
/// 0600.
#[test]
fn store_location_from_flag_environment_and_cache_dir() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let home = env.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let warm = |configure: &dyn Fn(&mut std::process::Command)| {
        let mut command = rcache_command(env.path());
        command
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .arg("--python")
            .arg(&python.path)
            .args(["--json", "warm", "a.py"]);
        configure(&mut command);
        let (summary, output) = run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        summary
    };

    let from_env = env.path().join("env-store/store.sqlite3");
    let summary = warm(&|command| {
        command.env("RCACHE_STORE", &from_env);
    });
    assert_eq!(summary["compiled"], 1);
    assert!(from_env.is_file());
    let summary = warm(&|command| {
        command.arg("--store").arg(&from_env);
    });
    assert_eq!(
        summary["hits"], 1,
        "--store and RCACHE_STORE name one store"
    );
    let unused = env.path().join("unused/store.sqlite3");
    let summary = warm(&|command| {
        command
            .env("RCACHE_STORE", &unused)
            .arg("--store")
            .arg(&from_env);
    });
    assert_eq!(summary["hits"], 1, "--store wins over RCACHE_STORE");
    assert!(!unused.exists());

    let xdg = env.path().join("xdg-cache");
    let summary = warm(&|command| {
        command.env("XDG_CACHE_HOME", &xdg);
    });
    assert_eq!(summary["compiled"], 1, "a new store");
    let default = xdg.join("rcache/store.sqlite3");
    assert!(default.is_file(), "{}", default.display());
    assert_eq!(mode(&xdg.join("rcache")), 0o700);
    assert_eq!(mode(&default), 0o600);
    for suffix in ["-wal", "-shm"] {
        let side = xdg.join(format!("rcache/store.sqlite3{suffix}"));
        if side.exists() {
            assert_eq!(mode(&side), 0o600, "{}", side.display());
        }
    }
    assert!(!home.join(".cache").exists());

    let summary = warm(&|_| {});
    assert_eq!(summary["compiled"], 1, "another new store");
    let in_home = home.join(".cache/rcache/store.sqlite3");
    assert!(in_home.is_file());
    assert_eq!(mode(in_home.parent().unwrap()), 0o700);
    assert_eq!(mode(&in_home), 0o600);
    covered(
        "store_location_from_flag_environment_and_cache_dir",
        &[python],
    );
}

/// An empty file named as the store (e.g. made by `mktemp`) becomes a
/// store.
#[test]
fn an_empty_file_becomes_a_store() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    env.write("store/store.sqlite3", "");
    let (summary, output) = env.warm_json(&python, &["a.py"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["compiled"], 1);
    assert_eq!(env.count("entries"), 1);
    covered("an_empty_file_becomes_a_store", &[python]);
}

/// Bytecode from the store is executed, so a store others can write is
/// refused (DESIGN.md, "Store").
#[test]
fn a_store_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let (_, output) = env.warm_json(&python, &["a.py"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let dir = env.store.parent().unwrap();
    for (path, open) in [(dir, 0o777), (env.store.as_path(), 0o666)] {
        let before = mode(path);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(open)).unwrap();
        let output = env.rcache(&python, &["warm", "a.py"]).output().unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(before)).unwrap();
        assert_eq!(code(&output), 2, "{}: {}", path.display(), stderr(&output));
        assert!(
            stderr(&output).contains(&path.display().to_string()),
            "{}",
            stderr(&output)
        );
    }
    covered("a_store_others_can_write_is_refused", &[python]);
}

/// At the end of a run everything is in the `.sqlite3` file itself, even
/// while another connection keeps the WAL alive: a copy of that one file
/// (what CI caches keep) answers a rewarm with hits only, starting no
/// Python.
#[test]
fn copying_the_store_file_alone_loses_nothing() {
    let python = any_python();
    let env = TestEnv::new();
    for index in 0..100 {
        env.write(&format!("src/m{index}.py"), module_source(index));
    }
    env.write("first.py", "FIRST = 1\n");
    let (_, output) = env.warm_json(&python, &["first.py"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    // Another process reading the store keeps SQLite from checkpointing
    // on close: only rcache's own checkpoint empties the WAL.
    let reader = Connection::open(&env.store).unwrap();
    let entries: i64 = reader
        .query_row("SELECT count(*) FROM entries", [], |row| row.get(0))
        .unwrap();
    assert_eq!(entries, 1);
    let (summary, output) = env.warm_json(&python, &["src"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["compiled"], 100);
    let copy = env.path().join("ci-cache/store.sqlite3");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::fs::copy(&env.store, &copy).unwrap();
    drop(reader);

    let mut command = rcache_command(env.path());
    command
        .arg("--store")
        .arg(&copy)
        .arg("--python")
        .arg(&python.path)
        .args(["--json", "warm", "src", "first.py"]);
    let (summary, output) = run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["hits"], 101, "{summary}");
    assert_eq!(summary["compiled"], 0);
    assert_eq!(summary["workers_started"], 0);
    covered("copying_the_store_file_alone_loses_nothing", &[python]);
}

/// The interpreter is probed once per store: a second run whose files all
/// hit logs no probe and starts no Python; another interpreter is probed.
#[test]
fn the_interpreter_profile_is_cached() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let warm = |python: &crate::support::Python| {
        let mut command = env.rcache(python, &["--json", "warm", "a.py"]);
        command.env("RCACHE_LOG", "rcache=debug");
        let (summary, output) = run_json(&mut command);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        (summary, stderr(&output))
    };
    let (first, log) = warm(&python);
    assert!(log.contains("probing interpreter"), "{log}");
    assert_eq!(first["compiled"], 1);
    let (second, log) = warm(&python);
    assert!(!log.contains("probing interpreter"), "{log}");
    assert_eq!(second["workers_started"], 0);
    assert_eq!(second["hits"], 1);

    let mut used = vec![python.clone()];
    if let Some(other) = pythons().iter().find(|other| other.path != python.path) {
        let (_, log) = warm(other);
        assert!(log.contains("probing interpreter"), "{log}");
        used.push(other.clone());
    }
    covered("the_interpreter_profile_is_cached", &used);
}

/// A store left at every earlier schema version (made from the `schema/`
/// files as that rcache made it, with rows in it) is upgraded in place by
/// the next run: the run succeeds, the store reaches the current version,
/// lifetime counters and profiles survive, code survives from version 3 on
/// (keys changed at 3, so older code is dropped by design), and `verify`
/// is clean afterwards.
#[test]
fn stores_from_every_earlier_schema_are_upgraded() {
    let python = any_python();
    let schema_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let mut migrations: Vec<_> = std::fs::read_dir(&schema_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    migrations.sort();
    let current = migrations.len();
    let code_bytes = b"marshal bytes of an older day";
    for version in 1..current {
        let env = TestEnv::new();
        env.write("a.py", "A = 1\n");
        std::fs::create_dir_all(env.store.parent().unwrap()).unwrap();
        {
            let conn = Connection::open(&env.store).unwrap();
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL;")
                .unwrap();
            for migration in &migrations[..version] {
                conn.execute_batch(&std::fs::read_to_string(migration).unwrap())
                    .unwrap();
            }
            conn.execute_batch(&format!(
                "PRAGMA user_version = {version}; PRAGMA application_id = {};
                 INSERT INTO counters (name, value) VALUES ('hits', 41);
                 INSERT INTO profiles (implementation, version, cache_tag, magic, source_hash)
                 VALUES ('cpython', '3.99.0', 'cpython-399', x'00000d0a', 'siphash13');",
                0x7263_6368
            ))
            .unwrap();
            conn.execute(
                "INSERT INTO entries (key, profile_id, optimize, raw_size, checksum, data,
                                      warnings, created, last_used)
                 VALUES (?1, 1, 0, ?2, ?3, ?4, NULL, 1, 1)",
                rusqlite::params![
                    [7u8; 32].as_slice(),
                    code_bytes.len() as i64,
                    blake3::hash(code_bytes).as_bytes().as_slice(),
                    zstd::bulk::compress(code_bytes, 3).unwrap(),
                ],
            )
            .unwrap();
        }
        let (warmed, output) = env.warm_json(&python, &["a.py"]);
        assert_eq!(code(&output), 0, "from {version}: {}", stderr(&output));
        assert_eq!(warmed["compiled"], 1);
        let conn = Connection::open(&env.store).unwrap();
        let read = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(
            read("PRAGMA user_version"),
            current as i64,
            "from {version}"
        );
        assert_eq!(read("SELECT value FROM counters WHERE name = 'hits'"), 41);
        assert_eq!(read("SELECT count(*) FROM profiles"), 2, "from {version}");
        let old_code = read("SELECT count(*) FROM entries WHERE profile_id = 1");
        assert_eq!(old_code, i64::from(version >= 3), "from {version}");
        let output = env.rcache(&python, &["verify"]).output().unwrap();
        assert_eq!(code(&output), 0, "from {version}: {}", stderr(&output));
    }
    eprintln!("upgraded stores from schema versions 1..{current}");
    covered("stores_from_every_earlier_schema_are_upgraded", &[python]);
}
