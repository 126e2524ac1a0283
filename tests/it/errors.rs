//! Failures: compile errors reported as the interpreter reports them, remembered
//! once; workers that crash, hang or answer garbage; interpreters and
//! command lines rcache must refuse.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};

use crate::support::{
    Python, TestEnv, any_python, code, covered, pyenv_root, pythons, rcache_command, run_json,
    stderr,
};

/// Sources the interpreters refuse, each for another reason, by file name.
fn broken_sources() -> Vec<(&'static str, Vec<u8>)> {
    let nested = |open: &[u8], close: &[u8]| {
        let mut source = open.repeat(100_000);
        source.extend(close.repeat(100_000));
        source.push(b'\n');
        source
    };
    let mut deep_unary = b"x = ".to_vec();
    deep_unary.extend(b"-".repeat(100_000));
    deep_unary.extend(b"1\n");
    let mut deep_sum = b"x = 1".to_vec();
    deep_sum.extend(b" + 1".repeat(100_000));
    deep_sum.push(b'\n');
    vec![
        ("syntax.py", b"def f(:\n    pass\n".to_vec()),
        ("indentation.py", b"def f():\nreturn 1\n".to_vec()),
        ("unexpected_indent.py", b"x = 1\n    y = 2\n".to_vec()),
        ("tabs.py", b"if True:\n        x = 1\n\ty = 2\n".to_vec()),
        ("null_bytes.py", b"x = 1\n\x00\n".to_vec()),
        (
            "unknown_cookie.py",
            b"# -*- coding: klingon -*-\nx = 1\n".to_vec(),
        ),
        (
            "cookie_on_line_two.py",
            b"#!/usr/bin/env python\n# coding: nope\nx = 1\n".to_vec(),
        ),
        (
            "bom_and_cookie.py",
            b"\xef\xbb\xbf# coding: latin-1\nx = 1\n".to_vec(),
        ),
        ("undecodable.py", b"\xff\xfe = 1\n".to_vec()),
        ("latin1_in_utf8.py", b"x = 'caf\xe9'\n".to_vec()),
        (
            "latin1_under_utf8_cookie.py",
            b"# coding: utf-8\nx = 'caf\xe9'\n".to_vec(),
        ),
        ("nested_parens.py", nested(b"(", b")")),
        ("nested_brackets.py", nested(b"[", b"]")),
        ("deep_unary.py", deep_unary),
        ("deep_sum.py", deep_sum),
    ]
}

/// Runs `compile(data, path, 'exec', dont_inherit=True)` in the interpreter
/// itself, for each path; prints one JSON failure (or null) per line.
const CPYTHON_VERDICT: &str = "import json, sys
for path in sys.argv[1:]:
    with open(path, 'rb') as source_file:
        data = source_file.read()
    try:
        compile(data, path, 'exec', dont_inherit=True)
        verdict = None
    except BaseException as error:
        syntax = isinstance(error, SyntaxError)
        line = error.lineno if syntax else None
        col = error.offset if syntax else None
        verdict = {
            'path': path,
            'line': line if line and line > 0 else None,
            'col': col if line and line > 0 and col and col > 0 else None,
            'type': type(error).__name__,
            'message': error.msg if syntax else str(error),
        }
    print(json.dumps(verdict))
";

/// What `python` itself says of each file: the failures rcache must report.
fn cpython_failures(python: &Python, paths: &[&Path]) -> Vec<Value> {
    let output = python
        .command()
        .args(["-S", "-s", "-c", CPYTHON_VERDICT])
        .args(paths)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|verdict| !verdict.is_null())
        .collect()
}

/// A failure as rcache prints it on stderr.
fn failure_line(failure: &Value) -> String {
    let path = failure["path"].as_str().unwrap();
    let place = match (failure["line"].as_u64(), failure["col"].as_u64()) {
        (Some(line), Some(col)) => format!("{path}:{line}:{col}"),
        (Some(line), None) => format!("{path}:{line}"),
        _ => path.to_owned(),
    };
    format!(
        "{place}: {}: {}",
        failure["type"].as_str().unwrap(),
        failure["message"].as_str().unwrap()
    )
}

/// Errors that say something about the run, not the source: never stored.
fn is_transient(error_type: &str) -> bool {
    matches!(error_type, "MemoryError" | "RecursionError")
}

