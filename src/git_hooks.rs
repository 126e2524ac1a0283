//! rcache's git hooks: the stubs `rcache hook install` writes into a
//! repository's hooks directory, and taking them out again.
//!
//! Each stub is a small `sh` script that runs the hook it displaced (kept
//! beside it as `NAME.rcache-chained`), then `rcache hook run NAME ARGS...`,
//! and exits with the displaced hook's status: rcache never changes what a
//! git command reports. The stub calls the rcache binary that installed
//! it, by absolute path, or `rcache` on PATH once that file is gone. A file
//! is rcache's stub when it holds [`MARKER`]; anything else is the user's.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;

/// The git hooks rcache installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Hook {
    /// After `git checkout`/`git switch`, `git clone` and `git worktree add`.
    PostCheckout,
    /// After a merge that committed, or `git pull` that merged.
    PostMerge,
    /// After `git commit --amend` and `git rebase`.
    PostRewrite,
}

impl Hook {
    /// Every hook, in the order they are installed.
    pub const ALL: [Self; 3] = [Self::PostCheckout, Self::PostMerge, Self::PostRewrite];

    /// The hook's file name, as git looks for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::PostCheckout => "post-checkout",
            Self::PostMerge => "post-merge",
            Self::PostRewrite => "post-rewrite",
        }
    }
}

/// The line that marks a hook file as rcache's stub.
pub const MARKER: &str = "# rcache-hook: written by `rcache hook install`";

/// What the suffix of a displaced hook is.
const CHAINED_SUFFIX: &str = ".rcache-chained";

/// What installing or uninstalling did to one hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The stub was written where there was none.
    Installed,
    /// An older stub (another rcache binary) was replaced.
    Updated,
    /// The stub was already there, as it would be written.
    Unchanged,
    /// The stub was removed; there was no hook to put back.
    Removed,
    /// The stub was replaced by the hook it had displaced.
    Restored,
    /// There was no stub of rcache's.
    NotInstalled,
}

/// One hook's change, as `--json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub hook: &'static str,
    pub path: PathBuf,
    pub action: Action,
    /// Where the user's own hook is kept while the stub runs it (install),
    /// or was put back from (uninstall).
    pub chained: Option<PathBuf>,
}

/// The hooks directory git uses for the repository at `dir`: `core.hooksPath`
/// (relative to the worktree's top level, as git takes it) or the common
/// dir's `hooks`, shared by every linked worktree.
pub fn hooks_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    crate::git::path(dir, &["rev-parse", "--git-path", "hooks"])
        .with_context(|| format!("cannot find the git hooks of `{}`", dir.display()))
}

/// Writes the stub of `hook` into `hooks_dir`, moving a hook of the user's
/// that is there aside so the stub runs it. Idempotent.
pub fn install(hooks_dir: &Path, hook: Hook, rcache: &Path) -> anyhow::Result<Change> {
    let path = hooks_dir.join(hook.name());
    let chained = chained_path(&path);
    let current = Current::of(&path)?;
    if current == Current::Theirs {
        if exists(&chained) {
            bail!(
                "`{}` is not rcache's, and `{}` already holds the hook rcache chained: \
                 remove one of them, then install again",
                path.display(),
                chained.display()
            );
        }
        std::fs::rename(&path, &chained).with_context(|| {
            format!(
                "cannot move `{}` aside to `{}`",
                path.display(),
                chained.display()
            )
        })?;
    }
    let stub = stub(hook, rcache);
    let action = match current {
        Current::Ours(ref old) if *old == stub => Action::Unchanged,
        Current::Ours(_) => Action::Updated,
        Current::Absent | Current::Theirs => Action::Installed,
    };
    if action != Action::Unchanged {
        write_executable(&path, &stub)?;
    }
    Ok(Change {
        hook: hook.name(),
        path,
        action,
        chained: exists(&chained).then_some(chained),
    })
}

/// Removes the stub of `hook` from `hooks_dir`, putting back the hook it
/// displaced, exactly as it was. A hook that is not rcache's is left alone.
pub fn uninstall(hooks_dir: &Path, hook: Hook) -> anyhow::Result<Change> {
    let path = hooks_dir.join(hook.name());
    let chained = chained_path(&path);
    let current = Current::of(&path)?;
    let put_back = || {
        std::fs::rename(&chained, &path).with_context(|| {
            format!(
                "cannot put `{}` back as `{}`",
                chained.display(),
                path.display()
            )
        })
    };
    let action = match current {
        // (Absent: an install killed between moving the user's hook aside
        // and writing the stub.)
        Current::Ours(_) | Current::Absent if exists(&chained) => {
            put_back()?;
            Action::Restored
        }
        Current::Ours(_) => {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove `{}`", path.display()))?;
            Action::Removed
        }
        Current::Absent | Current::Theirs => Action::NotInstalled,
    };
    Ok(Change {
        hook: hook.name(),
        path,
        action,
        chained: (action == Action::Restored).then_some(chained),
    })
}

