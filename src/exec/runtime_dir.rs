//! The private directory `rcache exec` works in: the hook that the
//! interpreter imports as `sitecustomize`, one socket per run, and the
//! pycache prefix of Python's start-up.
//!
//! `$XDG_RUNTIME_DIR/rcache` when the session has one, else
//! `$TMPDIR/rcache-UID`. Whoever can write there can put code in every
//! program rcache runs, so the directory must be a real directory (not a
//! symlink), owned by this user and closed to everyone else (0700), as ssh
//! demands of `~/.ssh`; it is created so.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::env_vars;

/// The hook's source, written once per distinct content.
const HOOK: &str = include_str!("sitecustomize.py");

/// A checked private directory.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Finds, creates if needed, and checks the directory.
    pub fn open() -> anyhow::Result<Self> {
        let path = match std::env::var_os(env_vars::XDG_RUNTIME_DIR).filter(|dir| !dir.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("rcache"),
            None => std::env::temp_dir().join(format!("rcache-{}", crate::store::current_uid())),
        };
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                return Err(err).with_context(|| format!("cannot create `{}`", path.display()));
            }
        }
        check_private(&path)?;
        Ok(Self { path })
    }

    /// The directory to put first on PYTHONPATH, holding the hook as
    /// `sitecustomize.py`. Its name carries the hook's hash, so a file once
    /// written never changes while some interpreter may be reading it.
    pub fn hook_dir(&self) -> anyhow::Result<PathBuf> {
        let hash = blake3::hash(HOOK.as_bytes()).to_hex();
        let dir = self.path.join(format!("hook-{}", &hash[..16]));
        let file = dir.join("sitecustomize.py");
        if std::fs::read(&file).is_ok_and(|bytes| bytes == HOOK.as_bytes()) {
            return Ok(dir);
        }
        let context = || format!("cannot write rcache's hook into `{}`", dir.display());
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err).with_context(context),
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".sitecustomize")
            .tempfile_in(&dir)
            .with_context(context)?;
        temp.write_all(HOOK.as_bytes()).with_context(context)?;
        temp.persist(&file).with_context(context)?;
        Ok(dir)
    }

    /// The pycache prefix of Python's start-up under `rcache exec`: pycs
    /// CPython writes for the modules it imports before the hook.
    pub fn startup_pycache_prefix(&self) -> PathBuf {
        self.path.join("startup-pycache")
    }

    /// Where this process's server listens.
    pub fn socket_path(&self) -> PathBuf {
        self.path.join(format!("exec-{}.sock", std::process::id()))
    }
}

/// The ssh rule: a directory (not a link to one) owned by us, 0700.
fn check_private(path: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    let uid = crate::store::current_uid();
    if !metadata.is_dir() {
        bail!(
            "`{}` is not a directory; rcache exec will not use it",
            path.display()
        );
    }
    if metadata.uid() != uid {
        bail!(
            "`{}` belongs to user {}, not to you ({uid}); rcache exec will not use it",
            path.display(),
            metadata.uid()
        );
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        bail!(
            "`{}` is open to other users (mode {:o}); rcache exec needs it private: chmod 700 it",
            path.display(),
            metadata.permissions().mode() & 0o777
        );
    }
    Ok(())
}
