//! `rcache exec` serves every way a program loads a source file, not only
//! the path finders': `spec_from_file_location`, a `SourceFileLoader` made
//! by hand, `runpy.run_path`, multiprocessing's spawn children, pytest in
//! both import modes. Each prints what python prints, no pyc appears beside
//! any source (but pytest's own rewritten test modules), and a second run is
//! served whole.

use std::path::{Path, PathBuf};

use crate::exec::{Exec, VENV_PINS, run_python, without_durations};
use crate::support::{covered, pythons, served_counts};

/// Loads sources every way a program can, and prints what it got.
const LOADERS: &str = r#"
import importlib.machinery
import importlib.util
import inspect
import json
import multiprocessing
import runpy
import traceback


def from_spec():
    spec = importlib.util.spec_from_file_location("plug", "plugins/plug.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [
        module.hello(),
        type(spec.loader).__name__,
        module.__file__,
        inspect.getsource(module.hello),
    ]


def from_loader():
    loader = importlib.machinery.SourceFileLoader("direct", "plugins/direct.py")
    spec = importlib.util.spec_from_loader("direct", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return [module.VALUE, type(module.__loader__).__name__]


class Shouting(importlib.machinery.SourceFileLoader):
    """A loader that makes its own code: kept as it is."""

    def source_to_code(self, data, path, *, _optimize=-1):
        return compile(data.replace(b"quiet", b"LOUD"), path, "exec", dont_inherit=True)


def from_transforming_loader():
    loader = Shouting("shout", "plugins/shout.py")
    spec = importlib.util.spec_from_loader("shout", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module.WORD


def from_run_path():
    namespace = runpy.run_path("plugins/script.py", run_name="script")
    try:
        namespace["fail"]()
    except ValueError:
        text = traceback.format_exc()
    return [
        namespace["__file__"],
        namespace["fail"].__code__.co_filename,
        text,
        inspect.getsource(namespace["fail"]),
    ]


def in_a_spawned_child(_):
    return [__name__, from_spec()[0]]


if __name__ == "__main__":
    seen = {
        "spec": from_spec(),
        "loader": from_loader(),
        "transforming": from_transforming_loader(),
        "run_path": from_run_path(),
    }
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seen["spawn"] = pool.map(in_a_spawned_child, [0])
    print(json.dumps(seen, indent=1, sort_keys=True))
"#;

const PLUG: &str = "def hello():\n    return 'plug says hi'\n";
const DIRECT: &str = "VALUE = 'made by hand'\n";
const SHOUT: &str = "WORD = 'quiet'\n";
const SCRIPT: &str = "def fail():\n    raise ValueError('from a run_path script')\n";

/// Every `__pycache__` under `dir`, with what is in it.
fn pycaches(dir: &Path) -> Vec<PathBuf> {
    crate::support::walk(dir)
        .into_iter()
        .filter(|path| {
            path.components()
                .any(|part| part.as_os_str() == "__pycache__")
        })
        .collect()
}

/// The paths of the sources the store remembers from exec's lookups.
fn remembered(exec: &Exec) -> Vec<String> {
    let conn = rusqlite::Connection::open(&exec.env.store).unwrap();
    let mut statement = conn.prepare("SELECT path FROM sources").unwrap();
    statement
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|path| String::from_utf8(path.unwrap()).unwrap())
        .collect()
}

/// Asserts that exec looked up (and so the store remembers) a source
/// ending in each of `names`.
fn assert_looked_up(exec: &Exec, names: &[&str]) {
    let remembered = remembered(exec);
    for name in names {
        assert!(
            remembered
                .iter()
                .any(|path| path.ends_with(&format!("/{name}"))),
            "{name} not looked up on {}: {remembered:?}",
            exec.python.label()
        );
    }
}

/// `exec` with its Python replaced by a uv venv of it, made at
/// `ENV/venv`; and that venv.
fn in_a_uv_venv(exec: Exec) -> (Exec, PathBuf) {
    let venv = exec.env.path().join("venv");
    crate::support::uv_venv(&exec.python, &venv);
    let mut python = exec.python.clone();
    python.path = venv.join("bin/python");
    (Exec { python, ..exec }, venv)
}

/// python (writing no bytecode) and `rcache exec` (free to write it) run
/// `args` in `exec`'s project twice; the same output each time, nothing
/// written beside the sources but what `allowed` accepts, and the second
/// `exec` served whole. Returns the second run's lookups served.
fn same_and_served_whole(
    exec: &Exec,
    args: &[&str],
    clean: impl Fn(&str) -> String,
    allowed: impl Fn(&Path) -> bool,
) -> usize {
    let python = &exec.python;
    let mut reference = exec.python(args);
    reference.env("PYTHONDONTWRITEBYTECODE", "1");
    let expected = run_python(&mut reference);
    let mut served = Vec::new();
    for _ in 0..2 {
        let (actual, log) = exec.run_exec_logged(&mut exec.exec(args));
        let text = |bytes: &[u8]| clean(&String::from_utf8_lossy(bytes));
        assert_eq!(
            text(&actual.stdout),
            text(&expected.stdout),
            "{args:?} on {}\nstderr: {}",
            python.label(),
            String::from_utf8_lossy(&actual.stderr)
        );
        assert_eq!(
            actual.status.code(),
            expected.status.code(),
            "{args:?} on {}",
            python.label()
        );
        let written: Vec<PathBuf> = pycaches(&exec.project())
            .into_iter()
            .filter(|path| path.extension().is_some_and(|ext| ext == "pyc") && !allowed(path))
            .collect();
        assert!(
            written.is_empty(),
            "{args:?} on {}: wrote {written:?}",
            python.label()
        );
        served = served_counts(&log);
    }
    assert!(
        served.len() >= 2 && served[0] == served[1],
        "{args:?} on {}: the second run was not served whole: {served:?}",
        python.label()
    );
    served[0]
}

#[test]
fn every_way_of_loading_a_source_is_served() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write("loaders.py", LOADERS);
        exec.write("plugins/plug.py", PLUG);
        exec.write("plugins/direct.py", DIRECT);
        exec.write("plugins/shout.py", SHOUT);
        exec.write("plugins/script.py", SCRIPT);
        // Sources changed within 100 ms of a read are not remembered.
        std::thread::sleep(std::time::Duration::from_millis(150));
        let served = same_and_served_whole(&exec, &["loaders.py"], str::to_owned, |_| false);
        assert!(served > 5, "{served} lookups served");
        assert_looked_up(&exec, &["loaders.py", "plug.py", "direct.py", "script.py"]);
        assert!(
            !remembered(&exec)
                .iter()
                .any(|path| path.ends_with("/shout.py")),
            "a loader that makes its own code is left to it"
        );
    }
    covered(
        "exec_loaders::every_way_of_loading_a_source_is_served",
        pythons(),
    );
}

