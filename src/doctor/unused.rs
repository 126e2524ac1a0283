//! Pycs beside the sources that this interpreter never reads, and legacy
//! pycs it imports with no source.
//!
//! CPython reads exactly one pyc per source and level: the one
//! `cache_from_source` names (`verdict.rs`). So in a `__pycache__` (or, with
//! a pycache prefix, in its mirror of the directory) a pyc of another
//! optimization level or another cache tag is never read by this Python
//! run this way, nor is one whose `NAME.py` is gone (`SourcelessFileLoader`
//! only loads legacy `NAME.pyc` files). A legacy `NAME.pyc` beside the
//! sources loses to `NAME.py` (`FileFinder` tries source suffixes before
//! bytecode ones), and is imported as it is when there is no `NAME.py`.
//! With a pycache prefix set, nothing in `__pycache__` is read.
//!
//! Only pycs of the sources walked, or of sources that are gone, are
//! reported: a pyc of a source left out by ignore rules is not this run's.

use std::collections::HashSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{python_at_level, serialize_path, shown};
use crate::pyc::{self, os_string_from_bytes};

/// Why a pyc is never read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Unused {
    /// This interpreter's, at an optimization level not asked for.
    OtherLevel { level: u8 },
    /// Another Python's (another cache tag).
    OtherTag { tag: String },
    /// Its source is gone.
    Orphan,
    /// A legacy `NAME.pyc` beside its `NAME.py`.
    BesideSource,
    /// In `__pycache__` while a pycache prefix is set.
    OutsidePrefix,
}

impl Unused {
    /// The name used in JSON and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OtherLevel { .. } => "other_level",
            Self::OtherTag { .. } => "other_tag",
            Self::Orphan => "orphan",
            Self::BesideSource => "beside_source",
            Self::OutsidePrefix => "outside_prefix",
        }
    }
}

/// A pyc never read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnusedPyc {
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// The source it was made for (gone, for an orphan).
    #[serde(serialize_with = "serialize_path")]
    pub source: PathBuf,
    #[serde(flatten)]
    pub why: Unused,
}

impl UnusedPyc {
    /// The source's file name.
    fn source_name(&self) -> String {
        shown(Path::new(self.source.file_name().unwrap_or_default()))
    }

    /// Why, in words.
    pub fn explain(&self, cache_tag: &str, prefix: Option<&Path>) -> String {
        match &self.why {
            Unused::OtherLevel { level } => format!("only used by {}", python_at_level(*level)),
            Unused::OtherTag { tag } => {
                format!("for another Python ({tag}); this one reads {cache_tag} pycs")
            }
            Unused::Orphan => format!(
                "`{}` is gone: a pyc is never read without its source",
                self.source_name()
            ),
            Unused::BesideSource => format!(
                "legacy pyc beside `{}`, which is imported instead",
                self.source_name()
            ),
            Unused::OutsidePrefix => format!(
                "a pycache prefix is set: CPython reads pycs under `{}` only",
                prefix.map(shown).unwrap_or_default()
            ),
        }
    }
}

/// A legacy `NAME.pyc` with no `NAME.py` beside it: CPython imports it
/// as it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourcelessPyc {
    #[serde(serialize_with = "serialize_path")]
    pub path: PathBuf,
    /// Whether it starts with this interpreter's magic number; if not,
    /// importing it fails ("bad magic number").
    pub magic_matches: bool,
}

/// What to look for.
pub struct Finder<'a> {
    pub cache_tag: &'a str,
    pub magic: [u8; 4],
    /// The levels asked: their pycs of walked sources are judged instead.
    pub levels: &'a [u8],
    /// The sources walked.
    pub walked: &'a HashSet<&'a Path>,
    /// `sys.pycache_prefix`, absolute.
    pub prefix: Option<&'a Path>,
}

/// What [`Finder::find`] found, sorted by path.
#[derive(Debug, Default)]
pub struct Found {
    pub unused: Vec<UnusedPyc>,
    pub sourceless: Vec<SourcelessPyc>,
}

