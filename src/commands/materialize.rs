//! `rcache materialize`: fill the store, then write the pycs CPython will
//! use, compiling only content the store has never seen.

use std::io::Write as _;
use std::path::PathBuf;

use super::warm::{Filled, exit_status, fill_store, finish_remote, print};
use crate::config::{GlobalConfig, MaterializeConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::materialize::{Written, write_pycs};
use crate::remote::Remote;
use crate::report::Failure;
use crate::sweep::{Sweep, Sweeper};

pub fn materialize(
    global: &GlobalConfig,
    config: &MaterializeConfig,
) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let remote = Remote::connect(&global.remote)?;
    let mut filled = fill_store(
        global,
        &config.walk,
        config.write.prefix.as_deref(),
        remote.as_ref(),
    )?;
    tracing::debug!("store filled by {:.1?}", start.elapsed());
    let mut written = write_pycs(
        &filled.store,
        &filled.interpreter.profile,
        &filled.outcome.compiled,
        &config.write,
        global.jobs,
    )?;
    if !written.corrupt.is_empty() && !config.write.dry_run {
        recompile_corrupt(global, config, &mut filled, &mut written, remote.as_ref())?;
    }
    finish_remote(remote, &mut filled)?;
    for (path, _, why) in written.corrupt.drain(..) {
        written.failures.push(Failure {
            path: path.display().to_string(),
            line: None,
            col: None,
            error_type: "StoreError".to_owned(),
            message: format!("stored code {why}; not written"),
        });
    }
    tracing::debug!(
        "{} pycs written by {:.1?}",
        written.written,
        start.elapsed()
    );
    filled.store.record_written(&written.records)?;
    filled.store.end_run(global.max_size);
    tracing::debug!("recorded by {:.1?}", start.elapsed());
    let walked = filled.files.iter().map(PathBuf::as_path).collect();
    let sweeper = Sweeper {
        cache_tag: &filled.interpreter.profile.cache_tag,
        sweep: Sweep::Orphans,
        walked: &walked,
        dry_run: config.write.dry_run,
    };
    let removed = match &config.write.prefix {
        None => sweeper.pycache_dirs(&filled.pycache_dirs),
        Some(prefix) => sweeper.prefix_tree(prefix, &filled.roots),
    };
    tracing::debug!("swept by {:.1?}", start.elapsed());
    if config.write.dry_run && !global.json {
        let mut stdout = std::io::stdout().lock();
        for path in &written.paths {
            writeln!(stdout, "would write {}", path.display())?;
        }
        for path in &removed.paths {
            writeln!(stdout, "would remove {}", path.display())?;
        }
    } else if global.verbosity == Verbosity::Verbose {
        let mut stderr = std::io::stderr().lock();
        for path in &written.paths {
            writeln!(stderr, "wrote {}", path.display())?;
        }
        for path in &removed.paths {
            writeln!(stderr, "removed {}", path.display())?;
        }
    }
    let summary = &mut filled.outcome.summary;
    summary.failed += (written.failures.len() + removed.failures.len()) as u64;
    summary.failures.extend(written.failures);
    summary.failures.extend(removed.failures);
    summary.failures.sort_by(|a, b| a.path.cmp(&b.path));
    summary.written = Some(written.written);
    summary.up_to_date = Some(written.up_to_date);
    summary.removed = Some(removed.removed);
    summary.seconds = start.elapsed().as_secs_f64();
    let verb = if config.write.dry_run {
        "Would materialize"
    } else {
        "Materialized"
    };
    print(global, summary, verb)?;
    Ok(exit_status(&filled.outcome))
}

/// A corrupt blob is a miss: say so, drop it, compile those sources again
/// and write their pycs; the run goes on as if it had been missing.
fn recompile_corrupt(
    global: &GlobalConfig,
    config: &MaterializeConfig,
    filled: &mut Filled,
    written: &mut Written,
    remote: Option<&Remote>,
) -> anyhow::Result<()> {
    let corrupt = std::mem::take(&mut written.corrupt);
    if global.verbosity != Verbosity::Quiet {
        let mut stderr = std::io::stderr().lock();
        for (path, _, why) in &corrupt {
            writeln!(
                stderr,
                "warning: the stored code of `{}` {why}; compiling it again",
                path.display()
            )?;
        }
    }
    let keys: Vec<_> = corrupt.iter().map(|(_, key, _)| *key).collect();
    filled.store.remove_entries(&keys)?;
    let mut walk = config.walk.clone();
    walk.paths = corrupt.into_iter().map(|(path, _, _)| path).collect();
    walk.paths.dedup();
    let again = fill_store(global, &walk, config.write.prefix.as_deref(), remote)?;
    let rewritten = write_pycs(
        &again.store,
        &again.interpreter.profile,
        &again.outcome.compiled,
        &config.write,
        global.jobs,
    )?;
    let summary = &mut filled.outcome.summary;
    summary.compiled += again.outcome.summary.compiled;
    summary.hits -= again.outcome.summary.compiled.min(summary.hits);
    summary.workers_started += again.outcome.summary.workers_started;
    summary.bytes_stored += again.outcome.summary.bytes_stored;
    summary.failures.extend(again.outcome.summary.failures);
    written.written += rewritten.written;
    written.up_to_date += rewritten.up_to_date;
    written.paths.extend(rewritten.paths);
    written.records.extend(rewritten.records);
    written.failures.extend(rewritten.failures);
    written.corrupt.extend(rewritten.corrupt);
    Ok(())
}