const CONFTEST: &str = r"
import pytest


@pytest.fixture
def greeting():
    return 'hello'
";

const TEST_THINGS: &str = r"
import helpers
from tests import SUITE


def test_passes(greeting):
    assert helpers.shout(greeting) == 'HELLO'
    assert SUITE == 'things'


def test_fails(greeting):
    assert helpers.shout(greeting) == 'hello'
";

/// Real pytest (from PyPI) on a project whose `tests/` is a package with a
/// conftest, in the import mode pytest recommends and in its default one.
#[test]
fn pytest_in_both_import_modes_is_served() {
    for python in pythons() {
        let mut venv = python.clone();
        venv.path = crate::support::pypi_venv(python, VENV_PINS);
        let exec = Exec::new(&venv);
        exec.write("helpers.py", "def shout(text):\n    return text.upper()\n");
        exec.write("tests/__init__.py", "SUITE = 'things'\n");
        exec.write("tests/conftest.py", CONFTEST);
        exec.write("tests/test_things.py", TEST_THINGS);
        std::thread::sleep(std::time::Duration::from_millis(150));
        for mode in ["importlib", "prepend"] {
            let import_mode = format!("--import-mode={mode}");
            let args = [
                "-m",
                "pytest",
                "-p",
                "no:cacheprovider",
                &import_mode,
                "tests",
            ];
            // pytest writes its rewritten test modules itself.
            let pytests_own = |path: &Path| {
                path.file_name()
                    .is_some_and(|name| name.to_string_lossy().contains("-pytest-"))
            };
            same_and_served_whole(&exec, &args, without_durations, pytests_own);
            assert_looked_up(&exec, &["tests/__init__.py", "helpers.py"]);
        }
    }
    covered(
        "exec_loaders::pytest_in_both_import_modes_is_served",
        pythons(),
    );
}

/// The setuptools the editable install is built with, from PyPI (the last
/// release for Python 3.8 too).
const SETUPTOOLS: &str = "setuptools==75.3.2";

const EDITABLE_PYPROJECT: &str = r#"
[build-system]
requires = ["setuptools==75.3.2"]
build-backend = "setuptools.build_meta"

[project]
name = "mypkg"
version = "0.1"

[tool.setuptools]
packages = ["mypkg"]
"#;

