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
pub mod report;
pub mod scan;
pub mod source;
pub mod store;
pub mod sweep;

use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::config::{
    CleanConfig, DoctorConfig, ExportConfig, GlobalConfig, ImportConfig, MaterializeConfig,
    WalkConfig,
};
use crate::exit::ExitStatus;

/// Runs the command line and returns the process exit code. Errors are
/// printed here, once.
#[expect(clippy::print_stderr, reason = "the one place errors are printed")]
pub fn main() -> ExitCode {
    let cli = Cli::parse_args(std::env::args_os().collect());
    logging::init(cli.global.verbose);
    // `exec` forks while it has a single thread, and then becomes Python,
    // which handles Ctrl-C itself.
    if !matches!(cli.command, Command::Exec(_)) {
        interrupt::install();
    }
    match run(&cli) {
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

fn run(cli: &Cli) -> anyhow::Result<ExitStatus> {
    let global = GlobalConfig::from_args(&cli.global)?;
    match &cli.command {
        Command::Warm(args) => commands::warm(&global, &WalkConfig::from_args(args, &global)?),
        Command::Clean(args) => commands::clean(&global, &CleanConfig::from_args(args, &global)),
        Command::Materialize(args) => {
            commands::materialize(&global, &MaterializeConfig::from_args(args, &global)?)
        }
        Command::Stats => commands::stats(&global),
        Command::Gc(args) => commands::gc(&global, args),
        Command::Verify(args) => commands::verify(&global, args),
        Command::Export(args) => commands::export(&global, &ExportConfig::from_args(args, &global)),
        Command::Import(args) => commands::import(&global, &ImportConfig::from_args(args, &global)),
        Command::Exec(args) => commands::exec(&global, &args.args),
        Command::Doctor(args) => commands::doctor(&global, &DoctorConfig::from_args(args, &global)),
    }
}
