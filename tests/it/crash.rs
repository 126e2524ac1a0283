//! Many rcache processes on one store at once, and `kill -9` at any moment:
//! every run succeeds without "database is locked", the store always opens
//! and verifies clean, nothing committed is lost, and no half-written pyc
//! ever sits under a final name.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};

use crate::exec::{Exec, rcache_processes_with, wait_until_gone};
use crate::materialize::loader_problems;
use crate::support::{
    KeyParams, Python, TestEnv, any_python, code, copy_tree, covered, hex, module_source, py_files,
    rcache_command, snapshot, stderr, stdlib_dir,
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
/// `rcache verify` (SQLite's integrity and foreign key checks, every blob
/// against its checksum and loaded by its interpreter) exits 0.
fn verify_store(store: &Path) {
    let output = rcache_command(store.parent().unwrap())
        .arg("--store")
        .arg(store)
        .arg("verify")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}: {}", store.display(), stderr(&output));
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

/// Kills that must land while the command still runs.
const MID_RUN_KILLS: usize = 50;
/// The most commands the kill loop starts to get there.
const MAX_KILLS: usize = 120;
/// Longest plain wait before a kill.
const MAX_WAIT: Duration = Duration::from_millis(400);
/// Longest wait for a moment of interest (a commit, the first pyc) before
/// killing anyway.
const MAX_TRIGGER_WAIT: Duration = Duration::from_secs(1);

/// Repeated `kill -9` at pseudo-random moments (seeded, see [`Rng`]) of one
/// rcache command at a time on one store, rotating among [`ACTIONS`]: until
/// at least 50 kills landed while the command ran (mid-compile, mid-commit,
/// mid-write of pycs, mid-exec). After every kill the store opens (`rcache
/// stats` exits 0) and verifies clean, every entry seen before is still
/// there, and every pyc of the tree the command worked on is complete and
/// accepted by CPython, or absent. At the end, temp files left by kills
/// (backdated past rcache's age limit) are removed by the next
/// `materialize`, which leaves every materialized tree complete. The summary
/// also says how many kills cut a commit short (an uncommitted WAL tail)
/// and how many left temp files: counts that depend on timing, reported,
/// not asserted.
#[test]
fn repeated_kill_9_loses_nothing() {
    let python = any_python();
    let mut rng = Rng::from_env();
    let mut lab = KillLab::new(&python);
    let mut tally: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let (mut kills, mut mid_run, mut mid_commit, mut temps_seen) = (0, 0, 0, 0);
    while mid_run < MID_RUN_KILLS && kills < MAX_KILLS {
        let action = &ACTIONS[kills % ACTIONS.len()];
        lab.round = kills;
        let mut victim = (action.start)(&mut lab, &mut rng);
        lab.processes += 1;
        let moment = Moment::draw(&mut rng, &victim);
        victim.wait_for(&moment, &lab.wal());
        let running = victim.kill(lab.lab.store());
        quiesce(
            lab.lab.store(),
            victim.server.as_ref().map(|(socket, _)| socket),
        );
        mid_commit += usize::from(uncommitted_wal_tail(&lab.wal()));
        kills += 1;
        let counts = tally.entry(action.name).or_default();
        counts.0 += 1;
        if running {
            mid_run += 1;
            counts.1 += 1;
        }
        let context = format!(
            "kill {kills} ({}, {moment:?}, seed {})",
            action.name, rng.seed
        );
        temps_seen += lab.check_after_kill(&victim, &context);
    }
    let (entries, leftover) = lab.finish();
    let by_action: Vec<String> = tally
        .iter()
        .map(|(name, (all, running))| format!("{name} {running}/{all}"))
        .collect();
    eprintln!(
        "crash::repeated_kill_9_loses_nothing: seed {}, {} rcache processes run, {kills} kills, {mid_run} mid-run ({}), {mid_commit} mid-commit, {temps_seen} temp files seen after kills, {leftover} left at the end and removed, {entries} entries at the end, {} entries lost",
        rng.seed,
        lab.processes,
        by_action.join(", "),
        lab.lost
    );
    assert_eq!(lab.lost, 0, "entries lost, first {:?}", lab.first_loss);
    assert!(
        mid_run >= MID_RUN_KILLS,
        "only {mid_run} of {kills} kills landed while the command ran"
    );
    covered("crash::repeated_kill_9_loses_nothing", &[python]);
}

/// A command the kill loop starts, to be killed. Add `rcache gc` here once
/// it exists.
struct Action {
    name: &'static str,
    start: fn(&mut KillLab, &mut Rng) -> Victim,
}

const ACTIONS: &[Action] = &[
    Action {
        name: "warm",
        start: KillLab::warm,
    },
    Action {
        name: "materialize",
        start: KillLab::materialize,
    },
    Action {
        name: "materialize checked-hash",
        start: KillLab::materialize_checked_hash,
    },
    Action {
        name: "exec (program killed)",
        start: |lab, _| lab.exec(false),
    },
    Action {
        name: "exec (program and server killed)",
        start: |lab, _| lab.exec(true),
    },
    Action {
        name: "gc",
        start: KillLab::gc,
    },
];

/// New modules a `warm` of the kill loop compiles.
const WARM_NEW: usize = 120;
/// Modules of the `base` tree, warmed before the first kill: the program of
/// every `exec` imports them all from there.
const BASE: usize = 400;
/// Warm modules every `materialize` tree of the kill loop holds, and those
/// it takes from the last `warm` (which may have been killed before
/// storing them) and its own new ones.
const MATERIALIZE_WARM: usize = 120;
const MATERIALIZE_FROM_LAST_WARM: usize = 30;
const MATERIALIZE_NEW: usize = 20;
/// New modules the program of an `exec` imports (and every warm one, from
/// where the store learnt them).
const EXEC_NEW: usize = 60;

/// The kill loop's store and trees, what it has seen, and what it counts.
struct KillLab {
    lab: Lab,
    /// The kill loop's round, naming each round's tree and contents.
    round: usize,
    /// Contents of the last `warm` tree.
    last_warm: Option<String>,
    /// Trees `materialize` worked on, the last one last.
    materialized: Vec<PathBuf>,
    /// Every key seen in the store so far.
    seen: BTreeSet<Vec<u8>>,
    /// Keys seen once and missing later, and after which kill that was
    /// first noticed.
    lost: usize,
    first_loss: Option<String>,
    /// rcache processes started.
    processes: usize,
}

impl KillLab {
    /// A store holding the `base` tree's contents.
    fn new(python: &Python) -> Self {
        let lab = Lab::new(python);
        lab.write_modules("base", &family("base", BASE));
        let output = lab.rcache(&["warm", "base"]).output().unwrap();
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        Self {
            seen: stored_keys(lab.store()),
            lab,
            round: 0,
            last_warm: None,
            materialized: Vec::new(),
            lost: 0,
            first_loss: None,
            processes: 1,
        }
    }

    fn wal(&self) -> PathBuf {
        let mut wal = self.lab.store().as_os_str().to_owned();
        wal.push("-wal");
        PathBuf::from(wal)
    }

    /// Starts `rcache ARGS` on its own.
    fn spawn(&self, args: &[&str]) -> Child {
        self.lab
            .rcache(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// `gc` evicting the older half of the store: mid-delete, mid-vacuum,
    /// mid-checkpoint. What it evicts is gone by design, not lost.
    fn gc(&mut self, _rng: &mut Rng) -> Victim {
        let size = std::fs::metadata(self.lab.store()).unwrap().len();
        let child = self.spawn(&["gc", "--max-size", &(size / 2).to_string()]);
        let mut victim = Victim::new(child, self.lab.tree("base"));
        victim.evicts = true;
        victim
    }

    /// `warm` of a tree of new contents: mid-compile and mid-commit.
    fn warm(&mut self, rng: &mut Rng) -> Victim {
        let name = format!("warm{}", self.round);
        self.lab.write_modules(&name, &family(&name, WARM_NEW));
        self.last_warm = Some(name.clone());
        let jobs = (1 + rng.below(2)).to_string();
        let child = self.spawn(&["-j", &jobs, "warm", &name]);
        Victim::new(child, self.lab.tree(&name))
    }

    /// `materialize` into a new tree from a partly warm store: mostly
    /// mid-write of pycs, the first of which is the marker.
    fn materialize(&mut self, rng: &mut Rng) -> Victim {
        let name = format!("materialize{}", self.round);
        let mut modules = family("base", MATERIALIZE_WARM);
        if let Some(last) = &self.last_warm {
            modules.extend(family(last, MATERIALIZE_FROM_LAST_WARM));
        }
        modules.extend(family(&name, MATERIALIZE_NEW));
        self.lab.write_modules(&name, &modules);
        let tree = self.lab.tree(&name);
        self.materialized.push(tree.clone());
        let jobs = (1 + rng.below(2)).to_string();
        let child = self.spawn(&["-j", &jobs, "materialize", &name]);
        self.writing_pycs(child, tree)
    }

    /// `materialize --mode checked-hash` over the last materialized tree:
    /// each pyc is replaced by one of the other mode.
    fn materialize_checked_hash(&mut self, rng: &mut Rng) -> Victim {
        let tree = self.materialized.last().expect("materialize ran").clone();
        let jobs = (1 + rng.below(2)).to_string();
        let child = self.spawn(&[
            "-j",
            &jobs,
            "materialize",
            "--mode",
            "checked-hash",
            tree.to_str().unwrap(),
        ]);
        self.writing_pycs(child, tree)
    }

    /// A victim whose marker is the first pyc rcache writes in `tree`
    /// (threads take contiguous runs of the sorted sources).
    fn writing_pycs(&self, child: Child, tree: PathBuf) -> Victim {
        let first = py_files(&tree).into_iter().min().unwrap();
        let mut victim = Victim::new(child, tree);
        victim.marker = Some(rcache::pyc::cache_path(
            &first,
            &self.lab.cache_tag,
            0,
            None,
        ));
        victim.pycs = true;
        victim
    }

    /// `rcache exec` of a program importing new modules from its tree and
    /// the warm ones from the `base` tree; its server compiles the new ones
    /// beside it and stores them after it. The program is killed, and with
    /// `and_server` its server too.
    fn exec(&mut self, and_server: bool) -> Victim {
        let name = format!("exec{}", self.round);
        let mut modules = family(&name, EXEC_NEW);
        self.lab.write_modules(&name, &modules);
        modules.extend(family("base", BASE));
        let program = main_program(&modules, Some(&self.lab.tree("base")));
        self.lab.write(&format!("{name}/main.py"), &program);
        let tree = self.lab.tree(&name);
        let child = self
            .lab
            .rcache(&["exec", "main.py"])
            .current_dir(&tree)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let socket = self.lab.kit.socket_of(child.id());
        let mut victim = Victim::new(child, tree);
        victim.server = Some((socket, and_server));
        victim.commits = and_server;
        victim
    }

    /// Checks the store and the victim's tree after a kill (see
    /// [`repeated_kill_9_loses_nothing`]); returns the temp files found.
    fn check_after_kill(&mut self, victim: &Victim, context: &str) -> usize {
        let store = self.lab.store();
        let mut stats = rcache_command(self.lab.root());
        stats.arg("--store").arg(store).args(["--json", "stats"]);
        let output = stats.output().unwrap();
        self.processes += 1;
        assert_eq!(code(&output), 0, "{context}: {}", stderr(&output));
        let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        verify_store(store);
        let keys = stored_keys(store);
        assert_eq!(stats["entries"], keys.len(), "{context}");
        if victim.evicts {
            self.seen.clone_from(&keys);
        }
        self.count_lost(keys, context);
        let pycaches = Pycaches::under(&victim.tree, &self.lab.cache_tag);
        if !victim.pycs {
            assert!(
                pycaches.is_empty(),
                "{context}: pycs in {}",
                victim.tree.display()
            );
        }
        assert!(
            pycaches.strays.is_empty(),
            "{context}: {:?}",
            pycaches.strays
        );
        if !pycaches.with_pyc.is_empty() {
            let with_pyc: Vec<&PathBuf> = pycaches.with_pyc.iter().collect();
            let problems = loader_problems(self.lab.python(), &with_pyc);
            assert!(problems.is_empty(), "{context}: {problems}");
        }
        pycaches.temps.len()
    }

    /// After the last kill: backdates the temp files kills left by two
    /// minutes, then one `materialize` of every materialized tree must
    /// remove them and leave every pyc in place; returns (entries at the
    /// end, temp files that were left).
    fn finish(&mut self) -> (usize, usize) {
        let backdated = SystemTime::now() - Duration::from_secs(120);
        let mut leftover = 0;
        for tree in &self.materialized {
            for temp in temp_files(tree) {
                let file = std::fs::File::options().write(true).open(&temp).unwrap();
                file.set_modified(backdated).unwrap();
                leftover += 1;
            }
        }
        let mut args = vec!["--json".to_owned(), "materialize".to_owned()];
        args.extend(
            self.materialized
                .iter()
                .map(|tree| tree.display().to_string()),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = self.lab.rcache(&args).output().unwrap();
        self.processes += 1;
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let temps = temp_files(self.lab.root());
        assert!(temps.is_empty(), "temp files left: {temps:?}");
        let sources: Vec<PathBuf> = self
            .materialized
            .iter()
            .flat_map(|tree| py_files(tree))
            .collect();
        let problems = loader_problems(self.lab.python(), &sources.iter().collect::<Vec<_>>());
        assert!(problems.is_empty(), "{problems}");
        verify_store(self.lab.store());
        let keys = stored_keys(self.lab.store());
        let entries = keys.len();
        self.count_lost(keys, "the last materialize");
        (entries, leftover)
    }

    /// Counts the keys seen before that `keys` (the store now) lacks.
    fn count_lost(&mut self, keys: BTreeSet<Vec<u8>>, context: &str) {
        let lost = self.seen.difference(&keys).count();
        if lost > 0 && self.first_loss.is_none() {
            self.first_loss = Some(format!("{lost} after {context}"));
        }
        self.lost += lost;
        self.seen.extend(keys);
    }
}

/// `count` modules of their own, made distinct by `name`, in dir `name`.
fn family(name: &str, count: usize) -> Vec<Module> {
    (0..count)
        .map(|index| Module::new(name, index, tagged_source(index, name)))
        .collect()
}

/// A running command of the kill loop.
struct Victim {
    child: Child,
    /// The tree it works on.
    tree: PathBuf,
    /// Whether it writes pycs there.
    pycs: bool,
    /// Whether what is killed writes the store (the program that `rcache
    /// exec` became does not: its server does).
    commits: bool,
    /// A file whose appearance or replacement marks a moment of interest.
    marker: Option<PathBuf>,
    /// `rcache exec`: its server's socket, and whether to kill the server.
    server: Option<(PathBuf, bool)>,
    /// Whether it removes entries on purpose (`gc`).
    evicts: bool,
}

impl Victim {
    fn new(child: Child, tree: PathBuf) -> Self {
        Self {
            child,
            tree,
            pycs: false,
            commits: true,
            marker: None,
            server: None,
            evicts: false,
        }
    }

    /// Whether what is to be killed still runs: the command (for `exec`,
    /// the program), and the server when it is to be killed too.
    fn running(&mut self) -> bool {
        let program = self.child.try_wait().unwrap().is_none();
        match &self.server {
            Some((socket, true)) => program || socket.exists(),
            _ => program,
        }
    }

    /// Returns at `moment`, or as soon as there is nothing left to kill.
    fn wait_for(&mut self, moment: &Moment, wal: &Path) {
        let start = Instant::now();
        let wal_len = || std::fs::metadata(wal).map_or(0, |metadata| metadata.len());
        let marker = self.marker.clone();
        let marker_state = || {
            use std::os::unix::fs::MetadataExt as _;
            marker
                .as_ref()
                .and_then(|path| std::fs::metadata(path).ok())
                .map(|metadata| metadata.ino())
        };
        let (mut last_wal, mut wal_growths) = (wal_len(), 0);
        let first_marker = marker_state();
        let mut marker_changed: Option<Duration> = None;
        while self.running() {
            let now = start.elapsed();
            let due = match *moment {
                Moment::After(wait) => now >= wait,
                Moment::WalGrowth(count) => {
                    let len = wal_len();
                    if len > last_wal {
                        wal_growths += 1;
                    }
                    last_wal = len;
                    wal_growths >= count || now >= MAX_TRIGGER_WAIT
                }
                Moment::AfterMarker(wait) => {
                    if marker_changed.is_none() && marker_state() != first_marker {
                        marker_changed = Some(now);
                    }
                    marker_changed.is_some_and(|at| now >= at + wait) || now >= MAX_TRIGGER_WAIT
                }
            };
            if due {
                return;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// SIGKILL to the command (and to its server, when that is to be killed:
    /// every rcache process on `store`), then reaps it; returns whether
    /// anything to be killed was still running.
    fn kill(&mut self, store: &Path) -> bool {
        let running = self.running();
        let _ = self.child.kill();
        if let Some((_, true)) = self.server {
            for pid in rcache_processes_with(store) {
                sigkill(pid);
            }
        }
        self.child.wait().unwrap();
        running
    }
}

/// When to kill.
#[derive(Debug)]
enum Moment {
    /// After this long.
    After(Duration),
    /// At the `n`th time the store's `-wal` file is seen to have grown:
    /// while (or just after) a commit appends its pages.
    WalGrowth(u32),
    /// This long after the marker file appeared or was replaced: amid the
    /// pyc writes.
    AfterMarker(Duration),
}

impl Moment {
    /// Half the time (always, for a victim that writes no store) a plain
    /// wait of 0–400 ms; else amid the pyc writes of a victim with a
    /// marker, or at one of its commits.
    fn draw(rng: &mut Rng, victim: &Victim) -> Self {
        match rng.below(4) {
            2 if victim.marker.is_some() => Self::AfterMarker(Duration::from_millis(rng.below(30))),
            2 | 3 if victim.commits => Self::WalGrowth(1 + rng.below(4) as u32),
            _ => Self::After(Duration::from_millis(
                rng.below(MAX_WAIT.as_millis() as u64 + 1),
            )),
        }
    }
}

/// Whether the WAL at `wal` ends in frames that no commit frame covers (or
/// in a frame cut short): a transaction was being written when its process
/// died. Read before any connection recovers the store, which deletes the
/// WAL when it closes, so a victim's WAL holds its own frames only (or,
/// after a checkpoint restarted it, older committed ones past them).
fn uncommitted_wal_tail(wal: &Path) -> bool {
    const HEADER: usize = 32;
    const FRAME_HEADER: usize = 24;
    let Ok(bytes) = std::fs::read(wal) else {
        return false;
    };
    if bytes.len() < HEADER {
        return false;
    }
    let field = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let frame = FRAME_HEADER + field(8) as usize;
    let frames = bytes.len() - HEADER;
    if !frames.is_multiple_of(frame) {
        return true;
    }
    // The last frame's "database size after commit" is 0 unless it commits.
    frames > 0 && field(bytes.len() - frame + 4) == 0
}

/// Waits until no rcache process works on `store` any more (an exec server
/// that outlived its program finishes storing), then removes `socket`,
/// which a killed server leaves behind.
fn quiesce(store: &Path, socket: Option<&PathBuf>) {
    let start = Instant::now();
    while !rcache_processes_with(store).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "rcache processes on {} did not end",
            store.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    if let Some(socket) = socket {
        let _ = std::fs::remove_file(socket);
    }
}

/// SIGKILL to `pid`, one of this test's own processes (an exec server,
/// which is no child of ours: a detached grandchild).
#[allow(unsafe_code)]
fn sigkill(pid: u32) {
    // SAFETY: kill(2) takes a pid and a signal and touches no memory; the
    // process may already be gone, which is fine.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// The kill loop's schedule: xorshift64* from `RCACHE_TEST_SEED` (decimal),
/// or a fixed seed.
struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    fn from_env() -> Self {
        let seed = std::env::var("RCACHE_TEST_SEED")
            .ok()
            .map_or(0x5eed_c4a5_0000_0001, |seed| {
                seed.parse().expect("RCACHE_TEST_SEED is a number")
            });
        eprintln!("crash: seed {seed} (RCACHE_TEST_SEED={seed} replays this schedule)");
        Self {
            seed,
            state: seed | 1,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
