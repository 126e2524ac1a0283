//! `rcache warm` and `rcache stats` on small projects.

use std::fmt::Write as _;

use crate::support::{TestEnv, any_python, code, covered, pythons, snapshot, stderr};

/// Same content under two paths is one entry; a rewarm hits everything and
/// starts no worker; an edit makes a new entry.
#[test]
fn content_is_compiled_once_whatever_the_path() {
    for python in pythons() {
        let env = TestEnv::new();
        env.write("app/a.py", "import os\nVALUE = 1\n");
        env.write("worktree/a.py", "import os\nVALUE = 1\n");
        env.write("app/b.py", "def f():\n    return 2\n");
        let (first, output) = env.warm_json(python, &["app", "worktree"]);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        assert_eq!(first["files"], 3);
        assert_eq!(first["compiled"], 2, "{first}");
        assert_eq!(
            first["hits"], 1,
            "the second copy is served by the first compile"
        );
        assert_eq!(env.count("entries"), 2);

        let (again, _) = env.warm_json(python, &["worktree", "app"]);
        assert_eq!(again["compiled"], 0, "{again}");
        assert_eq!(again["hits"], 3);
        assert_eq!(again["workers_started"], 0);

        env.write("worktree/a.py", "import os\nVALUE = 2\n");
        let (edited, _) = env.warm_json(python, &["worktree"]);
        assert_eq!(edited["compiled"], 1, "{edited}");
        assert_eq!(env.count("entries"), 3);
    }
    covered("content_is_compiled_once_whatever_the_path", pythons());
}

/// Every optimization level asked is its own entry; levels are counted
/// per (file, level).
#[test]
fn each_optimization_level_is_stored() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("m.py", "assert True\n'''doc'''\ndef f():\n    'doc'\n");
    let (summary, output) = env.warm_json(&python, &["-O", "0", "-O", "1", "-O", "2", "m.py"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(summary["compiled"], 3, "{summary}");
    let conn = rusqlite::Connection::open(&env.store).unwrap();
    let levels: Vec<i64> = conn
        .prepare("SELECT optimize FROM entries ORDER BY optimize")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(levels, [0, 1, 2]);
    let blobs = env.blobs();
    let distinct: std::collections::BTreeSet<_> = blobs.values().collect();
    assert_eq!(distinct.len(), 3, "-O and -OO change the bytecode");
    covered("each_optimization_level_is_stored", &[python]);
}

/// `warm` writes nothing beside the sources: no `__pycache__`, no change.
#[test]
fn warm_writes_nothing_beside_sources() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("src/pkg/__init__.py", "");
    env.write("src/pkg/mod.py", "X = [i for i in range(3)]\n");
    let before = snapshot(&env.path().join("src"));
    let mut command = env.rcache(&python, &["warm", "src"]);
    command.env_remove("PYTHONDONTWRITEBYTECODE");
    let output = command.output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(snapshot(&env.path().join("src")), before);
    covered("warm_writes_nothing_beside_sources", &[python]);
}

/// SyntaxWarnings are captured per file: in `--json`, with `-v`, and again
/// from the store on a rewarm, never sprayed on stderr by workers.
#[test]
fn syntax_warnings_are_reported_per_file() {
    for python in pythons() {
        let env = TestEnv::new();
        env.write("w.py", "x = 1\nif x is 1:\n    pass\n");
        for round in ["compiled", "from the store"] {
            let (summary, output) = env.warm_json(python, &["w.py"]);
            assert_eq!(code(&output), 0, "{}", stderr(&output));
            let warnings = summary["warnings"].as_array().unwrap();
            assert_eq!(warnings.len(), 1, "{round}: {summary}");
            assert_eq!(warnings[0]["type"], "SyntaxWarning");
            assert_eq!(warnings[0]["line"], 2);
            assert!(warnings[0]["path"].as_str().unwrap().ends_with("/w.py"));
            assert!(
                !stderr(&output).contains("SyntaxWarning"),
                "{round}: not without -v"
            );
        }
        let output = env
            .rcache(python, &["-v", "warm", "w.py"])
            .output()
            .unwrap();
        let text = stderr(&output);
        assert!(text.contains("/w.py:2: SyntaxWarning: "), "{text}");
    }
    covered("syntax_warnings_are_reported_per_file", pythons());
}

/// `stats` counts entries, failures, profiles and lifetime hits.
#[test]
fn stats_reports_the_store() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("ok.py", "A = 1\n");
    env.write("bad.py", "def (:\n");
    env.warm_json(&python, &["."]);
    env.warm_json(&python, &["."]);
    let output = env.rcache(&python, &["stats", "--json"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(stats["entries"], 1, "{stats}");
    assert_eq!(stats["failures"], 1);
    assert_eq!(stats["lifetime_hits"], 2, "the second run hit both");
    assert_eq!(stats["lifetime_misses"], 2);
    assert_eq!(
        stats["profiles"][0]["version"],
        python.full_version.as_str()
    );
    let human = env.rcache(&python, &["stats"]).output().unwrap();
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(text.contains("entries:   1"), "{text}");
    assert!(text.contains("hit rate:  50.0% of 4 lookups"), "{text}");
    covered("stats_reports_the_store", &[python]);
}

/// The human summary goes to stderr; `-q` prints nothing on success.
#[test]
fn quiet_and_human_output() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let output = env.rcache(&python, &["warm", "a.py"]).output().unwrap();
    assert!(output.stdout.is_empty());
    assert!(
        stderr(&output).starts_with("Warmed 1 file in "),
        "{}",
        stderr(&output)
    );
    let output = env
        .rcache(&python, &["-q", "warm", "a.py"])
        .output()
        .unwrap();
    assert!(
        output.stdout.is_empty() && output.stderr.is_empty(),
        "{}",
        stderr(&output)
    );
    covered("quiet_and_human_output", &[python]);
}

/// Ctrl-C (SIGINT) stops the run with exit 130, keeping what was compiled:
/// the next run only compiles the rest.
#[test]
fn interrupt_keeps_finished_work() {
    let python = any_python();
    let env = TestEnv::new();
    for index in 0..600 {
        let mut body = String::new();
        for line in 0..60 {
            let _ = writeln!(
                body,
                "def function_{line}(value):\n    return value * {index} + {line}"
            );
        }
        env.write(&format!("pkg/module_{index:03}.py"), body);
    }
    let child = env
        .rcache(&python, &["--json", "-j", "1", "warm", "pkg"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until some results are committed, then interrupt.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let committed = rusqlite::Connection::open(&env.store)
            .and_then(|conn| {
                conn.query_row("SELECT count(*) FROM entries", [], |row| {
                    row.get::<_, i64>(0)
                })
            })
            .unwrap_or(0);
        if committed > 0 {
            break;
        }
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(code(&output), 130, "{}", stderr(&output));
    let kept = env.count("entries");
    assert!(kept > 0 && kept < 600, "{kept} entries kept");

    let (rest, output) = env.warm_json(&python, &["pkg"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(rest["hits"].as_i64().unwrap(), kept, "{rest}");
    assert_eq!(rest["compiled"].as_i64().unwrap(), 600 - kept);
    covered("interrupt_keeps_finished_work", &[python]);
}
