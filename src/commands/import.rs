//! `rcache import FILE`: merge an archive written by `rcache export` into
//! the store.
//!
//! The whole archive is read and checked first (magic, version, every
//! record, the trailer's count and checksum), before the store is even
//! opened: a foreign, newer, corrupt or truncated file changes nothing
//! (exit 2). Then each entry's code is decompressed and checked against its
//! checksum — a bad one is reported and never stored (exit 1) — and rows
//! are merged in short write transactions that never replace good code
//! ([`Store::merge`]).

use std::fs::File;
use std::io::{BufReader, Seek, SeekFrom, Write as _};
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::counted;
use super::stats::human_bytes;
use crate::archive::{self, FormatError, Reader, Record};
use crate::config::{GlobalConfig, ImportConfig};
use crate::exit::ExitStatus;
use crate::interrupt;
use crate::report::Failure;
use crate::store::{EntryRow, FailureRow, Merged, Store};

/// Rows merged per write transaction, at most ...
const BATCH_ROWS: usize = 256;
/// ... and compressed code per transaction, at most.
const BATCH_BYTES: usize = 8 << 20;

/// What an import did, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Imported {
    archive: String,
    /// Size of the archive.
    bytes: u64,
    profiles: u64,
    #[serde(flatten)]
    merged: Merged,
    /// Entries whose code failed its checksum: not stored.
    entries_rejected: u64,
    seconds: f64,
    /// The entries rejected, and why.
    errors: Vec<Failure>,
}

pub fn import(global: &GlobalConfig, config: &ImportConfig) -> anyhow::Result<ExitStatus> {
    let start = Instant::now();
    let path = &config.archive;
    let mut file = File::open(path).with_context(|| format!("cannot open `{}`", path.display()))?;
    let bytes = archive::check(BufReader::new(&file)).map_err(|err| unusable(path, &err))?;
    let mut store = super::open_store(global, super::StoreUse::Modify)?;
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    // Checked whole above; an error now means the file changed since.
    let mut reader = Reader::open(BufReader::new(&file)).map_err(|err| unusable(path, &err))?;
    let mut importer = Importer {
        store: &mut store,
        archive: path,
        profiles: Vec::new(),
        entries: Vec::new(),
        failures: Vec::new(),
        batch_bytes: 0,
        merged: Merged::default(),
        rejected: Vec::new(),
        decompressor: zstd::bulk::Decompressor::new().context("cannot start zstd")?,
        scratch: Vec::new(),
    };
    let mut interrupted = false;
    while let Some(record) = reader.next_record().map_err(|err| unusable(path, &err))? {
        importer.take(record)?;
        if interrupt::requested() {
            interrupted = true;
            break;
        }
    }
    importer.flush()?;
    let Importer {
        profiles,
        merged,
        rejected,
        ..
    } = importer;
    store.end_run(global.max_size);
    if interrupted {
        writeln!(std::io::stderr(), "interrupted; what was read is merged")?;
    }

    let summary = Imported {
        archive: path.display().to_string(),
        bytes,
        profiles: profiles.len() as u64,
        merged,
        entries_rejected: rejected.len() as u64,
        seconds: start.elapsed().as_secs_f64(),
        errors: rejected,
    };
    super::print_result(global, &summary.errors, &summary, || headline(&summary))?;
    Ok(if interrupted {
        ExitStatus::Interrupted
    } else if summary.errors.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Merges records into the store in batches.
struct Importer<'a> {
    store: &'a mut Store,
    archive: &'a Path,
    /// For each archive profile number: the profile's id in the store, and
    /// its cache tag.
    profiles: Vec<(i64, String)>,
    /// The batch being gathered, with profile ids of the store.
    entries: Vec<(i64, EntryRow)>,
    failures: Vec<(i64, FailureRow)>,
    /// Compressed code in the batch.
    batch_bytes: usize,
    merged: Merged,
    /// Entries whose code is corrupt, and why.
    rejected: Vec<Failure>,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Decompressed code, checked and dropped.
    scratch: Vec<u8>,
}

impl Importer<'_> {
    fn take(&mut self, record: Record) -> anyhow::Result<()> {
        match record {
            Record::Profile(profile) => {
                let id = self.store.profile_id(&profile)?;
                self.profiles.push((id, profile.cache_tag));
            }
            Record::Entry { profile, entry } => {
                let (id, cache_tag) = self.profile(profile)?;
                match entry.check(&mut self.decompressor, &mut self.scratch) {
                    Ok(()) => {
                        self.batch_bytes += entry.data.len();
                        self.entries.push((id, entry));
                    }
                    Err(why) => {
                        let message = format!(
                            "the code of entry {} ({cache_tag}, level {}) {why}; not imported",
                            entry.key, entry.optimize
                        );
                        self.rejected.push(Failure {
                            path: self.archive.display().to_string(),
                            line: None,
                            col: None,
                            error_type: "ArchiveError".to_owned(),
                            message,
                        });
                    }
                }
            }
            Record::Failure { profile, failure } => {
                let (id, _) = self.profile(profile)?;
                self.failures.push((id, failure));
            }
        }
        if self.entries.len() + self.failures.len() >= BATCH_ROWS || self.batch_bytes >= BATCH_BYTES
        {
            self.flush()?;
        }
        Ok(())
    }

    /// The store id and cache tag of the profile numbered `number` (the
    /// reader checked it was defined).
    fn profile(&self, number: u32) -> anyhow::Result<(i64, String)> {
        self.profiles
            .get(number as usize)
            .cloned()
            .with_context(|| format!("profile {number} of the archive is unknown"))
    }

    /// Merges the batch in one write transaction.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.merged += self.store.merge(&self.entries, &self.failures)?;
        self.entries.clear();
        self.failures.clear();
        self.batch_bytes = 0;
        Ok(())
    }
}

/// An archive that cannot be used, named.
fn unusable(path: &Path, err: &FormatError) -> anyhow::Error {
    anyhow::anyhow!("`{}` {err}", path.display())
}

fn headline(imported: &Imported) -> String {
    let merged = &imported.merged;
    format!(
        "Imported `{}` ({}) in {:.2}s: {} added, {} already present, {} replaced, {} rejected; {} added, {} already present",
        imported.archive,
        human_bytes(imported.bytes),
        imported.seconds,
        counted(merged.entries_added, "entry", "entries"),
        merged.entries_present,
        merged.entries_replaced,
        imported.entries_rejected,
        counted(merged.failures_added, "failure", "failures"),
        merged.failures_present,
    )
}