fn stored_failure_types(env: &TestEnv) -> Vec<String> {
    let conn = rusqlite::Connection::open(&env.store).unwrap();
    let mut statement = conn
        .prepare("SELECT error_type FROM failures ORDER BY error_type")
        .unwrap();
    statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every kind of compile error is reported with the type, message, line
/// and column the same interpreter's `compile()` gives, as JSON and as
/// `path:line:col: Type: message` lines; the good files of the run are
/// compiled; `MemoryError` and `RecursionError` are not remembered.
#[test]
fn compile_errors_are_reported_as_cpython_reports_them() {
    for python in pythons() {
        let env = TestEnv::new();
        let mut paths = Vec::new();
        for (name, source) in broken_sources() {
            paths.push(env.write(&format!("src/{name}"), source));
        }
        env.write("src/good.py", "VALUE = 1\n");
        env.write(
            "src/latin1_cookie.py",
            b"# -*- coding: latin-1 -*-\nx = 'caf\xe9'\n",
        );
        let paths: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
        let mut expected = cpython_failures(python, &paths);
        expected.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        assert_eq!(
            expected.len(),
            broken_sources().len() - usize::from(python.version < (3, 10)), /* deep_sum compiles */
            "{}: {expected:?}",
            python.label()
        );

        let (summary, output) = env.warm_json(python, &["src"]);
        assert_eq!(code(&output), 1, "{}: {}", python.label(), stderr(&output));
        assert_eq!(summary["files"], paths.len() + 2);
        assert_eq!(
            summary["compiled"],
            paths.len() + 2 - expected.len(),
            "{}: {summary}",
            python.label()
        );
        assert_eq!(summary["failed"], expected.len());
        assert_eq!(
            summary["failures"],
            Value::Array(expected.clone()),
            "{}",
            python.label()
        );
        let lines: Vec<String> = expected.iter().map(failure_line).collect();
        assert_eq!(
            stderr(&output).lines().collect::<Vec<_>>(),
            lines,
            "{}: one line per failure on stderr, nothing else",
            python.label()
        );

        let deterministic: Vec<String> = expected
            .iter()
            .map(|failure| failure["type"].as_str().unwrap().to_owned())
            .filter(|error_type| !is_transient(error_type))
            .collect();
        let mut sorted = deterministic.clone();
        sorted.sort();
        assert_eq!(stored_failure_types(&env), sorted, "{}", python.label());

        // Transient failures are compiled again, and reported the same.
        let (again, output) = env.warm_json(python, &["src"]);
        assert_eq!(code(&output), 1);
        assert_eq!(again["failures"], summary["failures"], "{}", python.label());
        assert_eq!(again["compiled"], 0);
        assert_eq!(again["hits"], summary["compiled"]);
        assert!(
            again["workers_started"].as_u64().unwrap() > 0,
            "{}: MemoryError is never remembered",
            python.label()
        );
        assert_eq!(env.count("failures"), deterministic.len() as i64);
    }
    covered(
        "compile_errors_are_reported_as_cpython_reports_them",
        pythons(),
    );
}

/// A file that does not compile is compiled once: the second run reports
/// it identically from the store, starting no worker.
#[test]
fn a_failing_file_is_compiled_once_and_reported_twice() {
    for python in pythons() {
        let env = TestEnv::new();
        env.write("bad.py", "x = 1\ndef broken(:\n    pass\n");
        env.write("good.py", "x = 1\n");
        let (first, output) = env.warm_json(python, &["."]);
        assert_eq!(code(&output), 1, "{}", stderr(&output));
        assert_eq!(first["compiled"], 1);
        assert_eq!(first["failed"], 1);
        let failures = first["failures"].as_array().unwrap();
        assert_eq!(failures.len(), 1, "{first}");
        assert_eq!(failures[0]["type"], "SyntaxError");
        assert_eq!(failures[0]["line"], 2, "{}: {first}", python.label());
        assert_eq!(
            failures[0]["path"],
            env.path().join("bad.py").to_str().unwrap()
        );
        let first_stderr = stderr(&output);

        let (second, output) = env.warm_json(python, &["."]);
        assert_eq!(code(&output), 1);
        assert_eq!(second["workers_started"], 0, "{}", python.label());
        assert_eq!(second["compiled"], 0);
        assert_eq!(second["hits"], 1);
        assert_eq!(second["failed"], 1);
        assert_eq!(second["failures"], first["failures"]);
        assert_eq!(stderr(&output), first_stderr);
        assert_eq!(env.count("failures"), 1);
        assert_eq!(env.count("entries"), 1);
    }
    covered(
        "a_failing_file_is_compiled_once_and_reported_twice",
        pythons(),
    );
}

/// Runs `-j 1 warm --timeout 2` over five files with `fault` injected into
/// the worker that gets the middle one: that file alone fails, as
/// `error_type`; the worker is replaced and the files queued behind it (on
/// the one slot of `-j 1`) are compiled; nothing is remembered for the
/// faulty file, which a later run without the fault compiles.
fn assert_fault_fails_its_file_only(fault: &str, error_type: &str) {
    let python = any_python();
    let env = TestEnv::new();
    for name in ["a", "b", "c_faulty", "d", "e"] {
        env.write(&format!("{name}.py"), format!("NAME = '{name}'\n"));
    }
    let mut command = env.rcache(&python, &["--json", "-j", "1", "warm", "--timeout", "2"]);
    command
        .arg(".")
        .env("__RCACHE_TEST_WORKER_FAULT", format!("{fault}:c_faulty"));
    let started = std::time::Instant::now();
    let (summary, output) = run_json(&mut command);
    assert_eq!(code(&output), 1, "{fault}: {}", stderr(&output));
    assert!(
        started.elapsed().as_secs() < 8,
        "{fault}: took {:?}",
        started.elapsed()
    );
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{fault}: {summary}");
    assert_eq!(
        failures[0]["path"],
        env.path().join("c_faulty.py").to_str().unwrap()
    );
    assert_eq!(failures[0]["type"], error_type, "{fault}: {summary}");
    assert!(!failures[0]["message"].as_str().unwrap().is_empty());
    assert_eq!(summary["compiled"], 4, "{fault}: {summary}");
    assert_eq!(summary["failed"], 1);
    assert_eq!(
        summary["workers_started"], 2,
        "{fault}: the worker is replaced once"
    );
    assert!(
        stderr(&output).contains(&format!("c_faulty.py: {error_type}: ")),
        "{fault}: {}",
        stderr(&output)
    );
    assert_eq!(env.count("failures"), 0, "{fault}: not remembered");
    assert_eq!(env.count("entries"), 4);

    let (rerun, output) = env.warm_json(&python, &["."]);
    assert_eq!(code(&output), 0, "{fault}: {}", stderr(&output));
    assert_eq!(rerun["compiled"], 1, "{fault}: {rerun}");
    assert_eq!(rerun["hits"], 4);
    assert_eq!(rerun["failures"], json!([]));
    covered(
        &format!("a_{fault}ing_worker_fails_its_file_only"),
        &[python],
    );
}

/// A worker that crashes fails its file (`WorkerCrash`) and nothing else.
#[test]
fn a_crashing_worker_fails_its_file_only() {
    assert_fault_fails_its_file_only("crash", "WorkerCrash");
}

/// A worker that hangs past `--timeout` fails its file (`Timeout`) and
/// nothing else.
#[test]
fn a_hanging_worker_fails_its_file_only() {
    assert_fault_fails_its_file_only("hang", "Timeout");
}

/// A worker that answers garbage fails its file (`WorkerError`) and
/// nothing else.
#[test]
fn a_garbage_answering_worker_fails_its_file_only() {
    assert_fault_fails_its_file_only("garbage", "WorkerError");
}

/// Asserts that `output` is a refusal: exit 2, one clear error on stderr
/// naming `named`, no JSON summary on stdout pretending success.
fn assert_refused(output: &Output, named: &str) -> String {
    let text = stderr(output);
    assert_eq!(code(output), 2, "{named}: {text}");
    assert!(text.contains(named), "{named}: {text}");
    assert!(text.starts_with("rcache: error: "), "{named}: {text}");
    if let Ok(summary) = serde_json::from_slice::<Value>(&output.stdout) {
        assert!(
            summary.get("compiled").is_none() && summary.get("hits").is_none(),
            "{named}: stdout pretends a run: {summary}"
        );
    }
    text
}

/// No entry, no failure: either no store at all, or an empty one.
fn assert_nothing_compiled(env: &TestEnv) {
    if env.store.exists() {
        assert_eq!(env.count("entries"), 0);
        assert_eq!(env.count("failures"), 0);
    }
}

/// Python 2.7, 3.6 and 3.7 (pyenv's, when installed) and a `--python`
/// that does not exist are refused with a clear message and exit 2, and
/// nothing is compiled.
#[test]
fn unsupported_interpreters_are_refused() {
    let mut old = Vec::new();
    if let Some(Ok(entries)) = pyenv_root().map(|root| std::fs::read_dir(root.join("versions"))) {
        let mut dirs: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().unwrap().to_string_lossy().into_owned();
            let wanted = ["2.7.", "3.6.", "3.7."];
            if wanted.iter().any(|prefix| name.starts_with(prefix)) {
                old.extend(Python::at(&dir.join("bin/python")));
            }
        }
    }
    for python in &old {
        let env = TestEnv::new();
        env.write("a.py", "A = 1\n");
        let (major, minor) = python.version;
        let output = env
            .rcache(python, &["--json", "warm", "a.py"])
            .output()
            .unwrap();
        let text = assert_refused(&output, &python.path.display().to_string());
        assert!(text.contains(&python.full_version), "{text}");
        assert!(text.contains("3.8"), "says what is supported: {text}");
        assert!(
            (major, minor) < (3, 8),
            "{} is not old",
            python.full_version
        );
        assert_nothing_compiled(&env);
    }

    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let missing = env.path().join("no/such/python3");
    let output = rcache_command(env.path())
        .arg("--store")
        .arg(&env.store)
        .arg("--python")
        .arg(&missing)
        .args(["--json", "warm", "a.py"])
        .output()
        .unwrap();
    let text = assert_refused(&output, &missing.display().to_string());
    assert!(text.contains("does not exist"), "{text}");
    assert_nothing_compiled(&env);
    covered("unsupported_interpreters_are_refused", &old);
}

