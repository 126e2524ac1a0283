//! `rcache exec`: the same program gives the same results as under plain
//! `python`, with its code served from the store.
//!
//! Every comparison runs the program twice in the same environment (same
//! variables, cwd, arguments): once as `python ARGS`, once as `rcache exec
//! ARGS`. After each `rcache exec` the test waits for the detached server to
//! finish (its socket disappears), so the next run sees what it stored.

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{Python, TestEnv, covered, pythons, rcache_command};

/// A project, a store and a private runtime dir for the server's socket.
pub(crate) struct Exec {
    pub(crate) env: TestEnv,
    pub(crate) runtime: PathBuf,
    pub(crate) python: Python,
}

impl Exec {
    pub(crate) fn new(python: &Python) -> Self {
        let env = TestEnv::new();
        let runtime = env.path().join("run");
        std::fs::create_dir(&runtime).unwrap();
        Self {
            env,
            runtime,
            python: python.clone(),
        }
    }

    pub(crate) fn project(&self) -> PathBuf {
        self.env.path().join("project")
    }

    pub(crate) fn write(&self, relative: &str, contents: &str) -> PathBuf {
        self.env.write(&format!("project/{relative}"), contents)
    }

    /// The environment both runs get.
    fn base(&self, command: &mut Command) {
        command
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .env("XDG_RUNTIME_DIR", &self.runtime)
            .current_dir(self.project());
    }

    pub(crate) fn python(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.python.path);
        self.base(&mut command);
        command.args(args);
        command
    }

    pub(crate) fn exec(&self, args: &[&str]) -> Command {
        let mut command = rcache_command(&self.project());
        self.base(&mut command);
        command
            .arg("--store")
            .arg(&self.env.store)
            .arg("--python")
            .arg(&self.python.path)
            .arg("exec")
            .args(args);
        command
    }

    /// Runs an `exec` command to its end, server included.
    pub(crate) fn run_exec(&self, command: &mut Command) -> Output {
        self.run_to_end(command).0
    }

    /// Runs an `exec` command to its end, server included, with the
    /// server's debug log (`RCACHE_LOG=debug`), written beside its socket.
    pub(crate) fn run_exec_logged(&self, command: &mut Command) -> (Output, String) {
        let (output, socket) = self.run_to_end(command.env("RCACHE_LOG", "debug"));
        let log = std::fs::read_to_string(socket.with_extension("log")).unwrap_or_default();
        (output, log)
    }

    /// The output of `command` once its server is gone too, and its socket.
    fn run_to_end(&self, command: &mut Command) -> (Output, PathBuf) {
        let child = command
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starting rcache exec");
        let socket = self.socket_of(child.id());
        let output = child.wait_with_output().unwrap();
        wait_until_gone(&socket);
        (output, socket)
    }

    /// The socket of the server of the `rcache exec` that has `pid`.
    pub(crate) fn socket_of(&self, pid: u32) -> PathBuf {
        self.runtime.join("rcache").join(format!("exec-{pid}.sock"))
    }

    /// Runs ARGS both ways; asserts the same stdout, stderr and status.
    fn same_as_python(&self, args: &[&str]) -> Output {
        let expected = run_python(&mut self.python(args));
        let actual = self.run_exec(&mut self.exec(args));
        assert_same(&expected, &actual, args, &self.python);
        actual
    }

    /// (hits, misses) counted by the store so far.
    fn lookups(&self) -> (u64, u64) {
        let mut command = rcache_command(self.env.path());
        command
            .args(["--json", "--store"])
            .arg(&self.env.store)
            .arg("stats");
        lookups_by(&mut command)
    }
}

/// (hits, misses) as `command` (an `rcache --json stats`) reports them.
fn lookups_by(command: &mut Command) -> (u64, u64) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        stats["lifetime_hits"].as_u64().unwrap(),
        stats["lifetime_misses"].as_u64().unwrap(),
    )
}

pub(crate) fn run_python(command: &mut Command) -> Output {
    command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running python")
}

