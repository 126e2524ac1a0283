//! `rcache verify [--repair]`: SQLite's integrity and foreign key checks,
//! every blob decompressed and checked against its checksum, and every
//! blob loaded by its own interpreter (where one is still installed) to
//! prove it is the code of its key. Exit 0 when clean, 1 when something was
//! found (each reported; with `--repair`, bad entries are removed so they
//! are compiled again, and a damaged file is rebuilt from what can be
//! read), 2 when the store could not be checked at all.

use std::collections::HashMap;
use std::io::Write;

use serde::Serialize;

use crate::cli::VerifyArgs;
use crate::config::{GlobalConfig, Verbosity};
use crate::exit::ExitStatus;
use crate::interpreter::{Profile, UnmarshalCheck};
use crate::key::Key;
use crate::parallel;
use crate::store::{Store, StoredCode, StoredEntry};

/// Entries read and checked at a time.
const BATCH: usize = 256;

/// One bad entry.
#[derive(Debug, Serialize)]
struct Problem {
    #[serde(skip)]
    rowid: i64,
    key: String,
    cache_tag: String,
    optimize: u8,
    /// What is wrong with it.
    #[serde(rename = "problem")]
    what: String,
}

/// What `--repair` did.
#[derive(Debug, Serialize)]
struct Repaired {
    /// The file was rebuilt from the rows that could be read.
    rebuilt: bool,
    /// Rows that could not be read, or were bad, while rebuilding.
    rows_lost: u64,
    entries_removed: u64,
}

#[derive(Debug, Serialize)]
struct Verified {
    store: String,
    /// SQLite's findings; empty when it finds the file sound.
    integrity: Vec<String>,
    entries: u64,
    /// Entries loaded by an interpreter of their profile.
    unmarshalled: u64,
    /// Profiles with no interpreter installed: checked by checksum only.
    unchecked_profiles: Vec<String>,
    problems: Vec<Problem>,
    repaired: Option<Repaired>,
    seconds: f64,
}

pub fn verify(global: &GlobalConfig, args: &VerifyArgs) -> anyhow::Result<ExitStatus> {
    let start = std::time::Instant::now();
    let purpose = if args.repair {
        super::StoreUse::Modify
    } else {
        super::StoreUse::Read
    };
    let mut store = super::open_store(global, purpose)?;
    let mut verified = check(global, &store);
    if args.repair && (!verified.integrity.is_empty() || !verified.problems.is_empty()) {
        verified.repaired = Some(repair(&mut store, &verified)?);
    }
    verified.seconds = start.elapsed().as_secs_f64();
    print(global, &verified)?;
    Ok(
        if verified.integrity.is_empty() && verified.problems.is_empty() {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        },
    )
}

/// Runs every check, changing nothing.
fn check(global: &GlobalConfig, store: &Store) -> Verified {
    let mut integrity = store.integrity_problems();
    let profiles = or_finding(store.profiles(), "the profiles", &mut integrity);
    let mut checkers: HashMap<i64, UnmarshalCheck> = or_finding(
        store.installed_interpreters(),
        "the interpreters",
        &mut integrity,
    )
    .into_iter()
    .map(|(profile, python)| (profile, UnmarshalCheck::new(&python)))
    .collect();
    let mut problems = Vec::new();
    let mut entries = 0;
    let mut unmarshalled = 0;
    let mut unchecked: HashMap<i64, u64> = HashMap::new();
    let walked = store.each_entry(BATCH, |batch| {
        entries += batch.len() as u64;
        let decoded = parallel::map(&batch, global.jobs, |entry| entry.blob.decode());
        let mut by_profile: HashMap<i64, Vec<(&StoredEntry, &[u8])>> = HashMap::new();
        for (entry, code) in batch.iter().zip(&decoded) {
            match code {
                StoredCode::Found(code) => by_profile
                    .entry(entry.profile_id)
                    .or_default()
                    .push((entry, code)),
                StoredCode::Corrupt(why) => problems.push(problem(&profiles, entry, why.clone())),
            }
        }
        for (profile, code) in by_profile {
            let Some(checker) = checkers.get_mut(&profile) else {
                *unchecked.entry(profile).or_default() += code.len() as u64;
                continue;
            };
            let keyed: Vec<(Key, &[u8])> = code
                .iter()
                .map(|(entry, code)| (entry.key, *code))
                .collect();
            match checker.check(&keyed) {
                Ok(verdicts) => {
                    unmarshalled += verdicts.len() as u64;
                    for ((entry, _), verdict) in code.iter().zip(verdicts) {
                        if let Some(why) = verdict {
                            problems.push(problem(&profiles, entry, why));
                        }
                    }
                }
                Err(err) => {
                    tracing::warn!("cannot run the interpreter of profile {profile}: {err}");
                    checkers.remove(&profile);
                    *unchecked.entry(profile).or_default() += code.len() as u64;
                }
            }
        }
    });
    if let Err(err) = walked {
        integrity.push(format!(
            "cannot read every entry: {:#}",
            anyhow::Error::new(err)
        ));
    }
    let mut unchecked_profiles: Vec<String> = unchecked
        .into_iter()
        .map(|(profile, count)| {
            let name = profiles.get(&profile).map_or_else(
                || format!("profile {profile}"),
                |p| format!("{} ({})", p.cache_tag, p.version),
            );
            format!("{name}: {count} entries")
        })
        .collect();
    unchecked_profiles.sort();
    Verified {
        store: store.path().display().to_string(),
        integrity,
        entries,
        unmarshalled,
        unchecked_profiles,
        problems,
        repaired: None,
        seconds: 0.0,
    }
}

