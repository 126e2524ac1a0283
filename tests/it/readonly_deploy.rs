//! `examples/readonly-deploy/`: its `run.sh` run as a user would (on a copy),
//! with the built binary on PATH: the app runs read-only with every module
//! served from the store, and nothing is written.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{any_python, copy_tree, covered, snapshot, stderr};

#[test]
fn the_read_only_deployment_example_serves_every_module_and_writes_nothing() {
    let test =
        "readonly_deploy::the_read_only_deployment_example_serves_every_module_and_writes_nothing";
    let sandbox = Command::new("bwrap")
        .args(["--ro-bind", "/", "/", "true"])
        .output();
    if !sandbox.as_ref().is_ok_and(|output| output.status.success()) {
        eprintln!(
            "{test}: bwrap (Debian package bubblewrap) is missing or cannot run here ({sandbox:?}): skipped"
        );
        return;
    }
    let python = any_python();
    let temp = tempfile::tempdir().unwrap();
    let example = temp.path().join("readonly-deploy");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/readonly-deploy"),
        &example,
    );
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let binary_dir = Path::new(env!("CARGO_BIN_EXE_rcache")).parent().unwrap();
    let path = format!(
        "{}:{}",
        binary_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut run = Command::new("sh");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("RCACHE_") {
            run.env_remove(name);
        }
    }
    // Unset, so that Python would write pycs if anything let it.
    run.arg(example.join("run.sh"))
        .env_remove("PYTHONDONTWRITEBYTECODE")
        .env_remove("VIRTUAL_ENV")
        .env_remove("XDG_RUNTIME_DIR")
        .env("PATH", path)
        .env("PYTHON", &python.path)
        .env("WORK", &work)
        .env("RCACHE_LOG", "debug")
        .current_dir(temp.path());
    let before = snapshot(&example);
    let output = run.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "run.sh failed\n{stdout}\n{}",
        stderr(&output)
    );
    // No warning: the store opened (read-only) and the server ran.
    assert!(!stderr(&output).contains("warning"), "{}", stderr(&output));
    assert!(
        stdout.contains(r#"{"greeting": "hello from a read-only deployment", "app_modules": ["app", "app.greeting"]}"#),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing: no pycs beside the sources, the store unchanged"),
        "{stdout}"
    );
    assert_eq!(before, snapshot(&example), "the run wrote into the app");

    // The server logged, as it ended, that it served every lookup.
    let runtime = work.join("run/rcache");
    let deadline = Instant::now() + Duration::from_secs(20);
    let log = loop {
        let logs: Vec<String> = std::fs::read_dir(&runtime)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
            .map(|path| std::fs::read_to_string(path).unwrap())
            .collect();
        if let Some(log) = logs.into_iter().find(|log| log.contains("served ")) {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "no `served` line in the server's log"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let served = crate::support::served_counts(&log);
    assert!(
        served.len() >= 2 && served[0] == served[1] && served[0] >= 4,
        "every module (app, app.greeting, json…) served from the store: {log}"
    );
    covered(test, std::slice::from_ref(&python));
}
