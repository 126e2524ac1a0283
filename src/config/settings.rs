//! The settings a project can fix, each resolved from its layers — command
//! line, then `RCACHE_*` environment variable (clap reads both), then
//! `[tool.rcache]`, then the default — and remembering which layer gave it,
//! for `rcache config`.

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;

use super::file::{FileSettings, FileSize, ProjectFile};
use crate::env_vars;
use crate::pyc::Mode;
use crate::remote::Location;
use crate::store::Store;

/// Which layer a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    CommandLine,
    /// This environment variable.
    Env(&'static str),
    /// `[tool.rcache]` in the project file.
    File,
    Default,
    /// The default, changed because `SOURCE_DATE_EPOCH` is set.
    SourceDateEpoch,
}

/// One setting's value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting<T> {
    pub value: T,
    pub origin: Origin,
}

impl<T> Setting<T> {
    /// The same origin with a value made from this one.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Setting<U> {
        Setting {
            value: f(self.value),
            origin: self.origin,
        }
    }
}

/// Every setting a project can fix.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `pyproject.toml` the `File` settings came from.
    pub file: Option<PathBuf>,
    /// The store file, absolute.
    pub store: Setting<PathBuf>,
    /// The Python to use; `None` finds one (see [`crate::interpreter`]).
    pub python: Setting<Option<OsString>>,
    /// What `warm`, `materialize` and `clean` walk when given no paths.
    pub paths: Setting<Vec<PathBuf>>,
    /// gitignore-style globs the walk leaves out.
    pub exclude: Setting<Vec<String>>,
    /// What `materialize` records in pyc headers.
    pub mode: Setting<Mode>,
    /// Optimization levels, sorted, without duplicates.
    pub optimize: Setting<Vec<u8>>,
    /// Compile workers.
    pub jobs: Setting<usize>,
    /// Size the store is kept under, in bytes.
    pub max_size: Setting<u64>,
    /// How long one file may take to compile; `None` waits forever.
    pub timeout: Setting<Option<Duration>>,
    /// Remote caches, in the order they are tried.
    pub remote: Setting<Vec<Location>>,
    /// Only fetch from the remotes.
    pub remote_read_only: Setting<bool>,
    /// How long one remote request may take.
    pub remote_timeout: Setting<Duration>,
}

/// The store is kept under this size unless told otherwise: 2 GiB.
const DEFAULT_MAX_SIZE: u64 = 2 << 30;
/// Seconds one file may take to compile unless told otherwise.
const DEFAULT_TIMEOUT_SECS: f64 = 120.0;
/// Seconds one remote request may take unless told otherwise.
const DEFAULT_REMOTE_TIMEOUT_SECS: f64 = 10.0;
/// The variable of command-line arguments that have none.
const NO_VARIABLE: &str = "";

impl Settings {
    /// Resolves every setting. `matches` is the whole command line (global
    /// flags are found there, the command's own in its sub-matches);
    /// `project` is the project file, if any.
    pub fn resolve(
        matches: &ArgMatches,
        project: Option<&ProjectFile>,
        cwd: &Path,
    ) -> anyhow::Result<Self> {
        let layers = Layers {
            global: matches,
            command: matches.subcommand().map(|(_, sub)| sub),
            file: project.map_or(&FileSettings::EMPTY, |project| &project.settings),
            project,
        };
        let exclude = layers
            .cli_many::<String>("exclude", NO_VARIABLE)
            .or_else(|| layers.file.exclude.clone().map(file_setting))
            .unwrap_or_else(|| default(Vec::new()));
        let mode = layers
            .cli_or_env("mode", env_vars::RCACHE_MODE, |text| {
                <Mode as clap::ValueEnum>::from_str(text, false)
            })?
            .or_else(|| layers.file.mode.map(|mode| file_setting(mode.into())))
            .unwrap_or_else(default_mode);
        Ok(Self {
            file: project.map(|project| project.path.clone()),
            store: layers.store(cwd)?,
            python: layers.python(),
            paths: layers.paths()?,
            exclude,
            mode,
            optimize: layers.optimize()?,
            jobs: layers.jobs()?,
            max_size: layers.max_size()?,
            timeout: layers.timeout()?,
            remote: layers.remote()?,
            remote_read_only: layers.remote_read_only(),
            remote_timeout: layers.remote_timeout()?,
        })
    }
}

