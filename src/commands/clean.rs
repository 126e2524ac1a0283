//! `rcache clean`: remove the pycs this interpreter would use (every
//! optimization level) under some paths, and `__pycache__` dirs left empty.
//! Starts no Python when the interpreter's profile is in the store.

use std::io::Write as _;
use std::path::PathBuf;

use super::warm::print;
use crate::config::{CleanConfig, GlobalConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::report::{Failure, Summary};
use crate::scan;
use crate::sweep::{Sweep, Sweeper};

pub fn clean(global: &GlobalConfig, config: &CleanConfig) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let mut store = super::open_store(global, super::StoreUse::Read)?;
    let (interpreter, _) = super::select_interpreter(global, &mut store)?;
    let tag = &interpreter.profile.cache_tag;
    let mut found = scan::scan(&config.paths, &global.cwd, &config.scan);
    let files = found.take_pyc_sources(config.prefix.as_deref());
    let walked = files.iter().map(PathBuf::as_path).collect();
    let sweeper = Sweeper {
        cache_tag: tag,
        sweep: Sweep::All,
        walked: &walked,
        dry_run: config.dry_run,
    };
    let removed = match &config.prefix {
        None => sweeper.pycache_dirs(&found.pycache_dirs),
        Some(prefix) => sweeper.prefix_tree(prefix, &found.roots),
    };
    let mut out = std::io::stdout().lock();
    for path in &removed.paths {
        if config.dry_run && !global.json {
            writeln!(out, "would remove {}", path.display())?;
        } else if global.verbosity == Verbosity::Verbose {
            writeln!(std::io::stderr(), "removed {}", path.display())?;
        }
    }
    let mut summary = Summary {
        files: files.len() as u64,
        aliases: found.aliases_left_out(config.prefix.as_deref()),
        removed: Some(removed.removed),
        failures: removed.failures,
        ..Summary::default()
    };
    summary
        .failures
        .extend(found.errors.into_iter().map(Failure::from));
    summary.failed = summary.failures.len() as u64;
    summary.seconds = start.elapsed().as_secs_f64();
    let verb = if config.dry_run {
        "Would clean"
    } else {
        "Cleaned"
    };
    print(global, &summary, verb)?;
    Ok(if summary.failures.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}
