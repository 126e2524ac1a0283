//! Test context: interpreters found on the machine, a private temp dir and
//! store per test, and helpers to run the binary and read the store.

#![allow(dead_code)] // each test module uses its own part of the kit

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

/// A real CPython found on the machine.
#[derive(Debug, Clone)]
pub struct Python {
    /// The real binary (never a pyenv shim).
    pub path: PathBuf,
    /// (major, minor).
    pub version: (u32, u32),
    /// e.g. `3.12.1`.
    pub full_version: String,
}

impl Python {
    pub fn label(&self) -> String {
        format!("CPython {} ({})", self.full_version, self.path.display())
    }

    /// Runs this interpreter with `args`, in a clean environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.path);
        command.env_clear().env("PYTHONHASHSEED", "0");
        command
    }
}

/// Every supported CPython (3.8–3.13) installed here: pyenv's versions and
/// `/usr/bin/python3.X`, one per minor version, pyenv's first.
pub fn pythons() -> &'static [Python] {
    static FOUND: OnceLock<Vec<Python>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let mut by_minor: BTreeMap<u32, Python> = BTreeMap::new();
        let pyenv_root = std::env::var_os("PYENV_ROOT")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")));
        let mut candidates = Vec::new();
        if let Some(Ok(entries)) = pyenv_root.map(|root| std::fs::read_dir(root.join("versions"))) {
            let mut dirs: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
            dirs.sort();
            for dir in dirs {
                for minor in 8..=13 {
                    candidates.push(dir.join(format!("bin/python3.{minor}")));
                }
            }
        }
        for minor in 8..=13 {
            candidates.push(PathBuf::from(format!("/usr/bin/python3.{minor}")));
        }
        for path in candidates {
            if !path.is_file() {
                continue;
            }
            let Some(full_version) = probe_version(&path) else {
                continue;
            };
            let mut parts = full_version
                .split('.')
                .map(|p| p.parse::<u32>().unwrap_or(0));
            let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
            by_minor.entry(version.1).or_insert(Python {
                path,
                version,
                full_version,
            });
        }
        let found: Vec<Python> = by_minor.into_values().collect();
        eprintln!(
            "interpreters under test: {}",
            found
                .iter()
                .map(|p| p.full_version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        found
    })
}