/// The server removes its socket last, once it has stored what it learnt.
pub(crate) fn wait_until_gone(path: &Path) {
    let start = Instant::now();
    while path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the server behind {} did not finish",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn assert_same(expected: &Output, actual: &Output, args: &[&str], python: &Python) {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    assert_eq!(
        text(&actual.stdout),
        text(&expected.stdout),
        "stdout of {args:?} on {}\nrcache stderr: {}",
        python.label(),
        text(&actual.stderr)
    );
    assert_eq!(
        text(&actual.stderr),
        text(&expected.stderr),
        "stderr of {args:?} on {}",
        python.label()
    );
    assert_eq!(
        (actual.status.code(), actual.status.signal()),
        (expected.status.code(), expected.status.signal()),
        "status of {args:?} on {}",
        python.label()
    );
}

/// A program that prints what it sees of its own start-up: arguments,
/// paths, `__main__`, flags, environment, and the source of functions.
const MAIN: &str = r#"
"""The main script."""
import inspect
import json
import os
import sys
import traceback

import pkg
from pkg import sub


def where():
    return inspect.getsource(where)


try:
    sub.fail()
except ValueError:
    formatted = traceback.format_exc()

import __main__
seen = {
    "argv": sys.argv,
    "orig_argv": getattr(sys, "orig_argv", None),
    "path": sys.path,
    "file": __file__,
    "name": __name__,
    "spec": repr(__spec__),
    "doc": __doc__,
    "cached": __cached__,
    "loader": [type(__loader__).__name__, __loader__.name, __loader__.path],
    "main_vars": sorted(vars(__main__)),
    "flags": repr(sys.flags),
    "cwd": os.getcwd(),
    "env": {k: v for k, v in os.environ.items() if not k.startswith("RCACHE_")},
    "pkg": [pkg.__file__, sub.__file__, pkg.__name__, repr(pkg.__spec__.name)],
    "source": [where(), inspect.getsource(sub.fail)],
    "traceback": formatted,
    "debug": __debug__,
    "docstrings": sub.fail.__doc__,
    "stdin_tty": sys.stdin.isatty(),
    "sitecustomize": "sitecustomize" in sys.modules,
}
print(json.dumps(seen, indent=1, sort_keys=True))
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"#;

const PKG_INIT: &str = "from . import sub\nVALUE = 1\n";
const PKG_SUB: &str = r#"
def fail():
    """Raises."""
    assert 1 + 1 == 2, "arithmetic"
    raise ValueError("from sub")
"#;
const PKG_MAIN: &str =
    "import sys\nfrom . import sub\nprint('pkg main', __name__, __spec__.name, sys.argv)\n";

fn write_project(exec: &Exec) {
    exec.write("main.py", MAIN);
    exec.write("pkg/__init__.py", PKG_INIT);
    exec.write("pkg/sub.py", PKG_SUB);
    exec.write("pkg/__main__.py", PKG_MAIN);
}

#[test]
fn the_program_sees_what_python_gives_it() {
    for python in pythons() {
        let exec = Exec::new(python);
        write_project(&exec);
        for args in [
            &["main.py", "a", "-b"][..],
            &["-O", "main.py"],
            &["-OO", "-B", "-u", "./main.py", "x"],
            &["-X", "utf8", "-W", "ignore", "main.py"],
            &["-m", "pkg", "arg"],
            &[
                "-c",
                "import pkg, sys; print(pkg.VALUE, sys.argv, sys.path[0])",
                "z",
            ],
        ] {
            // Twice: the first run misses, the second is served.
            exec.same_as_python(args);
            exec.same_as_python(args);
        }
        let mut python_run = exec.python(&["main.py"]);
        let mut exec_run = exec.exec(&["main.py"]);
        python_run.env("EXIT_WITH", "3");
        exec_run.env("EXIT_WITH", "3");
        let expected = run_python(&mut python_run);
        let actual = exec.run_exec(&mut exec_run);
        assert_same(&expected, &actual, &["main.py"], python);
        assert_eq!(actual.status.code(), Some(3));
    }
    covered("exec::the_program_sees_what_python_gives_it", pythons());
}