impl Settings {
    /// The directory `exclude`'s globs are relative to when the project
    /// file set them (else the current one).
    pub fn exclude_root(&self) -> Option<PathBuf> {
        let file = self
            .file
            .as_ref()
            .filter(|_| self.exclude.origin == Origin::File)?;
        file.parent().map(Path::to_path_buf)
    }
}

impl Origin {
    /// Where the value was set, for people: "command line", "RCACHE_JOBS"...
    pub fn describe(self, project: Option<&ProjectFile>) -> String {
        match (self, project) {
            (Self::CommandLine, _) => "command line".to_owned(),
            (Self::Env(name), _) => name.to_owned(),
            (Self::File, Some(project)) => project.path.display().to_string(),
            (Self::File, None) => "project file".to_owned(),
            (Self::Default, _) => "default".to_owned(),
            (Self::SourceDateEpoch, _) => "default, as SOURCE_DATE_EPOCH is set".to_owned(),
        }
    }

    /// The layer's name in `--json` output.
    pub fn kind(self) -> &'static str {
        match self {
            Self::CommandLine => "command-line",
            Self::Env(_) => "env",
            Self::File => "file",
            Self::Default => "default",
            Self::SourceDateEpoch => "source-date-epoch",
        }
    }
}

/// The layers one setting is looked up in.
struct Layers<'a> {
    global: &'a ArgMatches,
    command: Option<&'a ArgMatches>,
    file: &'a FileSettings,
    project: Option<&'a ProjectFile>,
}

