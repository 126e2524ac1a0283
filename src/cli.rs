//! The command line, as clap sees it. Only `config.rs` reads these types;
//! commands get the checked [`crate::config`] values.

use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::env_vars;

/// A content-addressed cache for CPython bytecode, shared by every checkout.
#[derive(Debug, Parser)]
#[command(name = "rcache", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The parsed command line, and clap's record of which values it (or the
/// environment) gave, which the settings' layers need.
#[derive(Debug)]
pub struct Invocation {
    pub cli: Cli,
    pub matches: ArgMatches,
}

impl Cli {
    /// Parses the command line, exiting with clap's message on bad input.
    /// Everything after `exec` is Python's, even what looks like rcache's
    /// own global flags (`-O`, `-v`), so that part never reaches clap.
    pub fn parse_args(args: &[OsString]) -> Invocation {
        for (index, arg) in args.iter().enumerate().skip(1) {
            if arg != "exec" {
                continue;
            }
            // The first `exec` that clap takes as the subcommand (not as
            // the value of `--store exec`, say).
            if let Ok(mut invocation) = Self::try_invocation(&args[..=index])
                && let Command::Exec(exec) = &mut invocation.cli.command
            {
                exec.args = args[index + 1..].to_vec();
                return invocation;
            }
        }
        Self::try_invocation(args).unwrap_or_else(|err| err.exit())
    }

    fn try_invocation(args: &[OsString]) -> Result<Invocation, clap::Error> {
        let matches = Self::command().try_get_matches_from(args)?;
        let cli = Self::from_arg_matches(&matches)?;
        Ok(Invocation { cli, matches })
    }
}

/// Flags every command takes, before or after its name.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The store file [default: `rcache/store.sqlite3` in the user cache dir]
    #[arg(long, global = true, env = env_vars::RCACHE_STORE, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// The Python to compile for [default: `$VIRTUAL_ENV`, a `.venv` here or
    /// above, or `python3` on PATH]
    #[arg(long, global = true, env = env_vars::RCACHE_PYTHON, value_name = "PY")]
    pub python: Option<OsString>,
    /// Print one JSON object on stdout instead of a summary
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print compile warnings too; twice for debug logs
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Size the store is kept under: least recently used code is evicted
    /// when a run leaves it bigger (`500M`, `2GiB`; `rcache gc` evicts down
    /// to it) [default: 2GiB]
    #[arg(
        long,
        global = true,
        env = env_vars::RCACHE_MAX_SIZE,
        value_name = "SIZE",
        value_parser = parse_size
    )]
    pub max_size: Option<u64>,
    /// Compile workers [default: the number of CPUs]
    #[arg(short = 'j', long = "jobs", global = true, env = env_vars::RCACHE_JOBS, value_name = "N")]
    pub jobs: Option<NonZeroUsize>,
    /// Optimization level to compile at; repeat for several (`-O0 -O1` or
    /// `-O 0,1`) [default: 0]
    #[arg(
        short = 'O',
        long = "optimize",
        global = true,
        env = env_vars::RCACHE_OPTIMIZE,
        value_name = "LEVEL",
        value_delimiter = ',',
        value_parser = clap::value_parser!(u8).range(0..=2)
    )]
    pub optimize: Vec<u8>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Ignore `[tool.rcache]` in pyproject.toml files
    #[arg(long, global = true, env = env_vars::RCACHE_NO_CONFIG, value_parser = clap::builder::FalseyValueParser::new())]
    pub no_config: bool,
}

/// Where the remote caches are and how to use them.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// A remote cache to fetch from and upload to, after the store and
    /// before compiling (`https://host/base`, `redis://host:6379/0`,
    /// `file:///mnt/cache`); repeat for several, tried in order
    #[arg(
        long,
        global = true,
        env = env_vars::RCACHE_REMOTE,
        value_name = "URL",
        value_delimiter = ','
    )]
    pub remote: Vec<String>,
    /// Only fetch from the remotes, never upload (for untrusted runners)
    #[arg(long, global = true, env = env_vars::RCACHE_REMOTE_READ_ONLY, value_parser = clap::builder::FalseyValueParser::new())]
    pub remote_read_only: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile every .py under PATHs into the store; writes nothing beside them
    Warm(WalkArgs),
    /// Write the pycs CPython will use for every .py under PATHs, from the store
    Materialize(MaterializeArgs),
    /// Make the remote caches hold the code of every .py under PATHs:
    /// warm them, then upload what each remote lacks
    Push(WalkArgs),
    /// Remove this interpreter's pycs (all levels) under PATHs
    Clean(CleanArgs),
    /// Explain what this Python will do with the pycs under PATHs (used,
    /// stale, missing, never used) and what the store holds for them;
    /// writes nothing
    Doctor(DoctorArgs),
    /// Show what the store holds
    Stats,
    /// Evict least recently used code down to `--max-size`, forget records
    /// of files that are gone, and give the space back
    Gc(GcArgs),
    /// Check the store: SQLite's integrity, every blob's checksum, and that
    /// each loads in its interpreter; exit 1 when something is wrong
    Verify(VerifyArgs),
    /// Write the store's code, or only what the sources under `--for` use,
    /// to one archive file (for CI caches); starts no Python
    Export(ExportArgs),
    /// Merge an archive written by `rcache export` into the store
    Import(ImportArgs),
    /// Install (or remove) git hooks that materialize what each checkout,
    /// merge and rebase changed
    Hook(HookArgs),
    /// Show each setting, its value and where it came from (command line,
    /// environment, pyproject.toml, default)
    Config,
    /// Run `python ARGS...` with every import served from the store
    #[command(disable_help_flag = true, disable_version_flag = true)]
    Exec(ExecArgs),
    /// Print the completion script for a shell (`rcache completions bash >
    /// ~/.local/share/bash-completion/completions/rcache`)
    Completions(CompletionsArgs),
    /// Print the man page of rcache, or of one of its commands, as roff
    /// (`rcache man | man -l -`)
    Man(ManArgs),
}

