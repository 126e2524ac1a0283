//! Many rcache processes on one store at once, and `kill -9` at any moment:
//! every run succeeds without "database is locked", the store always opens
//! and verifies clean, nothing committed is lost, and no half-written pyc
//! ever sits under a final name.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};

use crate::exec::{Exec, wait_until_gone};
use crate::materialize::loader_problems;
use crate::support::{
    KeyParams, Python, TestEnv, any_python, blobs, code, copy_tree, covered, hex, module_source,
    py_files, snapshot, stderr, stdlib_dir,
};

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
    verify_store(&env.store);
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
    verify_store(&env.store);

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
    verify_store(&env.store);
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

/// Packages of the real standard library copied into three trees of
/// [`warm_materialize_and_exec_at_once`] (80 files on 3.12).
const STDLIB_SLICE: &[&str] = &[
    "json", "email", "http", "urllib", "logging", "xml", "html", "wsgiref",
];

/// Eleven rcache processes started at once on one store and overlapping
/// trees (each holds 120 of 300 shared contents, 15 of its own, and three
/// hold a copy of part of the standard library): four `warm` (`-j` 1, 2, 3
/// and the default), three `materialize` into their own trees (one in
/// checked-hash mode), two `materialize` into the same tree, and two
/// `rcache exec` of a program importing every module of its tree. All exit
/// 0 and nothing they say (their servers' logs included) speaks of a locked
/// or busy database; afterwards the key of every source of every tree is in
/// the store, the store verifies clean, every pyc of the materialized trees
/// is one CPython accepts, the other trees got none, and no temp file is
/// left.
#[test]
fn warm_materialize_and_exec_at_once() {
    let runs: &[(&str, &[&str])] = &[
        ("warm0", &["-j", "1", "warm"]),
        ("warm1", &["-j", "2", "warm"]),
        ("warm2", &["-j", "3", "warm"]),
        ("warm3", &["warm"]),
        ("materialize0", &["-j", "1", "materialize"]),
        ("materialize1", &["-j", "2", "materialize"]),
        ("materialize2", &["materialize", "--mode", "checked-hash"]),
        ("same", &["-j", "1", "materialize"]),
        ("same", &["-j", "2", "materialize"]),
        ("exec0", &["exec", "main.py"]),
        ("exec1", &["exec", "main.py"]),
    ];
    let python = any_python();
    let lab = Lab::new(&python);
    let trees: BTreeSet<&str> = runs.iter().map(|(tree, _)| *tree).collect();
    write_mixed_trees(&lab, &trees, &["warm0", "materialize0", "same"]);

    let started: Vec<(&str, &[&str], Child)> = runs
        .iter()
        .map(|&(tree, args)| {
            let mut command = if args[0] == "exec" {
                let mut command = lab.rcache(args);
                command
                    .current_dir(lab.tree(tree))
                    .env("RCACHE_LOG", "rcache=warn");
                command
            } else {
                lab.rcache(&[&["--json"], args, &[tree]].concat())
            };
            let child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (tree, args, child)
        })
        .collect();
    for (tree, args, child) in started {
        check_mixed_run(&lab, tree, args, child);
    }

    verify_store(lab.store());
    let stored = stored_keys(lab.store());
    let key_params = KeyParams::of(&python);
    let expected: BTreeSet<Vec<u8>> = trees
        .iter()
        .flat_map(|tree| py_files(&lab.tree(tree)))
        .map(|source| {
            key_params
                .key(0, &std::fs::read(source).unwrap())
                .0
                .to_vec()
        })
        .collect();
    let lost: Vec<String> = expected.difference(&stored).map(|key| hex(key)).collect();
    assert!(
        lost.is_empty(),
        "{} of {} keys lost: {lost:?}",
        lost.len(),
        expected.len()
    );
    assert_eq!(lab.kit.env.count("profiles"), 1);
    for &tree in &trees {
        let pycaches = Pycaches::under(&lab.tree(tree), &lab.cache_tag);
        if runs
            .iter()
            .any(|(name, args)| *name == tree && args.contains(&"materialize"))
        {
            assert!(pycaches.strays.is_empty(), "{tree}: {:?}", pycaches.strays);
            let sources = py_files(&lab.tree(tree));
            let problems = loader_problems(&python, &sources.iter().collect::<Vec<_>>());
            assert!(problems.is_empty(), "{tree}: {problems}");
        } else {
            assert!(pycaches.is_empty(), "{tree} got pycs");
        }
    }
    let temps = temp_files(lab.root());
    assert!(temps.is_empty(), "temp files left: {temps:?}");
    eprintln!(
        "crash::warm_materialize_and_exec_at_once: {} rcache processes at once, {} keys expected, all in the store ({} entries), 0 lost",
        runs.len(),
        expected.len(),
        stored.len()
    );
    covered("crash::warm_materialize_and_exec_at_once", &[python]);
}

