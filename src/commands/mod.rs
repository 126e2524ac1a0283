//! One file per subcommand; each returns the run's [`ExitStatus`].

mod clean;
mod config;
mod doctor;
mod exec;
mod export;
mod gc;
mod generated;
mod hook;
mod import;
mod materialize;
mod push;
mod stats;
mod verify;
mod warm;

pub use clean::clean;
pub use config::config;
pub use doctor::doctor;
pub use exec::exec;
pub use export::export;
pub use gc::gc;
pub use generated::{completions, man};
pub use hook::hook;
pub use import::import;
pub use materialize::materialize;
pub use push::push;
pub use stats::{human_bytes, stats};
pub use verify::verify;
pub use warm::warm;

use std::io::Write as _;

use anyhow::Context;
use serde::Serialize;

use crate::config::{GlobalConfig, Verbosity};
use crate::interpreter::{self, FileIdentity, Interpreter};
use crate::report::Failure;
use crate::store::Store;

/// What a command does with the store, which decides what a read-only
/// store means for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreUse {
    /// Only reads it (`stats`): a read-only store is all it needs.
    Read,
    /// Reads hits and stores what it compiled (`warm`, `materialize`):
    /// a read-only store still serves hits; say once that nothing is stored.
    Cache,
    /// Changes what it holds (`gc`, `verify --repair`): a read-only store
    /// is an error.
    Modify,
}

/// Opens the store the configuration names.
fn open_store(global: &GlobalConfig, purpose: StoreUse) -> anyhow::Result<Store> {
    let store = Store::open(&global.store)?;
    if let Some(why) = store.read_only() {
        if purpose == StoreUse::Modify {
            anyhow::bail!(
                "the store `{}` is read-only ({why}); nothing can be changed in it",
                store.path().display()
            );
        }
        if purpose == StoreUse::Cache && global.verbosity != Verbosity::Quiet {
            #[expect(clippy::print_stderr, reason = "a warning, once per run")]
            {
                eprintln!("{}", read_only_warning(&store, why));
            }
        }
    }
    Ok(store)
}

/// What a run says, once, when it cannot store what it compiles.
fn read_only_warning(store: &Store, why: &str) -> String {
    format!(
        "warning: the store `{}` is read-only ({why}); using what it holds, storing nothing",
        store.path().display()
    )
}

/// Prints what a command did that walks no pipeline (`export`, `import`):
/// its `errors` on stderr, then `result` as one JSON object on stdout with
/// `--json`, or else `headline` on stderr (not with `-q`).
fn print_result(
    global: &GlobalConfig,
    errors: &[Failure],
    result: &impl Serialize,
    headline: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for error in errors {
        writeln!(stderr, "{error}")?;
    }
    if global.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, result)?;
        writeln!(stdout)?;
    } else if global.verbosity != Verbosity::Quiet {
        writeln!(stderr, "{}", headline())?;
    }
    Ok(())
}

/// `count` and the noun that goes with it: "1 entry", "2 entries".
fn counted(count: u64, one: &str, many: &str) -> String {
    format!("{count} {}", if count == 1 { one } else { many })
}

/// Finds the interpreter and its profile, probing it only when the store
/// has no profile for this exact executable file. Returns the profile's id.
fn select_interpreter(
    global: &GlobalConfig,
    store: &mut Store,
) -> anyhow::Result<(Interpreter, i64)> {
    let found = find_interpreter(global, Some(store))?;
    let id = match found.profile_id {
        Some(id) => id,
        None => store.remember_profile(
            &found.interpreter.executable,
            &found.identity,
            &found.interpreter.profile,
        )?,
    };
    Ok((found.interpreter, id))
}

/// An interpreter found, and what the store knew of it.
struct Found {
    interpreter: Interpreter,
    /// The executable's identity, which its profile is recorded under.
    identity: FileIdentity,
    /// The profile's id, when `store` already had it for this file.
    profile_id: Option<i64>,
}

/// Finds the interpreter and its profile: from `store` when it has one for
/// this exact executable file, else by probing it. Writes nothing.
fn find_interpreter(global: &GlobalConfig, store: Option<&Store>) -> anyhow::Result<Found> {
    let candidate = interpreter::discover(global.python.as_deref(), &global.cwd)?;
    let mut executable = candidate.path;
    let mut probed = None;
    if candidate.launcher {
        // A wrapper script: only the interpreter knows which binary it is.
        let (profile, real) = interpreter::probe(&executable)?;
        tracing::debug!("`{}` runs `{}`", executable.display(), real.display());
        executable = real;
        probed = Some(profile);
    }
    let identity = FileIdentity::of(&executable)
        .with_context(|| format!("cannot read `{}`", executable.display()))?;
    if let (None, Some(store)) = (&probed, store)
        && let Some((id, profile)) = store.cached_profile(&executable, &identity)?
    {
        tracing::debug!("profile of `{}` from the store", executable.display());
        return Ok(Found {
            interpreter: Interpreter {
                executable,
                profile,
            },
            identity,
            profile_id: Some(id),
        });
    }
    let profile = match probed {
        Some(profile) => profile,
        None => interpreter::probe(&executable)?.0,
    };
    Ok(Found {
        interpreter: Interpreter {
            executable,
            profile,
        },
        identity,
        profile_id: None,
    })
}