/// Arguments of `rcache completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `rcache man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The command whose page to print (`rcache-warm(1)`) [default: rcache(1)]
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Arguments of `rcache hook`.
#[derive(Debug, Args)]
pub struct HookArgs {
    #[command(subcommand)]
    pub command: HookCommand,
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Add post-checkout, post-merge and post-rewrite hooks to the git
    /// repository here (its `core.hooksPath`, if set); a hook already there
    /// is kept and run first
    Install,
    /// Remove rcache's hooks, putting back the ones they displaced
    Uninstall,
    /// What an installed hook runs: materialize the .py files git changed
    #[command(hide = true)]
    Run(HookRunArgs),
}

/// Arguments of `rcache hook run`.
#[derive(Debug, Args)]
pub struct HookRunArgs {
    /// The hook git is running
    #[arg(value_enum)]
    pub hook: crate::git_hooks::Hook,
    /// The arguments git gave the hook
    #[arg(num_args = 0.., trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<OsString>,
}

/// Which sources to take, and how long one may take to compile.
#[derive(Debug, Args)]
pub struct WalkArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Seconds one file may take to compile; 0 waits forever [default: 120]
    #[arg(long, value_name = "SECS", env = env_vars::RCACHE_TIMEOUT)]
    pub timeout: Option<f64>,
}

/// Which sources to take.
#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Files and directories to take [default: the current directory]
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Leave out paths matching this gitignore-style glob; repeatable
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Walk files that `.gitignore` and `.ignore` rules would leave out
    #[arg(long)]
    pub no_ignore: bool,
}

/// Arguments of `rcache materialize`.
#[derive(Debug, Args)]
pub struct MaterializeArgs {
    #[command(flatten)]
    pub walk: WalkArgs,
    /// What the pyc header records [default: timestamp, or checked-hash when
    /// SOURCE_DATE_EPOCH is set]
    #[arg(long, value_enum, env = env_vars::RCACHE_MODE)]
    pub mode: Option<crate::pyc::Mode>,
    /// Write a PYTHONPYCACHEPREFIX tree under DIR instead of `__pycache__`
    /// dirs [default: $PYTHONPYCACHEPREFIX]
    #[arg(long, value_name = "DIR", env = env_vars::PYTHONPYCACHEPREFIX)]
    pub prefix: Option<PathBuf>,
    /// Say what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `rcache clean`.
#[derive(Debug, Args)]
pub struct CleanArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Remove from this PYTHONPYCACHEPREFIX tree instead of `__pycache__`
    /// dirs [default: $PYTHONPYCACHEPREFIX]
    #[arg(long, value_name = "DIR", env = env_vars::PYTHONPYCACHEPREFIX)]
    pub prefix: Option<PathBuf>,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `rcache doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Judge the pycs of this PYTHONPYCACHEPREFIX tree, as CPython run with
    /// it does [default: $PYTHONPYCACHEPREFIX]
    #[arg(long, value_name = "DIR", env = env_vars::PYTHONPYCACHEPREFIX)]
    pub prefix: Option<PathBuf>,
    /// As CPython's `--check-hash-based-pycs`: which hash-based pycs the
    /// import system checks against their source
    #[arg(long, value_enum, value_name = "WHEN", default_value = "default")]
    pub check_hash_based_pycs: crate::doctor::CheckHashBasedPycs,
}

/// Arguments of `rcache gc`.
#[derive(Debug, Args)]
pub struct GcArgs {
    /// Also evict code not used for this long (`30d`, `12h`, `2w`)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,
    /// Also forget interpreters that are gone (or changed since they were
    /// probed), and the code of profiles no remaining interpreter has
    #[arg(long)]
    pub forget_missing_pythons: bool,
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `rcache verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Remove bad entries (they are compiled again when next needed), and
    /// rebuild a damaged file from every row that can still be read
    #[arg(long)]
    pub repair: bool,
}