fn probe_version(path: &Path) -> Option<String> {
    let output = Command::new(path)
        .args([
            "-S",
            "-s",
            "-c",
            "import sys; print('%d.%d.%d' % sys.version_info[:3])",
        ])
        .env_clear()
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The interpreters at least `(3, minor)`.
pub fn pythons_from(minor: u32) -> Vec<Python> {
    pythons()
        .iter()
        .filter(|p| p.version >= (3, minor))
        .cloned()
        .collect()
}

/// Any one supported interpreter, preferring 3.12.
pub fn any_python() -> Python {
    let all = pythons();
    assert!(
        !all.is_empty(),
        "no CPython 3.8–3.13 installed: the tests need one"
    );
    all.iter()
        .find(|p| p.version == (3, 12))
        .unwrap_or(&all[0])
        .clone()
}

/// Says which interpreters a test covered (shown with `--nocapture`, and in
/// the report when a test fails).
pub fn covered(test: &str, pythons: &[Python]) {
    let versions: Vec<&str> = pythons.iter().map(|p| p.full_version.as_str()).collect();
    eprintln!("{test}: covered CPython {}", versions.join(", "));
}

/// A temporary project directory and a store of its own.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = dir.path().join("store").join("store.sqlite3");
        Self { dir, store }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` at `relative`, creating parent directories.
    pub fn write(&self, relative: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// `rcache --store STORE --python PY ARGS...`, run in the temp dir.
    pub fn rcache(&self, python: &Python, args: &[&str]) -> Command {
        self.rcache_with_store(&self.store, python, args)
    }

    /// [`TestEnv::rcache`] with another store.
    pub fn rcache_with_store(&self, store: &Path, python: &Python, args: &[&str]) -> Command {
        let mut command = rcache_command(self.path());
        command
            .arg("--store")
            .arg(store)
            .arg("--python")
            .arg(&python.path);
        command.args(args);
        command
    }

    /// Runs `rcache ... --json ARGS` and parses stdout.
    pub fn warm_json(&self, python: &Python, args: &[&str]) -> (Value, Output) {
        let mut command = self.rcache(python, &["--json", "warm"]);
        command.args(args);
        run_json(&mut command)
    }

    /// Every blob in the store, by hex key, decompressed.
    pub fn blobs(&self) -> BTreeMap<String, Vec<u8>> {
        blobs(&self.store)
    }

    pub fn count(&self, table: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.store).unwrap();
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .unwrap()
    }
}

/// The built binary, with a clean rcache environment, run in `cwd`.
pub fn rcache_command(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rcache"));
    command.current_dir(cwd);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RCACHE_") {
            command.env_remove(name);
        }
    }
    command.env_remove("VIRTUAL_ENV");
    command
}

/// Runs `command`, which must print one JSON object on stdout.
pub fn run_json(command: &mut Command) -> (Value, Output) {
    let output = command.output().expect("running rcache");
    let value = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "stdout is not JSON ({err}); status {}\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (value, output)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

/// Every blob in the store at `store`, by hex key, decompressed and checked.
pub fn blobs(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let conn = rusqlite::Connection::open(store).unwrap();
    let mut statement = conn
        .prepare("SELECT key, data, checksum, raw_size FROM entries")
        .unwrap();
    statement
        .query_map([], |row| {
            Ok((
                row.get::<_, Vec<u8>>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, i64>(3)?,
            ))
        })
        .unwrap()
        .map(|row| {
            let (key, data, checksum, raw_size) = row.unwrap();
            let key = hex(&key);
            let raw = zstd::decode_all(data.as_slice())
                .unwrap_or_else(|err| panic!("entry {key} does not decompress: {err}"));
            assert_eq!(raw.len() as i64, raw_size, "size of entry {key}");
            assert_eq!(
                blake3::hash(&raw).as_bytes().as_slice(),
                checksum.as_slice(),
                "checksum of entry {key}"
            );
            (key, raw)
        })
        .collect()
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut hex, byte| {
        let _ = write!(hex, "{byte:02x}");
        hex
    })
}

/// What of an interpreter enters rcache's keys, read from the interpreter.
pub struct KeyParams {
    cache_tag: String,
    magic: [u8; 4],
}

impl KeyParams {
    pub fn of(python: &Python) -> Self {
        let script = "import sys; ext = sys.modules['_frozen_importlib_external']; \
                      print(sys.implementation.cache_tag, ext.MAGIC_NUMBER.hex())";
        let output = python
            .command()
            .args(["-S", "-s", "-c", script])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let (tag, magic) = text.trim().split_once(' ').unwrap();
        let magic: Vec<u8> = (0..8)
            .step_by(2)
            .map(|at| u8::from_str_radix(&magic[at..at + 2], 16).unwrap())
            .collect();
        Self {
            cache_tag: tag.to_owned(),
            magic: magic.try_into().unwrap(),
        }
    }

    /// The key rcache gives `source` at `level`.
    pub fn key(&self, level: u8, source: &[u8]) -> rcache::key::Key {
        rcache::key::KeyContext {
            cache_tag: &self.cache_tag,
            magic: self.magic,
        }
        .key(level, &rcache::key::ContentHash::of(source))
    }
}

/// Copies `python`'s standard library (no site-packages, no `__pycache__`)
/// to `dest`; returns the number of `.py` files.
pub fn copy_stdlib(python: &Python, dest: &Path) -> usize {
    copy_tree(&stdlib_dir(python), dest)
}

/// Where `python`'s standard library lives.
pub fn stdlib_dir(python: &Python) -> PathBuf {
    let output = python
        .command()
        .args([
            "-S",
            "-s",
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['stdlib'])",
        ])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Every entry under `dir` (files, directories, symlinks, never followed),
/// sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
            found.push(entry.path());
        }
    }
    found.sort();
    found
}

/// Every pyc under `tree`, by path, with its bytes.
pub fn pycs(tree: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(tree)
        .into_iter()
        .filter(|path| path.extension().is_some_and(|ext| ext == "pyc"))
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

/// The numbers of an `rcache exec` server's `served N of M ...` log line.
pub fn served_counts(log: &str) -> Vec<usize> {
    log.lines()
        .find_map(|line| line.split_once("served ").map(|(_, rest)| rest))
        .unwrap_or_else(|| panic!("no `served` line in the log:\n{log}"))
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect()
}

/// A small module of its own for each `index`.
pub fn module_source(index: usize) -> String {
    format!("VALUE = {index}\n\n\ndef value_{index}(x):\n    return x + VALUE\n")
}

/// Copies `from` to `to` (no `__pycache__`, no `site-packages`); returns the
/// number of `.py` files.
pub fn copy_tree(from: &Path, to: &Path) -> usize {
    std::fs::create_dir_all(to).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "__pycache__" || name == "site-packages" {
            continue;
        }
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            count += copy_tree(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
            if entry.path().extension().is_some_and(|e| e == "py") {
                count += 1;
            }
        }
    }
    count
}

/// Real PyPI packages (Django and SymPy, with their dependencies) in
/// versions that support `python`, installed once with `pip install
/// --target` under `~/.cache/rcache-tests/` and reused; returns the dir.
pub fn pypi_packages(python: &Python) -> PathBuf {
    let pins: &[&str] = if python.version >= (3, 10) {
        &["Django==5.2.19", "sympy==1.14.0"]
    } else {
        &["Django==4.2.30", "sympy==1.13.3"]
    };
    let dir = test_cache().join(format!(
        "packages-{}-{}",
        python.full_version,
        pins.join("-")
    ));
    made_once(&dir, pins, || {
        pip_install(
            &python.path,
            &["--target".as_ref(), dir.as_os_str()],
            pins,
            python,
        );
    });
    dir
}

/// A virtualenv of `python` holding `pins` from PyPI, made once under
/// `~/.cache/rcache-tests/` and reused; returns its `bin/python`.
pub fn pypi_venv(python: &Python, pins: &[&str]) -> PathBuf {
    let dir = test_cache().join(format!("venv-{}-{}", python.full_version, pins.join("-")));
    let venv_python = dir.join("bin").join("python");
    made_once(&dir, pins, || {
        let status = Command::new(&python.path)
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(status.success(), "python -m venv for {}", python.label());
        pip_install(&venv_python, &[], pins, python);
    });
    venv_python
}

/// The uv the tests make virtualenvs and install packages with, pinned,
/// from PyPI.
const UV: &str = "uv==0.13.9";

/// A virtualenv of `python` at `venv`, made by `uv venv` (its cache beside
/// it, no config files, no Python downloads).
pub fn uv_venv(python: &Python, venv: &Path) {
    uv(
        venv,
        &[
            "venv".as_ref(),
            "--python".as_ref(),
            python.path.as_os_str(),
            venv.as_os_str(),
        ],
    );
}

/// `uv pip install --no-index --find-links WHEELS ARGS...` into `venv`.
pub fn uv_pip_install(venv: &Path, wheels: &Path, args: &[&std::ffi::OsStr]) {
    let python = venv.join("bin/python");
    let mut all: Vec<&std::ffi::OsStr> = vec![
        "pip".as_ref(),
        "install".as_ref(),
        "--python".as_ref(),
        python.as_os_str(),
        "--no-index".as_ref(),
        "--find-links".as_ref(),
        wheels.as_os_str(),
    ];
    all.extend(args);
    uv(venv, &all);
}

/// `uv ARGS...` for `venv`, with its cache beside it; must succeed.
fn uv(venv: &Path, args: &[&std::ffi::OsStr]) {
    let uv = pypi_venv(&any_python(), &[UV]).with_file_name("uv");
    let output = Command::new(&uv)
        .args(args)
        .env("UV_CACHE_DIR", venv.with_file_name("uv-cache"))
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .output()
        .unwrap();
    assert!(output.status.success(), "uv {args:?}: {}", stderr(&output));
}

/// Wheels of `pins` (and nothing they depend on) from PyPI, downloaded once
/// under `~/.cache/rcache-tests/` and reused; returns the dir, for
/// `--no-index --find-links`.
pub fn pypi_wheels(pins: &[&str]) -> PathBuf {
    let dir = test_cache().join(format!("wheels-{}", pins.join("-")));
    made_once(&dir, pins, || {
        let status = any_python()
            .command()
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .args([
                "-m",
                "pip",
                "download",
                "-q",
                "--only-binary",
                ":all:",
                "--no-deps",
            ])
            .arg("-d")
            .arg(&dir)
            .args(pins)
            .status()
            .unwrap();
        assert!(status.success(), "pip download {pins:?}");
    });
    dir
}

/// Runs `make` to fill `dir` unless an earlier run completed it (a marker
/// file says so); an interrupted attempt is removed first.
fn made_once(dir: &Path, pins: &[&str], make: impl FnOnce()) {
    let done = dir.join(".rcache-tests-complete");
    if done.exists() {
        return;
    }
    // Tests run in parallel processes and threads: one makes it while the
    // others wait for it (an flock, so threads of one process wait too).
    std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
    let mut lock_name = dir.file_name().unwrap().to_owned();
    lock_name.push(".lock");
    let lock = std::fs::File::create(dir.with_file_name(lock_name)).unwrap();
    lock.lock().unwrap();
    if done.exists() {
        return;
    }
    let _ = std::fs::remove_dir_all(dir);
    make();
    std::fs::write(&done, pins.join("\n")).unwrap();
}

/// `pip install -q --no-compile ARGS PINS` with `pip_python`, for `python`.
fn pip_install(pip_python: &Path, args: &[&std::ffi::OsStr], pins: &[&str], python: &Python) {
    let status = Command::new(pip_python)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .args(["-m", "pip", "install", "-q", "--no-compile"])
        .args(args)
        .args(pins)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "pip install {pins:?} for {}",
        python.label()
    );
}

