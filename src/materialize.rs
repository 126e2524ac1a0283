//! Writing pycs from the store: `__pycache__/NAME.TAG[.opt-N].pyc` beside
//! each source, or a `PYTHONPYCACHEPREFIX` tree, that CPython takes as its
//! own.
//!
//! Each pyc is the header CPython would write for the source as it was read
//! (`pyc.rs`), then the stored code with its placeholder filename rewritten
//! to the source's path (`marshal.rs`). A pyc already holding exactly those
//! bytes is left alone; anything else is replaced atomically (temp file in
//! the same directory, then rename), with the mode bits CPython derives from
//! the source. As `py_compile` does, a pyc path that is a symlink is never
//! written through.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::identity::FileIdentity;
use crate::interpreter::Profile;
use crate::key::Key;
use crate::marshal::rewrite_filename;
use crate::parallel;
use crate::pyc::{self, Mode, SourceStamp, Validation};
use crate::report::Failure;
use crate::source::Source;
use crate::store::{Blob, Store, StoredCode, StoredFailure, WrittenPyc};

/// Where and how to write.
#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Write under this `PYTHONPYCACHEPREFIX`-style root instead of beside
    /// the sources.
    pub prefix: Option<PathBuf>,
    /// Only say what would be written.
    pub dry_run: bool,
}

/// What writing did.
#[derive(Debug, Default)]
pub struct Written {
    pub written: u64,
    pub up_to_date: u64,
    /// Paths written (or, with `dry_run`, that would be).
    pub paths: Vec<PathBuf>,
    pub failures: Vec<Failure>,
    /// What to record in the store for the next run's fast no-op.
    pub records: Vec<(PathBuf, WrittenPyc)>,
    /// Sources whose stored code was corrupt (nothing written for them),
    /// with the bad key and why: to be recompiled.
    pub corrupt: Vec<(PathBuf, Key, String)>,
}

/// One pyc to build and write: everything read from the store and the
/// source, so that the work can run on other threads.
struct PycJob<'a> {
    source: &'a Source,
    key: Key,
    target: PathBuf,
    blob: Blob,
}

/// What building and writing one pyc gave.
enum PycResult {
    /// Written (`true`) or found identical (`false`); the pyc's identity after.
    Done(bool, Option<FileIdentity>),
    /// The stored blob is bad: never written, to be recompiled.
    Corrupt(String),
    Failed(Failure),
}

/// Writes the pyc of every (source, level) whose code is in the store.
/// Store reads happen here, in order; decompressing, rewriting and writing
/// run on `threads` threads.
pub fn write_pycs(
    store: &Store,
    profile: &Profile,
    compiled: &[(Source, Vec<(u8, Key)>)],
    options: &Options,
    threads: usize,
) -> anyhow::Result<Written> {
    let mut written = Written::default();
    let record = |source: &Source, key: Key, pyc: FileIdentity| {
        let stamp = FileIdentity::from_metadata(&source.metadata);
        WrittenPyc {
            key,
            mode: options.mode.as_str().to_owned(),
            source_size: stamp.size,
            source_mtime_ns: stamp.mtime_ns,
            pyc,
        }
    };
    let wanted: Vec<(&Source, u8, Key)> = compiled
        .iter()
        .flat_map(|(source, levels)| levels.iter().map(move |&(level, key)| (source, level, key)))
        .collect();
    let on_disk = parallel::map(&wanted, threads, |&(source, level, _)| {
        let target = pyc::cache_path(
            &source.path,
            &profile.cache_tag,
            level,
            options.prefix.as_deref(),
        );
        let identity = std::fs::symlink_metadata(&target)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|metadata| FileIdentity::from_metadata(&metadata));
        (target, identity)
    });
    let mut jobs = Vec::new();
    store.reading(|| -> anyhow::Result<()> {
        for ((source, _, key), (target, identity)) in wanted.into_iter().zip(on_disk) {
            // The fast no-op: the pyc is the very file rcache wrote for this
            // code, header and source stamp, untouched since.
            if let Some(identity) = identity
                && store.written_pyc(&target)? == Some(record(source, key, identity))
            {
                written.up_to_date += 1;
                continue;
            }
            let Some(blob) = store.read_blob(&key)? else {
                written
                    .failures
                    .push(failure(&source.path, "stored code vanished".to_owned()));
                continue;
            };
            jobs.push(PycJob {
                source,
                key,
                target,
                blob,
            });
        }
        Ok(())
    })?;
    let results = parallel::map_contiguous(&jobs, threads, |job| {
        build_and_write(job, profile, options.mode, options.dry_run)
    });
    for (job, result) in jobs.into_iter().zip(results) {
        match result {
            PycResult::Done(changed, identity) => {
                if changed {
                    written.written += 1;
                    written.paths.push(job.target.clone());
                } else {
                    written.up_to_date += 1;
                }
                if let Some(identity) = identity {
                    let record = record(job.source, job.key, identity);
                    written.records.push((job.target, record));
                }
            }
            PycResult::Corrupt(why) => {
                written
                    .corrupt
                    .push((job.source.path.clone(), job.key, why));
            }
            PycResult::Failed(failure) => written.failures.push(failure),
        }
    }
    Ok(written)
}

