//! Settling the paths that reach one place twice.
//!
//! A directory can be walked under several paths: a virtualenv's `lib64 ->
//! lib` (CPython's `venv` makes it on every 64-bit Linux), a symlink into
//! the tree, a root named twice, a bind mount. A pyc beside its source is one
//! physical file, `NAME.TAG.pyc` in the `__pycache__` of one physical
//! directory, so the walked sources are grouped by the pyc they name: the
//! identity (device, inode) of their `__pycache__`, or of their directory
//! while it has none, and their file name. One path is chosen for each: the
//! one with the fewest symlinked directories in it (`lib/`, not `lib64/`;
//! the project, not a symlink to it), then the lexically first. Only walked
//! paths compete, so a path hidden by ignore rules or `--exclude` never wins
//! over one that is walked. The choice depends on the tree alone, never on
//! thread timing, on the order of the roots or on the command.
//!
//! A symlinked or hard-linked *file* (`alias.py -> real.py`) is no alias: it
//! has its own name, so its own pyc, which CPython imports by that name.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// A directory's identity: (device, inode).
pub type DirId = (u64, u64);

/// What settling needs to know of one directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirInfo {
    pub id: DirId,
    /// The identity of the `__pycache__` in it, when there is one.
    pub pycache: Option<DirId>,
    /// Whether the path's last component is a symlink.
    pub symlink: bool,
    /// Walked, rather than only the directory of a source named on its own.
    pub walked: bool,
}

impl DirInfo {
    /// The directory at `path`, whose (followed) metadata is `metadata`.
    pub fn new(path: &Path, metadata: &std::fs::Metadata, symlink: bool, walked: bool) -> Self {
        let pycache = std::fs::metadata(path.join("__pycache__"))
            .ok()
            .filter(std::fs::Metadata::is_dir)
            .map(|pycache| id_of(&pycache));
        Self {
            id: id_of(metadata),
            pycache,
            symlink,
            walked,
        }
    }

    /// The directory at `path`, looked at now; `None` if it is none.
    pub fn look(path: &Path, walked: bool) -> Option<Self> {
        let metadata = std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_dir)?;
        let symlink = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        Some(Self::new(path, &metadata, symlink, walked))
    }
}

fn id_of(metadata: &std::fs::Metadata) -> DirId {
    (metadata.dev(), metadata.ino())
}

/// A path walked that reaches what another walked path names, and the path
/// chosen for both.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alias {
    pub path: PathBuf,
    pub chosen: PathBuf,
}

/// The walk's paths, one chosen per physical place.
#[derive(Debug, Default)]
pub struct Settled {
    /// One source path per pyc beside the sources, sorted.
    pub files: Vec<PathBuf>,
    /// The other source paths, sorted.
    pub aliases: Vec<Alias>,
    /// The walked directories chosen, sorted, with what was seen of them.
    pub dirs: Vec<(PathBuf, DirInfo)>,
    /// The highest directories that are aliases (`.venv/lib64`, not
    /// `.venv/lib64/python3.12`), sorted.
    pub dir_aliases: Vec<Alias>,
    /// Each walked directory that is an alias, to the path chosen for it.
    chosen_dirs: HashMap<PathBuf, PathBuf>,
}

impl Settled {
    /// The path chosen for the walked directory `dir` (`dir` itself unless
    /// it is an alias).
    pub fn chosen_dir<'a>(&'a self, dir: &'a Path) -> &'a Path {
        self.chosen_dirs.get(dir).map_or(dir, PathBuf::as_path)
    }

    /// Every walked directory that is an alias, sorted.
    pub fn other_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.chosen_dirs.keys().cloned().collect();
        dirs.sort_unstable();
        dirs
    }
}

/// Where a source's pyc goes beside it: the `__pycache__` directory, or the
/// directory it will be made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum PycDir {
    Pycache(DirId),
    MadeIn(DirId),
}

/// Settles `files` (walked or named) given `dirs` (every walked directory,
/// and the directory of every file named on its own), both sorted (a
/// directory before what it holds) and without duplicates.
pub fn settle(files: Vec<PathBuf>, dirs: &[(PathBuf, DirInfo)]) -> Settled {
    let ranked = rank_dirs(dirs);
    let rank = |dir: &Path| {
        ranked
            .get(dir.as_os_str())
            .map_or(u32::MAX, |(_, rank)| *rank)
    };
    let mut settled = Settled::default();
    settle_files(files, &ranked, &mut settled);

    let mut by_id: HashMap<DirId, &Path> = HashMap::new();
    for (dir, info) in dirs.iter().filter(|(_, info)| info.walked) {
        by_id
            .entry(info.id)
            .and_modify(|best| {
                if rank(dir) < rank(best) {
                    *best = dir;
                }
            })
            .or_insert(dir);
    }
    for (dir, info) in dirs.iter().filter(|(_, info)| info.walked) {
        let best = by_id[&info.id];
        if best == dir.as_path() {
            settled.dirs.push((dir.clone(), *info));
        } else {
            settled.chosen_dirs.insert(dir.clone(), best.to_owned());
        }
    }
    settled.dir_aliases = settled
        .chosen_dirs
        .iter()
        .filter(|(dir, _)| {
            dir.parent()
                .is_none_or(|up| !settled.chosen_dirs.contains_key(up))
        })
        .map(|(dir, chosen)| Alias {
            path: dir.clone(),
            chosen: chosen.clone(),
        })
        .collect();
    settled.dir_aliases.sort_unstable();
    settled
}

