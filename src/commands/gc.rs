//! `rcache gc`: keep the store under its size limit (and an age, if
//! asked), forget records of files and interpreters that are gone, and
//! give the space back, while other rcache processes keep working.

use serde::Serialize;

use crate::cli::GcArgs;
use crate::config::GlobalConfig;
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
    if !dry_run {
        store.remove_stale_temps();
    }
    let forgotten = if args.forget_missing_pythons {
        store.forget_missing_interpreters(dry_run)?
    } else {
        Forgotten::default()
    };
    let records_removed = store.forget_gone_files(dry_run)?;
    let limits = Limits {
        max_size: Some(global.max_size),
        max_age: args.max_age,
    };
    let (eviction, bytes_after) = if dry_run {
        let planned = store.plan_eviction(limits)?;
        let after = bytes_before.saturating_sub(planned.bytes);
        (planned, after)
    } else {
        let evicted = store.evict_to(limits)?;
        (evicted, store.file_bytes()?)
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
    super::print_result(global, &[], &collected, || headline(&collected))?;
    Ok(ExitStatus::Success)
}

/// The one-line summary: what was (or would be) removed, and the size.
fn headline(collected: &Collected) -> String {
    let counted = super::counted;
    let human = super::stats::human_bytes;
    let forgotten = &collected.forgotten;
    let pythons = if forgotten.interpreters > 0 {
        format!(
            ", {} that are gone ({})",
            counted(forgotten.interpreters, "interpreter", "interpreters"),
            counted(forgotten.profiles, "profile", "profiles")
        )
    } else {
        String::new()
    };
    let (verb, went) = if collected.dry_run {
        ("Would remove", "would go")
    } else {
        ("Removed", "went")
    };
    format!(
        "{verb} {} and {} ({} of code), {} of files that are gone{pythons}; the store {went} from {} to {}",
        counted(collected.entries_removed, "entry", "entries"),
        counted(collected.failures_removed, "failure", "failures"),
        human(collected.bytes_removed),
        counted(collected.records_removed, "record", "records"),
        human(collected.bytes_before),
        human(collected.bytes_after),
    )
}