fn build_and_write(job: &PycJob<'_>, profile: &Profile, mode: Mode, dry_run: bool) -> PycResult {
    let path = &job.source.path;
    let validation = match mode {
        Mode::Timestamp => Validation::Timestamp(SourceStamp::of(&job.source.metadata)),
        Mode::CheckedHash | Mode::UncheckedHash => match job.source.bytes() {
            Ok(bytes) => Validation::Hash {
                checked: mode == Mode::CheckedHash,
                hash: pyc::source_hash(profile, bytes),
            },
            Err(error) => return PycResult::Failed(error.into()),
        },
    };
    let code = match job.blob.decode() {
        StoredCode::Found(code) => code,
        StoredCode::Corrupt(why) => return PycResult::Corrupt(why),
    };
    let filename = path.as_os_str().as_encoded_bytes();
    let Some(body) = rewrite_filename(&code, &job.key.placeholder_filename(), filename) else {
        return PycResult::Failed(failure(
            path,
            "stored code has no single filename record to rewrite".to_owned(),
        ));
    };
    let mut bytes = Vec::with_capacity(16 + body.len());
    bytes.extend_from_slice(&pyc::header(profile.magic, validation));
    bytes.extend_from_slice(&body);
    // The code and header describe the source as it was keyed; an edit since
    // would make a stale pyc look valid.
    if let Err(error) = job.source.check_unchanged() {
        return PycResult::Failed(error.into());
    }
    match write_if_changed(&job.target, &bytes, &job.source.metadata, dry_run) {
        Ok(changed) => {
            let identity = (!dry_run)
                .then(|| std::fs::symlink_metadata(&job.target).ok())
                .flatten()
                .map(|metadata| FileIdentity::from_metadata(&metadata));
            PycResult::Done(changed, identity)
        }
        Err(err) => {
            let error = crate::scan::io_error(job.target.clone(), &err);
            PycResult::Failed(Failure {
                path: path.display().to_string(),
                line: None,
                col: None,
                error_type: error.error_type,
                message: format!("cannot write `{}`: {err}", job.target.display()),
            })
        }
    }
}

/// A store problem with the code of `path`: reported, nothing written.
fn failure(path: &Path, message: String) -> Failure {
    Failure::new(
        path,
        &StoredFailure {
            error_type: "StoreError".to_owned(),
            message,
            line: None,
            col: None,
        },
    )
}

/// Writes `bytes` at `target` unless it already holds exactly them.
/// Returns whether it wrote (or, dry, would write).
fn write_if_changed(
    target: &Path,
    bytes: &[u8],
    source: &std::fs::Metadata,
    dry_run: bool,
) -> std::io::Result<bool> {
    match std::fs::symlink_metadata(target) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            return Err(std::io::Error::other(
                "it is a symlink, which a pyc is never written through",
            ));
        }
        Ok(metadata) if metadata.len() == bytes.len() as u64 && std::fs::read(target)? == bytes => {
            return Ok(false);
        }
        _ => {}
    }
    if dry_run {
        return Ok(true);
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    builder
        .prefix(".rcache-")
        .suffix(".tmp")
        .permissions(pyc_permissions(source));
    // Most pycs go to a directory that exists: create it only when missing.
    let mut temp = match builder.tempfile_in(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
            builder.tempfile_in(dir)?
        }
        temp => temp?,
    };
    temp.write_all(bytes)?;
    temp.persist(target).map_err(|err| err.error)?;
    Ok(true)
}

/// CPython's `_calc_mode`: the source's mode, writable by the owner, then
/// `& 0o666` and the umask (applied by the kernel as the file is created).
#[cfg(unix)]
fn pyc_permissions(source: &std::fs::Metadata) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode((source.permissions().mode() | 0o200) & 0o666)
}

#[cfg(not(unix))]
fn pyc_permissions(source: &std::fs::Metadata) -> std::fs::Permissions {
    source.permissions()
}