#[test]
fn every_module_and_the_script_are_served_on_the_next_run_of_any_checkout() {
    for python in pythons() {
        let exec = Exec::new(python);
        write_project(&exec);
        exec.run_exec(&mut exec.exec(&["main.py"]));
        let (hits_before, misses_before) = exec.lookups();
        assert!(misses_before > 3, "first run: {misses_before} misses");
        // Another checkout of the same code: nothing to compile.
        let other = exec.env.path().join("other-checkout");
        crate::support::copy_tree(&exec.project(), &other);
        let mut command = exec.exec(&["main.py"]);
        command.current_dir(&other);
        let output = exec.run_exec(&mut command);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (hits, misses) = exec.lookups();
        assert_eq!(misses, misses_before, "misses on {}", python.label());
        // main.py, pkg/__init__.py and pkg/sub.py at least.
        assert!(
            hits >= hits_before + 3,
            "hits on {}: {hits}",
            python.label()
        );
        // Even without PYTHONDONTWRITEBYTECODE (the environment is clean).
        let pycache: Vec<_> = [
            crate::support::walk(&exec.project()),
            crate::support::walk(&other),
        ]
        .concat()
        .into_iter()
        .filter(|path| path.ends_with("__pycache__"))
        .collect();
        assert!(pycache.is_empty(), "pycs written: {pycache:?}");
    }
    covered(
        "exec::every_module_and_the_script_are_served_on_the_next_run_of_any_checkout",
        pythons(),
    );
}

#[test]
fn failures_end_the_program_as_they_end_python() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write("pkg/__init__.py", "");
        exec.write("pkg/sub.py", PKG_SUB);
        exec.write(
            "uncaught.py",
            "from pkg import sub\n\ndef outer():\n    sub.fail()\n\nouter()\n",
        );
        exec.write("bad_syntax.py", "print('never')\ndef broken(:\n    pass\n");
        exec.write("imports_bad.py", "import bad_module\n");
        exec.write("bad_module.py", "x = (\n");
        exec.write(
            "interrupted.py",
            "import time\nprint('before', flush=True)\nraise KeyboardInterrupt\n",
        );
        exec.write(
            "killed.py",
            "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\n",
        );
        exec.write(
            "exits.py",
            "import atexit, sys\natexit.register(print, 'atexit ran')\nsys.exit('bye')\n",
        );
        exec.write(
            "hooked.py",
            "import sys\nsys.excepthook = lambda t, v, tb: print('hook', t.__name__, tb.tb_frame.f_code.co_filename, tb.tb_next is None)\nraise RuntimeError('x')\n",
        );
        for script in [
            "uncaught.py",
            "bad_syntax.py",
            "imports_bad.py",
            "interrupted.py",
            "killed.py",
            "exits.py",
            "hooked.py",
        ] {
            for _ in 0..2 {
                let output = exec.same_as_python(&[script]);
                assert!(!output.status.success(), "{script}");
            }
        }
        let interrupted = exec.run_exec(&mut exec.exec(&["interrupted.py"]));
        assert_eq!(interrupted.status.signal(), Some(SIGINT));
    }
    covered(
        "exec::failures_end_the_program_as_they_end_python",
        pythons(),
    );
}

const SIGINT: i32 = 2;