/// Moves each of `files` into `settled.files` (the path chosen for its
/// pyc) or `settled.aliases`; paths are moved, not copied, since a no-op
/// run over a large tree walks tens of thousands.
fn settle_files(
    files: Vec<PathBuf>,
    ranked: &HashMap<&OsStr, (DirInfo, u32)>,
    settled: &mut Settled,
) {
    // The index of the path chosen for each file's pyc. Files come sorted,
    // so the first of the best rank is kept; a file whose directory could
    // not be looked at stands alone.
    let winners: Vec<usize> = {
        let mut last: Option<(&Path, Option<&(DirInfo, u32)>)> = None;
        let mut best: HashMap<(PycDir, &OsStr), (usize, u32)> = HashMap::new();
        let pycs: Vec<Option<(PycDir, &OsStr)>> = files
            .iter()
            .enumerate()
            .map(|(index, file)| {
                let (dir, name) = (file.parent()?, file.file_name()?);
                let (info, rank) = match last {
                    Some((last_dir, found)) if last_dir == dir => found,
                    _ => last.insert((dir, ranked.get(dir.as_os_str()))).1,
                }?;
                let pyc = match info.pycache {
                    Some(pycache) => (PycDir::Pycache(pycache), name),
                    None => (PycDir::MadeIn(info.id), name),
                };
                best.entry(pyc)
                    .and_modify(|best| {
                        if *rank < best.1 {
                            *best = (index, *rank);
                        }
                    })
                    .or_insert((index, *rank));
                Some(pyc)
            })
            .collect();
        pycs.iter()
            .enumerate()
            .map(|(index, pyc)| pyc.map_or(index, |pyc| best[&pyc].0))
            .collect()
    };
    let chosen: HashMap<usize, PathBuf> = winners
        .iter()
        .enumerate()
        .filter(|&(index, &winner)| winner != index)
        .map(|(_, &winner)| (winner, files[winner].clone()))
        .collect();
    for (index, file) in files.into_iter().enumerate() {
        let winner = winners[index];
        if winner == index {
            settled.files.push(file);
        } else {
            settled.aliases.push(Alias {
                path: file,
                chosen: chosen[&winner].clone(),
            });
        }
    }
}

/// Each directory with how many symlinks its path goes through: its
/// parent's count plus one if it is a symlink itself, or, for a directory
/// whose parent was not walked (a root), every component looked at.
/// Keyed by the path's bytes, which hash faster than its components.
fn rank_dirs(dirs: &[(PathBuf, DirInfo)]) -> HashMap<&OsStr, (DirInfo, u32)> {
    let mut ranked: HashMap<&OsStr, (DirInfo, u32)> = HashMap::with_capacity(dirs.len());
    // Sorted, so every parent comes before its children.
    for (dir, info) in dirs {
        let parent = dir
            .parent()
            .and_then(|parent| ranked.get(parent.as_os_str()));
        let count = match parent {
            Some((_, parent)) => parent + u32::from(info.symlink),
            None => symlinks_in(dir),
        };
        ranked.insert(dir.as_os_str(), (*info, count));
    }
    ranked
}

/// The symlinks among the components of the absolute path `dir`.
fn symlinks_in(dir: &Path) -> u32 {
    dir.ancestors()
        .filter(|ancestor| {
            std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.file_type().is_symlink())
        })
        .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn dirs_of(root: &Path, walked: &[&str]) -> Vec<(PathBuf, DirInfo)> {
        walked
            .iter()
            .map(|dir| {
                let path = root.join(dir);
                let info = DirInfo::look(&path, true).unwrap();
                (path, info)
            })
            .collect()
    }

    #[test]
    fn the_path_without_a_symlink_is_chosen_whatever_the_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("z_real")).unwrap();
        symlink("z_real", root.join("a_link")).unwrap();
        let dirs = dirs_of(&root, &["", "a_link", "z_real"]);
        let files = [root.join("a_link/m.py"), root.join("z_real/m.py")];
        let settled = settle(files.to_vec(), &dirs);
        assert_eq!(settled.files, [root.join("z_real/m.py")]);
        assert_eq!(
            settled.aliases,
            [Alias {
                path: root.join("a_link/m.py"),
                chosen: root.join("z_real/m.py"),
            }]
        );
        assert_eq!(settled.dir_aliases.len(), 1);
        assert_eq!(
            settled.chosen_dir(&root.join("a_link")),
            root.join("z_real")
        );
        assert_eq!(settled.dirs.len(), 2);
    }

    #[test]
    fn equal_ranks_go_to_the_lexically_first_and_other_names_stay() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("real")).unwrap();
        symlink("real", root.join("one")).unwrap();
        symlink("real", root.join("two")).unwrap();
        let dirs = dirs_of(&root, &["", "one", "two"]);
        let files = [
            root.join("one/m.py"),
            root.join("two/m.py"),
            root.join("two/other.py"),
        ];
        let settled = settle(files.to_vec(), &dirs);
        assert_eq!(
            settled.files,
            [root.join("one/m.py"), root.join("two/other.py")]
        );
    }
}
