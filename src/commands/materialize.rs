//! `rcache materialize`: fill the store, then write the pycs CPython will
//! use, compiling only content the store has never seen.

use std::io::Write as _;

use super::warm::{exit_status, fill_store, print};
use crate::config::{GlobalConfig, MaterializeConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::materialize::{Removed, Sweep, sweep_pycache_dirs, write_pycs};

pub fn materialize(
    global: &GlobalConfig,
    config: &MaterializeConfig,
) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let mut filled = fill_store(global, &config.walk)?;
    let written = write_pycs(
        &filled.store,
        &filled.interpreter.profile,
        &filled.outcome.compiled,
        &config.write,
        global.jobs,
    )?;
    filled.store.record_written(&written.records)?;
    filled.store.checkpoint();
    // Orphans live beside sources; a prefix tree is left as it is.
    let removed = if config.write.prefix.is_none() {
        sweep_pycache_dirs(
            &filled.pycache_dirs,
            &filled.interpreter.profile.cache_tag,
            Sweep::Orphans,
            config.write.dry_run,
        )
    } else {
        Removed::default()
    };
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
