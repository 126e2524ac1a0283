//! The store as `rcache doctor` sees it: where it is, whether rcache would
//! use it (and write it), and how much of the tree it holds code for; read
//! without creating, upgrading or writing anything.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::verdict::Verdict;
use crate::interpreter::Profile;
use crate::store::{Error, Inspection, Lookup, Store};

/// What rcache would do with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreState {
    /// Nothing at its path: the next `warm` or `materialize` creates it.
    Absent,
    /// An empty file or database: the next run makes it a store.
    Empty,
    /// An older schema: the next writable run upgrades it.
    Outdated,
    /// Used, and written by runs that compile.
    Writable,
    /// Used for its hits; what runs compile is not stored.
    ReadOnly,
    /// Refused by every command (not a store, from a newer rcache, or
    /// writable by others): never used.
    Refused,
    /// Damaged or unreadable.
    Unusable,
}

/// Everything reported about the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreReport {
    pub path: String,
    pub state: StoreState,
    /// Why it is read-only, refused, unusable or outdated.
    pub reason: Option<String>,
    /// The file's size, plus its `-wal`'s.
    pub bytes: Option<u64>,
    pub owner_uid: Option<u32>,
    /// Permission bits, in octal.
    pub mode: Option<String>,
    /// Code entries in the whole store.
    pub entries: Option<u64>,
    /// Code entries of this interpreter (its cache tag and version).
    pub entries_for_python: Option<u64>,
    /// (source, level) pairs of the tree keyed against the store.
    pub lookups: u64,
    /// Of those, the ones with code in the store for this interpreter.
    pub hits: u64,
    /// Of those, the ones the store knows do not compile.
    pub failures: u64,
    /// Lookups answered from the store over its lifetime (`rcache stats`).
    pub lifetime_hits: Option<u64>,
    /// Lookups that had to compile over its lifetime.
    pub lifetime_misses: Option<u64>,
}

impl StoreReport {
    /// Looks at the store at `path`; returns it open for reading when
    /// rcache would use it and it can be read.
    pub fn inspect(path: &Path) -> (Self, Option<Box<Store>>) {
        let mut report = Self {
            path: super::shown(path),
            state: StoreState::Absent,
            reason: None,
            bytes: None,
            owner_uid: None,
            mode: None,
            entries: None,
            entries_for_python: None,
            lookups: 0,
            hits: 0,
            failures: 0,
            lifetime_hits: None,
            lifetime_misses: None,
        };
        report.describe_file(path);
        let store = match Store::open_to_inspect(path) {
            Ok(Inspection::Absent) => None,
            Ok(Inspection::Empty) => {
                report.state = StoreState::Empty;
                None
            }
            Ok(Inspection::Outdated { version }) => {
                report.state = StoreState::Outdated;
                report.reason = Some(format!(
                    "schema {version}: the next rcache run that can write it upgrades it"
                ));
                None
            }
            Ok(Inspection::Open { store, read_only }) => {
                report.state = if read_only.is_some() {
                    StoreState::ReadOnly
                } else {
                    StoreState::Writable
                };
                report.reason = read_only;
                Some(store)
            }
            Err(err) => {
                report.fail(&err);
                None
            }
        };
        (report, store)
    }

    /// Records why the store cannot be used.
    pub fn fail(&mut self, err: &Error) {
        self.state = match err {
            Error::NotAStore { .. } | Error::TooNew { .. } | Error::NotPrivate { .. } => {
                StoreState::Refused
            }
            _ => StoreState::Unusable,
        };
        self.reason = Some(error_message(err));
    }

    /// Size, owner and mode of the file, when there is one.
    #[cfg(unix)]
    fn describe_file(&mut self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(metadata) = std::fs::metadata(path) else {
            return;
        };
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(PathBuf::from(wal)).map_or(0, |wal| wal.len());
        self.bytes = Some(metadata.len() + wal_bytes);
        self.owner_uid = Some(metadata.uid());
        self.mode = Some(format!("{:o}", metadata.mode() & 0o7777));
    }

    #[cfg(not(unix))]
    fn describe_file(&mut self, path: &Path) {
        self.bytes = std::fs::metadata(path).ok().map(|metadata| metadata.len());
    }

    /// Reads what the store holds: its totals and lifetime counters, and
    /// the tree's hits ([`Self::count_hits`]). A store that fails to be
    /// read is reported unusable.
    pub fn read(
        &mut self,
        store: &Store,
        profile: &Profile,
        levels: &[u8],
        threads: usize,
        verdicts: &mut [Verdict],
    ) {
        let read = store.stats().and_then(|stats| {
            self.entries = Some(stats.entries);
            self.lifetime_hits = Some(stats.lifetime_hits);
            self.lifetime_misses = Some(stats.lifetime_misses);
            self.entries_for_python = Some(
                stats
                    .profiles
                    .iter()
                    .filter(|p| p.cache_tag == profile.cache_tag && p.version == profile.version)
                    .map(|p| p.entries)
                    .sum(),
            );
            self.count_hits(store, profile, levels, threads, verdicts)
        });
        if let Err(err) = read {
            self.fail(&err);
        }
    }

    /// Counts, and marks on each verdict, the (source, level) pairs the
    /// store holds code for, keyed as `warm` keys them (from the store's
    /// record of a file unchanged since, else by reading it); nothing is
    /// recorded.
    fn count_hits(
        &mut self,
        store: &Store,
        profile: &Profile,
        levels: &[u8],
        threads: usize,
        verdicts: &mut [Verdict],
    ) -> Result<(), Error> {
        let mut files: Vec<PathBuf> = verdicts.iter().map(|v| v.source.clone()).collect();
        files.dedup();
        let keyed = crate::source::key_all(store, &files, profile, levels, threads)?;
        let mut found: HashMap<(&Path, u8), bool> = HashMap::new();
        store.reading(|| -> Result<(), Error> {
            for source in &keyed.sources {
                for (&level, key) in levels.iter().zip(&source.keys) {
                    let (lookup, _) = store.lookup(key)?;
                    self.lookups += 1;
                    match lookup {
                        Lookup::Hit { .. } => self.hits += 1,
                        Lookup::Failed(_) => self.failures += 1,
                        Lookup::Miss => {}
                    }
                    found.insert(
                        (source.path.as_path(), level),
                        matches!(lookup, Lookup::Hit { .. }),
                    );
                }
            }
            Ok(())
        })?;
        for verdict in verdicts.iter_mut() {
            verdict.in_store = found
                .get(&(verdict.source.as_path(), verdict.level))
                .copied();
        }
        Ok(())
    }
}

/// The error and its causes, in one line.
fn error_message(err: &Error) -> String {
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
