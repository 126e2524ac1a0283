//! Who may use a store and how: stores others could have written are
//! refused (run as `nobody`, since root passes every permission check), a
//! store this user cannot write still serves hits (a root-owned store, a
//! read-only mount), and a full disk is a clear error that loses nothing.

use std::path::{Path, PathBuf};

use crate::support::{
    Mount, NOBODY, Python, TestEnv, any_python, code, copy_tree, covered, run_json, stderr,
    system_python, unprivileged,
};

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// Small modules `m0.py`… under `dir`.
fn write_modules(dir: &Path, count: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for index in 0..count {
        std::fs::write(
            dir.join(format!("m{index}.py")),
            format!("VALUE = {index}\n\ndef get():\n    return VALUE\n"),
        )
        .unwrap();
    }
}

/// The store file, its directory listing and the store's bytes: what must
/// not change when a store is refused or only read.
fn snapshot(store: &Path) -> (Vec<PathBuf>, Vec<u8>) {
    let mut listing: Vec<_> = std::fs::read_dir(store.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    listing.sort();
    (listing, std::fs::read(store).unwrap())
}

/// Puts a store (dir, file, `-wal`) in the state one case needs, for a
/// user other than the one running the test.
type Setup = fn(&Path, &Path, &Path, u32);

fn the_python_for_nobody() -> Option<Python> {
    let python = system_python();
    if python.is_none() {
        eprintln!("no /usr/bin/python3.X that an unprivileged user can run: skipped");
    }
    python
}

/// Run as `nobody`: a store owned by another user, one the group can
/// write, one in a directory others can write, and one whose `-wal` file
/// belongs to another user are each refused with exit 2, a message naming
/// the file and the reason, and left as they were.
#[test]
fn stores_others_could_have_written_are_refused() {
    let Some(python) = the_python_for_nobody() else {
        return;
    };
    let env = TestEnv::new();
    env.share_with_nobody();
    write_modules(&env.path().join("src"), 2);
    let output = unprivileged(&env.rcache(&python, &["warm", "src"]))
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let dir = env.store.parent().unwrap();
    let wal = PathBuf::from(format!("{}-wal", env.store.display()));
    let other_user = 4242;
    let cases: [(&str, &str, Setup); 4] = [
        (
            "owned by another user (uid 4242)",
            "its directory",
            |dir, store, _, other| {
                chmod(dir, 0o755);
                chmod(store, 0o644);
                chown(dir, other);
                chown(store, other);
            },
        ),
        (
            "writable by others (mode 664",
            "its file",
            |_, store, _, _| {
                chmod(store, 0o664);
            },
        ),
        (
            "writable by others (mode 770",
            "its directory",
            |dir, _, _, _| {
                chmod(dir, 0o770);
            },
        ),
        (
            "owned by another user (uid 4242)",
            "its WAL file",
            |_, _, wal, other| {
                std::fs::write(wal, b"").unwrap();
                chmod(wal, 0o600);
                chown(wal, other);
            },
        ),
    ];
    for (reason, names, setup) in cases {
        chmod(dir, 0o700);
        chown(dir, NOBODY);
        chmod(&env.store, 0o600);
        chown(&env.store, NOBODY);
        let _ = std::fs::remove_file(&wal);
        setup(dir, &env.store, &wal, other_user);
        let before = snapshot(&env.store);
        let command = env.rcache(&python, &["warm", "src"]);
        let output = unprivileged(&command).output().unwrap();
        let message = stderr(&output);
        assert_eq!(code(&output), 2, "{reason}: {message}");
        assert!(
            message.contains(reason) && message.contains(names) && message.contains("refusing"),
            "{reason}: {message}"
        );
        assert_eq!(snapshot(&env.store), before, "{reason}: touched");
    }
    let _ = std::fs::remove_file(&wal);
    covered("stores_others_could_have_written_are_refused", &[python]);
}

/// A store baked into an image by root (0755 dir, 0644 file), used by
/// another user: `materialize` serves every stored file from it, compiles
/// the one it lacks, says once that it stores nothing, exits 0, and writes
/// the very pycs a writable copy of the store gives; `rcache exec` runs
/// from it. The store and its directory are left byte for byte.
#[test]
fn a_root_owned_store_serves_other_users_read_only() {
    let Some(python) = the_python_for_nobody() else {
        return;
    };
    let env = TestEnv::new();
    chmod(env.path(), 0o755);
    let src = env.path().join("src");
    write_modules(&src, 5);
    let (_, output) = env.warm_json(&python, &["src"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let dir = env.store.parent().unwrap();
    chown(dir, 0);
    chmod(dir, 0o755);
    chmod(&env.store, 0o644);
    let before = snapshot(&env.store);

    // The user's own checkout, with one file the store has never seen.
    let checkout = env.path().join("checkout");
    copy_tree(&src, &checkout);
    std::fs::write(checkout.join("new.py"), "NEW = 1\n").unwrap();
    std::fs::write(
        checkout.join("main.py"),
        "import m0, m4, new\nprint(m0.get() + m4.get() + new.NEW)\n",
    )
    .unwrap();
    for path in walk(&checkout) {
        chown(&path, NOBODY);
    }
    let command = env.rcache(
        &python,
        &[
            "--json",
            "materialize",
            "--mode",
            "checked-hash",
            "checkout",
        ],
    );
    let (summary, output) = run_json(&mut unprivileged(&command));
    let message = stderr(&output);
    assert_eq!(code(&output), 0, "{message}");
    assert_eq!(message.matches("read-only").count(), 1, "{message}");
    assert!(message.contains("storing nothing"), "{message}");
    assert_eq!(
        (summary["hits"].as_u64(), summary["compiled"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(summary["written"], 7, "{summary}");

    let mut exec = env.rcache(&python, &["exec", "main.py"]);
    exec.current_dir(&checkout)
        .env("XDG_RUNTIME_DIR", env.path().join("runtime"));
    std::fs::create_dir_all(env.path().join("runtime")).unwrap();
    chown(&env.path().join("runtime"), NOBODY);
    let output = unprivileged(&exec).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "5\n");
    assert_eq!(snapshot(&env.store), before, "the read-only store changed");

    // The same pycs as from a store root can write.
    let writable = TestEnv::new();
    let copy = writable.path().join("checkout");
    copy_tree(&checkout, &copy);
    let _ = std::fs::remove_dir_all(copy.join("__pycache__"));
    let output = writable
        .rcache(
            &python,
            &["materialize", "--mode", "checked-hash", "checkout"],
        )
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let pycs = walk(&copy.join("__pycache__"));
    assert_eq!(pycs.len(), 8, "the dir and 7 pycs");
    // Temp dirs' names have one length: put one path in place of the other.
    let (here, there) = (env.path().as_os_str(), writable.path().as_os_str());
    assert_eq!(here.len(), there.len());
    for pyc in pycs.iter().skip(1) {
        let name = pyc.file_name().unwrap();
        let ours = std::fs::read(checkout.join("__pycache__").join(name)).unwrap();
        let mut theirs = std::fs::read(pyc).unwrap();
        let at = memchr::memmem::find(&theirs, there.as_encoded_bytes()).unwrap();
        theirs[at..at + there.len()].copy_from_slice(here.as_encoded_bytes());
        assert_eq!(ours, theirs, "{}", pyc.display());
    }
    covered("a_root_owned_store_serves_other_users_read_only", &[python]);
}

/// Every file under `dir`, `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![dir.to_owned()];
    let mut index = 0;
    while index < found.len() {
        if found[index].is_dir() {
            let mut children: Vec<_> = std::fs::read_dir(&found[index])
                .unwrap()
                .map(|entry| entry.unwrap().path())
                .collect();
            children.sort();
            found.extend(children);
        }
        index += 1;
    }
    found
}

/// A store on a file system remounted read-only serves `warm`,
/// `materialize` and `exec` (exit 0, one warning each), and the mount is
/// left as it was.
#[test]
fn a_store_on_a_read_only_mount_serves_hits() {
    let python = any_python();
    let env = TestEnv::new();
    let Some(mount) = Mount::tmpfs(&env.path().join("mnt"), "8m") else {
        return;
    };
    let store = mount.path().join("rcache/store.sqlite3");
    write_modules(&env.path().join("src"), 4);
    let rcache = |args: &[&str]| env.rcache_with_store(&store, &python, args);
    let (_, output) = run_json(&mut rcache(&["--json", "warm", "src"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    mount.remount_read_only();
    let before = snapshot(&store);
    std::fs::write(env.path().join("src/new.py"), "NEW = 1\n").unwrap();

    let (warmed, output) = run_json(&mut rcache(&["--json", "warm", "src"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        stderr(&output).matches("read-only").count(),
        1,
        "{}",
        stderr(&output)
    );
    assert_eq!(
        (warmed["hits"].as_u64(), warmed["compiled"].as_u64()),
        (Some(4), Some(1))
    );
    let (written, output) = run_json(&mut rcache(&["--json", "materialize", "src"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(written["written"], 5, "{written}");
    std::fs::write(
        env.path().join("main.py"),
        "import sys\nsys.path.insert(0, 'src')\nimport m3, new\nprint(m3.get(), new.NEW)\n",
    )
    .unwrap();
    let output = rcache(&["exec", "main.py"])
        .env("XDG_RUNTIME_DIR", env.path())
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "3 1\n");
    assert!(
        stderr(&output).starts_with("rcache: warning: the store"),
        "{}",
        stderr(&output)
    );
    assert_eq!(snapshot(&store), before, "the read-only mount changed");
    covered("a_store_on_a_read_only_mount_serves_hits", &[python]);
}

/// A store on a full file system: a warm that cannot store its results
/// fails with exit 2 and a message saying the disk is full; the store still
/// opens, passes `integrity_check` and keeps every entry stored before.
/// pycs that do not fit are reported per file (exit 1), and neither a
/// truncated pyc nor a temp file is left behind.
#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    let python = any_python();
    let env = TestEnv::new();
    let Some(mount) = Mount::tmpfs(&env.path().join("mnt"), "1m") else {
        return;
    };
    let store = mount.path().join("rcache/store.sqlite3");
    let rcache = |args: &[&str]| env.rcache_with_store(&store, &python, args);
    write_modules(&env.path().join("small"), 5);
    let (_, output) = run_json(&mut rcache(&["--json", "warm", "small"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let kept = crate::support::blobs(&store);
    assert_eq!(kept.len(), 5);

    // Code that compresses badly: far more than the file system holds.
    let big = env.path().join("big");
    std::fs::create_dir_all(&big).unwrap();
    for index in 0..60 {
        let noise: String = (0..4000u64)
            .map(|n| format!("{:x}", (n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(
            big.join(format!("b{index}.py")),
            format!("DATA = '{noise}'\n"),
        )
        .unwrap();
    }
    let output = rcache(&["warm", "big"]).output().unwrap();
    let message = stderr(&output);
    assert_eq!(code(&output), 2, "{message}");
    assert!(
        message.contains("is full") && message.contains("intact"),
        "{message}"
    );

    let (stats, output) = run_json(&mut rcache(&["--json", "stats"]));
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let integrity: String = rusqlite::Connection::open(&store)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let now = crate::support::blobs(&store);
    assert!(
        kept.iter().all(|(key, code)| now.get(key) == Some(code)),
        "{stats}"
    );

    // pycs onto a full file system, from a store elsewhere: each pyc
    // that does not fit is reported; every pyc there is whole.
    let reference = env.path().join("small");
    let output = env
        .rcache(&python, &["materialize", "--mode", "checked-hash", "small"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let Some(full) = Mount::tmpfs(&env.path().join("full"), "256k") else {
        return;
    };
    let tree = full.path().join("tree");
    copy_tree(&reference, &tree);
    let _ = std::fs::remove_dir_all(tree.join("__pycache__"));
    // Fills what is left (the write itself fails part way).
    let _ = std::fs::write(full.path().join("filler"), vec![0u8; 1 << 20]);
    let command = &mut env.rcache(
        &python,
        &["--json", "materialize", "--mode", "checked-hash"],
    );
    let (summary, output) = run_json(command.arg(&tree));
    assert_eq!(code(&output), 1, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("No space left"),
        "{}",
        stderr(&output)
    );
    assert_eq!(summary["failed"], 5, "{summary}");
    for path in walk(&tree) {
        let name = path.file_name().unwrap();
        assert!(
            !name.to_string_lossy().ends_with(".tmp"),
            "left: {}",
            path.display()
        );
        if path.extension().is_some_and(|ext| ext == "pyc") {
            let whole = std::fs::read(reference.join("__pycache__").join(name)).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), whole, "{}", path.display());
        }
    }
    covered("a_full_disk_is_a_clear_error_and_loses_nothing", &[python]);
}
