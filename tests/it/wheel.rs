//! Installing rcache the Python way: the wheel `pyproject.toml` describes
//! (maturin, `bindings = "bin"`), installed with pip into a fresh venv,
//! gives a working `rcache` on the venv's PATH.

use std::process::Command;

use crate::support::{TestEnv, any_python, code, covered, rcache_wheel, stderr};

#[test]
fn pip_installs_a_working_rcache_from_the_wheel() {
    let python = any_python();
    covered(
        "pip_installs_a_working_rcache_from_the_wheel",
        std::slice::from_ref(&python),
    );
    let wheel = rcache_wheel();
    let env = TestEnv::new();
    let venv = env.path().join("venv");
    let status = Command::new(&python.path)
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "install", "-q", "--no-index", "--no-compile"])
        .arg(&wheel)
        .env("PIP_ROOT_USER_ACTION", "ignore")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));

    // The venv's rcache is the binary under test, on the venv's PATH.
    let installed = venv.join("bin/rcache");
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_rcache")).unwrap(),
        "the wheel ships the built binary"
    );
    let output = Command::new(&installed).arg("--version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("rcache {}", env!("CARGO_PKG_VERSION"))
    );

    // It works: with the venv activated (its Python found through
    // VIRTUAL_ENV), a tree gets pycs CPython takes as its own.
    let source = env.write("app/mod.py", "VALUE = [n * n for n in range(5)]\n");
    let output = Command::new("rcache")
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", venv.join("bin").display()),
        )
        .env("VIRTUAL_ENV", &venv)
        .env("RCACHE_STORE", env.path().join("store/store.sqlite3"))
        .current_dir(env.path())
        .args(["materialize", "app"])
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let problems = crate::materialize::loader_problems(&python, &[&source]);
    assert!(problems.is_empty(), "{problems}");
}
