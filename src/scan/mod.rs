//! Finds the Python sources under the paths a user names.
//!
//! Walking uses the `ignore` crate, with ripgrep's rule that a named path is
//! always taken: `.gitignore`/`.ignore` rules apply only to what is found by
//! walking, and a virtualenv named on the command line (a directory holding
//! `pyvenv.cfg`), or a directory inside one, is walked without them, since
//! uv and `python -m venv` put `*` in the virtualenv's own `.gitignore`.
//! `--exclude` globs are gitignore-style, relative to the current directory
//! (or to the project file that set them). Hidden entries are walked (`.venv`), `.git`
//! and `__pycache__` are not. Symlinks are followed; a loop is reported
//! once. A file is known by the path as walked, made absolute lexically;
//! where two paths reach one directory, one is chosen (`aliases.rs`).

mod aliases;

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use ignore::overrides::{Override, OverrideBuilder};
use ignore::{ParallelVisitor, ParallelVisitorBuilder, WalkBuilder, WalkState};

pub use aliases::Alias;
use aliases::DirInfo;

/// How to walk.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Gitignore-style globs of paths to leave out (`--exclude`).
    pub exclude: Vec<String>,
    /// The directory `exclude` is relative to, when not the current one.
    pub exclude_root: Option<PathBuf>,
    /// Ignore `.gitignore`, `.ignore` and git's excludes (`--no-ignore`).
    pub no_ignore: bool,
    /// Walker threads.
    pub threads: usize,
}

/// A path that could not be walked or taken, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub path: PathBuf,
    /// A Python-style error type, e.g. `FileNotFoundError`.
    pub error_type: String,
    pub message: String,
}

/// A virtualenv met while walking, and the Python version it was made for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Venv {
    pub dir: PathBuf,
    pub version: String,
}

/// Everything a scan found, sorted and without duplicates. Where several
/// paths reach one directory, only the one chosen for it is in `files`,
/// `pycache_dirs`, `dirs` and `venvs`.
#[derive(Debug, Default)]
pub struct Scan {
    /// One path per pyc beside the sources.
    pub files: Vec<PathBuf>,
    /// The other paths walked to those sources (`.venv/lib64/...` for
    /// `.venv/lib/...`), each with the path chosen for it.
    pub aliases: Vec<Alias>,
    /// The highest directories walked under a second path, with the path
    /// chosen (`.venv/lib64` → `.venv/lib`).
    pub dir_aliases: Vec<Alias>,
    pub errors: Vec<ScanError>,
    pub venvs: Vec<Venv>,
    /// The `__pycache__` directories met (not walked).
    pub pycache_dirs: Vec<PathBuf>,
    /// The named paths that are directories, absolute.
    pub roots: Vec<PathBuf>,
    /// Every directory walked, the roots included.
    pub dirs: Vec<PathBuf>,
    /// The directories walked under a second path: the paths not chosen.
    other_dirs: Vec<PathBuf>,
}

impl Scan {
    /// The source paths that name distinct pycs, moved out of the scan:
    /// [`Self::files`] beside the sources; under a pycache prefix every
    /// path walked, aliases included (`PREFIX/.venv/lib64/...` and
    /// `PREFIX/.venv/lib/...`: CPython reads the one it imports by), sorted.
    pub fn take_pyc_sources(&mut self, prefix: Option<&Path>) -> Vec<PathBuf> {
        let mut paths = std::mem::take(&mut self.files);
        if prefix.is_some() {
            paths.extend(self.aliases.iter().map(|alias| alias.path.clone()));
            paths.sort_unstable();
        }
        paths
    }

    /// How many paths [`Self::take_pyc_sources`] leaves out: the aliases, beside
    /// the sources; none under a prefix.
    pub fn aliases_left_out(&self, prefix: Option<&Path>) -> u64 {
        match prefix {
            None => self.aliases.len() as u64,
            Some(_) => 0,
        }
    }

    /// The walked directories whose pycs are distinct: [`Self::dirs`]
    /// beside the sources, every path walked under a pycache prefix.
    pub fn pyc_dirs(&self, prefix: Option<&Path>) -> Vec<PathBuf> {
        let mut dirs = self.dirs.clone();
        if prefix.is_some() {
            dirs.extend(self.other_dirs.iter().cloned());
            dirs.sort_unstable();
        }
        dirs
    }
}

/// What the walk met, before aliases are settled: unsorted, with
/// duplicates (a root inside another is walked twice).
#[derive(Default)]
struct Found {
    files: Vec<PathBuf>,
    errors: Vec<ScanError>,
    venvs: Vec<Venv>,
    dirs: Vec<(PathBuf, DirInfo)>,
}

impl Found {
    fn merge(&mut self, other: Found) {
        self.files.extend(other.files);
        self.errors.extend(other.errors);
        self.venvs.extend(other.venvs);
        self.dirs.extend(other.dirs);
    }
}

