//! Running `git` for the hooks: one command, its stdout, or an error that
//! says which command failed and what git said.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs `git ARGS` in `dir`, feeding it `input` on stdin, and returns its
/// stdout.
pub fn output<S: AsRef<OsStr>>(dir: &Path, args: &[S], input: &[u8]) -> anyhow::Result<Vec<u8>> {
    let shown = || {
        let args: Vec<_> = args
            .iter()
            .map(|arg| arg.as_ref().to_string_lossy())
            .collect();
        format!("git {}", args.join(" "))
    };
    let mut child = Command::new("git")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{}` (is git installed?)", shown()))?;
    let mut stdin = child.stdin.take().context("git's stdin")?;
    // Written on its own thread: git may fill its stdout pipe before it
    // has read all of its input.
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let result = child
        .wait_with_output()
        .with_context(|| format!("`{}` failed", shown()))?;
    feeder
        .join()
        .map_err(|_| anyhow::anyhow!("feeding `{}` panicked", shown()))?
        .with_context(|| format!("cannot write to `{}`", shown()))?;
    if !result.status.success() {
        let message = String::from_utf8_lossy(&result.stderr);
        bail!("`{}` failed: {}", shown(), message.trim());
    }
    Ok(result.stdout)
}

/// The one path `git ARGS` prints, taken relative to `dir` as git means it.
pub fn path<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> anyhow::Result<PathBuf> {
    let mut printed = output(dir, args, b"")?;
    while printed.last().is_some_and(|&byte| byte == b'\n') {
        printed.pop();
    }
    Ok(crate::scan::absolute(
        dir,
        Path::new(&crate::pyc::os_string_from_bytes(printed)),
    ))
}

/// The NUL-separated paths git printed with `-z`, relative to `top`,
/// made absolute.
pub fn nul_separated_paths(top: &Path, printed: &[u8]) -> Vec<PathBuf> {
    printed
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| top.join(crate::pyc::os_string_from_bytes(name.to_vec())))
        .collect()
}
