//! CI integrations (`integrations/`, `examples/ci-prewarm`), run for real:
//! the GitHub Actions composite action through the example workflow on a
//! stand-in runner (`ci/github.rs`), the GitLab template on a stand-in
//! GitLab runner (`ci/gitlab.rs`), each twice on fresh checkouts sharing
//! only their CI cache: the second run compiles nothing and every pyc is
//! valid for CPython. rcache is taken from PATH (the built binary).

mod actions_cache;
mod expressions;
mod github;
mod gitlab;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::support::{Python, any_python, covered, py_files};

/// The repository root (where `integrations/` and `examples/` are).
fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A small project at `dir`: an `app` package with its tests, and two
/// standard library packages vendored under `src/vendored` for bulk.
fn make_project(python: &Python, dir: &Path) {
    let stdlib = crate::support::stdlib_dir(python);
    for package in ["json", "email"] {
        crate::support::copy_tree(
            &stdlib.join(package),
            &dir.join("src/vendored").join(package),
        );
    }
    let write = |relative: &str, text: &str| {
        let path = dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("src/app/__init__.py", "from .core import total\n");
    write(
        "src/app/core.py",
        "def total(values):\n    return sum(values)\n",
    );
    write("tests/__init__.py", "");
    write(
        "tests/test_app.py",
        "import os, sys, unittest\n\
         sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, 'src'))\n\
         import app\n\n\
         class TotalTest(unittest.TestCase):\n    \
             def test_total(self):\n        \
                 self.assertEqual(app.total([1, 2, 3]), 6)\n",
    );
}

/// A directory holding only an `rcache` link to the built binary, for PATH.
fn rcache_bin(root: &Path) -> PathBuf {
    let bin = root.join("rcache-bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_rcache"), bin.join("rcache")).unwrap();
    bin
}

/// The environment a CI machine starts with: the system's PATH and the
/// built rcache on it.
fn machine_env(root: &Path) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "PATH".to_owned(),
        format!(
            "{}:/usr/local/bin:/usr/bin:/bin",
            rcache_bin(root).display()
        ),
    )])
}