/// Walks `paths` (relative ones are taken from `cwd`).
pub fn scan(paths: &[PathBuf], cwd: &Path, options: &ScanOptions) -> Scan {
    let found = Mutex::new(Found::default());
    let mut named_files = Vec::new();
    let mut roots = Vec::new();
    for path in paths {
        let root = absolute(cwd, path);
        match std::fs::metadata(&root) {
            Ok(metadata) if metadata.is_dir() => {
                walk(&root, cwd, options, &found);
                roots.push(root);
            }
            Ok(metadata) if metadata.is_file() => named_files.push(root),
            Ok(_) => lock(&found).errors.push(ScanError {
                path: root,
                error_type: "OSError".to_owned(),
                message: "not a regular file or directory".to_owned(),
            }),
            Err(err) => lock(&found).errors.push(io_error(root, &err)),
        }
    }
    let mut found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The directories of files named on their own, looked at whether or
    // not they were walked (sorted, a walked directory's entry comes first).
    let mut named_dirs: Vec<&Path> = named_files.iter().filter_map(|f| f.parent()).collect();
    named_dirs.sort_unstable();
    named_dirs.dedup();
    for dir in named_dirs {
        if let Some(info) = DirInfo::look(dir, false) {
            found.dirs.push((dir.to_owned(), info));
        }
    }
    found.files.extend(named_files);
    found.files.sort_unstable_by(|a, b| bytewise(a, b));
    found.files.dedup();
    found.dirs.sort_unstable_by(|(a, a_info), (b, b_info)| {
        bytewise(a, b).then(b_info.walked.cmp(&a_info.walked))
    });
    found.dirs.dedup_by(|later, first| later.0 == first.0);
    let settled = aliases::settle(std::mem::take(&mut found.files), &found.dirs);
    let mut errors = found.errors;
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    errors.dedup_by(|a, b| a.path == b.path);
    let venvs: BTreeSet<Venv> = found
        .venvs
        .into_iter()
        .map(|venv| Venv {
            dir: settled.chosen_dir(&venv.dir).to_owned(),
            version: venv.version,
        })
        .collect();
    Scan {
        other_dirs: settled.other_dirs(),
        pycache_dirs: settled
            .dirs
            .iter()
            .filter(|(_, info)| info.pycache.is_some())
            .map(|(dir, _)| dir.join("__pycache__"))
            .collect(),
        dirs: settled.dirs.into_iter().map(|(dir, _)| dir).collect(),
        files: settled.files,
        aliases: settled.aliases,
        dir_aliases: settled.dir_aliases,
        errors,
        venvs: venvs.into_iter().collect(),
        roots,
    }
}

/// Paths in the order of their bytes: lexical, a directory before what it
/// holds, and a `memcmp` (ten times cheaper than comparing components).
fn bytewise(a: &Path, b: &Path) -> std::cmp::Ordering {
    a.as_os_str()
        .as_encoded_bytes()
        .cmp(b.as_os_str().as_encoded_bytes())
}

fn lock(found: &Mutex<Found>) -> std::sync::MutexGuard<'_, Found> {
    found
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn walk(root: &Path, cwd: &Path, options: &ScanOptions, found: &Mutex<Found>) {
    let named_venv = root.ancestors().any(|dir| dir.join("pyvenv.cfg").is_file());
    let mut builder = WalkBuilder::new(root);
    builder
        .follow_links(true)
        .hidden(false)
        .require_git(false)
        .threads(options.threads)
        // Pruned here, not in `visit`: the walker lists a directory before
        // visiting it, and listing every `__pycache__` is a no-op run's
        // largest cost after the sources.
        .filter_entry(|entry| {
            let name = entry.file_name();
            !(entry.file_type().is_some_and(|kind| kind.is_dir())
                && (name == ".git" || name == "__pycache__"))
        });
    if options.no_ignore || named_venv {
        builder
            .ignore(false)
            .git_ignore(false)
            .git_global(false)
            .git_exclude(false)
            .parents(false);
    }
    if let Some(overrides) = exclusions(
        &options.exclude,
        options.exclude_root.as_deref().unwrap_or(cwd),
    ) {
        builder.overrides(overrides);
    }
    builder
        .build_parallel()
        .visit(&mut Visitors { root, found });
}

/// Makes one [`Visitor`] per walker thread.
struct Visitors<'a> {
    root: &'a Path,
    found: &'a Mutex<Found>,
}

impl<'s> ParallelVisitorBuilder<'s> for Visitors<'s> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(Visitor {
            root: self.root,
            found: Found::default(),
            into: self.found,
        })
    }
}

/// One walker thread's findings, kept apart (no lock per entry) and merged
/// into `into` when the thread is done.
struct Visitor<'a> {
    root: &'a Path,
    found: Found,
    into: &'a Mutex<Found>,
}

impl Drop for Visitor<'_> {
    fn drop(&mut self) {
        lock(self.into).merge(std::mem::take(&mut self.found));
    }
}

impl ParallelVisitor for Visitor<'_> {
    fn visit(&mut self, entry: Result<ignore::DirEntry, ignore::Error>) -> WalkState {
        match entry {
            Ok(entry) => visit(&entry, &mut self.found),
            Err(err) => self.found.errors.push(walk_error(self.root, &err)),
        }
        WalkState::Continue
    }
}

