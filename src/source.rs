//! Keying sources: read each file once and hash it, or, when the store
//! remembers the file with the same identity, take its hash without reading.
//!
//! A file's identity (device, inode, size, mtime, ctime) changes with any
//! write or replacement, and ctime cannot be set back, so an unchanged
//! identity means unchanged bytes. Timestamps are coarse, though: an edit in
//! the same clock tick as the read could keep them. So, as git does for its
//! "racily clean" entries, a file is only remembered when it was last
//! changed well before it was read ([`racy_margin`]); a fresher file is
//! read again next time. Within one run, by the same rule, a file reached
//! by several paths (a symlinked or hard-linked file; under a pycache
//! prefix, each path to a directory reached twice) is read once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use crate::identity::FileIdentity;
use crate::interpreter::Profile;
use crate::key::{ContentHash, Key};
use crate::parallel;
use crate::scan::{ScanError, io_error};
use crate::store::{KnownSource, Store};

/// How much older than the read a file's mtime and ctime must be for the
/// file to be remembered, on file systems with fine timestamps: ext4, XFS,
/// btrfs and APFS stamp files with the kernel's coarse clock, one tick
/// (1-10 ms) behind the wall clock at most, so 100 ms is ten ticks.
const RACY_MARGIN: Duration = Duration::from_millis(100);
/// The same where timestamps are whole seconds (FAT's are 2 s, HFS+ and some
/// network file systems keep seconds): an edit within the same second or two
/// keeps them.
const RACY_MARGIN_COARSE: Duration = Duration::from_secs(3);

/// A source keyed once, with its key at each level asked.
pub struct Source {
    pub path: PathBuf,
    /// What the file's metadata said when it was keyed.
    pub metadata: std::fs::Metadata,
    /// blake3 of the bytes the keys were made from.
    pub content: ContentHash,
    /// The key at each level asked, in order.
    pub keys: Vec<Key>,
    /// The bytes, once read: at keying time, or on first use for a file
    /// keyed from the store's record.
    bytes: OnceLock<Arc<[u8]>>,
}

impl Source {
    /// The bytes that were keyed. A file keyed from its record is read now,
    /// and must still hash to [`Self::content`]: an edit since is reported,
    /// never paired with the old key.
    pub fn bytes(&self) -> Result<&Arc<[u8]>, ScanError> {
        if let Some(bytes) = self.bytes.get() {
            return Ok(bytes);
        }
        let (_, bytes) = read(&self.path)?;
        if ContentHash::of(&bytes) != self.content {
            return Err(changed_while_read(&self.path));
        }
        Ok(self.bytes.get_or_init(|| bytes.into()))
    }

    /// What the store remembers of this file: its identity and content hash.
    pub fn known(&self) -> KnownSource {
        KnownSource {
            identity: FileIdentity::from_metadata(&self.metadata),
            content: self.content,
        }
    }

    /// Whether the file still has the identity it was keyed with: code and
    /// a header made for it must not be written for a file edited since
    /// (even an edit that keeps size and mtime changes ctime) or removed.
    pub fn check_unchanged(&self) -> Result<(), ScanError> {
        let now = FileIdentity::of(&self.path).ok();
        if now == Some(FileIdentity::from_metadata(&self.metadata)) {
            Ok(())
        } else {
            Err(ScanError {
                path: self.path.clone(),
                error_type: "OSError".to_owned(),
                message: "the file changed or vanished during the run; no pyc written".to_owned(),
            })
        }
    }
}

/// Every file keyed (or only hashed, by [`hash_all`]): the sources, the
/// files that could not be read, and what to remember of the files that
/// were read.
pub struct Keyed {
    pub sources: Vec<Source>,
    /// How many of them were read.
    pub read: usize,
    /// How many were read under another path in this run (the rest were
    /// keyed from their record).
    pub shared: usize,
    pub errors: Vec<ScanError>,
    pub to_remember: Vec<(PathBuf, KnownSource)>,
}

/// Keys every file at `levels` on `threads` threads, reading only those the
/// store does not remember unchanged.
pub fn key_all(
    store: &Store,
    files: &[PathBuf],
    profile: &Profile,
    levels: &[u8],
    threads: usize,
) -> Result<Keyed, crate::store::Error> {
    let mut keyed = hash_all(store, files, threads)?;
    let context = profile.key_context();
    for source in &mut keyed.sources {
        source.keys = levels
            .iter()
            .map(|&level| context.key(level, &source.content))
            .collect();
    }
    Ok(keyed)
}

