//! `rcache hook install|uninstall`: rcache's git hooks in the repository
//! here; and `rcache hook run`, what those hooks run: materialize the `.py`
//! files the git command changed ([`crate::git_changes`]) as `rcache
//! materialize FILE...` would, and remove the pycs of the deleted ones.
//! A hook never fails a git command: its errors are a one-line warning and
//! it exits 0.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::cli::{HookCommand, HookRunArgs, MaterializeArgs};
use crate::config::{GlobalConfig, MaterializeConfig, Settings, Verbosity};
use crate::exit::ExitStatus;
use crate::git_changes::{self, Changed};
use crate::git_hooks::{self, Action, Change, Hook};
use crate::sweep::{Sweep, Sweeper};

pub fn hook(
    global: &GlobalConfig,
    settings: &Settings,
    command: &HookCommand,
) -> anyhow::Result<ExitStatus> {
    match command {
        HookCommand::Install => install(global),
        HookCommand::Uninstall => uninstall(global),
        HookCommand::Run(args) => Ok(run(global, settings, args)),
    }
}

/// What `install` and `uninstall` print with `--json`.
#[derive(Debug, Serialize)]
struct Report {
    hooks_dir: PathBuf,
    /// The rcache binary the hooks call (install only).
    #[serde(skip_serializing_if = "Option::is_none")]
    rcache: Option<PathBuf>,
    hooks: Vec<Change>,
}

fn install(global: &GlobalConfig) -> anyhow::Result<ExitStatus> {
    let hooks_dir = git_hooks::hooks_dir(&global.cwd)?;
    let rcache = std::env::current_exe().context("cannot find rcache's own binary")?;
    let hooks = Hook::ALL
        .into_iter()
        .map(|hook| git_hooks::install(&hooks_dir, hook, &rcache))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report {
        hooks_dir,
        rcache: Some(rcache),
        hooks,
    };
    super::print_result(global, &[], &report, || describe(&report))?;
    Ok(ExitStatus::Success)
}

fn uninstall(global: &GlobalConfig) -> anyhow::Result<ExitStatus> {
    let hooks_dir = git_hooks::hooks_dir(&global.cwd)?;
    let hooks = Hook::ALL
        .into_iter()
        .map(|hook| git_hooks::uninstall(&hooks_dir, hook))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report {
        hooks_dir,
        rcache: None,
        hooks,
    };
    super::print_result(global, &[], &report, || describe(&report))?;
    Ok(ExitStatus::Success)
}

/// One line per hook: what was done, and the user's hook it chains.
fn describe(report: &Report) -> String {
    let lines: Vec<String> = report
        .hooks
        .iter()
        .map(|change| {
            let what = match change.action {
                Action::Installed => "installed",
                Action::Updated => "updated",
                Action::Unchanged => "already installed",
                Action::Removed => "removed",
                Action::Restored => "removed, and the hook it ran put back",
                Action::NotInstalled => "not installed",
            };
            let mut line = format!("{}: {what}", change.path.display());
            if let (Some(chained), false) = (&change.chained, change.action == Action::Restored) {
                let _ = write!(line, "; runs `{}` first", chained.display());
            }
            line
        })
        .collect();
    lines.join("\n")
}

/// Runs one hook; always succeeds, so that git never fails because of it.
#[expect(clippy::print_stderr, reason = "a hook's one warning")]
fn run(global: &GlobalConfig, settings: &Settings, args: &HookRunArgs) -> ExitStatus {
    if let Err(err) = materialize_changes(global, settings, args.hook, &args.args) {
        eprintln!(
            "rcache: warning: {} hook: {err:#}; pycs were not updated",
            args.hook.name()
        );
    }
    ExitStatus::Success
}

