//! `rcache gc`: keep the store under its size limit (and an age, if
//! asked), forget records of files and interpreters that are gone, and
//! give the space back, while other rcache processes keep working.

use std::io::Write;

use serde::Serialize;

use crate::cli::GcArgs;
use crate::config::{GlobalConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::store::{Forgotten, Limits};

/// What `gc` did, or would do with `--dry-run`.
#[derive(Debug, Serialize)]
struct Collected {
    store: String,
    dry_run: bool,
    /// Code evicted: compiled entries and remembered failures.
    entries_removed: u64,
    failures_removed: u64,
    /// About how much of the store they took.
    bytes_removed: u64,
    /// Records of source files, pycs and import orders whose file is gone.
    records_removed: u64,
    /// With `--forget-missing-pythons`.
    forgotten: Forgotten,
    /// The store file before and after (estimated on a dry run).
    bytes_before: u64,
    bytes_after: u64,
    seconds: f64,
}

pub fn gc(global: &GlobalConfig, args: &GcArgs) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let mut store = super::open_store(global, super::StoreUse::Modify)?;
    let dry_run = args.dry_run;
    let bytes_before = store.file_bytes()?;
    let forgotten = if args.forget_missing_pythons {
        store.forget_missing_interpreters(dry_run)?
    } else {
        Forgotten::default()
    };
    let records_removed = store.forget_gone_files(dry_run)?;
    let eviction = store.plan_eviction(Limits {
        max_size: Some(global.max_size),
        max_age: args.max_age,
    })?;
    let bytes_after = if dry_run {
        bytes_before.saturating_sub(eviction.bytes)
    } else {
        store.evict(&eviction)?;
        store.give_back_space()?;
        store.file_bytes()?
    };
    let collected = Collected {
        store: store.path().display().to_string(),
        dry_run,
        entries_removed: eviction.entries() + forgotten.entries,
        failures_removed: eviction.failures() + forgotten.failures,
        bytes_removed: eviction.bytes,
        records_removed,
        forgotten,
        bytes_before,
        bytes_after,
        seconds: start.elapsed().as_secs_f64(),
    };
    print(global, &collected)?;
    Ok(ExitStatus::Success)
}

fn print(global: &GlobalConfig, collected: &Collected) -> anyhow::Result<()> {
    if global.json {
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer(&mut stdout, collected)?;
        writeln!(stdout)?;
        return Ok(());
    }
    if global.verbosity == Verbosity::Quiet {
        return Ok(());
    }
    let verb = if collected.dry_run {
        "Would remove"
    } else {
        "Removed"
    };
    let human = super::stats::human_bytes;
    let mut stderr = std::io::stderr().lock();
    writeln!(
        stderr,
        "{verb} {} entries and {} failures ({} of code), {} records of files that are gone{}; the store {} {} to {}",
        collected.entries_removed,
        collected.failures_removed,
        human(collected.bytes_removed),
        collected.records_removed,
        if collected.forgotten.profiles > 0 || collected.forgotten.interpreters > 0 {
            format!(
                ", {} interpreters that are gone ({} profiles)",
                collected.forgotten.interpreters, collected.forgotten.profiles
            )
        } else {
            String::new()
        },
        if collected.dry_run {
            "would go from"
        } else {
            "went from"
        },
        human(collected.bytes_before),
        human(collected.bytes_after),
    )?;
    Ok(())
}