impl Layers<'_> {
    fn store(&self, cwd: &Path) -> anyhow::Result<Setting<PathBuf>> {
        if let Some(store) = self.cli_one::<PathBuf>("store", env_vars::RCACHE_STORE) {
            return Ok(store.map(|path| crate::scan::absolute(cwd, &path)));
        }
        if let (Some(path), Some(project)) = (&self.file.store, self.project) {
            return Ok(file_setting(project.resolve(path)));
        }
        Ok(default(Store::default_path().context(
            "no user cache directory (is HOME set?): pass `--store` or set `RCACHE_STORE`",
        )?))
    }

    fn python(&self) -> Setting<Option<OsString>> {
        if let Some(python) = self.cli_one::<OsString>("python", env_vars::RCACHE_PYTHON) {
            return python.map(|python| Some(python).filter(|p| !p.is_empty()));
        }
        match (&self.file.python, self.project) {
            (Some(python), Some(project)) => file_setting(Some(file_python(project, python))),
            _ => default(None),
        }
    }

    fn paths(&self) -> anyhow::Result<Setting<Vec<PathBuf>>> {
        if let Some(paths) = self.cli_many::<PathBuf>("paths", NO_VARIABLE) {
            return Ok(paths);
        }
        match (&self.file.paths, self.project) {
            (Some(paths), _) if paths.is_empty() => bail!(self.bad_value("paths", "is empty")),
            (Some(paths), Some(project)) => Ok(file_setting(
                paths.iter().map(|path| project.resolve(path)).collect(),
            )),
            _ => Ok(default(vec![PathBuf::from(".")])),
        }
    }

    /// Sorted, without duplicates.
    fn optimize(&self) -> anyhow::Result<Setting<Vec<u8>>> {
        let mut optimize = match self.cli_many::<u8>("optimize", env_vars::RCACHE_OPTIMIZE) {
            Some(levels) => levels,
            None => match &self.file.optimize {
                Some(levels) => file_setting(self.checked_levels(levels.clone().into_vec())?),
                None => default(vec![0]),
            },
        };
        optimize.value.sort_unstable();
        optimize.value.dedup();
        Ok(optimize)
    }

    fn jobs(&self) -> anyhow::Result<Setting<usize>> {
        if let Some(jobs) = self.cli_one::<NonZeroUsize>("jobs", env_vars::RCACHE_JOBS) {
            return Ok(jobs.map(NonZeroUsize::get));
        }
        match self.file.jobs {
            Some(0) => bail!(self.bad_value("jobs", "must be at least 1")),
            Some(jobs) => Ok(file_setting(jobs)),
            None => Ok(default(
                std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            )),
        }
    }

    fn max_size(&self) -> anyhow::Result<Setting<u64>> {
        if let Some(size) = self.cli_one::<u64>("max_size", env_vars::RCACHE_MAX_SIZE) {
            return Ok(size);
        }
        match &self.file.max_size {
            Some(FileSize::Bytes(bytes)) => Ok(file_setting(*bytes)),
            Some(FileSize::Text(text)) => crate::cli::parse_size(text)
                .map(file_setting)
                .map_err(|why| anyhow::anyhow!(self.bad_value("max-size", &why))),
            None => Ok(default(DEFAULT_MAX_SIZE)),
        }
    }

    fn timeout(&self) -> anyhow::Result<Setting<Option<Duration>>> {
        let secs = match self.cli_or_env("timeout", env_vars::RCACHE_TIMEOUT, |text| {
            text.parse::<f64>().map_err(|err| err.to_string())
        })? {
            Some(secs) => secs,
            None => self
                .file
                .timeout
                .map_or_else(|| default(DEFAULT_TIMEOUT_SECS), file_setting),
        };
        if !secs.value.is_finite() || secs.value < 0.0 {
            bail!(
                "the timeout ({}) must be a number of seconds, 0 or more",
                secs.origin.describe(self.project)
            );
        }
        Ok(secs.map(|secs| (secs > 0.0).then(|| Duration::from_secs_f64(secs))))
    }

    fn remote(&self) -> anyhow::Result<Setting<Vec<Location>>> {
        let urls = match self.cli_many::<String>("remote", env_vars::RCACHE_REMOTE) {
            Some(urls) => urls,
            None => match &self.file.remote {
                Some(urls) => file_setting(urls.clone().into_vec()),
                None => default(Vec::new()),
            },
        };
        let origin = urls.origin;
        let locations = urls
            .value
            .iter()
            .filter(|url| !url.trim().is_empty())
            .map(|url| {
                Location::parse(url.trim())
                    .with_context(|| format!("in the remote of {}", origin.describe(self.project)))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Setting {
            value: locations,
            origin,
        })
    }

    fn remote_read_only(&self) -> Setting<bool> {
        match self.cli_one::<bool>("remote_read_only", env_vars::RCACHE_REMOTE_READ_ONLY) {
            Some(flag) if flag.value => flag,
            _ => self
                .file
                .remote_read_only
                .map_or_else(|| default(false), file_setting),
        }
    }

    fn remote_timeout(&self) -> anyhow::Result<Setting<Duration>> {
        let secs = self
            .cli_or_env("remote_timeout", env_vars::RCACHE_REMOTE_TIMEOUT, |text| {
                text.parse::<f64>().map_err(|err| err.to_string())
            })?
            .unwrap_or_else(|| default(DEFAULT_REMOTE_TIMEOUT_SECS));
        if !secs.value.is_finite() || secs.value <= 0.0 {
            bail!(
                "`{}` must be a number of seconds above 0",
                env_vars::RCACHE_REMOTE_TIMEOUT
            );
        }
        Ok(secs.map(Duration::from_secs_f64))
    }

    /// The matches that know argument `id`: the command's own, else the
    /// global ones (clap hands global flags to both).
    fn matches_with(&self, id: &str) -> Option<&ArgMatches> {
        self.command
            .into_iter()
            .chain([self.global])
            .find(|matches| matches.try_contains_id(id).is_ok_and(|set| set))
    }

    /// A single value from the command line or its environment variable.
    fn cli_one<T: Clone + Send + Sync + 'static>(
        &self,
        id: &str,
        env: &'static str,
    ) -> Option<Setting<T>> {
        let matches = self.matches_with(id)?;
        let value = matches.try_get_one::<T>(id).ok()??.clone();
        cli_origin(matches, id, env).map(|origin| Setting { value, origin })
    }

    /// [`Self::cli_one`] for an argument of some commands only: for the
    /// others (`rcache config`), its variable parsed with `parse`.
    fn cli_or_env<T: Clone + Send + Sync + 'static>(
        &self,
        id: &str,
        env: &'static str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> anyhow::Result<Option<Setting<T>>> {
        if self.matches_with(id).is_some() {
            return Ok(self.cli_one(id, env));
        }
        let Some(text) = std::env::var_os(env).filter(|text| !text.is_empty()) else {
            return Ok(None);
        };
        let value = parse(&text.to_string_lossy())
            .map_err(|why| anyhow::anyhow!("invalid value for `{env}`: {why}"))?;
        Ok(Some(Setting {
            value,
            origin: Origin::Env(env),
        }))
    }

    /// Several values from the command line or their environment variable.
    fn cli_many<T: Clone + Send + Sync + 'static>(
        &self,
        id: &str,
        env: &'static str,
    ) -> Option<Setting<Vec<T>>> {
        let matches = self.matches_with(id)?;
        let value: Vec<T> = matches.try_get_many::<T>(id).ok()??.cloned().collect();
        cli_origin(matches, id, env).map(|origin| Setting { value, origin })
    }

    fn checked_levels(&self, levels: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        if levels.is_empty() || levels.iter().any(|&level| level > 2) {
            bail!(self.bad_value("optimize", "must be 0, 1 or 2, or a list of them"));
        }
        Ok(levels)
    }

    /// "`key` in `FILE` WHY".
    fn bad_value(&self, key: &str, why: &str) -> String {
        let file = self
            .project
            .map_or_else(String::new, |p| p.path.display().to_string());
        format!("`{key}` in `{file}` [tool.rcache]: {why}")
    }
}

