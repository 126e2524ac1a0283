//! One file per subcommand; each returns the run's [`ExitStatus`].

mod clean;
mod exec;
mod export;
mod import;
mod materialize;
mod stats;
mod warm;

pub use clean::clean;
pub use exec::exec;
pub use export::export;
pub use import::import;
pub use materialize::materialize;
pub use stats::stats;
pub use warm::warm;

use std::io::Write as _;

use anyhow::Context;
use serde::Serialize;

use crate::config::{GlobalConfig, Verbosity};
use crate::interpreter::{self, FileIdentity, Interpreter};
use crate::report::Failure;
use crate::store::Store;

/// Opens the store the configuration names.
fn open_store(global: &GlobalConfig) -> anyhow::Result<Store> {
    Ok(Store::open(&global.store)?)
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
    if probed.is_none() {
        if let Some((id, profile)) = store.cached_profile(&executable, &identity)? {
            tracing::debug!("profile of `{}` from the store", executable.display());
            return Ok((
                Interpreter {
                    executable,
                    profile,
                },
                id,
            ));
        }
    }
    let profile = match probed {
        Some(profile) => profile,
        None => interpreter::probe(&executable)?.0,
    };
    let id = store.remember_profile(&executable, &identity, &profile)?;
    Ok((
        Interpreter {
            executable,
            profile,
        },
        id,
    ))
}
