//! The pre-commit hook of `.pre-commit-hooks.yaml`, run by the real
//! pre-commit (from PyPI) on `git commit`: the committed files get their
//! code into the store, and the same content again compiles nothing.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{TestEnv, any_python, code, covered, pypi_venv, stderr};

const PRE_COMMIT: &str = "pre-commit==4.3.0";

/// `program ARGS` in `dir`, with git and pre-commit kept to the test's
/// temp dir and the built rcache first on PATH.
fn run(env: &TestEnv, dir: &Path, program: &Path, args: &[&str]) -> Output {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_rcache")).parent().unwrap();
    let mut command = Command::new(program);
    crate::support::isolated_git(&mut command, env.path(), &env.store, &any_python());
    command
        .current_dir(dir)
        .args(args)
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin_dir.display()),
        )
        .env("PRE_COMMIT_HOME", env.path().join("pre-commit-home"));
    command.output().unwrap()
}

fn git(env: &TestEnv, dir: &Path, args: &[&str]) -> String {
    let output = run(env, dir, Path::new("git"), args);
    assert_eq!(code(&output), 0, "git {args:?}: {}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `git add .` and `git commit -m MESSAGE` (which runs pre-commit): the
/// commit's exit code and everything it printed.
fn commit(env: &TestEnv, project: &Path, message: &str) -> (i32, String) {
    git(env, project, &["add", "."]);
    let output = run(env, project, Path::new("git"), &["commit", "-m", message]);
    let said = String::from_utf8_lossy(&output.stdout).into_owned() + &stderr(&output);
    (code(&output), said)
}

#[test]
fn pre_commit_warms_the_store_with_the_committed_files() {
    let python = any_python();
    covered(
        "pre_commit_warms_the_store_with_the_committed_files",
        std::slice::from_ref(&python),
    );
    let pre_commit = pypi_venv(&python, &[PRE_COMMIT]).with_file_name("pre-commit");
    let env = TestEnv::new();

    // The hook repository: this project's .pre-commit-hooks.yaml, committed
    // (pre-commit clones it at `rev`).
    let hooks_repo = env.path().join("hooks-repo");
    std::fs::create_dir(&hooks_repo).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".pre-commit-hooks.yaml"),
        hooks_repo.join(".pre-commit-hooks.yaml"),
    )
    .unwrap();
    git(&env, &hooks_repo, &["init", "-q", "-b", "main"]);
    git(&env, &hooks_repo, &["add", "."]);
    git(&env, &hooks_repo, &["commit", "-qm", "hooks"]);
    let rev = git(&env, &hooks_repo, &["rev-parse", "HEAD"]);

    let project = env.path().join("project");
    std::fs::create_dir(&project).unwrap();
    git(&env, &project, &["init", "-q", "-b", "main"]);
    std::fs::write(
        project.join(".pre-commit-config.yaml"),
        format!(
            "repos:\n  - repo: {}\n    rev: {rev}\n    hooks:\n      - id: rcache-warm\n        verbose: true\n",
            hooks_repo.display()
        ),
    )
    .unwrap();
    let output = run(&env, &project, &pre_commit, &["install"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    std::fs::create_dir(project.join("app")).unwrap();
    std::fs::write(project.join("app/core.py"), "VALUE = 1\n").unwrap();
    std::fs::write(project.join("app/util.py"), "def f():\n    return 2\n").unwrap();
    std::fs::write(project.join("README.txt"), "not python\n").unwrap();
    let (status, said) = commit(&env, &project, "one");
    assert_eq!(status, 0, "{said}");
    assert!(
        said.contains("rcache warm") && said.contains("Passed"),
        "{said}"
    );
    assert!(said.contains("2 compiled"), "{said}");
    let keys = env.blobs();
    assert_eq!(keys.len(), 2, "{said}");

    // The same content under other names, in another commit: no compile.
    std::fs::write(project.join("app/copy.py"), "VALUE = 1\n").unwrap();
    let (status, said) = commit(&env, &project, "two");
    assert_eq!(status, 0, "{said}");
    assert!(said.contains("0 compiled, 1 from the store"), "{said}");
    assert_eq!(env.blobs(), keys);

    // A file that does not compile stops the commit, as a syntax check does.
    std::fs::write(project.join("app/broken.py"), "def f(:\n").unwrap();
    let (status, said) = commit(&env, &project, "three");
    assert_ne!(status, 0, "{said}");
    assert!(
        said.contains("broken.py:1") && said.contains("SyntaxError"),
        "{said}"
    );
}
