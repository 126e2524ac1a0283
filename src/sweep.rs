//! Removing pycs of this interpreter: orphans (whose source is gone) after
//! `materialize`, and every one for `rcache clean`; then the directories
//! that leaves empty.
//!
//! Beside the sources, the `__pycache__` dirs the walk met are swept, and a
//! directory that held only its `__pycache__` goes too: that is what git
//! leaves of a deleted package, and CPython imports it as an empty namespace
//! package. Under a `PYTHONPYCACHEPREFIX`, the mirror of each walked root is
//! swept whole, since a deleted package's dir is never walked.
//!
//! Temp files a killed rcache left behind (`.rcache-*.tmp`, written then
//! renamed into place within milliseconds) are removed once they are
//! [`STALE_TEMP_AGE`] old, so a concurrent run's are never touched: in the
//! `__pycache__` dirs swept, beside the store when a store is created or
//! rebuilt or `gc` runs, and beside an archive being exported
//! ([`remove_stale_temps`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use std::time::{Duration, SystemTime};

use crate::pyc::os_string_from_bytes;
use crate::report::Failure;
use crate::scan::io_error;

/// How old a temp file must be to count as left behind by a killed run.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// What removing pycs did.
#[derive(Debug, Default)]
pub struct Removed {
    pub removed: u64,
    pub paths: Vec<PathBuf>,
    pub failures: Vec<Failure>,
}

/// Which pycs to remove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Those whose source `NAME.py` is gone (git leaves them behind).
    Orphans,
    /// Every one whose source was walked or is gone (`rcache clean`).
    All,
}

/// Removes pycs of one interpreter.
pub struct Sweeper<'a> {
    pub cache_tag: &'a str,
    pub sweep: Sweep,
    /// The sources just walked: known to exist without a `stat`.
    pub walked: &'a HashSet<&'a Path>,
    /// Only say what would be removed.
    pub dry_run: bool,
}

impl Sweeper<'_> {
    /// Sweeps `__pycache__` dirs beside the sources, then removes each left
    /// empty, and its parent if that is then empty.
    pub fn pycache_dirs(&self, dirs: &[PathBuf]) -> Removed {
        let mut removed = Removed::default();
        for dir in dirs {
            let source_dir = dir.parent().unwrap_or(dir);
            let left = self.sweep_dir(dir, source_dir, &mut removed);
            if left == 0 && !self.dry_run && std::fs::remove_dir(dir).is_ok() {
                // Fails harmlessly unless the package is otherwise gone.
                let _ = std::fs::remove_dir(source_dir);
            }
        }
        removed
    }

    /// Sweeps the mirror of each walked root under `prefix` (where CPython
    /// puts `ROOT/a/b.py`'s pyc at `PREFIX/ROOT/a/b.TAG.pyc`), removing the
    /// directories left empty below each mirrored root; and, for files named
    /// on their own, the mirror of their directory (not below it).
    pub fn prefix_tree(&self, prefix: &Path, roots: &[PathBuf]) -> Removed {
        let mut removed = Removed::default();
        for root in roots {
            let mirror = crate::pyc::prefix_dir(prefix, root);
            self.sweep_mirror(&mirror, root, &mut removed);
        }
        let mut named_dirs: Vec<&Path> = self
            .walked
            .iter()
            .filter(|file| !roots.iter().any(|root| file.starts_with(root)))
            .filter_map(|file| file.parent())
            .collect();
        named_dirs.sort_unstable();
        named_dirs.dedup();
        for dir in named_dirs {
            self.sweep_dir(&crate::pyc::prefix_dir(prefix, dir), dir, &mut removed);
        }
        removed
    }

    /// Sweeps `mirror` (the prefix dir of `source_dir`) and its subdirs;
    /// returns the entries left in it.
    fn sweep_mirror(&self, mirror: &Path, source_dir: &Path, removed: &mut Removed) -> usize {
        let mut left = self.sweep_dir(mirror, source_dir, removed);
        let Ok(entries) = std::fs::read_dir(mirror) else {
            return left;
        };
        for entry in entries.filter_map(Result::ok) {
            if !entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                continue; // counted by `sweep_dir`
            }
            let sub = entry.path();
            let sub_left = self.sweep_mirror(&sub, &source_dir.join(entry.file_name()), removed);
            if sub_left == 0 && !self.dry_run && std::fs::remove_dir(&sub).is_ok() {
                left -= 1;
            }
        }
        left
    }

    /// Removes the pycs in `dir` whose sources would be in `source_dir`, as
    /// [`Self::sweep`] says; returns the entries left.
    fn sweep_dir(&self, dir: &Path, source_dir: &Path, removed: &mut Removed) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 1; // not ours to judge: keep the directory
        };
        let mut left = 0;
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let is_file = entry.file_type().is_ok_and(|kind| kind.is_file());
            if is_file && is_stale_temp(name.as_encoded_bytes(), &entry) {
                self.remove(entry.path(), removed, &mut left);
                continue;
            }
            let Some(stem) = pyc_stem(name.as_encoded_bytes(), self.cache_tag).filter(|_| is_file)
            else {
                left += 1;
                continue;
            };
            let mut source_name = stem.to_vec();
            source_name.extend_from_slice(b".py");
            let source = source_dir.join(os_string_from_bytes(source_name));
            let walked = self.walked.contains(source.as_path());
            let keep = match self.sweep {
                Sweep::Orphans => walked || source.exists(),
                Sweep::All => !walked && source.exists(),
            };
            if keep {
                left += 1;
                continue;
            }
            self.remove(entry.path(), removed, &mut left);
        }
        left
    }

    /// Removes the file at `path`; on failure it is reported, and `left`.
    fn remove(&self, path: PathBuf, removed: &mut Removed, left: &mut usize) {
        if !self.dry_run
            && let Err(err) = std::fs::remove_file(&path)
        {
            removed.failures.push(io_error(path, &err).into());
            *left += 1;
            return;
        }
        removed.removed += 1;
        removed.paths.push(path);
    }
}