#[test]
fn children_are_served_and_see_the_same_environment() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write(
            "child.py",
            "import json, os, sys, childmod\nprint(json.dumps([sys.argv[1], type(childmod.__loader__).get_code.__module__, os.environ.get('PYTHONPATH')]))\n",
        );
        exec.write("childmod.py", "VALUE = 2\n");
        exec.write(
            "parent.py",
            r#"
import json, multiprocessing, os, subprocess, sys
import childmod

def loader_of(_):
    import childmod
    return type(childmod.__loader__).get_code.__module__

if __name__ == "__main__":
    out = []
    run = lambda *a, **k: json.loads(subprocess.run([sys.executable, "child.py", *a], check=True, capture_output=True, text=True, **k).stdout)
    out.append(run("inherited"))
    out.append(run("explicit", env=dict(os.environ)))
    out.append(run("extra-path", env=dict(os.environ, PYTHONPATH="somewhere")))
    for method in ("fork", "spawn"):
        with multiprocessing.get_context(method).Pool(1) as pool:
            out.append([method, pool.map(loader_of, [0])[0]])
    out.append(["parent", type(childmod.__loader__).get_code.__module__, os.environ.get("PYTHONPATH")])
    print(json.dumps(out, indent=1))
"#,
        );
        for _ in 0..2 {
            let expected = run_python(&mut exec.python(&["parent.py"]));
            let actual = exec.run_exec(&mut exec.exec(&["parent.py"]));
            assert!(
                expected.status.success(),
                "{}",
                String::from_utf8_lossy(&expected.stderr)
            );
            assert!(
                actual.status.success(),
                "{}",
                String::from_utf8_lossy(&actual.stderr)
            );
            let plain: serde_json::Value = serde_json::from_slice(&expected.stdout).unwrap();
            let served: serde_json::Value = serde_json::from_slice(&actual.stdout).unwrap();
            let plain_loader = plain[5][1].as_str().unwrap().to_owned();
            assert_ne!(plain_loader, "sitecustomize");
            for (index, (plain, served)) in plain
                .as_array()
                .unwrap()
                .iter()
                .zip(served.as_array().unwrap())
                .enumerate()
            {
                let (plain_text, served_text) = (plain.to_string(), served.to_string());
                // Same everything, except whose `get_code` loaded it.
                assert_eq!(
                    served_text.replace("\"sitecustomize\"", &format!("\"{plain_loader}\"")),
                    plain_text,
                    "line {index} on {}",
                    python.label()
                );
                assert!(
                    served_text.contains("\"sitecustomize\""),
                    "line {index} not served on {}: {served_text}",
                    python.label()
                );
            }
        }
    }
    covered(
        "exec::children_are_served_and_see_the_same_environment",
        pythons(),
    );
}

#[test]
fn a_planted_pyc_is_never_run() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write("victim.py", "WHO = 'source'\n");
        exec.write("main.py", "import victim\nprint(victim.WHO)\n");
        // An unchecked-hash pyc beside the innocent source, holding other code.
        let planter = exec.write("planted/victim.py", "WHO = 'planted'\n");
        let status = exec
            .python(&[
                "-c",
                "import py_compile, sys; py_compile.compile(sys.argv[1], cfile=sys.argv[2], invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)",
            ])
            .arg(&planter)
            .arg(
                exec.project()
                    .join("__pycache__")
                    .join(format!("victim.{}.pyc", cache_tag(python))),
            )
            .status()
            .unwrap();
        assert!(status.success());
        let plain = run_python(&mut exec.python(&["main.py"]));
        assert_eq!(String::from_utf8_lossy(&plain.stdout), "planted\n");
        for _ in 0..2 {
            let served = exec.run_exec(&mut exec.exec(&["main.py"]));
            assert_eq!(
                String::from_utf8_lossy(&served.stdout),
                "source\n",
                "{}",
                python.label()
            );
        }
    }
    covered("exec::a_planted_pyc_is_never_run", pythons());
}

fn cache_tag(python: &Python) -> String {
    format!("cpython-{}{}", python.version.0, python.version.1)
}

#[test]
fn an_existing_sitecustomize_still_runs() {
    for python in pythons() {
        let exec = Exec::new(python);
        exec.write(
            "site-dir/sitecustomize.py",
            "import builtins\nbuiltins.CUSTOMIZED = __file__\n",
        );
        exec.write(
            "main.py",
            "import sys, sitecustomize\nprint(CUSTOMIZED, sitecustomize.__file__, [p for p in sys.path if 'site-dir' in p])\n",
        );
        let site_dir = exec.project().join("site-dir");
        let mut plain = exec.python(&["main.py"]);
        plain.env("PYTHONPATH", &site_dir);
        let mut served = exec.exec(&["main.py"]);
        served.env("PYTHONPATH", &site_dir);
        let expected = run_python(&mut plain);
        let actual = exec.run_exec(&mut served);
        assert!(String::from_utf8_lossy(&expected.stdout).contains("site-dir/sitecustomize.py"));
        assert_same(&expected, &actual, &["main.py"], python);
    }
    covered("exec::an_existing_sitecustomize_still_runs", pythons());
}

