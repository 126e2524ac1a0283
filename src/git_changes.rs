//! Which `.py` files a git command changed in the worktree, from what git
//! tells each hook.
//!
//! * `post-checkout OLD NEW 1` (a branch checkout, `git switch`, `git
//!   worktree add`, `git clone`): the files that differ between OLD and NEW;
//!   the whole tree when OLD is the null commit (a new worktree or clone).
//!   `post-checkout OLD NEW 0` (files checked out, `git checkout -- PATH`):
//!   nothing, since git does not say which.
//! * `post-merge 0`: `ORIG_HEAD..HEAD`. `post-merge 1` (`--squash`, which
//!   leaves HEAD alone): HEAD against the worktree.
//! * `post-rewrite amend` (stdin: `OLD NEW` lines): OLD against NEW.
//!   `post-rewrite rebase`: the files each new commit changed against its
//!   first parent, i.e. every file the rebase wrote while it picked commits
//!   (the checkout of the new base before that ran `post-checkout`).
//!
//! Deleted files are listed too: the caller tells them apart by whether the
//! file exists now.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::git_hooks::Hook;

/// What a hook should materialize.
#[derive(Debug, PartialEq, Eq)]
pub enum Changed {
    /// The whole worktree is new.
    Everything,
    /// These paths (absolute) changed or were deleted.
    Files(Vec<PathBuf>),
}

/// What `hook`, given `args` and `stdin` by git, changed in the worktree
/// whose top level is `top`.
pub fn changed(top: &Path, hook: Hook, args: &[OsString], stdin: &str) -> anyhow::Result<Changed> {
    let arg = |index: usize| -> anyhow::Result<&str> {
        args.get(index)
            .and_then(|arg| arg.to_str())
            .with_context(|| format!("{} was not given git's arguments", hook.name()))
    };
    let files = match hook {
        Hook::PostCheckout => {
            let (old, new, branch) = (arg(0)?, arg(1)?, arg(2)?);
            if branch != "1" {
                return Ok(Changed::Files(Vec::new()));
            }
            if is_null_commit(old) {
                return Ok(Changed::Everything);
            }
            diff(top, &[commit(old)?, commit(new)?])?
        }
        Hook::PostMerge if arg(0)? == "1" => diff(top, &["HEAD"])?,
        Hook::PostMerge => diff(top, &["ORIG_HEAD", "HEAD"])?,
        Hook::PostRewrite => {
            let pairs = rewritten(stdin)?;
            if arg(0)? == "rebase" {
                let mut commits: Vec<&str> = pairs.iter().map(|&(_, new)| new).collect();
                commits.sort_unstable();
                commits.dedup();
                changed_by_commits(top, &commits)?
            } else {
                let mut files = Vec::new();
                for (old, new) in pairs {
                    files.extend(diff(top, &[old, new])?);
                }
                files
            }
        }
    };
    Ok(Changed::Files(sorted(files)))
}

/// git's null commit id (SHA-1 or SHA-256): "there was no commit".
fn is_null_commit(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|byte| byte == b'0')
}

/// `id` if it is a commit id as git gives hooks (hex), else an error.
fn commit(id: &str) -> anyhow::Result<&str> {
    if id.is_empty() || !id.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        bail!("`{id}` is not a commit id");
    }
    Ok(id)
}

/// The `OLD NEW` pairs of `post-rewrite`'s stdin (a third field, extra
/// information, is ignored).
fn rewritten(stdin: &str) -> anyhow::Result<Vec<(&str, &str)>> {
    let mut pairs = Vec::new();
    for line in stdin.lines().filter(|line| !line.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(old), Some(new)) = (fields.next(), fields.next()) else {
            bail!("post-rewrite was given `{line}`, not `OLD NEW`");
        };
        pairs.push((commit(old)?, commit(new)?));
    }
    Ok(pairs)
}

/// The `.py` paths that differ between the trees `revisions` names (two
/// commits, or one commit and the worktree).
fn diff(top: &Path, revisions: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let mut args = vec![
        "diff",
        "--name-only",
        "-z",
        "--no-renames",
        "--no-relative",
        "--no-ext-diff",
        "--no-color",
        "--end-of-options",
    ];
    args.extend(revisions);
    args.extend(["--", "*.py"]);
    let printed = crate::git::output(top, &args, b"")?;
    Ok(crate::git::nul_separated_paths(top, &printed))
}

/// The `.py` paths each of `commits` changed against its first parent.
fn changed_by_commits(top: &Path, commits: &[&str]) -> anyhow::Result<Vec<PathBuf>> {
    let input = commits.join("\n") + "\n";
    let args = [
        "diff-tree",
        "--stdin",
        "-r",
        "--root",
        "--no-commit-id",
        "--name-only",
        "-z",
        "--no-renames",
        "--no-color",
        "--",
        "*.py",
    ];
    let printed = crate::git::output(top, &args, input.as_bytes())?;
    Ok(crate::git::nul_separated_paths(top, &printed))
}

fn sorted(mut files: Vec<PathBuf>) -> Vec<PathBuf> {
    files.sort_unstable();
    files.dedup();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_commits_and_rewrite_pairs() {
        assert!(is_null_commit(&"0".repeat(40)));
        assert!(is_null_commit(&"0".repeat(64)));
        assert!(!is_null_commit("0a"));
        assert!(!is_null_commit(""));
        let pairs = rewritten("ab12 cd34\n\nef56 0789 extra\n").unwrap();
        assert_eq!(pairs, [("ab12", "cd34"), ("ef56", "0789")]);
        assert!(rewritten("ab12\n").is_err());
        assert!(rewritten("--output=x ab12\n").is_err());
    }
}