/// Which of the two clap layers gave argument `id`; `None` for clap's own
/// defaults (there are none for settings: the file comes before those).
fn cli_origin(matches: &ArgMatches, id: &str, env: &'static str) -> Option<Origin> {
    match matches.value_source(id)? {
        ValueSource::CommandLine => Some(Origin::CommandLine),
        ValueSource::EnvVariable => Some(Origin::Env(env)),
        _ => None,
    }
}

fn file_setting<T>(value: T) -> Setting<T> {
    Setting {
        value,
        origin: Origin::File,
    }
}

fn default<T>(value: T) -> Setting<T> {
    Setting {
        value,
        origin: Origin::Default,
    }
}

/// As `py_compile`: reproducible builds get pycs that do not record mtimes.
fn default_mode() -> Setting<Mode> {
    if std::env::var_os(env_vars::SOURCE_DATE_EPOCH).is_some_and(|value| !value.is_empty()) {
        Setting {
            value: Mode::CheckedHash,
            origin: Origin::SourceDateEpoch,
        }
    } else {
        default(Mode::Timestamp)
    }
}

/// `python = ".venv/bin/python"` is relative to the project; a bare name
/// (`python3.12`) is looked up on PATH.
fn file_python(project: &ProjectFile, python: &str) -> OsString {
    if Path::new(python).components().count() > 1 || project.dir().join(python).is_dir() {
        project.resolve(Path::new(python)).into_os_string()
    } else {
        OsString::from(python)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use crate::config::file::{FileMode, OneOrMany};

    fn resolve(args: &[&str], file: Option<FileSettings>) -> Settings {
        let invocation = Cli::parse_args(&args.iter().map(OsString::from).collect::<Vec<_>>());
        let project = file.map(|settings| ProjectFile {
            path: PathBuf::from("/project/pyproject.toml"),
            settings,
        });
        Settings::resolve(&invocation.matches, project.as_ref(), Path::new("/cwd")).unwrap()
    }

    #[test]
    fn command_line_then_file_then_default() {
        let file = FileSettings {
            store: Some(PathBuf::from("cache/store.sqlite3")),
            paths: Some(vec![PathBuf::from("src")]),
            mode: Some(FileMode::CheckedHash),
            optimize: Some(OneOrMany::Many(vec![2, 0, 2])),
            jobs: Some(3),
            max_size: Some(FileSize::Text("1MiB".into())),
            timeout: Some(0.0),
            ..FileSettings::EMPTY
        };
        let from_file = resolve(&["rcache", "materialize"], Some(file.clone()));
        assert_eq!(
            from_file.store.value,
            Path::new("/project/cache/store.sqlite3")
        );
        assert_eq!(from_file.paths.value, [Path::new("/project/src")]);
        assert_eq!(from_file.mode.value, Mode::CheckedHash);
        assert_eq!(from_file.optimize.value, [0, 2]);
        assert_eq!(from_file.jobs.value, 3);
        assert_eq!(from_file.max_size.value, 1 << 20);
        assert_eq!(from_file.timeout.value, None);
        assert_eq!(from_file.optimize.origin, Origin::File);
        // Flags after the command, global or not, win over the file.
        let flags = [
            "rcache",
            "materialize",
            "lib",
            "--store",
            "s.db",
            "--mode",
            "timestamp",
            "-O",
            "1,0",
            "-j1",
            "--max-size",
            "2M",
            "--timeout",
            "5",
        ];
        let from_flags = resolve(&flags, Some(file));
        assert_eq!(from_flags.store.value, Path::new("/cwd/s.db"));
        assert_eq!(from_flags.paths.value, [Path::new("lib")]);
        assert_eq!(from_flags.mode.value, Mode::Timestamp);
        assert_eq!(from_flags.optimize.value, [0, 1]);
        assert_eq!(from_flags.jobs.value, 1);
        assert_eq!(from_flags.max_size.value, 2_000_000);
        assert_eq!(from_flags.timeout.value, Some(Duration::from_secs(5)));
        for origin in [
            from_flags.store.origin,
            from_flags.paths.origin,
            from_flags.mode.origin,
            from_flags.optimize.origin,
            from_flags.jobs.origin,
            from_flags.max_size.origin,
            from_flags.timeout.origin,
        ] {
            assert_eq!(origin, Origin::CommandLine);
        }
        let defaults = resolve(&["rcache", "-j", "2", "stats"], None);
        assert_eq!(defaults.paths.value, [Path::new(".")]);
        assert_eq!(defaults.optimize.value, [0]);
        assert_eq!(defaults.max_size.value, DEFAULT_MAX_SIZE);
        assert_eq!(defaults.jobs.origin, Origin::CommandLine);
        assert_eq!(defaults.paths.origin, Origin::Default);
    }

    #[test]
    fn bad_file_values_name_the_key_and_file() {
        let invocation = Cli::parse_args(&["rcache", "warm"].map(OsString::from));
        let bad = |settings: FileSettings| {
            let project = ProjectFile {
                path: PathBuf::from("/p/pyproject.toml"),
                settings,
            };
            let err = Settings::resolve(&invocation.matches, Some(&project), Path::new("/"));
            format!("{:#}", err.unwrap_err())
        };
        let message = bad(FileSettings {
            jobs: Some(0),
            ..FileSettings::EMPTY
        });
        assert!(
            message.contains("`jobs` in `/p/pyproject.toml`"),
            "{message}"
        );
        let message = bad(FileSettings {
            optimize: Some(OneOrMany::One(3)),
            ..FileSettings::EMPTY
        });
        assert!(message.contains("`optimize`"), "{message}");
        let message = bad(FileSettings {
            max_size: Some(FileSize::Text("big".into())),
            ..FileSettings::EMPTY
        });
        assert!(message.contains("`max-size`"), "{message}");
        let message = bad(FileSettings {
            timeout: Some(-1.0),
            ..FileSettings::EMPTY
        });
        assert!(message.contains("/p/pyproject.toml"), "{message}");
    }
}
