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
//! once. A file is known by the path as walked, made absolute lexically.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use ignore::overrides::{Override, OverrideBuilder};
use ignore::{WalkBuilder, WalkState};

/// How to walk.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Gitignore-style globs of paths to leave out (`--exclude`).
    pub exclude: Vec<String>,
    /// The directory `exclude` is relative to, when not the current one.
    pub exclude_root: Option<PathBuf>,
    /// Ignore `.gitignore`, `.ignore` and git's excludes (`--no-ignore`).
    pub no_ignore: bool,
    /// Record every directory walked in [`Scan::dirs`] (`doctor` lists
    /// them; other commands leave it off, keeping the walk lock-free for
    /// directories without `__pycache__`).
    pub record_dirs: bool,
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

/// Everything a scan found, sorted and without duplicates.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<PathBuf>,
    pub errors: Vec<ScanError>,
    pub venvs: Vec<Venv>,
    /// The `__pycache__` directories met (not walked).
    pub pycache_dirs: Vec<PathBuf>,
    /// The named paths that are directories, absolute.
    pub roots: Vec<PathBuf>,
    /// Every directory walked, the roots included (only with
    /// [`ScanOptions::record_dirs`]).
    pub dirs: Vec<PathBuf>,
}

#[derive(Default)]
struct Found {
    files: BTreeSet<PathBuf>,
    errors: Vec<ScanError>,
    venvs: BTreeSet<Venv>,
    pycache_dirs: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

/// Walks `paths` (relative ones are taken from `cwd`).
pub fn scan(paths: &[PathBuf], cwd: &Path, options: &ScanOptions) -> Scan {
    let found = Mutex::new(Found::default());
    let mut roots = Vec::new();
    for path in paths {
        let root = absolute(cwd, path);
        match std::fs::metadata(&root) {
            Ok(metadata) if metadata.is_dir() => {
                walk(&root, cwd, options, &found);
                roots.push(root);
            }
            Ok(metadata) if metadata.is_file() => {
                lock(&found).files.insert(root);
            }
            Ok(_) => lock(&found).errors.push(ScanError {
                path: root,
                error_type: "OSError".to_owned(),
                message: "not a regular file or directory".to_owned(),
            }),
            Err(err) => lock(&found).errors.push(io_error(root, &err)),
        }
    }
    let found = found
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut errors = found.errors;
    errors.sort_by(|a, b| a.path.cmp(&b.path));
    errors.dedup_by(|a, b| a.path == b.path);
    Scan {
        files: found.files.into_iter().collect(),
        errors,
        venvs: found.venvs.into_iter().collect(),
        pycache_dirs: found.pycache_dirs.into_iter().collect(),
        roots,
        dirs: found.dirs.into_iter().collect(),
    }
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
    builder.build_parallel().run(|| {
        Box::new(move |entry| match entry {
            Ok(entry) => visit(&entry, options.record_dirs, found),
            Err(err) => {
                let error = walk_error(root, &err);
                lock(found).errors.push(error);
                WalkState::Continue
            }
        })
    });
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

fn visit(entry: &ignore::DirEntry, record_dirs: bool, found: &Mutex<Found>) -> WalkState {
    let Some(kind) = entry.file_type() else {
        return WalkState::Continue;
    };
    let path = entry.path();
    if kind.is_dir() {
        // Remembered even when ignore rules hide it (`__pycache__/` is in
        // most `.gitignore` files): its pycs may have lost their sources.
        let pycache = path.join("__pycache__");
        if pycache.is_dir() {
            lock(found).pycache_dirs.insert(pycache);
        }
        if record_dirs {
            lock(found).dirs.insert(path.to_owned());
        }
        return WalkState::Continue;
    }
    if !kind.is_file() {
        return WalkState::Continue;
    }
    if path.extension().is_some_and(|ext| ext == "py") {
        lock(found).files.insert(path.to_owned());
    } else if path.file_name().is_some_and(|name| name == "pyvenv.cfg")
        && let Some(version) = venv_version(path)
    {
        let dir = path.parent().unwrap_or(path).to_owned();
        lock(found).venvs.insert(Venv { dir, version });
    }
    WalkState::Continue
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