/// Removes the temp files a killed rcache left in `dir` (a store being
/// created or rebuilt beside the store, an archive being exported), once
/// they are old enough not to be another run's work in progress.
pub fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_stale_temp(entry.file_name().as_encoded_bytes(), &entry) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether `name` is a temp file of rcache's (a pyc, a store being made or
/// rebuilt) old enough to be left behind by a killed run.
fn is_stale_temp(name: &[u8], entry: &std::fs::DirEntry) -> bool {
    name.starts_with(b".rcache-")
        && name.ends_with(b".tmp")
        && entry
            .metadata()
            .and_then(|metadata| metadata.modified())
            .is_ok_and(|modified| {
                SystemTime::now()
                    .duration_since(modified)
                    .is_ok_and(|age| age > STALE_TEMP_AGE)
            })
}

/// `NAME` of `NAME.TAG[.opt-N].pyc`, if this is a pyc of `cache_tag`.
fn pyc_stem<'a>(name: &'a [u8], cache_tag: &str) -> Option<&'a [u8]> {
    let rest = name.strip_suffix(b".pyc")?;
    let rest = rest
        .strip_suffix(b".opt-1")
        .or_else(|| rest.strip_suffix(b".opt-2"))
        .unwrap_or(rest);
    let stem = rest
        .strip_suffix(cache_tag.as_bytes())?
        .strip_suffix(b".")?;
    (!stem.is_empty()).then_some(stem)
}

#[cfg(test)]
mod tests {
    use super::pyc_stem;

    #[test]
    fn pyc_names_of_this_interpreter_only() {
        assert_eq!(
            pyc_stem(b"mod.cpython-312.pyc", "cpython-312"),
            Some(&b"mod"[..])
        );
        assert_eq!(
            pyc_stem(b"a.b.cpython-312.opt-2.pyc", "cpython-312"),
            Some(&b"a.b"[..])
        );
        assert_eq!(
            pyc_stem(b"mod.cpython-311.pyc", "cpython-311"),
            Some(&b"mod"[..])
        );
        assert_eq!(pyc_stem(b"mod.cpython-311.pyc", "cpython-312"), None);
        assert_eq!(pyc_stem(b"mod.cpython-312.pyc.tmp", "cpython-312"), None);
        assert_eq!(pyc_stem(b".cpython-312.pyc", "cpython-312"), None);
    }
}
