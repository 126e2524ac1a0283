//! Checked settings, built once from the command line and the environment.
//! Commands see these, never clap's types.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::{
    CleanArgs, DoctorArgs, ExportArgs, GlobalArgs, ImportArgs, MaterializeArgs, SourceArgs,
    WalkArgs,
};
use crate::scan::ScanOptions;
use crate::store::Store;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

/// Settings every command shares.
#[derive(Debug, Clone)]
pub struct GlobalConfig {
    pub store: PathBuf,
    pub python: Option<OsString>,
    pub json: bool,
    pub verbosity: Verbosity,
    pub jobs: usize,
    /// Size the store is kept under, in bytes.
    pub max_size: u64,
    /// Optimization levels, sorted, without duplicates.
    pub levels: Vec<u8>,
    pub cwd: PathBuf,
}

impl GlobalConfig {
    pub fn from_args(args: &GlobalArgs) -> anyhow::Result<Self> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let store = match &args.store {
            Some(path) => crate::scan::absolute(&cwd, path),
            None => Store::default_path().context(
                "no user cache directory (is HOME set?): pass `--store` or set `RCACHE_STORE`",
            )?,
        };
        let mut levels = args.optimize.clone();
        if levels.is_empty() {
            levels.push(0);
        }
        levels.sort_unstable();
        levels.dedup();
        let verbosity = if args.quiet {
            Verbosity::Quiet
        } else if args.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        let jobs = args.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            std::num::NonZeroUsize::get,
        );
        Ok(Self {
            store,
            python: args.python.clone().filter(|python| !python.is_empty()),
            json: args.json,
            verbosity,
            jobs,
            max_size: args.max_size,
            levels,
            cwd,
        })
    }
}

/// Which sources to take (`warm`, `materialize`).
#[derive(Debug, Clone)]
pub struct WalkConfig {
    pub paths: Vec<PathBuf>,
    pub scan: ScanOptions,
    pub timeout: Option<Duration>,
}

impl WalkConfig {
    pub fn from_args(args: &WalkArgs, global: &GlobalConfig) -> anyhow::Result<Self> {
        if !args.timeout.is_finite() || args.timeout < 0.0 {
            bail!("`--timeout` must be a number of seconds, 0 or more");
        }
        let (paths, scan) = sources(&args.sources, global);
        Ok(Self {
            paths,
            scan,
            timeout: (args.timeout > 0.0).then(|| Duration::from_secs_f64(args.timeout)),
        })
    }
}

/// The paths to walk (default `.`) and how.
fn sources(args: &SourceArgs, global: &GlobalConfig) -> (Vec<PathBuf>, ScanOptions) {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    (paths, scan_options(&args.exclude, args.no_ignore, global))
}

fn scan_options(exclude: &[String], no_ignore: bool, global: &GlobalConfig) -> ScanOptions {
    ScanOptions {
        exclude: exclude.to_vec(),
        no_ignore,
        threads: global.jobs.min(8),
    }
}

/// A `--prefix` (or `$PYTHONPYCACHEPREFIX`) made absolute; empty means none.
fn prefix(prefix: Option<&PathBuf>, global: &GlobalConfig) -> Option<PathBuf> {
    prefix
        .filter(|prefix| !prefix.as_os_str().is_empty())
        .map(|prefix| crate::scan::absolute(&global.cwd, prefix))
}

/// Settings of `rcache clean`.
#[derive(Debug, Clone)]
pub struct CleanConfig {
    pub paths: Vec<PathBuf>,
    pub scan: ScanOptions,
    pub prefix: Option<PathBuf>,
    pub dry_run: bool,
}

impl CleanConfig {
    pub fn from_args(args: &CleanArgs, global: &GlobalConfig) -> Self {
        let (paths, scan) = sources(&args.sources, global);
        Self {
            paths,
            scan,
            prefix: prefix(args.prefix.as_ref(), global),
            dry_run: args.dry_run,
        }
    }
}

/// Settings of `rcache doctor`.
#[derive(Debug, Clone)]
pub struct DoctorConfig {
    pub paths: Vec<PathBuf>,
    pub scan: ScanOptions,
    pub prefix: Option<PathBuf>,
    pub check_hash_based_pycs: crate::doctor::CheckHashBasedPycs,
}

impl DoctorConfig {
    pub fn from_args(args: &DoctorArgs, global: &GlobalConfig) -> Self {
        let (paths, scan) = sources(&args.sources, global);
        Self {
            paths,
            scan,
            prefix: prefix(args.prefix.as_ref(), global),
            check_hash_based_pycs: args.check_hash_based_pycs,
        }
    }
}

/// Settings of `rcache materialize`.
#[derive(Debug, Clone)]
pub struct MaterializeConfig {
    pub walk: WalkConfig,
    pub write: crate::materialize::Options,
}

impl MaterializeConfig {
    pub fn from_args(args: &MaterializeArgs, global: &GlobalConfig) -> anyhow::Result<Self> {
        // As `py_compile`: reproducible builds get pycs that do not record mtimes.
        let mode = args.mode.unwrap_or_else(|| {
            if std::env::var_os(crate::env_vars::SOURCE_DATE_EPOCH).is_some_and(|v| !v.is_empty()) {
                crate::pyc::Mode::CheckedHash
            } else {
                crate::pyc::Mode::Timestamp
            }
        });
        let prefix = prefix(args.prefix.as_ref(), global);
        Ok(Self {
            walk: WalkConfig::from_args(&args.walk, global)?,
            write: crate::materialize::Options {
                mode,
                prefix,
                dry_run: args.dry_run,
            },
        })
    }
}

/// Settings of `rcache export`.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    /// The archive to write, absolute.
    pub archive: PathBuf,
    /// Export only the code of the sources under these paths; empty means
    /// everything in the store.
    pub for_paths: Vec<PathBuf>,
    /// How to walk `for_paths`.
    pub scan: ScanOptions,
}

impl ExportConfig {
    pub fn from_args(args: &ExportArgs, global: &GlobalConfig) -> Self {
        Self {
            archive: crate::scan::absolute(&global.cwd, &args.file),
            for_paths: args.for_paths.clone(),
            scan: scan_options(&args.exclude, args.no_ignore, global),
        }
    }
}

/// Settings of `rcache import`.
#[derive(Debug, Clone)]
pub struct ImportConfig {
    /// The archive to merge, absolute.
    pub archive: PathBuf,
}

impl ImportConfig {
    pub fn from_args(args: &ImportArgs, global: &GlobalConfig) -> Self {
        Self {
            archive: crate::scan::absolute(&global.cwd, &args.file),
        }
    }
}