/// What `read` gave, or nothing and a finding: a damaged table is
/// something to report, not a reason to stop.
fn or_finding<T: Default>(
    read: Result<T, crate::store::Error>,
    what: &str,
    integrity: &mut Vec<String>,
) -> T {
    read.unwrap_or_else(|err| {
        integrity.push(format!("cannot read {what}: {:#}", anyhow::Error::new(err)));
        T::default()
    })
}

fn problem(profiles: &HashMap<i64, Profile>, entry: &StoredEntry, problem: String) -> Problem {
    Problem {
        rowid: entry.rowid,
        key: entry.key.to_hex(),
        cache_tag: profiles.get(&entry.profile_id).map_or_else(
            || format!("profile {}", entry.profile_id),
            |p| p.cache_tag.clone(),
        ),
        optimize: entry.optimize,
        what: problem,
    }
}

/// Removes bad entries; rebuilds the file first when SQLite found it
/// damaged. Fails (exit 2) if the store is still damaged afterwards.
fn repair(store: &mut Store, verified: &Verified) -> anyhow::Result<Repaired> {
    let rebuilt = !verified.integrity.is_empty();
    let rows_lost = if rebuilt { store.rebuild()? } else { 0 };
    let bad: Vec<i64> = verified
        .problems
        .iter()
        .map(|problem| problem.rowid)
        .collect();
    store.remove_entry_rows(&bad)?;
    store.give_back_space()?;
    let left = store.integrity_problems();
    if !left.is_empty() {
        anyhow::bail!(
            "the store `{}` is still damaged after the repair: {}",
            store.path().display(),
            left.join("; ")
        );
    }
    Ok(Repaired {
        rebuilt,
        rows_lost,
        entries_removed: bad.len() as u64,
    })
}

/// Each finding on stderr, notes unless quiet, then the summary (JSON on
/// stdout with `--json`).
fn print(global: &GlobalConfig, verified: &Verified) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for finding in &verified.integrity {
        writeln!(stderr, "{}: {finding}", verified.store)?;
    }
    for problem in &verified.problems {
        writeln!(
            stderr,
            "{}: entry {} ({}, -O{}): {}",
            verified.store, problem.key, problem.cache_tag, problem.optimize, problem.what
        )?;
    }
    if !global.json && global.verbosity != Verbosity::Quiet {
        for profile in &verified.unchecked_profiles {
            writeln!(
                stderr,
                "note: no interpreter of {profile} is installed: checked by checksum only"
            )?;
        }
    }
    drop(stderr);
    super::print_result(global, &[], verified, || headline(verified))
}

fn headline(verified: &Verified) -> String {
    let counted = super::counted;
    let found = (verified.integrity.len() + verified.problems.len()) as u64;
    let outcome = match (found, &verified.repaired) {
        (0, _) => "no problems".to_owned(),
        (found, None) => format!(
            "{} (`rcache verify --repair` repairs them)",
            counted(found, "problem", "problems")
        ),
        (found, Some(repaired)) => format!(
            "{}, repaired: {} removed{}",
            counted(found, "problem", "problems"),
            counted(repaired.entries_removed, "entry", "entries"),
            if repaired.rebuilt {
                format!(
                    ", file rebuilt ({} lost)",
                    counted(repaired.rows_lost, "row", "rows")
                )
            } else {
                String::new()
            }
        ),
    };
    format!(
        "Verified {} ({} loaded by their interpreter) in {:.2}s: {outcome}",
        counted(verified.entries, "entry", "entries"),
        verified.unmarshalled,
        verified.seconds
    )
}