/// What is at a hook's path.
#[derive(Debug, PartialEq, Eq)]
enum Current {
    Absent,
    /// rcache's stub, with these contents.
    Ours(Vec<u8>),
    /// Anything else: the user's hook (a dangling link, a directory...).
    Theirs,
}

impl Current {
    fn of(path: &Path) -> anyhow::Result<Self> {
        match std::fs::symlink_metadata(path) {
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::Absent),
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read `{}`", path.display()));
            }
            Ok(_) => {}
        }
        let contents = std::fs::read(path).unwrap_or_default();
        let ours = contents
            .split(|&byte| byte == b'\n')
            .any(|line| line == MARKER.as_bytes());
        Ok(if ours {
            Self::Ours(contents)
        } else {
            Self::Theirs
        })
    }
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn chained_path(hook_path: &Path) -> PathBuf {
    let mut name = hook_path.as_os_str().to_owned();
    name.push(CHAINED_SUFFIX);
    PathBuf::from(name)
}

/// The stub script of `hook`, calling the rcache at `rcache`.
fn stub(hook: Hook, rcache: &Path) -> Vec<u8> {
    let name = hook.name();
    let mut script = format!(
        "#!/bin/sh\n\
         {MARKER}\n\
         # Materializes the pycs of the .py files this git command changed\n\
         # (`rcache hook run`), after running the hook this one displaced,\n\
         # `$0{CHAINED_SUFFIX}`, whose exit status it keeps. rcache's own\n\
         # failures are one line on stderr, never git's failure.\n\
         # `rcache hook uninstall` puts the displaced hook back.\n\
         rcache="
    )
    .into_bytes();
    script.extend(shell_quoted(rcache.as_os_str()));
    script.extend_from_slice(
        format!(
            "\n[ -x \"$rcache\" ] || rcache=rcache\n\
             chained=\"$0{CHAINED_SUFFIX}\"\n\
             status=0\n"
        )
        .as_bytes(),
    );
    // Status 2 is an error rcache has already reported, in one line.
    let warning = format!(
        "[ $? -eq 2 ] || echo \"rcache: warning: the {name} hook failed; pycs were not updated\" >&2"
    );
    let body = if hook == Hook::PostRewrite {
        // git gives the rewritten commits on stdin: both hooks read them.
        format!(
            "input=$(cat)\n\
             if [ -x \"$chained\" ]; then\n\
             \x20   printf '%s\\n' \"$input\" | \"$chained\" \"$@\" || status=$?\n\
             fi\n\
             printf '%s\\n' \"$input\" | \"$rcache\" hook run {name} \"$@\" || {warning}\n"
        )
    } else {
        format!(
            "if [ -x \"$chained\" ]; then\n\
             \x20   \"$chained\" \"$@\" || status=$?\n\
             fi\n\
             \"$rcache\" hook run {name} \"$@\" || {warning}\n"
        )
    };
    script.extend_from_slice(body.as_bytes());
    script.extend_from_slice(b"exit \"$status\"\n");
    script
}

/// `text` in single quotes for `sh`, any byte allowed.
fn shell_quoted(text: &OsStr) -> Vec<u8> {
    let mut quoted = vec![b'\''];
    for &byte in text.as_encoded_bytes() {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    quoted
}

/// Writes `contents` to `path` with mode 0755, atomically.
fn write_executable(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut temp = tempfile::Builder::new()
        .prefix(".rcache-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in `{}`", dir.display()))?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    set_executable(temp.as_file())
        .with_context(|| format!("cannot make `{}` executable", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn set_executable(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
}

#[cfg(not(unix))]
fn set_executable(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_quotes_and_spaces() {
        let quoted = shell_quoted(OsStr::new("/a b/it's/rcache"));
        assert_eq!(quoted, b"'/a b/it'\\''s/rcache'");
    }

    #[test]
    fn install_chains_and_uninstall_restores() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("post-merge");
        std::fs::write(&hook, "#!/bin/sh\necho mine\n").unwrap();
        let rcache = Path::new("/opt/rcache");
        let first = install(dir.path(), Hook::PostMerge, rcache).unwrap();
        assert_eq!(first.action, Action::Installed);
        assert_eq!(
            first.chained,
            Some(dir.path().join("post-merge.rcache-chained"))
        );
        let again = install(dir.path(), Hook::PostMerge, rcache).unwrap();
        assert_eq!(again.action, Action::Unchanged);
        let moved = install(dir.path(), Hook::PostMerge, Path::new("/usr/bin/rcache")).unwrap();
        assert_eq!(moved.action, Action::Updated);
        let removed = uninstall(dir.path(), Hook::PostMerge).unwrap();
        assert_eq!(removed.action, Action::Restored);
        assert_eq!(
            std::fs::read_to_string(&hook).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        let gone = uninstall(dir.path(), Hook::PostMerge).unwrap();
        assert_eq!(gone.action, Action::NotInstalled);
    }
}