/// Modules each tree of the mixed run holds from the shared contents, how
/// many contents there are, and how many of its own it adds.
const PER_TREE: usize = 120;
const SHARED: usize = 300;
const OWN: usize = 15;

/// Writes the trees of [`warm_materialize_and_exec_at_once`]: overlapping
/// windows of the shared contents and some of each tree's own; an `exec`
/// tree also gets a `main.py` importing them all, and those named in
/// `with_stdlib` a copy of [`STDLIB_SLICE`].
fn write_mixed_trees(lab: &Lab, trees: &BTreeSet<&str>, with_stdlib: &[&str]) {
    let stdlib = stdlib_dir(lab.python());
    for (index, &tree) in trees.iter().enumerate() {
        let mut modules: Vec<Module> = (0..PER_TREE)
            .map(|slot| {
                let content = (index * 37 + slot) % SHARED;
                Module::new("common", content, module_source(content))
            })
            .collect();
        modules
            .extend((0..OWN).map(|own| Module::new("own", own, tagged_source(SHARED + own, tree))));
        lab.write_modules(tree, &modules);
        if tree.starts_with("exec") {
            lab.write(&format!("{tree}/main.py"), &main_program(&modules, None));
        }
        if with_stdlib.contains(&tree) {
            for package in STDLIB_SLICE {
                copy_tree(&stdlib.join(package), &lab.tree(tree).join(package));
            }
        }
    }
}

/// Waits for one run of the mixed test and checks it: exit 0, no word of
/// locks; `warm` and `materialize` did every file (`--json`); `exec` ran
/// the program to its end, and its server finished without a warning.
fn check_mixed_run(lab: &Lab, tree: &str, args: &[&str], child: Child) {
    let socket = lab.kit.socket_of(child.id());
    let output = child.wait_with_output().unwrap();
    let text = stderr(&output);
    assert_eq!(code(&output), 0, "{tree} {args:?}: {text}");
    assert!(!speaks_of_locks(&text), "{tree} {args:?}: {text}");
    if args[0] == "exec" {
        assert!(text.is_empty(), "{tree}: {text}");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(stdout.trim(), (PER_TREE + OWN).to_string(), "{tree}");
        wait_until_gone(&socket);
        // The server has no stderr: its warnings go to this log.
        let log = std::fs::read_to_string(socket.with_extension("log")).unwrap();
        assert!(log.is_empty(), "{tree}'s server: {log}");
        return;
    }
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let files = py_files(&lab.tree(tree)).len() as u64;
    assert_eq!(summary["files"], files, "{tree}: {summary}");
    assert_eq!(summary["failed"], 0, "{tree}: {summary}");
    let done = summary["compiled"].as_u64().unwrap() + summary["hits"].as_u64().unwrap();
    assert_eq!(done, files, "{tree}: {summary}");
    if args.contains(&"materialize") {
        let pycs = summary["written"].as_u64().unwrap() + summary["up_to_date"].as_u64().unwrap();
        assert_eq!(pycs, files, "{tree}: {summary}");
    }
}

/// Whether rcache's output speaks of SQLite's lock contention.
fn speaks_of_locks(text: &str) -> bool {
    let text = text.to_lowercase();
    text.contains("locked") || text.contains("busy")
}

/// A generated module: where it sits in its tree, its dotted name, its
/// source.
struct Module {
    path: String,
    import: String,
    source: String,
}

impl Module {
    /// Module `index` of package `dir` (`DIR/pkgN/mINDEX.py`).
    fn new(dir: &str, index: usize, source: String) -> Self {
        let import = format!("{dir}.pkg{}.m{index:03}", index % 8);
        Self {
            path: format!("{}.py", import.replace('.', "/")),
            import,
            source,
        }
    }
}

/// [`module_source`] of `index`, made distinct by `tag`, and a class (more
/// to compile, and a bigger pyc to write).
fn tagged_source(index: usize, tag: &str) -> String {
    format!(
        r#"{}TAG = {tag:?}


class Thing{index}:
    """Something to compile."""

    def __init__(self, count):
        self.count = count

    def doubled(self):
        return [item * 2 for item in range(self.count) if item % 3]

    def table(self):
        return {{str(key): key ** 2 for key in range(VALUE % 7)}}

    def __repr__(self):
        return f"Thing{index}({{self.count!r}}, {{TAG}})"
"#,
        module_source(index)
    )
}

