//! rcache: a content-addressed cache for CPython bytecode.
//!
//! Sources are compiled once per content by the interpreter itself
//! ([`compile`]), keyed by blake3 over the bytes and what changes the
//! bytecode ([`key`]), and kept in one SQLite store ([`store`]) that every
//! checkout, worktree and virtualenv of a user shares. See
//! `docs/ARCHITECTURE.md` for the design.

pub mod archive;
pub mod cli;
pub mod commands;
pub mod compile;
pub mod config;
pub mod doctor;
pub mod env_vars;
pub mod exec;
pub mod exit;
pub mod git;
pub mod git_changes;
pub mod git_hooks;
pub mod identity;
pub mod interpreter;
pub mod interrupt;
pub mod key;
pub mod logging;
pub mod marshal;
pub mod materialize;
pub mod parallel;
pub mod pipeline;
pub mod progress;
pub mod pyc;
pub mod remote;
pub mod report;
pub mod scan;
pub mod source;
pub mod store;
pub mod sweep;

use std::process::ExitCode;

use anyhow::{Context, bail};

use crate::cli::{Cli, Command, Invocation};
use crate::config::{
    CleanConfig, DoctorConfig, ExportConfig, GlobalConfig, ImportConfig, MaterializeConfig, Origin,
    Settings, WalkConfig,
};
use crate::exit::ExitStatus;

/// Runs the command line and returns the process exit code. Errors are
/// printed here, once.
#[expect(clippy::print_stderr, reason = "the one place errors are printed")]
pub fn main() -> ExitCode {
    let invocation = Cli::parse_args(&std::env::args_os().collect::<Vec<_>>());
    logging::init(invocation.cli.global.verbose);
    // `exec` forks while it has a single thread, and then becomes Python,
    // which handles Ctrl-C itself.
    if !matches!(invocation.cli.command, Command::Exec(_)) {
        interrupt::install();
    }
    match run(&invocation) {
        Ok(status) => status.into(),
        Err(err) => {
            // A closed pipe (`rcache stats | head -1`) is not an error.
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitStatus::Success.into();
            }
            eprintln!("rcache: error: {err:#}");
            ExitStatus::Error.into()
        }
    }
}

fn run(invocation: &Invocation) -> anyhow::Result<ExitStatus> {
    let Invocation { cli, matches } = invocation;
    // Generated from the definitions alone: no settings, no project file.
    match &cli.command {
        Command::Completions(args) => return commands::completions(args.shell),
        Command::Man(args) => return commands::man(args.command.as_deref()),
        _ => {}
    }
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let project = if cli.global.no_config {
        None
    } else {
        config::file::find(&cwd)?
    };
    let settings = Settings::resolve(matches, project.as_ref(), &cwd)?;
    let global = GlobalConfig::new(&cli.global, &settings, cwd);
    match &cli.command {
        Command::Warm(args) => commands::warm(&global, &WalkConfig::new(args, &settings, &global)),
        Command::Clean(args) => {
            commands::clean(&global, &CleanConfig::new(args, &settings, &global))
        }
        Command::Materialize(args) => {
            commands::materialize(&global, &MaterializeConfig::new(args, &settings, &global))
        }
        Command::Push(args) => commands::push(&global, &WalkConfig::new(args, &settings, &global)),
        Command::Stats => commands::stats(&global),
        Command::Gc(args) => commands::gc(&global, args),
        Command::Verify(args) => commands::verify(&global, args),
        Command::Export(args) => {
            commands::export(&global, &ExportConfig::new(args, &settings, &global))
        }
        Command::Import(args) => commands::import(&global, &ImportConfig::new(args, &global)),
        Command::Config => commands::config(&global, &settings, project.as_ref()),
        Command::Exec(args) => {
            // The project's levels are for compiling; a program runs at
            // Python's own level, given after `exec`.
            if settings.optimize.origin == Origin::CommandLine && settings.optimize.value != [0] {
                bail!(
                    "`rcache exec` runs at Python's own optimization level: put `-O` after `exec`"
                );
            }
            commands::exec(&global, &args.args)
        }
        Command::Doctor(args) => {
            commands::doctor(&global, &DoctorConfig::new(args, &settings, &global))
        }
        Command::Hook(args) => commands::hook(&global, &settings, &args.command),
        Command::Completions(_) | Command::Man(_) => unreachable!("answered above"),
    }
}
