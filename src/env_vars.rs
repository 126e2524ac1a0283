//! Every environment variable rcache reads, in one place.

/// Path of the store file (same as `--store`).
pub const RCACHE_STORE: &str = "RCACHE_STORE";
/// Interpreter to compile for (same as `--python`).
pub const RCACHE_PYTHON: &str = "RCACHE_PYTHON";
/// Size the store is kept under (same as `--max-size`).
pub const RCACHE_MAX_SIZE: &str = "RCACHE_MAX_SIZE";
/// Compile workers (same as `--jobs`).
pub const RCACHE_JOBS: &str = "RCACHE_JOBS";
/// Optimization levels, comma-separated (same as `-O`).
pub const RCACHE_OPTIMIZE: &str = "RCACHE_OPTIMIZE";
/// What `materialize` records in pyc headers (same as `--mode`).
pub const RCACHE_MODE: &str = "RCACHE_MODE";
/// Any value but `0`/`false`/empty ignores `[tool.rcache]` (same as `--no-config`).
pub const RCACHE_NO_CONFIG: &str = "RCACHE_NO_CONFIG";
/// Per-file compile timeout in seconds; `0` disables it (same as `--timeout`).
pub const RCACHE_TIMEOUT: &str = "RCACHE_TIMEOUT";
/// Remote caches, comma-separated (same as `--remote`).
pub const RCACHE_REMOTE: &str = "RCACHE_REMOTE";
/// Any value but `0`/`false`/empty only reads the remotes (same as `--remote-read-only`).
pub const RCACHE_REMOTE_READ_ONLY: &str = "RCACHE_REMOTE_READ_ONLY";
/// Seconds one remote request may take (default 10).
pub const RCACHE_REMOTE_TIMEOUT: &str = "RCACHE_REMOTE_TIMEOUT";
/// A bearer token for HTTP remotes.
pub const RCACHE_REMOTE_TOKEN: &str = "RCACHE_REMOTE_TOKEN";
/// A user name for HTTP remotes (basic auth), with [`RCACHE_REMOTE_PASSWORD`].
pub const RCACHE_REMOTE_USER: &str = "RCACHE_REMOTE_USER";
/// The password going with [`RCACHE_REMOTE_USER`].
pub const RCACHE_REMOTE_PASSWORD: &str = "RCACHE_REMOTE_PASSWORD";
/// Log filter for `tracing`, e.g. `rcache=debug`.
pub const RCACHE_LOG: &str = "RCACHE_LOG";
/// The active virtualenv, as set by its `activate` script.
pub const VIRTUAL_ENV: &str = "VIRTUAL_ENV";
/// pyenv's root, used to resolve its shims without starting a shell.
pub const PYENV_ROOT: &str = "PYENV_ROOT";
/// pyenv's per-shell version override.
pub const PYENV_VERSION: &str = "PYENV_VERSION";
/// CPython writes no bytecode when it is set (non-empty).
pub const PYTHONDONTWRITEBYTECODE: &str = "PYTHONDONTWRITEBYTECODE";
/// CPython's pycache prefix: `materialize` writes under it when set.
pub const PYTHONPYCACHEPREFIX: &str = "PYTHONPYCACHEPREFIX";
/// Python's module search path: `rcache exec` puts its hook first on it.
pub const PYTHONPATH: &str = "PYTHONPATH";
/// `rcache exec`: the PYTHONPATH the program was given (unset when it had none).
pub const RCACHE_EXEC_PYTHONPATH: &str = "RCACHE_EXEC_PYTHONPATH";
/// `rcache exec`: the directory holding the hook.
pub const RCACHE_EXEC_HOOK: &str = "RCACHE_EXEC_HOOK";
/// `rcache exec`: the socket the code server listens on.
pub const RCACHE_EXEC_SOCKET: &str = "RCACHE_EXEC_SOCKET";
/// `rcache exec`: the PYTHONPYCACHEPREFIX it set for the start-up only (the
/// hook then removes it), absent when the caller set their own.
pub const RCACHE_EXEC_PYCACHEPREFIX: &str = "RCACHE_EXEC_PYCACHEPREFIX";
/// Per-user runtime directory; `rcache exec` keeps its socket there.
pub const XDG_RUNTIME_DIR: &str = "XDG_RUNTIME_DIR";
/// Reproducible builds: `py_compile` then defaults to checked-hash pycs.
pub const SOURCE_DATE_EPOCH: &str = "SOURCE_DATE_EPOCH";
/// The XDG base directory for caches (read through the `dirs` crate).
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// Test seam: `KIND:MARKER` makes the worker that compiles a file whose path
/// contains MARKER misbehave (KIND is `crash`, `hang` or `garbage`), so tests
/// can prove the pool survives what real runs cannot provoke on demand.
pub const RCACHE_TEST_WORKER_FAULT: &str = "__RCACHE_TEST_WORKER_FAULT";