/// Where tests keep what they download: `~/.cache/rcache-tests`.
fn test_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME")
        .join("rcache-tests")
}

/// Every `.py` file under `dir` (not symlinks), sorted.
pub fn py_files(dir: &Path) -> Vec<PathBuf> {
    walk(dir)
        .into_iter()
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "py")
                && std::fs::symlink_metadata(path).unwrap().is_file()
        })
        .collect()
}

/// A listing of everything under `dir` (path, size, mtime), to prove a run
/// wrote nothing beside the sources.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    walk(dir)
        .into_iter()
        .map(|path| {
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            (path, (metadata.len(), metadata.modified().unwrap()))
        })
        .collect()
}

impl Python {
    /// The interpreter at `path`, whatever its version (unsupported ones
    /// too), if it runs at all.
    pub fn at(path: &Path) -> Option<Python> {
        let full_version = probe_version(path)?;
        let mut parts = full_version
            .split('.')
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        Some(Python {
            path: path.to_owned(),
            version,
            full_version,
        })
    }
}

/// pyenv's root: `$PYENV_ROOT`, else `~/.pyenv`.
pub fn pyenv_root() -> Option<PathBuf> {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".pyenv")))
}

/// A supported Python outside any home directory (`/usr/bin/python3.X`),
/// which an unprivileged user can run: pyenv's live under `/root` (0700).
pub fn system_python() -> Option<Python> {
    (8..=13)
        .rev()
        .map(|minor| PathBuf::from(format!("/usr/bin/python3.{minor}")))
        .filter(|path| path.is_file())
        .find_map(|path| Python::at(&path))
}

