//! Settings from `[tool.rcache]` in pyproject.toml, `RCACHE_*` variables
//! and flags: precedence, what `rcache config` says, and that a run really
//! uses them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{TestEnv, any_python, code, covered, run_json, stderr};

const PROJECT: &str = r#"
[project]
name = "app"

[tool.rcache]
store = "build/store.sqlite3"
paths = ["src"]
exclude = ["src/vendor/**"]
mode = "checked-hash"
optimize = [0, 1]
jobs = 1
max-size = "64MiB"
timeout = 30
"#;

/// A project with the settings above; `src/app/__init__.py`, `src/app/core.py`
/// and a vendored module the settings leave out, and a `docs/` dir to run in.
fn project(env: &TestEnv, python_setting: Option<&Path>) -> PathBuf {
    let mut text = PROJECT.to_owned();
    if let Some(python) = python_setting {
        writeln!(text, "python = {:?}", python.display().to_string()).unwrap();
    }
    env.write("proj/pyproject.toml", text);
    env.write("proj/src/app/__init__.py", "from . import core\n");
    env.write("proj/src/app/core.py", "assert True\nVALUE = 42\n");
    env.write("proj/src/vendor/lib.py", "X = 1\n");
    env.write("proj/docs/conf.py", "project = 'app'\n");
    env.path().join("proj")
}

fn config_json(cwd: &Path, configure: impl FnOnce(&mut Command)) -> Value {
    let mut command = crate::support::rcache_command(cwd);
    command.args(["config", "--json"]);
    configure(&mut command);
    let (json, output) = run_json(&mut command);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    json
}

