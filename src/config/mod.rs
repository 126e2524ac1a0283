//! Checked settings, built once from the command line, the environment and
//! the project file ([`settings`]). Commands see these, never clap's types.

pub mod file;
pub mod settings;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{
    CleanArgs, DoctorArgs, ExportArgs, GlobalArgs, ImportArgs, MaterializeArgs, WalkArgs,
};
use crate::scan::ScanOptions;
pub use settings::{Origin, Setting, Settings};

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
    /// The remote caches and how to use them.
    pub remote: crate::remote::Options,
    pub cwd: PathBuf,
}

impl GlobalConfig {
    pub fn new(args: &GlobalArgs, settings: &Settings, cwd: PathBuf) -> Self {
        let verbosity = if args.quiet {
            Verbosity::Quiet
        } else if args.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        Self {
            store: settings.store.value.clone(),
            python: settings.python.value.clone(),
            json: args.json,
            verbosity,
            jobs: settings.jobs.value,
            max_size: settings.max_size.value,
            levels: settings.optimize.value.clone(),
            remote: crate::remote::Options {
                locations: settings.remote.value.clone(),
                read_only: settings.remote_read_only.value,
                timeout: settings.remote_timeout.value,
                quiet: verbosity == Verbosity::Quiet,
            },
            cwd,
        }
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
    pub fn new(args: &WalkArgs, settings: &Settings, global: &GlobalConfig) -> Self {
        Self {
            paths: settings.paths.value.clone(),
            scan: scan_options(settings, args.sources.no_ignore, global),
            timeout: settings.timeout.value,
        }
    }
}

fn scan_options(settings: &Settings, no_ignore: bool, global: &GlobalConfig) -> ScanOptions {
    ScanOptions {
        exclude: settings.exclude.value.clone(),
        exclude_root: settings.exclude_root(),
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
    pub fn new(args: &CleanArgs, settings: &Settings, global: &GlobalConfig) -> Self {
        Self {
            paths: settings.paths.value.clone(),
            scan: scan_options(settings, args.sources.no_ignore, global),
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
    pub fn new(args: &DoctorArgs, settings: &Settings, global: &GlobalConfig) -> Self {
        Self {
            paths: settings.paths.value.clone(),
            scan: scan_options(settings, args.sources.no_ignore, global),
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
    pub fn new(args: &MaterializeArgs, settings: &Settings, global: &GlobalConfig) -> Self {
        Self {
            walk: WalkConfig::new(&args.walk, settings, global),
            write: crate::materialize::Options {
                mode: settings.mode.value,
                prefix: prefix(args.prefix.as_ref(), global),
                dry_run: args.dry_run,
            },
        }
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
    pub fn new(args: &ExportArgs, settings: &Settings, global: &GlobalConfig) -> Self {
        Self {
            archive: crate::scan::absolute(&global.cwd, &args.file),
            for_paths: args.for_paths.clone(),
            scan: scan_options(settings, args.no_ignore, global),
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
    pub fn new(args: &ImportArgs, global: &GlobalConfig) -> Self {
        Self {
            archive: crate::scan::absolute(&global.cwd, &args.file),
        }
    }
}