/// A `--python` that is no Python at all (`/bin/true`, a script printing
/// junk, `/bin/false`) is refused with exit 2 and a message that says so.
#[test]
fn a_program_that_is_not_python_is_refused_clearly() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let junk = env.write("junk", "#!/bin/sh\necho 'Hello, I am not Python'\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for program in [Path::new("/bin/true"), junk.as_path()] {
        let output = rcache_command(env.path())
            .arg("--store")
            .arg(&env.store)
            .arg("--python")
            .arg(program)
            .args(["--json", "warm", "a.py"])
            .output()
            .unwrap();
        let text = assert_refused(&output, &program.display().to_string());
        let lower = text.to_lowercase();
        assert!(
            [
                "not a python",
                "not python",
                "not a cpython",
                "not an interpreter"
            ]
            .iter()
            .any(|phrase| lower.contains(phrase)),
            "says it is not Python: {text}"
        );
        assert_nothing_compiled(&env);
    }
    let output = rcache_command(env.path())
        .arg("--store")
        .arg(&env.store)
        .args(["--python", "/bin/false", "--json", "warm", "a.py"])
        .output()
        .unwrap();
    let text = assert_refused(&output, "/bin/false");
    assert!(!text.contains("exit status exit status"), "{text}");
    assert_nothing_compiled(&env);
    covered("a_program_that_is_not_python_is_refused_clearly", &[python]);
}

/// Bad command lines exit 2 with clap's message and touch no store.
#[test]
fn usage_errors_exit_2() {
    let python = any_python();
    let env = TestEnv::new();
    env.write("a.py", "A = 1\n");
    let cases: &[&[&str]] = &[
        &["-O", "3", "warm", "a.py"],
        &["warm", "--frobnicate", "a.py"],
        &["-j", "0", "warm", "a.py"],
        &["warm", "--timeout=-1", "a.py"],
        &["warm", "--timeout", "soon", "a.py"],
        &["frobnicate"],
        &[],
    ];
    let mut messages = BTreeSet::new();
    for args in cases {
        let output = env.rcache(&python, args).output().unwrap();
        assert_eq!(code(&output), 2, "{args:?}: {}", stderr(&output));
        assert!(output.stdout.is_empty(), "{args:?}");
        let text = stderr(&output);
        assert!(!text.trim().is_empty(), "{args:?}: says why");
        messages.insert(text);
        assert!(!env.store.exists(), "{args:?}: no store for a usage error");
    }
    assert_eq!(
        messages.len(),
        cases.len(),
        "each error says its own reason"
    );
    covered("usage_errors_exit_2", &[python]);
}