/// The `--exclude` globs (relative to `cwd`) as the walker's overrides;
/// `None` when there are none. A path they leave out `matched(..).is_ignore()`.
pub fn exclusions(exclude: &[String], cwd: &Path) -> Option<Override> {
    if exclude.is_empty() {
        return None;
    }
    let mut overrides = OverrideBuilder::new(cwd);
    for glob in exclude {
        if let Err(err) = overrides.add(&format!("!{glob}")) {
            tracing::warn!("ignoring bad --exclude glob `{glob}`: {err}");
        }
    }
    overrides
        .build()
        .inspect_err(|err| tracing::warn!("ignoring --exclude globs: {err}"))
        .ok()
}

fn visit(entry: &ignore::DirEntry, found: &mut Found) {
    let Some(kind) = entry.file_type() else {
        return;
    };
    let path = entry.path();
    if kind.is_dir() {
        // A root is looked at whole: whether it is a symlink is not in
        // its entry.
        let info = if entry.depth() == 0 {
            DirInfo::look(path, true)
        } else {
            entry
                .metadata()
                .ok()
                .map(|metadata| DirInfo::new(path, &metadata, entry.path_is_symlink(), true))
        };
        // Kept even when ignore rules hide its `__pycache__` (in most
        // `.gitignore` files): its pycs may have lost their sources.
        if let Some(info) = info {
            found.dirs.push((path.to_owned(), info));
        }
        return;
    }
    if !kind.is_file() {
        return;
    }
    if path.extension().is_some_and(|ext| ext == "py") {
        found.files.push(path.to_owned());
    } else if path.file_name().is_some_and(|name| name == "pyvenv.cfg")
        && let Some(version) = venv_version(path)
    {
        let dir = path.parent().unwrap_or(path).to_owned();
        found.venvs.push(Venv { dir, version });
    }
}

/// The `version` (or uv's `version_info`) a `pyvenv.cfg` records.
fn venv_version(cfg: &Path) -> Option<String> {
    let text = std::fs::read_to_string(cfg).ok()?;
    text.lines().find_map(|line| {
        let (name, value) = line.split_once('=')?;
        matches!(name.trim(), "version" | "version_info").then(|| value.trim().to_owned())
    })
}

fn walk_error(root: &Path, err: &ignore::Error) -> ScanError {
    match err {
        ignore::Error::WithPath { path, err } => {
            let mut error = walk_error(root, err);
            error.path.clone_from(path);
            error
        }
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            walk_error(root, err)
        }
        ignore::Error::Loop { ancestor, child } => ScanError {
            path: child.clone(),
            error_type: "OSError".to_owned(),
            message: format!(
                "symlink loop: leads back to `{}`, already being walked",
                ancestor.display()
            ),
        },
        ignore::Error::Io(io) => io_error(root.to_owned(), io),
        other => ScanError {
            path: root.to_owned(),
            error_type: "OSError".to_owned(),
            message: other.to_string(),
        },
    }
}

/// An I/O error under the name Python gives it, as CPython would report it.
pub fn io_error(path: PathBuf, err: &std::io::Error) -> ScanError {
    use std::io::ErrorKind;
    let error_type = match err.kind() {
        ErrorKind::NotFound => "FileNotFoundError",
        ErrorKind::PermissionDenied => "PermissionError",
        ErrorKind::IsADirectory => "IsADirectoryError",
        ErrorKind::NotADirectory => "NotADirectoryError",
        ErrorKind::Interrupted => "InterruptedError",
        _ => "OSError",
    };
    let message = err.to_string();
    // "No such file or directory (os error 2)" → Python's "[Errno 2] ...".
    let message = match (err.raw_os_error(), message.rfind(" (os error ")) {
        (Some(code), Some(at)) => format!("[Errno {code}] {}", &message[..at]),
        _ => message,
    };
    ScanError {
        path,
        error_type: error_type.to_owned(),
        message,
    }
}

/// `path` made absolute against `cwd` and normalized lexically, as Python's
/// `os.path.abspath` does: `.` dropped, `..` removes the previous component,
/// symlinks are not resolved.
pub fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    let mut result = PathBuf::new();
    for component in cwd.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                result.pop();
            }
            other => result.push(other),
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_is_lexical() {
        let cwd = Path::new("/home/me/src");
        assert_eq!(
            absolute(cwd, Path::new("app/./x.py")),
            Path::new("/home/me/src/app/x.py")
        );
        assert_eq!(
            absolute(cwd, Path::new("../lib")),
            Path::new("/home/me/lib")
        );
        assert_eq!(absolute(cwd, Path::new("/abs/../y")), Path::new("/y"));
    }

    #[test]
    fn io_errors_read_like_python() {
        let err = std::io::Error::from_raw_os_error(2);
        let error = io_error(PathBuf::from("/x.py"), &err);
        assert_eq!(error.error_type, "FileNotFoundError");
        assert_eq!(error.message, "[Errno 2] No such file or directory");
    }
}