fn materialize_changes(
    global: &GlobalConfig,
    settings: &Settings,
    hook: Hook,
    git_args: &[OsString],
) -> anyhow::Result<()> {
    let mut stdin = String::new();
    if hook == Hook::PostRewrite {
        std::io::stdin()
            .read_to_string(&mut stdin)
            .context("cannot read the rewritten commits on stdin")?;
    }
    let top = crate::git::path(&global.cwd, &["rev-parse", "--show-toplevel"])?;
    let mut config = default_materialize_config(global, settings)?;
    let changed = git_changes::changed(&top, hook, git_args, &stdin)?;
    tracing::debug!("{} changed {changed:?}", hook.name());
    let Changed::Files(files) = changed else {
        super::materialize(global, &config)?;
        return Ok(());
    };
    let wanted = Wanted::new(&config, global);
    let (present, deleted): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .filter(|file| wanted.contains(file))
        .partition(|file| file.is_file());
    if !present.is_empty() {
        config.walk.paths = present;
        super::materialize(global, &config)?;
    }
    if !deleted.is_empty() && config.write.prefix.is_none() {
        remove_pycs_of(global, &deleted)?;
    }
    Ok(())
}

/// What `rcache materialize` with no arguments would do: the project's
/// settings, the environment's, the defaults.
fn default_materialize_config(
    global: &GlobalConfig,
    settings: &Settings,
) -> anyhow::Result<MaterializeConfig> {
    use clap::{Args as _, FromArgMatches as _};
    let command = MaterializeArgs::augment_args(clap::Command::new("materialize"));
    let matches = command.try_get_matches_from(["materialize"])?;
    let args = MaterializeArgs::from_arg_matches(&matches)?;
    Ok(MaterializeConfig::new(&args, settings, global))
}

/// The sources a materialize of the whole tree would take: under its paths,
/// not excluded.
struct Wanted {
    roots: Vec<PathBuf>,
    exclusions: Option<ignore::overrides::Override>,
    /// The directory the exclude globs are relative to.
    exclude_root: PathBuf,
}

impl Wanted {
    fn new(config: &MaterializeConfig, global: &GlobalConfig) -> Self {
        let exclude_root = config
            .walk
            .scan
            .exclude_root
            .clone()
            .unwrap_or_else(|| global.cwd.clone());
        Self {
            roots: config
                .walk
                .paths
                .iter()
                .map(|path| crate::scan::absolute(&global.cwd, path))
                .collect(),
            exclusions: crate::scan::exclusions(&config.walk.scan.exclude, &exclude_root),
            exclude_root,
        }
    }

    /// Whether the walk would take `file`: under a root, and neither it nor
    /// a directory above it excluded (the walker never enters those).
    fn contains(&self, file: &Path) -> bool {
        let excluded = |exclusions: &ignore::overrides::Override| {
            file.ancestors()
                .take_while(|path| {
                    path.starts_with(&self.exclude_root) && *path != self.exclude_root
                })
                .any(|path| exclusions.matched(path, path != file).is_ignore())
        };
        self.roots.iter().any(|root| file.starts_with(root))
            && !self.exclusions.as_ref().is_some_and(excluded)
    }
}

/// Removes this interpreter's pycs of the `deleted` sources, and the
/// `__pycache__` (and package) dirs that leaves empty.
fn remove_pycs_of(global: &GlobalConfig, deleted: &[PathBuf]) -> anyhow::Result<()> {
    let mut store = super::open_store(global, super::StoreUse::Read)?;
    let (interpreter, _) = super::select_interpreter(global, &mut store)?;
    let mut pycache_dirs: Vec<PathBuf> = deleted
        .iter()
        .filter_map(|file| Some(file.parent()?.join("__pycache__")))
        .filter(|dir| dir.is_dir())
        .collect();
    pycache_dirs.sort_unstable();
    pycache_dirs.dedup();
    let walked = HashSet::new();
    let removed = Sweeper {
        cache_tag: &interpreter.profile.cache_tag,
        sweep: Sweep::Orphans,
        walked: &walked,
        dry_run: false,
    }
    .pycache_dirs(&pycache_dirs);
    #[expect(clippy::print_stderr, reason = "what the hook did")]
    {
        for failure in &removed.failures {
            eprintln!("{failure}");
        }
        if removed.removed > 0 && global.verbosity != Verbosity::Quiet {
            eprintln!(
                "Removed {} of deleted sources",
                super::counted(removed.removed, "pyc", "pycs")
            );
        }
    }
    Ok(())
}