#[test]
fn python_flags_that_ignore_the_environment_run_unserved() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    write_project(&exec);
    for args in [
        &["-I", "main.py"][..],
        &["-E", "main.py"],
        &["-S", "main.py"],
    ] {
        exec.same_as_python(args);
    }
    let (hits, misses) = exec.lookups();
    assert_eq!((hits, misses), (0, 0), "nothing was served");
    covered(
        "exec::python_flags_that_ignore_the_environment_run_unserved",
        std::slice::from_ref(python),
    );
}

#[test]
fn an_unusable_store_warns_once_and_python_runs_anyway() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    write_project(&exec);
    std::fs::create_dir_all(exec.env.store.parent().unwrap()).unwrap();
    std::fs::write(&exec.env.store, b"this is not a store, and never was one").unwrap();
    let expected = run_python(&mut exec.python(&["main.py"]));
    let actual = exec.run_exec(&mut exec.exec(&["main.py"]));
    assert_eq!(actual.stdout, expected.stdout);
    assert_eq!(actual.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&actual.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not an rcache store"), "{stderr}");
    assert_eq!(
        std::fs::read(&exec.env.store).unwrap(),
        b"this is not a store, and never was one"
    );
    covered(
        "exec::an_unusable_store_warns_once_and_python_runs_anyway",
        std::slice::from_ref(python),
    );
}

/// Real PyPI packages in a real virtualenv (the same pins on 3.8–3.13).
pub(crate) const VENV_PINS: &[&str] = &["attrs==25.3.0", "click==8.1.8", "pytest==8.3.5"];

const APP: &str = r#"
import attrs
import click


@attrs.define
class Greeting:
    name: str

    def text(self):
        return f"hello {self.name}"


@click.command()
@click.option("--name", default="world")
def main(name):
    click.echo(Greeting(name).text())


if __name__ == "__main__":
    main()
"#;

const TESTS: &str = r"
from app import Greeting


def test_passes():
    assert Greeting('a').text() == 'hello a'


def test_fails():
    a = [1, 2, 3]
    b = [1, 5, 3]
    assert a == b
";