/// Hashes every file on `threads` threads, reading only those the store
/// does not remember unchanged; the sources have no keys yet.
///
/// Files are first recalled or `stat`ed, so that a file reached by several
/// paths is read once, under its first path, and shared with the others
/// when its identity vouches for the bytes as a record would (it was not
/// changed just before the read); otherwise each path reads its own.
pub fn hash_all(
    store: &Store,
    files: &[PathBuf],
    threads: usize,
) -> Result<Keyed, crate::store::Error> {
    let known = store.reading(|| {
        files
            .iter()
            .map(|path| store.known_source(path))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let work: Vec<_> = files.iter().zip(known).collect();
    let looked = parallel::map(&work, threads, |(path, known)| look(path, *known));

    let mut first_of: HashMap<FileIdentity, usize> = HashMap::new();
    let mut first_reads = Vec::new();
    let mut later = Vec::new();
    for (index, looked) in looked.iter().enumerate() {
        if let Looked::Unread(metadata) = looked {
            let identity = metadata.as_ref().map(FileIdentity::from_metadata);
            match identity.map(|identity| first_of.entry(identity)) {
                Some(Entry::Occupied(first)) => later.push((index, *first.get(), identity)),
                Some(Entry::Vacant(slot)) => {
                    slot.insert(index);
                    first_reads.push(index);
                }
                None => first_reads.push(index),
            }
        }
    }
    let mut keyings: Vec<Option<Result<(Source, Keying), ScanError>>> =
        looked.into_iter().map(Looked::into_recalled).collect();
    let read_first = parallel::map(&first_reads, threads, |&index| read_source(&files[index]));
    for (index, result) in first_reads.into_iter().zip(read_first) {
        keyings[index] = Some(result);
    }
    let mut again = Vec::new();
    for (index, first, identity) in later {
        match &keyings[first] {
            // Read unchanged since both were `stat`ed.
            Some(Ok((source, Keying::Read { remember: true })))
                if identity == Some(FileIdentity::from_metadata(&source.metadata)) =>
            {
                let shared = source.shared_as(&files[index]);
                keyings[index] = Some(Ok((shared, Keying::Shared)));
            }
            _ => again.push(index),
        }
    }
    let read_again = parallel::map(&again, threads, |&index| read_source(&files[index]));
    for (index, result) in again.into_iter().zip(read_again) {
        keyings[index] = Some(result);
    }

    let mut keyed = Keyed {
        sources: Vec::with_capacity(files.len()),
        read: 0,
        shared: 0,
        errors: Vec::new(),
        to_remember: Vec::new(),
    };
    for result in keyings.into_iter().flatten() {
        match result {
            Ok((source, keying)) => {
                let remember = match keying {
                    Keying::Read { remember } => {
                        keyed.read += 1;
                        remember
                    }
                    Keying::Shared => {
                        keyed.shared += 1;
                        true
                    }
                    Keying::Recalled => false,
                };
                if remember {
                    keyed
                        .to_remember
                        .push((source.path.clone(), source.known()));
                }
                keyed.sources.push(source);
            }
            Err(error) => keyed.errors.push(error),
        }
    }
    Ok(keyed)
}

/// How a source was keyed.
enum Keying {
    /// From the store's record of it: unchanged since.
    Recalled,
    /// Read; to be remembered unless it changed just before.
    Read { remember: bool },
    /// Read in this run under another path to the same file.
    Shared,
}

/// A file recalled from its record, or still to be read (with what `stat`
/// said of it, unless it failed: reading will say why).
enum Looked {
    Recalled(Source),
    Unread(Option<std::fs::Metadata>),
}

impl Looked {
    fn into_recalled(self) -> Option<Result<(Source, Keying), ScanError>> {
        match self {
            Self::Recalled(source) => Some(Ok((source, Keying::Recalled))),
            Self::Unread(_) => None,
        }
    }
}

impl Source {
    /// This file's source under `path`, another path to the same file
    /// (same identity when `stat`ed).
    fn shared_as(&self, path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            metadata: self.metadata.clone(),
            content: self.content,
            keys: Vec::new(),
            bytes: self.bytes.clone(),
        }
    }
}

/// The source at `path` without its keys, from `known` if the file is
/// unchanged since, else read; and whether to remember it.
pub fn read_or_recall(
    path: &Path,
    known: Option<KnownSource>,
) -> Result<(Source, bool), ScanError> {
    if known.is_some()
        && let Looked::Recalled(source) = look(path, known)
    {
        return Ok((source, false));
    }
    let (source, keying) = read_source(path)?;
    Ok((source, matches!(keying, Keying::Read { remember: true })))
}

/// The source at `path` from `known` if the file is unchanged since, or
/// what `stat` says of it.
fn look(path: &Path, known: Option<KnownSource>) -> Looked {
    let metadata = std::fs::metadata(path).ok();
    match (known, metadata) {
        (Some(known), Some(metadata))
            if FileIdentity::from_metadata(&metadata) == known.identity =>
        {
            Looked::Recalled(Source {
                path: path.to_owned(),
                metadata,
                content: known.content,
                keys: Vec::new(),
                bytes: OnceLock::new(),
            })
        }
        (_, metadata) => Looked::Unread(metadata),
    }
}

/// The source at `path`, read and hashed now.
fn read_source(path: &Path) -> Result<(Source, Keying), ScanError> {
    let read_at = SystemTime::now();
    let (metadata, bytes) = read(path)?;
    let remember = !changed_near(&metadata, read_at);
    let source = Source {
        path: path.to_owned(),
        metadata,
        content: ContentHash::of(&bytes),
        keys: Vec::new(),
        bytes: OnceLock::from(Arc::from(bytes)),
    };
    Ok((source, Keying::Read { remember }))
}

/// Reads the file at `path`, with the metadata of the file opened.
fn read(path: &Path) -> Result<(std::fs::Metadata, Vec<u8>), ScanError> {
    let error = |err: std::io::Error| io_error(path.to_owned(), &err);
    let mut file = std::fs::File::open(path).map_err(error)?;
    let metadata = file.metadata().map_err(error)?;
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.read_to_end(&mut bytes).map_err(error)?;
    if bytes.len() as u64 != metadata.len() {
        return Err(changed_while_read(path));
    }
    Ok((metadata, bytes))
}

/// Whether the file was modified or changed less than [`racy_margin`]
/// before `read_at` (or after it).
fn changed_near(metadata: &std::fs::Metadata, read_at: SystemTime) -> bool {
    let identity = FileIdentity::from_metadata(metadata);
    let latest_ns = identity.mtime_ns.max(identity.ctime_ns);
    let Ok(read_at) = read_at.duration_since(SystemTime::UNIX_EPOCH) else {
        return true; // a clock before 1970 proves nothing
    };
    let margin = racy_margin(&identity).as_nanos() as i128;
    i128::from(latest_ns) + margin > read_at.as_nanos() as i128
}

/// The racy margin for a file: a ctime in whole seconds (which no program
/// can set) says the file system keeps only seconds.
fn racy_margin(identity: &FileIdentity) -> Duration {
    if identity.ctime_ns % 1_000_000_000 == 0 {
        RACY_MARGIN_COARSE
    } else {
        RACY_MARGIN
    }
}

fn changed_while_read(path: &Path) -> ScanError {
    ScanError {
        path: path.to_owned(),
        error_type: "OSError".to_owned(),
        message: "the file changed while it was read".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_racy_until_the_margin_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.py");
        std::fs::write(&path, "x = 1\n").unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        let identity = FileIdentity::from_metadata(&metadata);
        let changed = SystemTime::UNIX_EPOCH
            + Duration::from_nanos(identity.mtime_ns.max(identity.ctime_ns) as u64);
        let margin = racy_margin(&identity);
        assert!(changed_near(&metadata, changed));
        assert!(changed_near(
            &metadata,
            changed + margin - Duration::from_millis(1)
        ));
        assert!(!changed_near(
            &metadata,
            changed + margin + Duration::from_millis(1)
        ));
    }

    #[test]
    fn whole_second_timestamps_get_the_coarse_margin() {
        let fine = FileIdentity {
            device: 1,
            inode: 2,
            size: 3,
            mtime_ns: 1_700_000_000_123_456_789,
            ctime_ns: 1_700_000_000_123_456_789,
        };
        assert_eq!(racy_margin(&fine), RACY_MARGIN);
        let coarse = FileIdentity {
            ctime_ns: 1_700_000_000_000_000_000,
            ..fine
        };
        assert_eq!(racy_margin(&coarse), RACY_MARGIN_COARSE);
    }
}
