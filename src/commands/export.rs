//! `rcache export FILE [--for PATH...]`: write the store's code, or only
//! what the sources under some paths use, to one archive file
//! ([`crate::archive`]). Starts no Python: `--for` keys each source for
//! every profile the store holds, at every optimization level.
//!
//! The archive is written to a temp file beside FILE and renamed over it
//! once complete, so FILE is never half written. Entries whose code fails
//! its checksum are reported and left out.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;

use super::counted;
use super::stats::human_bytes;
use crate::archive::Writer;
use crate::config::{ExportConfig, GlobalConfig};
use crate::exit::ExitStatus;
use crate::interpreter::Profile;
use crate::interrupt;
use crate::key::Key;
use crate::report::Failure;
use crate::scan;
use crate::source::hash_all;
use crate::store::{EntryRow, FailureRow, Selection, Store};

/// What an export did, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Exported {
    archive: String,
    /// Sources walked, with `--for`.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<u64>,
    profiles: u64,
    entries: u64,
    failures: u64,
    /// Size of the archive.
    bytes: u64,
    /// Entries left out because their code is corrupt.
    skipped_corrupt: u64,
    seconds: f64,
    /// Sources that could not be walked or read, and entries left out.
    errors: Vec<Failure>,
}

/// Ctrl-C stopped the export; no archive was written.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

