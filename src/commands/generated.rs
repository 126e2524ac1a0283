//! `rcache completions` and `rcache man`: shell completion scripts and man
//! pages generated from the clap definitions, so they never drift from the
//! command line they describe.

use std::io::Write as _;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit::ExitStatus;

/// Prints the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitStatus> {
    let mut command = Cli::command();
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(shell, &mut command, "rcache", &mut stdout);
    stdout.flush()?;
    Ok(ExitStatus::Success)
}

/// Prints rcache(1), or `rcache-COMMAND(1)` for one of its commands.
pub fn man(command_name: Option<&str>) -> anyhow::Result<ExitStatus> {
    let mut command = Cli::command();
    command.build();
    let page = match command_name {
        None => command,
        Some(name) => {
            let sub = command
                .get_subcommands()
                .find(|sub| sub.get_name() == name && !sub.is_hide_set())
                .with_context(|| format!("rcache has no command `{name}`"))?;
            // clap_mangen titles a page by the command's name.
            sub.clone().name(format!("rcache-{name}"))
        }
    };
    let mut stdout = std::io::stdout().lock();
    clap_mangen::Man::new(page).render(&mut stdout)?;
    stdout.flush()?;
    Ok(ExitStatus::Success)
}