/// A CI machine without rcache, whose pip finds it where PyPI would: the
/// wheel built around the binary under test is its only index.
fn machine_env_without_rcache() -> BTreeMap<String, String> {
    let wheel = crate::support::rcache_wheel();
    BTreeMap::from([
        ("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ("PIP_NO_INDEX".to_owned(), "1".to_owned()),
        (
            "PIP_FIND_LINKS".to_owned(),
            wheel.parent().unwrap().display().to_string(),
        ),
    ])
}

/// Checks every pyc of the `.py` files under `dir` at levels 0 and 1 with
/// CPython's own loader (accepted without recompiling, equal to a fresh
/// compile); returns the number of sources.
fn assert_pycs_valid(python: &Python, dir: &Path) -> usize {
    let sources = py_files(dir);
    let sources: Vec<&PathBuf> = sources.iter().collect();
    for options in [&[][..], &["-O"][..]] {
        let script = format!(
            "{}{}",
            crate::support::SAME_CODE,
            crate::materialize::ACCEPTED
        );
        let listing = sources.iter().fold(String::new(), |mut listing, source| {
            let _ = writeln!(listing, "{}", source.display());
            listing
        });
        let problems = crate::support::python_with_input(python, options, &script, &listing);
        assert!(problems.is_empty(), "{options:?}: {problems}");
    }
    sources.len()
}

fn number(outputs: &BTreeMap<String, String>, name: &str) -> u64 {
    outputs[name]
        .parse()
        .unwrap_or_else(|_| panic!("output {name} = {:?}", outputs[name]))
}

/// The example workflow, with the action in `cache` mode, run three times on
/// fresh runners sharing the stand-in Actions cache: the first compiles,
/// the second (same sources: the exact key) compiles nothing, the third
/// (one file edited: a restore-keys match) compiles only that file.
fn github_workflow(cache: &str) {
    let python = any_python();
    let root = tempfile::tempdir().unwrap();
    let origin = root.path().join("origin");
    make_project(&python, &origin);
    crate::support::copy_tree(
        &repo().join("integrations/github-actions"),
        &origin.join("integrations/github-actions"),
    );
    let mut text =
        std::fs::read_to_string(repo().join("integrations/github-actions/example-workflow.yml"))
            .unwrap();
    if cache != "export" {
        let with = "          optimize: \"0 1\"\n";
        assert!(text.contains(with));
        text = text.replace(with, &format!("{with}          cache: {cache}\n"));
    }
    std::fs::write(root.path().join("workflow.yml"), text).unwrap();
    let workflow = github::load(&root.path().join("workflow.yml"));
    // Export mode installs rcache with pip, as on a real runner; store mode
    // finds it on PATH.
    let (machine, installs) = if cache == "export" {
        (machine_env_without_rcache(), "true")
    } else {
        (machine_env(root.path()), "false")
    };
    let mut runner = github::Runner::new(root.path(), &python, &origin, machine);
    let matrix = BTreeMap::from([(
        "python-version".to_owned(),
        format!("{}.{}", python.version.0, python.version.1),
    )]);

    let first = runner.run_job(&workflow, "test", matrix.clone())["rcache"].clone();
    assert_eq!(first["installed"], installs, "{}", runner.log);
    assert_eq!(first["cache-hit"], "false");
    assert!(
        first.get("cache-matched-key").is_none_or(String::is_empty),
        "{first:?}"
    );
    assert!(number(&first, "compiled") > 0, "{first:?}");

    let second = runner.run_job(&workflow, "test", matrix.clone())["rcache"].clone();
    assert_eq!(second["cache-hit"], "true", "{}", runner.log);
    assert_eq!(second["cache-key"], first["cache-key"]);
    assert_eq!(number(&second, "compiled"), 0, "{second:?}\n{}", runner.log);
    assert_eq!(second["files"], first["files"]);
    let files = assert_pycs_valid(&python, &runner.workspace);
    assert_eq!(number(&second, "files") as usize, files);

    std::fs::write(
        origin.join("src/app/core.py"),
        "def total(values):\n    return sum(values, 0)\n",
    )
    .unwrap();
    let third = runner.run_job(&workflow, "test", matrix)["rcache"].clone();
    assert_eq!(third["cache-hit"], "false");
    assert_eq!(
        third["cache-matched-key"], first["cache-key"],
        "{}",
        runner.log
    );
    assert_ne!(third["cache-key"], first["cache-key"]);
    assert_eq!(
        number(&third, "compiled"),
        2,
        "one file at two levels: {third:?}"
    );
    assert_pycs_valid(&python, &runner.workspace);
    eprintln!(
        "github {cache}: {} files; compiled {} / {} / {}",
        first["files"], first["compiled"], second["compiled"], third["compiled"]
    );
    covered(&format!("github_action_{cache}"), &[python]);
}

#[test]
fn github_action_export_second_run_compiles_nothing() {
    github_workflow("export");
}

#[test]
fn github_action_store_second_run_compiles_nothing() {
    github_workflow("store");
}

/// What the template's `rcache --json materialize` printed in the last job.
fn gitlab_summary(runner: &gitlab::GitLabRunner) -> serde_json::Value {
    let file = runner.tmp.join("rcache-ci/materialize.json");
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

/// The example `.gitlab-ci.yml`'s job (extending `.rcache`) run on `main`
/// twice, then on a new branch with one file edited: the first compiles,
/// the second (main's cache) compiles nothing, the branch starts from main's
/// cache (fallback key) and compiles only its edit.
#[test]
fn gitlab_template_second_run_compiles_nothing() {
    let python = any_python();
    let root = tempfile::tempdir().unwrap();
    let origin = root.path().join("origin");
    make_project(&python, &origin);
    crate::support::copy_tree(
        &repo().join("integrations/gitlab"),
        &origin.join("integrations/gitlab"),
    );
    std::fs::rename(
        origin.join("integrations/gitlab/example.gitlab-ci.yml"),
        origin.join(".gitlab-ci.yml"),
    )
    .unwrap();
    let mut env = machine_env_without_rcache();
    let python_bin = python.path.parent().unwrap().display().to_string();
    env.insert("PATH".into(), format!("{python_bin}:{}", env["PATH"]));
    let mut runner = gitlab::GitLabRunner::new(root.path(), &origin, env);

    runner.run_job(".gitlab-ci.yml", "test", "main");
    let first = gitlab_summary(&runner);
    assert!(first["compiled"].as_u64().unwrap() > 0, "{first}");
    assert!(!runner.log.contains("already on PATH"), "{}", runner.log);

    runner.run_job(".gitlab-ci.yml", "test", "main");
    let second = gitlab_summary(&runner);
    assert_eq!(second["compiled"], 0, "{second}\n{}", runner.log);
    assert_eq!(second["files"], first["files"]);
    assert_pycs_valid(&python, &runner.project_dir);

    std::fs::write(
        origin.join("src/app/core.py"),
        "def total(values):\n    return sum(values, 0)\n",
    )
    .unwrap();
    runner.run_job(".gitlab-ci.yml", "test", "feature/edit");
    let branch = gitlab_summary(&runner);
    assert_eq!(
        branch["compiled"], 2,
        "one file at two levels: {branch}\n{}",
        runner.log
    );
    assert_pycs_valid(&python, &runner.project_dir);
    eprintln!(
        "gitlab: {} files; compiled {} / {} / {}",
        first["files"], first["compiled"], second["compiled"], branch["compiled"]
    );
    covered("gitlab_template", &[python]);
}

/// `examples/ci-prewarm/run.sh` with the built rcache on PATH: job 2, a
/// fresh checkout with a fresh store and only job 1's export, compiles
/// nothing and its tests pass.
#[test]
fn ci_prewarm_example_job_two_compiles_nothing() {
    let python = any_python();
    let root = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("bash")
        .arg(repo().join("examples/ci-prewarm/run.sh"))
        .env_clear()
        .envs(machine_env(root.path()))
        .env("HOME", root.path())
        .env("TMPDIR", root.path())
        .env("PYTHON", &python.path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        crate::support::stderr(&output)
    );
    assert!(stdout.contains("materialized 5 files"), "{stdout}");
    assert!(
        stdout.contains(": 0 compiled, 5 from the store"),
        "{stdout}"
    );
    assert!(stdout.contains("\nOK\n"), "the project's tests: {stdout}");
    assert!(stdout.ends_with("job 2 compiled: 0\n"), "{stdout}");
    covered("ci_prewarm_example", &[python]);
}

/// The expression stand-in refuses what it does not implement, so the
/// action cannot drift into expressions the tests would get wrong.
#[test]
fn expressions_refuse_unknown_names_and_functions() {
    struct Only;
    impl expressions::Context for Only {
        fn lookup(&self, path: &[String]) -> Result<expressions::Value, String> {
            match path.join(".").as_str() {
                "inputs.cache" => Ok(expressions::Value::Text("Export".into())),
                other => Err(format!("unknown {other}")),
            }
        }
        fn hash_files(&self, _: &[String]) -> String {
            "h".into()
        }
    }
    let yes = |text| expressions::condition(text, &Only).unwrap();
    assert!(yes(
        "inputs.cache == 'export' && !(inputs.cache != 'EXPORT')"
    ));
    assert!(!yes("${{ inputs.cache == 'store' || false }}"));
    assert_eq!(
        expressions::substitute("k-${{ hashFiles('**/*.py') }}-${{ inputs.cache }}", &Only),
        Ok("k-h-Export".to_owned())
    );
    for bad in [
        "github.sha",
        "toJSON(inputs)",
        "inputs.cache > 'a'",
        "format('{0}', 1)",
    ] {
        assert!(expressions::evaluate(bad, &Only).is_err(), "{bad}");
    }
}
