//! `rcache push [PATH...]`: make the remotes hold the code of every source
//! under PATHs. It warms them as `warm` does (the store, the remotes, then
//! the compiler, uploading what it compiles), then asks each remote for
//! every other object those sources use and uploads what it lacks: how a
//! store warmed before the remote existed seeds it.

use std::collections::HashSet;

use anyhow::bail;

use super::warm::{Filled, exit_status, fill_store, finish_remote, print};
use crate::config::{GlobalConfig, Verbosity, WalkConfig};
use crate::exit::ExitStatus;
use crate::key::Key;
use crate::progress::{Bar, Reporter, Silent};
use crate::remote::{self, Remote};
use crate::store::{Lookup, NewFailure};

pub fn push(global: &GlobalConfig, config: &WalkConfig) -> anyhow::Result<ExitStatus> {
    if global.remote.read_only {
        bail!("`rcache push` uploads: it cannot run with `--remote-read-only`");
    }
    let Some(remote) = Remote::connect(&global.remote)? else {
        bail!(
            "`rcache push` needs a remote: pass `--remote URL` (or set RCACHE_REMOTE, or `remote` in [tool.rcache])"
        );
    };
    let mut filled = fill_store(global, config, None, Some(&remote))?;
    let objects = objects(&filled, &global.levels)?;
    tracing::debug!("{} objects to check on the remotes", objects.len());
    let reporter: Box<dyn Reporter> = if global.json || global.verbosity != Verbosity::Normal {
        Box::new(Silent)
    } else {
        Bar::if_terminal()
    };
    remote.ensure(&objects, reporter.as_ref());
    finish_remote(Some(remote), &mut filled)?;
    filled.store.end_run(global.max_size);
    print(global, &filled.outcome.summary, "Pushed")?;
    Ok(exit_status(&filled.outcome))
}

/// The object of every key the walked sources use, code or failure, from
/// the store. A blob that fails its checks is left out (`rcache verify`
/// reports it; the next run that needs it compiles it again).
fn objects(filled: &Filled, levels: &[u8]) -> anyhow::Result<Vec<(Key, Vec<u8>)>> {
    let context = filled.interpreter.profile.key_context();
    let mut seen = HashSet::new();
    let mut objects = Vec::new();
    for (source, _) in &filled.outcome.compiled {
        for (&optimize, &key) in levels.iter().zip(&source.keys) {
            if !seen.insert(key) {
                continue;
            }
            let object = match filled.store.lookup(&key)?.0 {
                Lookup::Hit { warnings } => {
                    let Some(blob) = filled.store.read_blob(&key)? else {
                        continue;
                    };
                    match blob.to_entry(key, filled.profile_id, optimize, warnings) {
                        Ok(entry) => remote::encode_code(&context, &source.content, &entry),
                        Err(why) => {
                            tracing::warn!("not pushing {}: stored code {why}", key.to_hex());
                            continue;
                        }
                    }
                }
                Lookup::Failed(failure) => {
                    let failure = NewFailure {
                        key,
                        profile_id: filled.profile_id,
                        optimize,
                        failure,
                    };
                    remote::encode_failure(&context, &source.content, &failure)
                }
                Lookup::Miss => continue,
            };
            objects.push((key, object));
        }
    }
    Ok(objects)
}