/// Where pycs for the sources of one directory are.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Where this interpreter reads them.
    Read,
    /// `__pycache__` while a prefix is set: never read.
    Ignored,
}

impl Finder<'_> {
    /// Looks at the directories walked (`walked_dirs`: their orphans and
    /// sourceless pycs too) and the directories of sources named on their
    /// own (only the pycs of those sources).
    pub fn find(&self, walked_dirs: &[PathBuf]) -> Found {
        let mut found = Found::default();
        let whole: HashSet<&Path> = walked_dirs.iter().map(PathBuf::as_path).collect();
        let mut named: Vec<&Path> = self
            .walked
            .iter()
            .filter_map(|source| source.parent())
            .filter(|dir| !whole.contains(dir))
            .collect();
        named.sort_unstable();
        named.dedup();
        let dirs = walked_dirs.iter().map(|dir| (dir.as_path(), true));
        for (dir, whole) in dirs.chain(named.into_iter().map(|dir| (dir, false))) {
            self.legacy_pycs(dir, whole, &mut found);
            let pycache = dir.join("__pycache__");
            match self.prefix {
                None => self.cache_dir(&pycache, dir, Place::Read, whole, &mut found),
                Some(prefix) => {
                    self.cache_dir(&pycache, dir, Place::Ignored, whole, &mut found);
                    let mirror = pyc::prefix_dir(prefix, dir);
                    self.cache_dir(&mirror, dir, Place::Read, whole, &mut found);
                }
            }
        }
        found.unused.sort();
        found.sourceless.sort();
        found
    }

    /// Legacy `NAME.pyc` files in the source directory `dir`.
    fn legacy_pycs(&self, dir: &Path, whole: bool, found: &mut Found) {
        for (path, name) in regular_files(dir) {
            let Some(stem) = name.strip_suffix(b".pyc") else {
                continue;
            };
            // `NAME.TAG.pyc` is no module name: nothing imports it.
            if stem.is_empty() || stem.contains(&b'.') {
                continue;
            }
            let source = dir.join(os_string_from_bytes([stem, b".py"].concat()));
            if self.walked.contains(source.as_path()) {
                found.unused.push(UnusedPyc {
                    path,
                    source,
                    why: Unused::BesideSource,
                });
            } else if whole && !source.exists() {
                let magic_matches = starts_with_magic(&path, self.magic);
                found.sourceless.push(SourcelessPyc {
                    path,
                    magic_matches,
                });
            }
        }
    }

    /// The pycs in `cache_dir`, made for the sources in `source_dir`.
    fn cache_dir(
        &self,
        cache_dir: &Path,
        source_dir: &Path,
        place: Place,
        whole: bool,
        found: &mut Found,
    ) {
        for (path, name) in regular_files(cache_dir) {
            let Some((stem, tag, level)) = pyc::parse_cache_name(&name) else {
                continue;
            };
            let source = source_dir.join(os_string_from_bytes([stem, b".py"].concat()));
            let walked = self.walked.contains(source.as_path());
            let ours = tag == self.cache_tag.as_bytes();
            let why = if !walked && (!whole || source.exists()) {
                continue; // not a source of this run
            } else if place == Place::Ignored {
                Unused::OutsidePrefix
            } else if !walked {
                Unused::Orphan
            } else if ours && self.levels.contains(&level) {
                continue; // judged with its source
            } else if ours {
                Unused::OtherLevel { level }
            } else {
                Unused::OtherTag {
                    tag: String::from_utf8_lossy(tag).into_owned(),
                }
            };
            found.unused.push(UnusedPyc { path, source, why });
        }
    }
}

/// The regular files in `dir` (none if it cannot be listed), with their
/// names as bytes.
fn regular_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .map(|entry| (entry.path(), entry.file_name().as_encoded_bytes().to_vec()))
        .collect()
}

/// Whether the file at `path` starts with `magic`.
fn starts_with_magic(path: &Path, magic: [u8; 4]) -> bool {
    let mut start = Vec::with_capacity(4);
    std::fs::File::open(path)
        .and_then(|file| file.take(4).read_to_end(&mut start))
        .is_ok()
        && start == magic
}
