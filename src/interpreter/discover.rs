//! Finds the interpreter to use, without starting it.
//!
//! Order: `--python` / `RCACHE_PYTHON`, then `$VIRTUAL_ENV`, then a `.venv`
//! in the current directory or a parent, then `python3` on PATH. pyenv's
//! shims are shell scripts that take ~70 ms to start and can switch version
//! behind one path, so they are resolved here the way pyenv resolves them
//! (`PYENV_VERSION`, `.python-version` files, the global `version` file).
//! Any other launcher script is marked so the caller learns the real binary
//! from the interpreter itself.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::Error;
use crate::env_vars;

/// An interpreter executable found on disk, not yet probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The file to run.
    pub path: PathBuf,
    /// True when `path` is a script that starts some other interpreter, so
    /// its identity says nothing about which Python it runs.
    pub launcher: bool,
}

/// Finds the interpreter: `explicit` is `--python` or `RCACHE_PYTHON`.
pub fn discover(explicit: Option<&OsStr>, cwd: &Path) -> Result<Candidate, Error> {
    let path = match explicit {
        Some(name) => resolve_explicit(name, cwd)?,
        None => implicit(cwd).ok_or(Error::NotFound)?,
    };
    if let Some(real) = resolve_pyenv_shim(&path, cwd) {
        return Ok(Candidate {
            path: real,
            launcher: false,
        });
    }
    let launcher = is_script(&path);
    Ok(Candidate { path, launcher })
}

fn resolve_explicit(name: &OsStr, cwd: &Path) -> Result<PathBuf, Error> {
    let as_path = Path::new(name);
    let path = if as_path.components().count() > 1
        || as_path.is_absolute()
        || cwd.join(as_path).is_dir()
    {
        cwd.join(as_path)
    } else {
        find_on_path(name, None).ok_or_else(|| Error::Missing {
            path: as_path.to_owned(),
        })?
    };
    // `--python .venv` names a virtualenv: use its interpreter.
    let path = if path.is_dir() {
        venv_python(&path).unwrap_or(path)
    } else {
        path
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::Missing { path })
    }
}

fn implicit(cwd: &Path) -> Option<PathBuf> {
    if let Some(venv) = std::env::var_os(env_vars::VIRTUAL_ENV).filter(|venv| !venv.is_empty())
        && let Some(python) = venv_python(Path::new(&venv))
    {
        return Some(python);
    }
    if let Some(python) = cwd
        .ancestors()
        .find_map(|dir| venv_python(&dir.join(".venv")))
    {
        return Some(python);
    }
    find_on_path(OsStr::new("python3"), None)
}

/// The interpreter of the virtualenv at `dir`, if it is one.
fn venv_python(dir: &Path) -> Option<PathBuf> {
    let python = if cfg!(windows) {
        dir.join("Scripts").join("python.exe")
    } else {
        dir.join("bin").join("python")
    };
    (dir.join("pyvenv.cfg").is_file() && python.is_file()).then_some(python)
}

/// The first `name` on PATH, skipping `skip_dir` (pyenv's own shims).
fn find_on_path(name: &OsStr, skip_dir: Option<&Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|dir| Some(dir.as_path()) != skip_dir)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        path.metadata()
            .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Whether `path` starts with `#!`: a script that runs some other binary.
fn is_script(path: &Path) -> bool {
    let mut start = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| &start == b"#!")
}

/// If `path` is a pyenv shim, the binary pyenv would run for it from `cwd`.
fn resolve_pyenv_shim(path: &Path, cwd: &Path) -> Option<PathBuf> {
    let shims = path.parent()?;
    if shims.file_name()? != "shims" {
        return None;
    }
    let root = shims.parent()?;
    if !root.join("versions").is_dir() || !is_script(path) {
        return None;
    }
    let command = path.file_name()?;
    for version in selected_pyenv_versions(root, cwd) {
        if version == "system" {
            return find_on_path(command, Some(shims));
        }
        if let Some(binary) = pyenv_version_dir(root, &version)
            .map(|dir| dir.join("bin").join(command))
            .filter(|binary| is_executable(binary))
        {
            return Some(binary);
        }
    }
    None
}

/// The version names pyenv selects, in its order of precedence.
fn selected_pyenv_versions(root: &Path, cwd: &Path) -> Vec<String> {
    let split = |text: &str| -> Vec<String> {
        text.split(|c: char| c == ':' || c.is_whitespace())
            .filter(|name| !name.is_empty() && !name.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    if let Some(names) = std::env::var_os(env_vars::PYENV_VERSION) {
        return split(&names.to_string_lossy());
    }
    let version_file = cwd
        .ancestors()
        .map(|dir| dir.join(".python-version"))
        .find(|file| file.is_file())
        .unwrap_or_else(|| root.join("version"));
    match std::fs::read_to_string(version_file) {
        Ok(text) => split(&text),
        Err(_) => vec!["system".to_owned()],
    }
}

/// `versions/NAME`, or for a prefix such as `3.12` the newest `3.12.x`,
/// as pyenv resolves it.
fn pyenv_version_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let versions = root.join("versions");
    let exact = versions.join(name);
    if exact.is_dir() {
        return Some(exact);
    }
    let prefix = format!("{name}.");
    let numeric_key = |version: &OsString| -> Vec<u64> {
        version
            .to_string_lossy()
            .split('.')
            .map(|part| part.parse().unwrap_or(0))
            .collect()
    };
    std::fs::read_dir(&versions)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.file_name())
        .filter(|version| {
            version.to_str().is_some_and(|text| {
                text.strip_prefix(&prefix)
                    .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
            })
        })
        .max_by_key(numeric_key)
        .map(|version| versions.join(version))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_pyenv() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for version in ["3.11.7", "3.12.1", "3.12.10"] {
            let bin = root.path().join("versions").join(version).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            let python = bin.join("python3");
            std::fs::write(&python, b"\x7fELF").unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&python, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        std::fs::create_dir_all(root.path().join("shims")).unwrap();
        std::fs::write(root.path().join("shims/python3"), b"#!/usr/bin/env bash\n").unwrap();
        root
    }

    #[test]
    fn pyenv_prefix_picks_newest_patch_release() {
        let root = fake_pyenv();
        let dir = pyenv_version_dir(root.path(), "3.12").unwrap();
        assert!(dir.ends_with("versions/3.12.10"), "{}", dir.display());
        assert!(pyenv_version_dir(root.path(), "3.9").is_none());
    }

    #[test]
    fn python_version_file_in_a_parent_selects_the_shim_target() {
        let root = fake_pyenv();
        let project = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join(".python-version"), "3.11.7\n").unwrap();
        let nested = project.path().join("src/pkg");
        std::fs::create_dir_all(&nested).unwrap();
        if std::env::var_os(env_vars::PYENV_VERSION).is_some() {
            return; // the environment overrides files, as in pyenv
        }
        let real = resolve_pyenv_shim(&root.path().join("shims/python3"), &nested).unwrap();
        assert!(
            real.ends_with("versions/3.11.7/bin/python3"),
            "{}",
            real.display()
        );
    }

    #[test]
    fn a_plain_binary_is_not_a_shim() {
        let root = fake_pyenv();
        let binary = root.path().join("versions/3.11.7/bin/python3");
        assert_eq!(resolve_pyenv_shim(&binary, root.path()), None);
        assert!(!is_script(&binary));
    }
}
