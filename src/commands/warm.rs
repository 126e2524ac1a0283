//! `rcache warm`: compile every source under some paths into the store.
//! Its steps are shared with `materialize`.

use std::io::Write;
use std::path::Path;

use crate::compile::PoolOptions;
use crate::config::{GlobalConfig, Verbosity, WalkConfig};
use crate::exit::ExitStatus;
use crate::interpreter::{Interpreter, Profile, parse_major_minor};
use crate::pipeline::{Outcome, Pipeline};
use crate::progress::{Bar, Reporter, Silent};
use crate::remote::Remote;
use crate::report::Summary;
use crate::scan::{self, Venv};
use crate::store::Store;

pub fn warm(global: &GlobalConfig, config: &WalkConfig) -> anyhow::Result<ExitStatus> {
    let remote = Remote::connect(&global.remote)?;
    let mut filled = fill_store(global, config, None, remote.as_ref())?;
    finish_remote(remote, &mut filled)?;
    filled.store.end_run(global.max_size);
    print(global, &filled.outcome.summary, "Warmed")?;
    Ok(exit_status(&filled.outcome))
}

/// A store filled with the code of every source under the walked paths.
pub(super) struct Filled {
    pub store: Store,
    pub interpreter: Interpreter,
    /// The interpreter's profile in the store.
    pub profile_id: i64,
    pub outcome: Outcome,
    /// The source paths walked that name distinct pycs.
    pub files: Vec<std::path::PathBuf>,
    /// The `__pycache__` dirs met while walking.
    pub pycache_dirs: Vec<std::path::PathBuf>,
    /// The named paths that are directories.
    pub roots: Vec<std::path::PathBuf>,
}

/// Walks, reads, keys, fetches from `remote` and compiles the misses into
/// the store: `warm`, and the first half of `materialize`, whose pycs go
/// beside the sources, or under `prefix` (where each path walked to a
/// source names a pyc of its own).
pub(super) fn fill_store(
    global: &GlobalConfig,
    config: &WalkConfig,
    prefix: Option<&Path>,
    remote: Option<&Remote>,
) -> anyhow::Result<Filled> {
    let mut store = super::open_store(global, super::StoreUse::Cache)?;
    let (interpreter, profile_id) = super::select_interpreter(global, &mut store)?;
    tracing::debug!(
        "compiling for CPython {} at `{}`",
        interpreter.profile.version,
        interpreter.executable.display()
    );
    let scan_start = std::time::Instant::now();
    let mut found = scan::scan(&config.paths, &global.cwd, &config.scan);
    tracing::debug!(
        "walked {} files in {:.1?}, and {} more paths to them",
        found.files.len(),
        scan_start.elapsed(),
        found.aliases.len()
    );
    let files = found.take_pyc_sources(prefix);
    if global.verbosity != Verbosity::Quiet {
        warn_about_venvs(&found.venvs, &interpreter.profile)?;
    }
    let reporter: Box<dyn Reporter> = if global.json || global.verbosity != Verbosity::Normal {
        Box::new(Silent)
    } else {
        Bar::if_terminal()
    };
    let mut outcome = Pipeline {
        store: &mut store,
        profile: &interpreter.profile,
        profile_id,
        levels: &global.levels,
        pool: PoolOptions {
            python: interpreter.executable.clone(),
            workers: global.jobs,
            timeout: config.timeout,
        },
        reporter: reporter.as_ref(),
        remote,
    }
    .run(&files, &found.errors)?;
    outcome.summary.aliases = found.aliases_left_out(prefix);
    Ok(Filled {
        store,
        interpreter,
        profile_id,
        outcome,
        files,
        pycache_dirs: found.pycache_dirs,
        roots: found.roots,
    })
}

/// Waits for `remote`'s uploads, adds what it did to the summary and to the
/// store's lifetime counters.
pub(super) fn finish_remote(remote: Option<Remote>, filled: &mut Filled) -> anyhow::Result<()> {
    let Some(remote) = remote else {
        return Ok(());
    };
    let done = remote.finish();
    filled.store.finish_run(&[], &done.counters())?;
    filled.outcome.summary.remote = Some(done);
    Ok(())
}

/// 130 after Ctrl-C, 1 when anything failed, else 0.
pub(super) fn exit_status(outcome: &Outcome) -> ExitStatus {
    if outcome.interrupted {
        ExitStatus::Interrupted
    } else if outcome.summary.failures.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    }
}

/// Failures (and with `-v` warnings) on stderr, then the summary: JSON on
/// stdout, or one line on stderr starting with `verb`.
pub(super) fn print(global: &GlobalConfig, summary: &Summary, verb: &str) -> anyhow::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for failure in &summary.failures {
        writeln!(stderr, "{failure}")?;
    }
    if global.verbosity == Verbosity::Verbose {
        for warning in &summary.warnings {
            writeln!(stderr, "{warning}")?;
        }
    }
    drop(stderr);
    super::print_result(global, &[], summary, || {
        format!("{verb} {}", summary.headline())
    })
}

/// A virtualenv made for another Python gets bytecode it will never use.
fn warn_about_venvs(venvs: &[Venv], profile: &Profile) -> std::io::Result<()> {
    let mut stderr = std::io::stderr().lock();
    for venv in venvs {
        let venv_version = parse_major_minor(&venv.version);
        if venv_version.is_some() && venv_version != profile.major_minor() {
            writeln!(
                stderr,
                "warning: virtualenv `{}` is for Python {}, but rcache compiles for CPython {} (pass `--python {}/bin/python`)",
                venv.dir.display(),
                venv.version,
                profile.version,
                venv.dir.display(),
            )?;
        }
    }
    Ok(())
}
