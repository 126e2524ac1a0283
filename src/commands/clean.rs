//! `rcache clean`: remove the pycs this interpreter would use (every
//! optimization level) under some paths, and `__pycache__` dirs left empty.
//! Starts no Python when the interpreter's profile is in the store.

use std::io::Write as _;
use std::path::PathBuf;

use super::warm::print;
use crate::config::{CleanConfig, GlobalConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::materialize::{Removed, Sweep, sweep_pycache_dirs};
use crate::report::{Failure, Summary};
use crate::scan;

pub fn clean(global: &GlobalConfig, config: &CleanConfig) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let mut store = super::open_store(global)?;
    let (interpreter, _) = super::select_interpreter(global, &mut store)?;
    let tag = &interpreter.profile.cache_tag;
    let found = scan::scan(&config.paths, &global.cwd, &config.scan);
    let removed = match &config.prefix {
        None => sweep_pycache_dirs(&found.pycache_dirs, tag, Sweep::All, config.dry_run),
        Some(prefix) => {
            let mut removed = Removed::default();
            for source in &found.files {
                for level in 0..=2 {
                    let pyc = crate::pyc::cache_path(source, tag, level, Some(prefix));
                    remove_file(pyc, config.dry_run, &mut removed);
                }
            }
            removed
        }
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
        files: found.files.len() as u64,
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

fn remove_file(path: PathBuf, dry_run: bool, removed: &mut Removed) {
    if std::fs::symlink_metadata(&path).is_err() {
        return;
    }
    if !dry_run {
        if let Err(err) = std::fs::remove_file(&path) {
            removed
                .failures
                .push(crate::scan::io_error(path.clone(), &err).into());
            return;
        }
        // Drop the directory if that left it empty (fails harmlessly if not).
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
    removed.removed += 1;
    removed.paths.push(path);
}