/// Test durations are the one thing that differs between two pytest runs.
pub(crate) fn without_durations(text: &str) -> String {
    text.lines()
        .map(|line| match (line.starts_with('='), line.rfind(" in ")) {
            (true, Some(at)) => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_project_in_a_virtualenv_runs_its_cli_and_pytest_the_same() {
    for python in pythons() {
        let venv_python = crate::support::pypi_venv(python, VENV_PINS);
        let mut venv = python.clone();
        venv.path = venv_python;
        let exec = Exec::new(&venv);
        exec.write("app.py", APP);
        exec.write("tests/test_app.py", TESTS);
        exec.same_as_python(&["app.py", "--name", "rcache"]);
        exec.same_as_python(&["-m", "app", "--name", "module"]);
        let pytest = ["-m", "pytest", "-p", "no:cacheprovider", "tests"];
        for _ in 0..2 {
            let expected = run_python(&mut exec.python(&pytest));
            let actual = exec.run_exec(&mut exec.exec(&pytest));
            let (expected_out, actual_out) = (
                without_durations(&String::from_utf8_lossy(&expected.stdout)),
                without_durations(&String::from_utf8_lossy(&actual.stdout)),
            );
            assert_eq!(actual_out, expected_out, "pytest on {}", venv.label());
            assert_eq!(actual.status.code(), Some(1));
            // pytest's own assertion rewriting still wins for test files.
            assert!(
                actual_out.contains("At index 1 diff: 2 != 5"),
                "{actual_out}"
            );
        }
        let (hits, _) = exec.lookups();
        assert!(hits > 100, "site-packages served: {hits} hits");
    }
    covered(
        "exec::a_project_in_a_virtualenv_runs_its_cli_and_pytest_the_same",
        pythons(),
    );
}

#[test]
fn when_the_server_dies_imports_fall_back_with_one_warning() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    exec.write("first.py", "VALUE = 'first'\n");
    exec.write("second.py", "VALUE = 'second'\n");
    exec.write("third.py", "VALUE = 'third'\n");
    exec.write(
        "main.py",
        "import sys, first\nprint('ready', flush=True)\nsys.stdin.readline()\nimport second, third\nprint(first.VALUE, second.VALUE, third.VALUE)\n",
    );
    let paused = Paused::start(&mut exec.exec(&["main.py"]));
    // The server leads its own session; a compile worker it is starting
    // runs rcache's binary too until it execs Python.
    let servers: Vec<u32> = rcache_processes_with(&exec.env.store)
        .into_iter()
        .filter(|&pid| leads_its_session(pid))
        .collect();
    assert_eq!(servers.len(), 1, "one server: {servers:?}");
    let killed = Command::new("kill")
        .args(["-KILL", &servers[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (rest, output) = paused.resume();
    assert_eq!(rest, "first second third\n");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("fall back"), "{stderr}");
    covered(
        "exec::when_the_server_dies_imports_fall_back_with_one_warning",
        std::slice::from_ref(python),
    );
}

/// A program started with piped stdio that has printed `ready` and waits
/// (for a line on stdin, or a signal).
struct Paused {
    child: std::process::Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Paused {
    fn start(command: &mut Command) -> Self {
        let mut child = command
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "ready\n");
        Self { child, stdout }
    }

    /// Sends the line the program waits for; see [`Paused::finish`].
    fn resume(mut self) -> (String, Output) {
        std::io::Write::write_all(self.child.stdin.as_mut().unwrap(), b"go\n").unwrap();
        self.finish()
    }

    /// The rest of stdout, and how the program ended.
    fn finish(mut self) -> (String, Output) {
        let output = self.child.wait_with_output().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        (rest, output)
    }
}

/// (key, compressed data) of every stored entry.
fn stored_entries(store: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let conn = rusqlite::Connection::open(store).unwrap();
    let mut statement = conn.prepare("SELECT key, data FROM entries").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Whether process `pid` is the leader of its session (`setsid`).
fn leads_its_session(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // After the command name in parentheses: state, ppid, pgrp, session.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    fields.get(3) == Some(&pid.to_string().as_str())
}

/// Pids of the processes running this test binary's rcache with `store`
/// on their command line (the server is a fork: same command line).
pub(crate) fn rcache_processes_with(store: &Path) -> Vec<u32> {
    let binary = std::fs::canonicalize(env!("CARGO_BIN_EXE_rcache")).unwrap();
    let store = store.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|&byte| byte == 0).any(|arg| arg == store))
        })
        .collect()
}

#[test]
fn a_corrupt_blob_is_never_run_and_is_replaced() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    exec.write("mod.py", "VALUE = [1, 2, 3]\n");
    exec.write("main.py", "import mod\nprint(mod.VALUE)\n");
    exec.run_exec(&mut exec.exec(&["main.py"]));
    let entries = stored_entries(&exec.env.store);
    assert!(entries.len() >= 2, "main.py and mod.py stored");
    let conn = rusqlite::Connection::open(&exec.env.store).unwrap();
    for (key, mut data) in entries.clone() {
        let middle = data.len() / 2;
        data[middle] ^= 0x40;
        conn.execute("UPDATE entries SET data = ?1 WHERE key = ?2", (data, key))
            .unwrap();
    }
    drop(conn);
    for _ in 0..2 {
        let output = exec.run_exec(&mut exec.exec(&["main.py"]));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "[1, 2, 3]\n");
        assert!(
            output.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Replaced by good ones (`blobs` checks every checksum).
    assert_eq!(exec.env.blobs().len(), entries.len());
    covered(
        "exec::a_corrupt_blob_is_never_run_and_is_replaced",
        std::slice::from_ref(python),
    );
}

#[test]
fn a_read_only_tree_is_served_and_nothing_is_written_to_it() {
    let Some(python) = crate::support::system_python() else {
        eprintln!("no /usr/bin/python3.X that an unprivileged user can run: skipped");
        return;
    };
    let exec = Exec::new(&python);
    exec.write("pkg/__init__.py", PKG_INIT);
    exec.write("pkg/sub.py", PKG_SUB);
    exec.write(
        "main.py",
        "import sys, pkg\nprint(pkg.VALUE, pkg.sub.__file__)\n",
    );
    exec.env.share_with_nobody();
    // The runtime dir is the user's own; the project stays root's (0755).
    if crate::support::running_as_root() {
        std::os::unix::fs::chown(&exec.runtime, Some(crate::support::NOBODY), None).unwrap();
    }
    let expected = run_python(
        exec.python(&["main.py"])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    );
    for _ in 0..2 {
        let mut command = exec.exec(&["main.py"]);
        // Empty is unset to CPython: pycs would be written if anything tried.
        command.env("PYTHONDONTWRITEBYTECODE", "");
        let output = exec.run_exec(&mut crate::support::unprivileged(&command));
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&expected.stdout),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The store is the unprivileged user's: root's rcache would refuse it.
    let mut stats = rcache_command(exec.env.path());
    stats
        .args(["--json", "--store"])
        .arg(&exec.env.store)
        .arg("stats");
    let (hits, _) = lookups_by(&mut crate::support::unprivileged(&stats));
    assert!(hits >= 3, "the second run was served: {hits} hits");
    let pycache: Vec<_> = crate::support::walk(&exec.project())
        .into_iter()
        .filter(|path| path.ends_with("__pycache__"))
        .collect();
    assert!(pycache.is_empty(), "pycs written: {pycache:?}");
    covered(
        "exec::a_read_only_tree_is_served_and_nothing_is_written_to_it",
        std::slice::from_ref(&python),
    );
}

#[test]
fn ctrl_c_reaches_the_program_as_it_reaches_python() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    exec.write(
        "main.py",
        "import sys, time\ntry:\n    print('ready', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)\n    raise\n",
    );
    let mut results = Vec::new();
    for mut command in [exec.python(&["main.py"]), exec.exec(&["main.py"])] {
        let paused = Paused::start(&mut command);
        // The pid rcache was started with is the program's.
        let status = Command::new("kill")
            .args(["-INT", &paused.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let (rest, output) = paused.finish();
        // Where the signal lands (in print or in sleep) is up to timing.
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.ends_with("\nKeyboardInterrupt\n"), "{stderr}");
        results.push((rest, output.status.signal()));
    }
    assert_eq!(results[0], ("interrupted\n".to_owned(), Some(SIGINT)));
    assert_eq!(results[1], results[0]);
    covered(
        "exec::ctrl_c_reaches_the_program_as_it_reaches_python",
        std::slice::from_ref(python),
    );
}

#[test]
fn code_prepared_ahead_is_not_served_for_a_file_edited_since() {
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    exec.write("first.py", "VALUE = 'first'\n");
    exec.write("second.py", "VALUE = 'old'\n");
    exec.write(
        "main.py",
        "import sys, first\nprint('ready', flush=True)\nsys.stdin.readline()\nimport second\nprint(second.VALUE)\n",
    );
    // Two runs: the store holds the code and the order of imports.
    for _ in 0..2 {
        let mut command = exec.exec(&["main.py"]);
        command.stdin(std::process::Stdio::null());
        let output = exec.run_exec(&mut command);
        assert_eq!(String::from_utf8_lossy(&output.stdout), "ready\nold\n");
    }
    let paused = Paused::start(&mut exec.exec(&["main.py"]));
    // By now `second` is prepared; the edit keeps the size.
    std::thread::sleep(Duration::from_millis(200));
    exec.write("second.py", "VALUE = 'new'\n");
    let (rest, output) = paused.resume();
    assert_eq!(rest, "new\n");
    assert!(output.status.success());
    covered(
        "exec::code_prepared_ahead_is_not_served_for_a_file_edited_since",
        std::slice::from_ref(python),
    );
}

#[test]
fn a_runtime_dir_others_can_write_is_refused_and_python_runs_unserved() {
    use std::os::unix::fs::PermissionsExt as _;
    let python = pythons().last().expect("a Python");
    let exec = Exec::new(python);
    exec.write("main.py", "print('ran')\n");
    let shared = exec.runtime.join("rcache");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = exec
        .exec(&["main.py"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "ran\n");
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("open to other users"), "{stderr}");
    assert!(
        std::fs::read_dir(&shared).unwrap().next().is_none(),
        "nothing was put in it"
    );
    covered(
        "exec::a_runtime_dir_others_can_write_is_refused_and_python_runs_unserved",
        std::slice::from_ref(python),
    );
}