/// The uid and gid permission tests run as when this process is root.
pub const NOBODY: u32 = 65534;

/// Whether the tests run as root, where permission bits prove nothing.
pub fn running_as_root() -> bool {
    let output = Command::new("id").arg("-u").output().expect("running id");
    String::from_utf8_lossy(&output.stdout).trim() == "0"
}

/// `command` again, run as `nobody` (through `setpriv`) when the tests run
/// as root, so that file permissions apply to it.
pub fn unprivileged(command: &Command) -> Command {
    let mut wrapped = if running_as_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .arg("--clear-groups")
            .arg(command.get_program());
        setpriv
    } else {
        Command::new(command.get_program())
    };
    wrapped.args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(name, value),
            None => wrapped.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

impl TestEnv {
    /// Opens the temp dir to everyone (0755) and gives [`NOBODY`] the store
    /// directory, for commands run through [`unprivileged`].
    pub fn share_with_nobody(&self) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(self.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let store_dir = self.store.parent().unwrap();
        std::fs::create_dir_all(store_dir).unwrap();
        std::fs::set_permissions(store_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        if running_as_root() {
            std::os::unix::fs::chown(store_dir, Some(NOBODY), Some(NOBODY)).unwrap();
        }
    }

    /// `PRAGMA integrity_check` of the store.
    pub fn integrity(&self) -> String {
        let conn = rusqlite::Connection::open(&self.store).unwrap();
        conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap()
    }
}

/// Python source defining `same(left, right)`: deep equality of code
/// objects, every `co_*` field (filenames and line tables included) and
/// nested constants, NaN equal to NaN.
pub const SAME_CODE: &str = r"
FIELDS = ('co_argcount', 'co_posonlyargcount', 'co_kwonlyargcount', 'co_nlocals',
          'co_stacksize', 'co_flags', 'co_code', 'co_names', 'co_varnames', 'co_freevars',
          'co_cellvars', 'co_filename', 'co_name', 'co_qualname', 'co_firstlineno',
          'co_lnotab', 'co_linetable', 'co_exceptiontable')
def same(left, right):
    if type(left) is not type(right):
        return False
    if hasattr(left, 'co_code'):
        return all(same(getattr(left, name, None), getattr(right, name, None)) for name in FIELDS) \
            and same(left.co_consts, right.co_consts)
    if isinstance(left, (tuple, list)):
        return len(left) == len(right) and all(same(a, b) for a, b in zip(left, right))
    if isinstance(left, float) and left != left:
        return right != right
    return left == right
";

/// Runs `python OPTIONS -c SCRIPT` with `input` on stdin; it must succeed.
/// Returns its stdout.
pub fn python_with_input(python: &Python, options: &[&str], script: &str, input: &str) -> String {
    use std::io::Write as _;
    let mut child = python
        .command()
        .args(options)
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `work` over `items` on one thread more than there are CPUs (the work is
/// mostly waiting for child processes); the `Some` results, in no order.
pub fn parallel_filter_map<T: Sync, R: Send>(
    items: &[T],
    work: impl Fn(&T) -> Option<R> + Sync,
) -> Vec<R> {
    let next = std::sync::Mutex::new(items.iter());
    let results = std::sync::Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZero::get) + 1;
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let Some(item) = next.lock().unwrap().next() else {
                        return;
                    };
                    if let Some(result) = work(item) {
                        results.lock().unwrap().push(result);
                    }
                }
            });
        }
    });
    results.into_inner().unwrap()
}

