//! The project's settings: `[tool.rcache]` in the nearest `pyproject.toml`
//! that has one, from the current directory up (as ruff finds
//! `[tool.ruff]`). Paths in it are relative to the file's directory.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The `[tool.rcache]` table of one `pyproject.toml`, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileSettings {
    pub store: Option<PathBuf>,
    pub python: Option<String>,
    pub paths: Option<Vec<PathBuf>>,
    pub exclude: Option<Vec<String>>,
    pub mode: Option<FileMode>,
    pub optimize: Option<OneOrMany<u8>>,
    pub jobs: Option<usize>,
    pub max_size: Option<FileSize>,
    pub timeout: Option<f64>,
    pub remote: Option<OneOrMany<String>>,
    pub remote_read_only: Option<bool>,
}

impl FileSettings {
    /// No file, or a file that sets nothing.
    pub const EMPTY: Self = Self {
        store: None,
        python: None,
        paths: None,
        exclude: None,
        mode: None,
        optimize: None,
        jobs: None,
        max_size: None,
        timeout: None,
        remote: None,
        remote_read_only: None,
    };
}

/// `mode = "checked-hash"`, spelled as on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileMode {
    Timestamp,
    CheckedHash,
    UncheckedHash,
}

impl From<FileMode> for crate::pyc::Mode {
    fn from(mode: FileMode) -> Self {
        match mode {
            FileMode::Timestamp => Self::Timestamp,
            FileMode::CheckedHash => Self::CheckedHash,
            FileMode::UncheckedHash => Self::UncheckedHash,
        }
    }
}

/// `optimize = 1` or `optimize = [0, 1]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            Self::One(one) => vec![one],
            Self::Many(many) => many,
        }
    }
}

/// `max-size = "2GiB"` or a number of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum FileSize {
    Bytes(u64),
    Text(String),
}

/// A `pyproject.toml` with a `[tool.rcache]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectFile {
    /// The file, absolute.
    pub path: PathBuf,
    pub settings: FileSettings,
}

impl ProjectFile {
    /// The directory relative paths in the file are taken from.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// `path` from the file, made absolute against the file's directory
    /// (`~/` is the home directory).
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), dirs::home_dir()) {
            return home.join(rest);
        }
        crate::scan::absolute(self.dir(), path)
    }
}

/// The nearest `pyproject.toml` from `start` up that has a `[tool.rcache]`
/// table; files without one are passed over (a package's own pyproject
/// inside a bigger project does not hide the project's settings).
pub fn find(start: &Path) -> anyhow::Result<Option<ProjectFile>> {
    for dir in start.ancestors() {
        let path = dir.join("pyproject.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) if err.kind() == std::io::ErrorKind::IsADirectory => continue,
            Err(err) => {
                return Err(err).with_context(|| format!("cannot read `{}`", path.display()));
            }
        };
        // Most pyprojects never mention rcache: skip parsing those.
        if !text.contains("rcache") {
            continue;
        }
        if let Some(settings) = parse(&text).with_context(|| format!("in `{}`", path.display()))? {
            return Ok(Some(ProjectFile { path, settings }));
        }
    }
    Ok(None)
}

/// The `[tool.rcache]` table of a pyproject's text, if it has one.
fn parse(text: &str) -> anyhow::Result<Option<FileSettings>> {
    #[derive(Deserialize)]
    struct Pyproject {
        tool: Option<Tools>,
    }
    #[derive(Deserialize)]
    struct Tools {
        rcache: Option<FileSettings>,
    }
    let pyproject: Pyproject = toml::from_str(text)?;
    Ok(pyproject.tool.and_then(|tool| tool.rcache))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key() {
        let text = r#"
            [project]
            name = "app"
            [tool.rcache]
            store = "cache/store.sqlite3"
            python = ".venv/bin/python"
            paths = ["src", "tests"]
            exclude = ["build/**"]
            mode = "checked-hash"
            optimize = [0, 2]
            jobs = 3
            max-size = "500M"
            timeout = 30.5
        "#;
        let settings = parse(text).unwrap().unwrap();
        assert_eq!(settings.store, Some(PathBuf::from("cache/store.sqlite3")));
        assert_eq!(settings.mode, Some(FileMode::CheckedHash));
        assert_eq!(settings.optimize.unwrap().into_vec(), [0, 2]);
        assert_eq!(settings.max_size, Some(FileSize::Text("500M".into())));
        assert_eq!(settings.jobs, Some(3));
        let one_level = parse("[tool.rcache]\noptimize = 1\nmax-size = 1000").unwrap();
        let one_level = one_level.unwrap();
        assert_eq!(one_level.optimize.unwrap().into_vec(), [1]);
        assert_eq!(one_level.max_size, Some(FileSize::Bytes(1000)));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err = parse("[tool.rcache]\njobs = 2\nstroe = \"x\"\n").unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("unknown field `stroe`"), "{message}");
        let err = parse("[tool.rcache]\nmode = \"fast\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("fast"), "{err:#}");
        assert!(parse("[tool.rcache\n").is_err());
    }

    #[test]
    fn nearest_file_with_a_table_wins() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/sub")).unwrap();
        std::fs::write(root.join("pyproject.toml"), "[tool.rcache]\njobs = 1\n").unwrap();
        std::fs::write(root.join("pkg/pyproject.toml"), "[project]\nname = 'pkg'\n").unwrap();
        let found = find(&root.join("pkg/sub")).unwrap().unwrap();
        assert_eq!(found.path, root.join("pyproject.toml"));
        assert_eq!(found.settings.jobs, Some(1));
        assert_eq!(
            found.resolve(Path::new("../x")),
            root.parent().unwrap().join("x")
        );
        std::fs::write(
            root.join("pkg/pyproject.toml"),
            "[tool.rcache]\njobs = 2\n# rcache\n",
        )
        .unwrap();
        let found = find(&root.join("pkg/sub")).unwrap().unwrap();
        assert_eq!(found.settings.jobs, Some(2));
    }
}