/// (value, origin) of one setting in `rcache config --json`.
fn setting(json: &Value, key: &str) -> (Value, String) {
    let entry = &json["settings"][key];
    (
        entry["value"].clone(),
        entry["origin"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn file_settings_are_shown_with_their_origin() {
    let env = TestEnv::new();
    let root = project(&env, None);
    let docs = root.join("docs");
    let from_file = config_json(&docs, |_| {});
    assert_eq!(
        from_file["file"],
        root.join("pyproject.toml").display().to_string()
    );
    assert_eq!(
        setting(&from_file, "store"),
        (
            root.join("build/store.sqlite3")
                .display()
                .to_string()
                .into(),
            "file".into()
        )
    );
    assert_eq!(
        setting(&from_file, "paths"),
        (
            vec![root.join("src").display().to_string()].into(),
            "file".into()
        )
    );
    assert_eq!(
        setting(&from_file, "mode"),
        ("checked-hash".into(), "file".into())
    );
    assert_eq!(
        setting(&from_file, "optimize"),
        (vec![0, 1].into(), "file".into())
    );
    assert_eq!(setting(&from_file, "jobs"), (1.into(), "file".into()));
    assert_eq!(
        setting(&from_file, "max-size"),
        ((64u64 << 20).into(), "file".into())
    );
    assert_eq!(setting(&from_file, "timeout"), (30.0.into(), "file".into()));
    assert_eq!(setting(&from_file, "python").1, "default");

    // The human form names every setting and its origin.
    let output = crate::support::rcache_command(&docs)
        .args(["config"])
        .env("RCACHE_JOBS", "2")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("pyproject.toml [tool.rcache]"), "{text}");
    let jobs = text.lines().find(|line| line.starts_with("jobs ")).unwrap();
    assert_eq!(
        jobs.split_whitespace().collect::<Vec<_>>(),
        ["jobs", "2", "(RCACHE_JOBS)"]
    );
    for line in ["checked-hash", "(default)"] {
        assert!(text.contains(line), "{line:?} not in\n{text}");
    }
}

/// Remotes come from the file (one URL or a list) or `RCACHE_REMOTE`
/// (comma-separated); their passwords are never shown, and a URL rcache
/// cannot use stops the run before anything is done.
#[test]
fn remote_settings_never_show_passwords() {
    let env = TestEnv::new();
    env.write(
        "proj/pyproject.toml",
        "[tool.rcache]\nremote = [\"https://ci:hunter2@cache.example.com/rcache/\", \"file:///mnt/cache\"]\nremote-read-only = true\n",
    );
    let dir = env.path().join("proj");
    let from_file = config_json(&dir, |_| {});
    assert_eq!(
        setting(&from_file, "remote"),
        (
            vec![
                "https://ci:***@cache.example.com/rcache",
                "file:///mnt/cache"
            ]
            .into(),
            "file".into()
        )
    );
    assert_eq!(
        setting(&from_file, "remote-read-only"),
        (true.into(), "file".into())
    );
    let from_env = config_json(&dir, |command| {
        command
            .env(
                "RCACHE_REMOTE",
                "redis://:hunter2@127.0.0.1:6379/1?ttl=1d,http://h/c",
            )
            .env("RCACHE_REMOTE_TIMEOUT", "2.5");
    });
    assert_eq!(
        setting(&from_env, "remote"),
        (
            vec!["redis://:***@127.0.0.1:6379/1", "http://h/c"].into(),
            "env".into()
        )
    );
    assert_eq!(
        setting(&from_env, "remote-timeout"),
        (2.5.into(), "env".into())
    );
    let output = crate::support::rcache_command(&dir)
        .args(["config"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(!text.contains("hunter2"), "{text}");
    let output = crate::support::rcache_command(&dir)
        .args(["--remote", "s3://u:hunter2@bucket/x", "stats"])
        .output()
        .unwrap();
    let message = stderr(&output);
    assert_eq!(code(&output), 2, "{message}");
    assert!(message.contains("unknown scheme `s3`"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn environment_beats_file_and_flags_beat_environment() {
    let env = TestEnv::new();
    let docs = project(&env, None).join("docs");
    let from_env = config_json(&docs, |command| {
        command
            .env("RCACHE_JOBS", "2")
            .env("RCACHE_OPTIMIZE", "2")
            .env("RCACHE_MODE", "unchecked-hash")
            .env("RCACHE_STORE", "elsewhere.sqlite3")
            .env("RCACHE_MAX_SIZE", "1GB")
            .env("RCACHE_TIMEOUT", "0");
    });
    assert_eq!(setting(&from_env, "jobs"), (2.into(), "env".into()));
    assert_eq!(from_env["settings"]["jobs"]["variable"], "RCACHE_JOBS");
    assert_eq!(
        setting(&from_env, "optimize"),
        (vec![2].into(), "env".into())
    );
    assert_eq!(
        setting(&from_env, "mode"),
        ("unchecked-hash".into(), "env".into())
    );
    assert_eq!(
        setting(&from_env, "store").0,
        docs.join("elsewhere.sqlite3").display().to_string()
    );
    assert_eq!(
        setting(&from_env, "max-size"),
        (1_000_000_000u64.into(), "env".into())
    );
    assert_eq!(setting(&from_env, "timeout"), (Value::Null, "env".into()));
    // Not settable from the environment: still the file's.
    assert_eq!(setting(&from_env, "paths").1, "file");

    let from_flags = config_json(&docs, |command| {
        command
            .env("RCACHE_JOBS", "2")
            .env("RCACHE_OPTIMIZE", "2")
            .args(["-j", "3", "-O0", "--max-size", "5MB"]);
    });
    assert_eq!(
        setting(&from_flags, "jobs"),
        (3.into(), "command-line".into())
    );
    assert_eq!(
        setting(&from_flags, "optimize"),
        (vec![0].into(), "command-line".into())
    );
    assert_eq!(
        setting(&from_flags, "max-size"),
        (5_000_000u64.into(), "command-line".into())
    );
}

#[test]
fn no_config_and_source_date_epoch() {
    let env = TestEnv::new();
    let docs = project(&env, None).join("docs");
    // `--no-config` (or RCACHE_NO_CONFIG) and a tree without the table:
    // defaults; SOURCE_DATE_EPOCH changes only the default mode.
    for configure in [
        |command: &mut Command| {
            command.arg("--no-config");
        },
        |command: &mut Command| {
            command.env("RCACHE_NO_CONFIG", "1");
        },
    ] {
        let defaults = config_json(&docs, |command| {
            configure(command);
            command.env("SOURCE_DATE_EPOCH", "1700000000");
        });
        assert_eq!(defaults["file"], Value::Null);
        assert_eq!(
            setting(&defaults, "mode"),
            ("checked-hash".into(), "source-date-epoch".into())
        );
        assert_eq!(
            setting(&defaults, "paths"),
            (vec!["."].into(), "default".into())
        );
        assert_eq!(
            setting(&defaults, "optimize"),
            (vec![0].into(), "default".into())
        );
    }
    let file_wins_over_epoch = config_json(&docs, |command| {
        command.env("SOURCE_DATE_EPOCH", "1700000000");
    });
    assert_eq!(setting(&file_wins_over_epoch, "mode").1, "file");
}

#[test]
fn a_run_uses_the_project_settings() {
    let python = any_python();
    covered(
        "a_run_uses_the_project_settings",
        std::slice::from_ref(&python),
    );
    let env = TestEnv::new();
    let root = project(&env, Some(Path::new("tools/python")));
    // `python` in the file is relative to the project.
    std::fs::create_dir(root.join("tools")).unwrap();
    std::os::unix::fs::symlink(&python.path, root.join("tools/python")).unwrap();
    let output = crate::support::rcache_command(&root.join("docs"))
        .args(["--json", "materialize"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        root.join("build/store.sqlite3").is_file(),
        "store from the file"
    );
    let tag = format!("cpython-3{}", python.version.1);
    for source in ["src/app/__init__.py", "src/app/core.py"] {
        let source = root.join(source);
        for level in [0, 1] {
            let pyc = rcache::pyc::cache_path(&source, &tag, level, None);
            let header = std::fs::read(&pyc).unwrap_or_else(|_| panic!("{json}: no {pyc:?}"));
            // PEP 552 flags: 0b11 is a checked hash.
            assert_eq!(header[4..8], [3, 0, 0, 0], "{}", pyc.display());
        }
        assert!(!rcache::pyc::cache_path(&source, &tag, 2, None).exists());
    }
    let level0: Vec<PathBuf> = ["src/app/__init__.py", "src/app/core.py"]
        .iter()
        .map(|source| root.join(source))
        .collect();
    let problems = crate::materialize::loader_problems(&python, &level0.iter().collect::<Vec<_>>());
    assert!(problems.is_empty(), "{problems}");
    // Excluded, and outside `paths`: untouched.
    assert!(!root.join("src/vendor/__pycache__").exists());
    assert!(!root.join("docs/__pycache__").exists());

    // Paths on the command line replace the file's, relative to the cwd.
    let output = crate::support::rcache_command(&root.join("docs"))
        .args(["--json", "materialize", "."])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(root.join("docs/__pycache__").is_dir());
}

#[test]
fn unknown_keys_and_bad_values_stop_the_run() {
    let env = TestEnv::new();
    let root = project(&env, None);
    let text = std::fs::read_to_string(root.join("pyproject.toml")).unwrap();
    std::fs::write(
        root.join("pyproject.toml"),
        text.replace("jobs = 1", "job = 1"),
    )
    .unwrap();
    let output = crate::support::rcache_command(&root.join("src"))
        .args(["materialize"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    let message = stderr(&output);
    assert!(message.contains("unknown field `job`"), "{message}");
    assert!(
        message.contains(&root.join("pyproject.toml").display().to_string()),
        "{message}"
    );
    assert!(!root.join("build").exists(), "nothing done");
    assert!(!root.join("src/app/__pycache__").exists());

    std::fs::write(
        root.join("pyproject.toml"),
        text.replace("optimize = [0, 1]", "optimize = [0, 3]"),
    )
    .unwrap();
    let output = crate::support::rcache_command(&root)
        .args(["config"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(
        stderr(&output).contains("`optimize` in"),
        "{}",
        stderr(&output)
    );

    // A bad value from the environment is named as clap names flags.
    let output = crate::support::rcache_command(&root)
        .args(["config"])
        .env("RCACHE_JOBS", "many")
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("many"), "{}", stderr(&output));
}

#[test]
fn exec_ignores_the_projects_levels() {
    let python = any_python();
    let env = TestEnv::new();
    let root = project(&env, None);
    env.write(
        "proj/main.py",
        "import sys\nprint('opt', sys.flags.optimize)\n",
    );
    let run = |args: &[&str]| {
        crate::support::rcache_command(&root)
            .arg("--python")
            .arg(&python.path)
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["exec", "main.py"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "opt 0\n");
    let output = run(&["exec", "-O", "main.py"]);
    assert_eq!(String::from_utf8_lossy(&output.stdout), "opt 1\n");
    let output = run(&["-O", "1", "exec", "main.py"]);
    assert_eq!(code(&output), 2);
    assert!(stderr(&output).contains("put `-O` after `exec`"));
}