/// A package installed editable by setuptools, flat layout: its own finder
/// (`__editable___mypkg_0_1_finder`, imported by a `.pth`) makes the specs.
#[test]
fn an_editable_install_is_served() {
    let wheels = crate::support::pypi_wheels(&[SETUPTOOLS]);
    for python in pythons() {
        let exec = Exec::new(python);
        // In a directory of the project, so that only its finder finds it.
        exec.write("lib-src/pyproject.toml", EDITABLE_PYPROJECT);
        exec.write(
            "lib-src/mypkg/__init__.py",
            "from . import sub\nVALUE = sub.HALF * 2\n",
        );
        exec.write("lib-src/mypkg/sub.py", "HALF = 21\n");
        let project = exec.project().join("lib-src");
        let (exec, venv) = in_a_uv_venv(exec);
        crate::support::uv_pip_install(&venv, &wheels, &["-e".as_ref(), project.as_os_str()]);
        std::thread::sleep(std::time::Duration::from_millis(150));
        let code = "import mypkg; print(mypkg.VALUE, mypkg.__file__, type(mypkg.__spec__.loader).__name__)";
        let args = ["-c", code];
        same_and_served_whole(&exec, &args, str::to_owned, |_| false);
        assert_looked_up(&exec, &["mypkg/__init__.py", "mypkg/sub.py"]);
    }
    covered("exec_loaders::an_editable_install_is_served", pythons());
}

/// A program that writes bytecode itself still does: `compileall` and
/// `py_compile` under `rcache exec` write their pycs as under python.
#[test]
fn a_program_that_writes_bytecode_still_does() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write("tool/__init__.py", "");
        exec.write("tool/one.py", "ONE = 1\n");
        exec.write("single.py", "TWO = 2\n");
        let compiled = exec.run_exec(&mut exec.exec(&["-m", "compileall", "-q", "tool"]));
        assert!(
            compiled.status.success(),
            "{}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let tag = format!("cpython-{}{}", python.version.0, python.version.1);
        for name in ["__init__", "one"] {
            let pyc = exec
                .project()
                .join(format!("tool/__pycache__/{name}.{tag}.pyc"));
            assert!(
                pyc.is_file(),
                "compileall wrote no {} on {}",
                pyc.display(),
                python.label()
            );
        }
        let code = "import py_compile; print(py_compile.compile('single.py'))";
        let output = exec.run_exec(&mut exec.exec(&["-c", code]));
        let printed = String::from_utf8_lossy(&output.stdout);
        let pyc = format!("__pycache__/single.{tag}.pyc");
        assert!(printed.trim().ends_with(&pyc), "{printed}");
        assert!(exec.project().join(&pyc).is_file(), "on {}", python.label());
    }
    covered(
        "exec_loaders::a_program_that_writes_bytecode_still_does",
        pythons(),
    );
}

/// Modules that a `.pth` file imports (as setuptools' `distutils-precedence.pth`
/// and editable installs do) run before the hook, loaded by CPython: their
/// pycs go to rcache's private start-up prefix, never beside them, and the
/// program sees python's `sys.pycache_prefix`, environment and specs.
#[test]
fn modules_imported_at_start_up_write_no_pyc_beside_them() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write("placeholder.txt", "");
        let (exec, venv) = in_a_uv_venv(exec);
        let site = venv.join(format!(
            "lib/python{}.{}/site-packages",
            python.version.0, python.version.1
        ));
        std::fs::write(site.join("startup_mod.py"), "VALUE = 1\n").unwrap();
        std::fs::write(site.join("startup.pth"), "import startup_mod\n").unwrap();
        let code = "import os, sys, startup_mod; print(sys.pycache_prefix, os.environ.get('PYTHONPYCACHEPREFIX'), startup_mod.__spec__.cached == startup_mod.__cached__, startup_mod.__cached__)";
        let mut reference = exec.python(&["-c", code]);
        reference.env("PYTHONDONTWRITEBYTECODE", "1");
        let expected = run_python(&mut reference);
        for _ in 0..2 {
            let actual = exec.run_exec(&mut exec.exec(&["-c", code]));
            assert_eq!(
                String::from_utf8_lossy(&actual.stdout),
                String::from_utf8_lossy(&expected.stdout),
                "on {}: {}",
                python.label(),
                String::from_utf8_lossy(&actual.stderr)
            );
            let written = pycaches(&venv);
            assert!(written.is_empty(), "on {}: {written:?}", python.label());
        }
    }
    covered(
        "exec_loaders::modules_imported_at_start_up_write_no_pyc_beside_them",
        pythons(),
    );
}
