//! `rcache exec ARGS...`: run `python ARGS...` with its imports served from
//! the store (see [`crate::exec`]).

use std::ffi::OsString;

use crate::config::{GlobalConfig, Verbosity};
use crate::exec::{self, Target};
use crate::exit::ExitStatus;
use crate::interpreter;

/// Becomes the interpreter; returns only when it cannot be started.
#[expect(clippy::print_stderr, reason = "the one warning before Python runs")]
pub fn exec(global: &GlobalConfig, args: &[OsString]) -> anyhow::Result<ExitStatus> {
    let candidate = interpreter::discover(global.python.as_deref(), &global.cwd)?;
    let target = super::open_store(global, super::StoreUse::Read).and_then(|mut store| {
        if let Some(why) = store.read_only()
            && global.verbosity != Verbosity::Quiet
        {
            eprintln!("rcache: {}", super::read_only_warning(&store, why));
        }
        let (interpreter, profile_id) = super::select_interpreter(global, &mut store)?;
        Ok(Target {
            interpreter,
            profile_id,
            store,
            max_size: global.max_size,
            remote: crate::remote::Options {
                // The server has no terminal: its warnings go to its log.
                quiet: true,
                ..global.remote.clone()
            },
        })
    });
    Err(exec::run(target, &candidate.path, args))
}