pub fn export(global: &GlobalConfig, config: &ExportConfig) -> anyhow::Result<ExitStatus> {
    let start = Instant::now();
    let mut store = super::open_store(global, super::StoreUse::Read)?;
    refuse_the_store(&config.archive, store.path())?;
    let profiles: HashMap<i64, Profile> = store.profiles()?;
    let mut errors = Vec::new();
    let (files, keys) = if config.for_paths.is_empty() {
        (None, None)
    } else {
        let (files, keys) = keys_for(global, config, &mut store, &profiles, &mut errors)?;
        (Some(files), Some(keys))
    };
    let selection = keys
        .as_deref()
        .map_or(Selection::Everything, Selection::Keys);
    let Some(written) = write_archive(&store, selection, &profiles, &config.archive)? else {
        writeln!(std::io::stderr(), "interrupted; no archive written")?;
        return Ok(ExitStatus::Interrupted);
    };
    let skipped_corrupt = written.skipped.len() as u64;
    errors.extend(written.skipped);
    let summary = Exported {
        archive: config.archive.display().to_string(),
        files,
        profiles: written.profiles,
        entries: written.entries,
        failures: written.failures,
        bytes: written.bytes,
        skipped_corrupt,
        seconds: start.elapsed().as_secs_f64(),
        errors,
    };
    super::print_result(global, &summary.errors, &summary, || headline(&summary))?;
    Ok(if summary.errors.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// What went into an archive.
struct Written {
    profiles: u64,
    entries: u64,
    failures: u64,
    /// Size of the archive.
    bytes: u64,
    /// Rows left out, and why.
    skipped: Vec<Failure>,
}

/// Writes the selected rows to `archive`, through a temp file beside it
/// that is renamed over it once complete; `None` after Ctrl-C, with
/// nothing written.
fn write_archive(
    store: &Store,
    selection: Selection<'_>,
    profiles: &HashMap<i64, Profile>,
    archive: &Path,
) -> anyhow::Result<Option<Written>> {
    let dir = archive.parent().unwrap_or(Path::new("/"));
    crate::sweep::remove_stale_temps(dir);
    let temp = tempfile::Builder::new()
        .prefix(".rcache-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    let writer = temp
        .as_file()
        .try_clone()
        .and_then(|file| Writer::new(BufWriter::new(file)))
        .with_context(|| cannot_write(archive))?;
    let mut exporter = Exporter {
        writer,
        archive,
        store: store.path(),
        profiles,
        numbers: HashMap::new(),
        decompressor: zstd::bulk::Decompressor::new().context("cannot start zstd")?,
        scratch: Vec::new(),
        entries: 0,
        failures: 0,
        skipped: Vec::new(),
    };
    let read = store.reading(|| -> anyhow::Result<()> {
        store.for_each_entry(selection, |id, entry| exporter.entry(id, &entry))?;
        store.for_each_failure(selection, |id, failure| exporter.failure(id, &failure))
    });
    match read {
        Err(err) if err.is::<Interrupted>() => return Ok(None),
        result => result?,
    }
    let written = exporter.finish()?;
    temp.persist(archive)
        .with_context(|| cannot_write(archive))?;
    Ok(Some(written))
}

fn cannot_write(archive: &Path) -> String {
    format!("cannot write `{}`", archive.display())
}

/// Writes rows into the archive, each profile just before its first row.
struct Exporter<'a> {
    writer: Writer<BufWriter<File>>,
    /// The archive and the store, which messages name.
    archive: &'a Path,
    store: &'a Path,
    /// The store's profiles, by id.
    profiles: &'a HashMap<i64, Profile>,
    /// The archive number of each profile written, by id.
    numbers: HashMap<i64, u32>,
    decompressor: zstd::bulk::Decompressor<'static>,
    /// Decompressed code, checked and dropped.
    scratch: Vec<u8>,
    entries: u64,
    failures: u64,
    /// Rows left out, and why.
    skipped: Vec<Failure>,
}

impl Exporter<'_> {
    fn entry(&mut self, profile_id: i64, entry: &EntryRow) -> anyhow::Result<()> {
        if interrupt::requested() {
            return Err(Interrupted.into());
        }
        let checked = entry.check(&mut self.decompressor, &mut self.scratch);
        match (checked, self.number(profile_id)?) {
            (Ok(()), Some(number)) => {
                self.writer
                    .entry(number, entry)
                    .with_context(|| cannot_write(self.archive))?;
                self.entries += 1;
            }
            (Err(why), _) => self.skip(&entry.key, entry.optimize, profile_id, &why),
            (Ok(()), None) => {
                self.skip(
                    &entry.key,
                    entry.optimize,
                    profile_id,
                    "has a damaged profile",
                );
            }
        }
        Ok(())
    }

    fn failure(&mut self, profile_id: i64, failure: &FailureRow) -> anyhow::Result<()> {
        if let Some(number) = self.number(profile_id)? {
            self.writer
                .failure(number, failure)
                .with_context(|| cannot_write(self.archive))?;
            self.failures += 1;
        }
        Ok(())
    }

    /// Writes the trailer and makes the archive durable.
    fn finish(self) -> anyhow::Result<Written> {
        let bytes = self
            .writer
            .finish()
            .and_then(|(output, bytes)| {
                let file = output
                    .into_inner()
                    .map_err(std::io::IntoInnerError::into_error)?;
                file.sync_all()?;
                Ok(bytes)
            })
            .with_context(|| cannot_write(self.archive))?;
        Ok(Written {
            profiles: self.numbers.len() as u64,
            entries: self.entries,
            failures: self.failures,
            bytes,
            skipped: self.skipped,
        })
    }

    /// The archive number of a profile, writing the profile first if this
    /// is its first row; `None` for a profile the store has no intact row
    /// for.
    fn number(&mut self, profile_id: i64) -> anyhow::Result<Option<u32>> {
        if let Some(number) = self.numbers.get(&profile_id) {
            return Ok(Some(*number));
        }
        let Some(profile) = self.profiles.get(&profile_id) else {
            return Ok(None);
        };
        let number = self
            .writer
            .profile(profile)
            .with_context(|| cannot_write(self.archive))?;
        self.numbers.insert(profile_id, number);
        Ok(Some(number))
    }

    fn skip(&mut self, key: &Key, optimize: u8, profile_id: i64, why: &str) {
        let interpreter = self
            .profiles
            .get(&profile_id)
            .map_or("unknown interpreter", |profile| profile.cache_tag.as_str());
        self.skipped.push(Failure {
            path: self.store.display().to_string(),
            line: None,
            col: None,
            error_type: "StoreError".to_owned(),
            message: format!(
                "the code of entry {key} ({interpreter}, level {optimize}) {why}; not exported"
            ),
        });
    }
}

/// The keys of every source under `--for`, for every profile in the store
/// and every optimization level, sorted; and the number of sources. Files
/// the store remembers unchanged are not read; those read are remembered,
/// as `warm` does.
fn keys_for(
    global: &GlobalConfig,
    config: &ExportConfig,
    store: &mut Store,
    profiles: &HashMap<i64, Profile>,
    errors: &mut Vec<Failure>,
) -> anyhow::Result<(u64, Vec<Key>)> {
    let found = scan::scan(&config.for_paths, &global.cwd, &config.scan);
    let hashed = hash_all(store, &found.files, global.jobs)?;
    store.record_sources(&hashed.to_remember)?;
    errors.extend(
        found
            .errors
            .into_iter()
            .chain(hashed.errors)
            .map(Failure::from),
    );
    let mut contexts: Vec<_> = profiles
        .values()
        .map(|profile| (profile.cache_tag.as_str(), profile.magic))
        .collect();
    contexts.sort_unstable();
    contexts.dedup();
    let mut keys = Vec::with_capacity(contexts.len() * hashed.sources.len() * 3);
    for (cache_tag, magic) in contexts {
        let context = crate::key::KeyContext { cache_tag, magic };
        for source in &hashed.sources {
            keys.extend((0..=2).map(|level| context.key(level, &source.content)));
        }
    }
    keys.sort_unstable();
    keys.dedup();
    Ok((found.files.len() as u64, keys))
}

/// Writing the archive over the store would destroy it.
fn refuse_the_store(archive: &Path, store: &Path) -> anyhow::Result<()> {
    let same = std::fs::canonicalize(archive)
        .ok()
        .is_some_and(|archive| std::fs::canonicalize(store).is_ok_and(|store| store == archive));
    if same {
        bail!(
            "`{}` is the store itself; export to another file",
            archive.display()
        );
    }
    Ok(())
}

fn headline(exported: &Exported) -> String {
    let mut line = format!(
        "Exported {} and {} ({}, {}) to `{}` in {:.2}s",
        counted(exported.entries, "entry", "entries"),
        counted(exported.failures, "failure", "failures"),
        counted(exported.profiles, "profile", "profiles"),
        human_bytes(exported.bytes),
        exported.archive,
        exported.seconds,
    );
    if let Some(files) = exported.files {
        let _ = write!(line, ", for {}", counted(files, "file", "files"));
    }
    if exported.skipped_corrupt > 0 {
        let skipped = counted(exported.skipped_corrupt, "corrupt entry", "corrupt entries");
        let _ = write!(line, "; {skipped} left out");
    }
    line
}
