//! `rcache exec`: run `python ARGS...` with every source module served from
//! the store.
//!
//! rcache prepares a private directory holding the hook (`sitecustomize.py`,
//! put first on PYTHONPATH), binds a socket there, leaves a detached server
//! process behind (`daemon`, `server`), and then becomes the interpreter
//! with `exec`: same pid, same signals, same exit status. A script named on
//! the command line runs through the hook too (`-c BOOT SCRIPT ARGS...`, which
//! the hook undoes in `sys.argv`), so its code comes from the store as well.
//! When anything here fails, Python runs as if started directly, after one
//! warning.

mod background;
mod daemon;
mod lookup;
mod prefetch;
mod python_args;
mod runtime_dir;
mod server;
mod session;

use std::ffi::OsString;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::env_vars;
use crate::interpreter::Interpreter;
use crate::store::Store;
use python_args::{Invocation, Program};
use runtime_dir::RuntimeDir;

/// The `-c` command that runs a script through the hook; the same string
/// is `BOOT` in `sitecustomize.py`.
const BOOT: &str = "__import__('sys').modules['_rcache_exec'].run_main()";

/// An interpreter ready to run, and the store it is served from.
pub struct Target {
    pub interpreter: Interpreter,
    pub profile_id: i64,
    pub store: Store,
    /// Size the store is kept under (`--max-size`).
    pub max_size: u64,
    /// The remote caches misses are fetched from.
    pub remote: crate::remote::Options,
}

/// Becomes `python ARGS...` served by a server left behind; returns only
/// when Python cannot be started at all.
#[expect(clippy::print_stderr, reason = "the one warning before Python runs")]
pub fn run(target: anyhow::Result<Target>, fallback: &Path, args: &[OsString]) -> anyhow::Error {
    let invocation = python_args::parse(args);
    let served = target.and_then(|target| {
        let executable = target.interpreter.executable.clone();
        Ok(serve(target, &invocation, args)?.map(|command| (executable, command)))
    });
    let (executable, mut command) = match served {
        Ok(Some(served)) => served,
        Ok(None) => (fallback.to_owned(), plain(fallback, args)),
        Err(err) => {
            eprintln!("rcache: warning: {err:#}; running Python without the store");
            (fallback.to_owned(), plain(fallback, args))
        }
    };
    let err = command.exec();
    anyhow::Error::new(err).context(format!("cannot run `{}`", executable.display()))
}

fn plain(python: &Path, args: &[OsString]) -> Command {
    let mut command = Command::new(python);
    command.args(args);
    command
}

/// Starts the server and returns the command that runs Python through it,
/// or `None` when the hook could not run anyway (`-E`, `-I`, `-S`).
fn serve(
    target: Target,
    invocation: &Invocation,
    args: &[OsString],
) -> anyhow::Result<Option<Command>> {
    if !invocation.hook_runs() {
        tracing::info!("Python's -E, -I or -S turn off rcache's hook: running Python as it is");
        return Ok(None);
    }
    let runtime = RuntimeDir::open()?;
    let hook_dir = runtime.hook_dir()?;
    if hook_dir.as_os_str().as_encoded_bytes().contains(&b':') {
        bail!(
            "`{}` has a `:`, which PYTHONPATH cannot hold",
            hook_dir.display()
        );
    }
    let socket_path = runtime.socket_path();
    // A socket left by an earlier process with this pid is dead.
    let _ = std::fs::remove_file(&socket_path);
    let listener = UnixListener::bind(&socket_path)
        .with_context(|| format!("cannot listen on `{}`", socket_path.display()))?;
    let pidfd = daemon::pidfd_of_self().context("cannot watch this process (pidfd_open)")?;
    let Target {
        interpreter,
        profile_id,
        store,
        max_size,
        remote,
    } = target;
    let store_path = store.path().to_owned();
    // No SQLite connection may cross the fork.
    drop(store);
    let mut command = Command::new(&interpreter.executable);
    let config = server::Config {
        store_path,
        interpreter,
        profile_id,
        socket_path: socket_path.clone(),
        max_size,
        remote,
    };
    let keep = [listener.as_raw_fd(), pidfd.as_raw_fd()];
    // With RCACHE_LOG set, the server's logs go to a file beside its socket.
    let log = std::env::var_os(env_vars::RCACHE_LOG).map(|_| socket_path.with_extension("log"));
    daemon::spawn_detached(&keep, log.as_deref(), move || {
        server::serve(listener, &pidfd, config)
    })
    .context("cannot start the code server")?;
    match invocation.program {
        Program::Script(index) if is_plain_source(Path::new(&args[index])) => {
            command
                .args(&args[..index])
                .arg("-c")
                .arg(BOOT)
                .args(&args[index..]);
        }
        _ => {
            command.args(args);
        }
    }
    let original = std::env::var_os(env_vars::PYTHONPATH);
    let mut pythonpath = hook_dir.clone().into_os_string();
    match &original {
        Some(original) => {
            if !original.is_empty() {
                pythonpath.push(":");
                pythonpath.push(original);
            }
            command.env(env_vars::RCACHE_EXEC_PYTHONPATH, original);
        }
        None => {
            command.env_remove(env_vars::RCACHE_EXEC_PYTHONPATH);
        }
    }
    command
        .env(env_vars::PYTHONPATH, pythonpath)
        .env(env_vars::RCACHE_EXEC_HOOK, &hook_dir)
        .env(env_vars::RCACHE_EXEC_SOCKET, &socket_path);
    // Modules imported before the hook runs (those of `.pth` files, the
    // start-up's own) are CPython's to load: where it would write their
    // pycs beside their sources, they go to a private prefix instead, and
    // the hook takes the prefix away again. A caller's own prefix is left
    // as it is.
    let writes_bytecode = !invocation.no_bytecode
        && std::env::var_os(env_vars::PYTHONDONTWRITEBYTECODE).is_none_or(|value| value.is_empty());
    if writes_bytecode && std::env::var_os(env_vars::PYTHONPYCACHEPREFIX).is_none() {
        let startup = runtime.startup_pycache_prefix();
        command
            .env(env_vars::PYTHONPYCACHEPREFIX, &startup)
            .env(env_vars::RCACHE_EXEC_PYCACHEPREFIX, &startup);
    } else {
        command.env_remove(env_vars::RCACHE_EXEC_PYCACHEPREFIX);
    }
    Ok(Some(command))
}

/// A regular file holding no NUL byte: CPython would compile it as source
/// (directories, zip apps and pycs it runs otherwise, so they are left to it).
fn is_plain_source(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| !bytes.contains(&0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hook_runs_the_same_boot_command() {
        let hook = include_str!("sitecustomize.py");
        assert!(hook.contains(&format!("BOOT = \"{}\"", super::BOOT)));
    }
}