/// A file system mounted for one test (a size-limited tmpfs, or a bind
/// mount), unmounted when dropped.
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    /// Mounts a tmpfs of `size` (`mount -o size=`) at `path`, or says why
    /// it cannot (no privilege to mount here) and returns `None`.
    pub fn tmpfs(path: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        Self::run_mount(
            path,
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ],
        )
    }

    /// Makes the directory `from` visible at `path` too (`mount --bind`),
    /// or says why it cannot and returns `None`.
    pub fn bind(from: &Path, path: &Path) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        Self::run_mount(path, &["--bind", from.to_str().unwrap()])
    }

    fn run_mount(path: &Path, args: &[&str]) -> Option<Self> {
        let output = Command::new("mount")
            .args(args)
            .arg(path)
            .output()
            .expect("running mount");
        if !output.status.success() {
            eprintln!(
                "cannot mount here ({}): skipped",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        Some(Self {
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the file system read-only, as a read-only mount of an image.
    pub fn remount_read_only(&self) {
        let status = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .expect("running mount");
        assert!(status.success(), "remount read-only");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// The maturin the tests build wheels with, pinned, from PyPI.
const MATURIN: &str = "maturin==1.16.0";

/// The wheel `maturin build` makes of this crate (`pyproject.toml`:
/// `bindings = "bin"`) around the binary under test, built once per binary
/// and kept in the target dir, keyed by the binary's content.
///
/// nextest runs each test in a process of its own: a file lock in the target
/// dir lets one build while the others wait. maturin builds with the profile
/// the binary was built with (`target/debug` is `dev`), so cargo finds
/// everything up to date and the wheel only packs the binary (a few
/// seconds); the wheel test checks the packed binary is this one. maturin
/// moves the binary aside while it packs it, and other tests run that very
/// file meanwhile: it builds in a hard-linked copy of the profile dir.
pub fn rcache_wheel() -> PathBuf {
    let binary = Path::new(env!("CARGO_BIN_EXE_rcache"));
    let profile_dir = binary.parent().unwrap();
    let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
        "debug" => "dev",
        other => other,
    };
    let wheels = profile_dir.parent().unwrap().join("rcache-test-wheels");
    std::fs::create_dir_all(&wheels).unwrap();
    let lock = std::fs::File::create(wheels.join(".lock")).unwrap();
    lock.lock().unwrap();
    let binary_hash = blake3::hash(&std::fs::read(binary).unwrap());
    let out = wheels.join(&binary_hash.to_hex()[..16]);
    if let Some(wheel) = wheel_in(&out) {
        return wheel;
    }
    // Wheels of earlier binaries, and what an interrupted build left.
    for entry in std::fs::read_dir(&wheels).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap();
        }
    }
    let maturin = pypi_venv(&any_python(), &[MATURIN]).with_file_name("maturin");
    let build_root = wheels.join("target");
    let build_dir = build_root.join(profile_dir.file_name().unwrap());
    std::fs::create_dir_all(&build_root).unwrap();
    let status = Command::new("cp")
        .arg("-al")
        .arg(profile_dir)
        .arg(&build_dir)
        .status()
        .unwrap();
    assert!(status.success(), "cp -al {}", profile_dir.display());
    let partial = wheels.join("partial");
    let started = std::time::Instant::now();
    let output = Command::new(&maturin)
        .arg("build")
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .args(["--profile", profile, "--quiet", "--out"])
        .arg(&partial)
        .env("CARGO_TARGET_DIR", &build_root)
        .output()
        .expect("running maturin");
    assert!(
        output.status.success(),
        "maturin build failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    std::fs::remove_dir_all(&build_root).unwrap();
    std::fs::rename(&partial, &out).unwrap();
    eprintln!("built the wheel in {:.1}s", started.elapsed().as_secs_f64());
    wheel_in(&out).expect("maturin wrote no wheel")
}

/// The one `.whl` in `dir`, if `dir` exists.
fn wheel_in(dir: &Path) -> Option<PathBuf> {
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
        .collect();
    match wheels.as_slice() {
        [wheel] => Some(wheel.clone()),
        _ => None,
    }
}

/// Keeps a git (or git-driving) child to the test: no `RCACHE_*` or `GIT_*`
/// of the caller, no virtualenv, `home` as HOME and global config, a fixed
/// author, and `store` and `python` as rcache's.
pub fn isolated_git(command: &mut Command, home: &Path, store: &Path, python: &Python) {
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("RCACHE_") || name_text.starts_with("GIT_") {
            command.env_remove(name);
        }
    }
    command
        .env_remove("VIRTUAL_ENV")
        .env("HOME", home)
        .env("GIT_CONFIG_GLOBAL", home.join("gitconfig"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@t")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@t")
        .env("GIT_EDITOR", "true")
        .env("RCACHE_STORE", store)
        .env("RCACHE_PYTHON", &python.path);
}