/// A size such as `500M` (SI units) or `2GiB` (binary units), in bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim()
        .parse::<bytesize::ByteSize>()
        .map(|size| size.as_u64())
}

/// Arguments of `rcache export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The archive to write; an existing file is replaced once the archive
    /// is complete
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Export only the code of the .py files under these paths, for every
    /// interpreter in the store and every optimization level [default:
    /// everything in the store]
    #[arg(long = "for", value_name = "PATH", num_args = 1..)]
    pub for_paths: Vec<PathBuf>,
    /// With `--for`: leave out paths matching this gitignore-style glob;
    /// repeatable
    #[arg(long, value_name = "GLOB", requires = "for_paths")]
    pub exclude: Vec<String>,
    /// With `--for`: walk files that `.gitignore` and `.ignore` rules would
    /// leave out
    #[arg(long, requires = "for_paths")]
    pub no_ignore: bool,
}

/// Arguments of `rcache import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The archive to merge, as `rcache export` wrote it
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
}

/// Arguments of `rcache exec`: all of them go to Python, verbatim.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Python's own arguments: a script, `-m MODULE`, `-c CODE`, flags...
    /// ([`Cli::parse_args`] hands them over untouched)
    #[arg(value_name = "PYTHON ARGS", num_args = 0..)]
    pub args: Vec<OsString>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        let before = Cli::try_parse_from(["rcache", "--json", "-O", "2", "warm", "x"]).unwrap();
        let after = Cli::try_parse_from(["rcache", "warm", "x", "--json", "-O2"]).unwrap();
        assert!(before.global.json && after.global.json);
        assert_eq!(before.global.optimize, vec![2]);
        assert_eq!(after.global.optimize, vec![2]);
        assert!(Cli::try_parse_from(["rcache", "-O", "3", "warm"]).is_err());
    }

    #[test]
    fn sizes_and_durations() {
        let cli = |args: &[&str]| Cli::try_parse_from(args.iter().copied());
        assert_eq!(cli(&["rcache", "stats"]).unwrap().global.max_size, None);
        let gc = cli(&["rcache", "gc", "--max-size", "500M", "--max-age", "30d"]).unwrap();
        assert_eq!(gc.global.max_size, Some(500_000_000));
        let Command::Gc(args) = gc.command else {
            panic!("not gc")
        };
        assert_eq!(
            args.max_age,
            Some(std::time::Duration::from_secs(30 * 86_400))
        );
        assert_eq!(
            cli(&["rcache", "--max-size", "1.5GiB", "stats"])
                .unwrap()
                .global
                .max_size,
            Some(3 << 29)
        );
        assert!(cli(&["rcache", "gc", "--max-size", "lots"]).is_err());
        assert!(cli(&["rcache", "gc", "--max-age", "30"]).is_err());
    }

    #[test]
    fn export_takes_several_paths_after_for() {
        let cli =
            Cli::try_parse_from(["rcache", "export", "out.rcx", "--for", "src", "tests", "-q"])
                .unwrap();
        let Command::Export(export) = cli.command else {
            panic!("not export")
        };
        assert_eq!(export.file, PathBuf::from("out.rcx"));
        assert_eq!(
            export.for_paths,
            [PathBuf::from("src"), PathBuf::from("tests")]
        );
        assert!(cli.global.quiet);
        let without_for = ["rcache", "export", "out.rcx", "--exclude", "x"];
        assert!(Cli::try_parse_from(without_for).is_err());
    }

    #[test]
    fn everything_after_exec_goes_to_python() {
        let python_args = [
            "-O",
            "-X",
            "importtime",
            "-v",
            "--json",
            "-c",
            "pass",
            "--help",
        ];
        let command_line = ["rcache", "-v", "exec"].iter().chain(&python_args);
        let cli = Cli::parse_args(&command_line.map(OsString::from).collect::<Vec<_>>()).cli;
        let Command::Exec(exec) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(exec.args, python_args.map(OsString::from));
        assert_eq!(cli.global.verbose, 1);
        assert!(cli.global.optimize.is_empty() && !cli.global.json);
        let odd_store = ["rcache", "--store", "exec", "exec", "x.py"].map(OsString::from);
        let cli = Cli::parse_args(&odd_store).cli;
        assert_eq!(cli.global.store, Some(PathBuf::from("exec")));
        let Command::Exec(exec) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(exec.args, [OsString::from("x.py")]);
    }
}