/// A program importing every one of `modules` (finding some in `shared`,
/// when given), then printing their number.
fn main_program(modules: &[Module], shared: Option<&Path>) -> String {
    let mut program = String::new();
    if let Some(shared) = shared {
        let shared = shared.to_str().unwrap();
        writeln!(program, "import sys\nsys.path.append({shared:?})").unwrap();
    }
    for module in modules {
        writeln!(program, "import {}", module.import).unwrap();
    }
    writeln!(program, "print({})", modules.len()).unwrap();
    program
}

/// The exec kit's store and private runtime dir (`exec::Exec`), with trees
/// of generated modules beside them.
struct Lab {
    kit: Exec,
    cache_tag: String,
}

impl Lab {
    fn new(python: &Python) -> Self {
        Self {
            kit: Exec::new(python),
            cache_tag: format!("cpython-{}{}", python.version.0, python.version.1),
        }
    }

    fn store(&self) -> &Path {
        &self.kit.env.store
    }

    fn python(&self) -> &Python {
        &self.kit.python
    }

    /// The dir holding the store, the runtime dir and the trees.
    fn root(&self) -> &Path {
        self.kit.env.path()
    }

    fn tree(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    fn write(&self, relative: &str, contents: &str) {
        self.kit.env.write(relative, contents);
    }

    fn write_modules(&self, tree: &str, modules: &[Module]) {
        for module in modules {
            self.write(&format!("{tree}/{}", module.path), &module.source);
        }
    }

    /// `rcache --store STORE --python PY ARGS`, run in the lab, with the
    /// kit's runtime dir.
    fn rcache(&self, args: &[&str]) -> Command {
        let mut command = self.kit.env.rcache(&self.kit.python, args);
        command.env("XDG_RUNTIME_DIR", &self.kit.runtime);
        command
    }
}

/// What the `__pycache__` dirs under a tree hold.
#[derive(Debug, Default)]
struct Pycaches {
    /// Sources with a pyc (of this interpreter, level 0).
    with_pyc: Vec<PathBuf>,
    /// Temp files rcache writes pycs through (`.rcache-*.tmp`).
    temps: Vec<PathBuf>,
    /// Anything else: a pyc without its source, a file of another name.
    strays: Vec<PathBuf>,
}

impl Pycaches {
    fn under(tree: &Path, cache_tag: &str) -> Self {
        let suffix = format!(".{cache_tag}.pyc");
        let mut found = Self::default();
        for path in snapshot(tree).into_keys() {
            let Some(dir) = path.parent().filter(|dir| dir.ends_with("__pycache__")) else {
                continue;
            };
            let name = path.file_name().unwrap().to_string_lossy();
            if is_temp_name(&name) {
                found.temps.push(path);
            } else if let Some(stem) = name.strip_suffix(&suffix) {
                let source = dir.parent().unwrap().join(format!("{stem}.py"));
                if source.is_file() {
                    found.with_pyc.push(source);
                } else {
                    found.strays.push(path);
                }
            } else {
                found.strays.push(path);
            }
        }
        found
    }

    fn is_empty(&self) -> bool {
        self.with_pyc.is_empty() && self.temps.is_empty() && self.strays.is_empty()
    }
}

/// The name of a temp file rcache writes a pyc (or a new store) through.
fn is_temp_name(name: &str) -> bool {
    name.starts_with(".rcache-") && name.as_bytes().ends_with(b".tmp")
}

/// Every rcache temp file under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|path| is_temp_name(&path.file_name().unwrap().to_string_lossy()))
        .collect()
}

/// Checks that the store at `store` is sound, panicking with what is wrong:
/// SQLite's `integrity_check` says ok, `foreign_key_check` finds nothing,
/// and every blob decompresses to its `raw_size` bytes, whose blake3 is its
/// `checksum` (`support::blobs`). One function, to become `rcache verify`
/// once that exists.
fn verify_store(store: &Path) {
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .unwrap_or_else(|err| panic!("{}: {err}", store.display()));
    let rows = |sql: &str| -> Vec<String> {
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([], |row| match row.get(0)? {
                Value::Text(text) => Ok(text),
                other => Ok(format!("{other:?}")),
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let integrity = rows("PRAGMA integrity_check");
    assert_eq!(integrity, ["ok"], "{}", store.display());
    let dangling = rows("PRAGMA foreign_key_check");
    assert!(dangling.is_empty(), "{}: {dangling:?}", store.display());
    drop(conn);
    blobs(store);
}

/// The key of every entry in the store (opened for writing, as rcache
/// would: a WAL a killed process left is recovered).
fn stored_keys(store: &Path) -> BTreeSet<Vec<u8>> {
    let conn = Connection::open_with_flags(store, OpenFlags::SQLITE_OPEN_READ_WRITE).unwrap();
    let mut statement = conn.prepare("SELECT key FROM entries").unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}
