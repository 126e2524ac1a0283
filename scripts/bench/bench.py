#!/usr/bin/env python3
"""End-to-end benchmark: `rcache warm` against `python -m compileall`, the
import time of `rcache exec` against plain `python`, and materializing from a
remote cache.

Both tools compile the same corpus of real code, side by side in one run, so
the baseline is always measured on the same machine, interpreter and tree:

  compileall -j0 cold    `python -m compileall -q -j0` on a tree with no __pycache__
  compileall -j0 no-op   the same command again on the now compiled tree
  rcache warm cold       `rcache -j CPUS warm` into a fresh, empty store file
  rcache warm rewarm     the same command again: all hits, no worker started
  rcache materialize, warm store
                         `rcache materialize` into a fresh copy of the tree
                         (new files, no pycs) from the store warmed above
  rcache materialize no-op
                         the same command again, at least 0.1 s after the copy
                         was made (rcache re-reads sources changed in the last
                         0.1 s); compare with `compileall -j1 no-op`
  compileall -j1 no-op   `python -m compileall -q` (serial) on a compiled tree
  compileall -j1 cold    single-worker baseline
  rcache -j1 warm cold   single-worker rcache

Corpora (each is copied to a temporary tree without any __pycache__):

  stdlib    the interpreter's standard library (sysconfig's "stdlib" path)
            minus site-packages
  packages  the site-packages of a virtualenv holding a few large pure-Python
            PyPI packages; the virtualenv is cached under
            ~/.cache/rcache-bench/ so reruns do not reinstall it
  venv      that virtualenv whole, copied with its symlinks: its root, as users
            name it (`rcache materialize .venv`), with the `lib64 -> lib`
            link `python -m venv` makes; every pyc is written once, so the
            no-op writes nothing (checked)
  exec      import time under `rcache exec` on the site-packages of the
            "packages" virtualenv (see below)
  remote    the standard library materialized into a fresh copy and an
            empty store from a warm remote (nginx WebDAV, redis) on
            loopback; see remote.py
  all       all of the above, one table each

Every step runs --runs times; the table gives the median and the minimum wall
time (process start to exit) and the ratio of the medians to `compileall -j0
cold`. Below 1.0x means faster than that baseline.

The `exec` corpus makes two copies of that site-packages: `with-pycs`,
compiled by `python -m compileall -q -j0`, and `no-pycs`, sources only. A
fresh store in a temporary directory is filled by `rcache warm no-pycs`, then
each command below runs twice under `rcache exec` (the first run's misses,
stdlib ones included, are compiled by the background server after it), so
the timed runs are all hits. Then, at least 10 times each, interleaved:

  python, warm __pycache__   `python -c CODE`, PYTHONPATH=with-pycs
  python, no pycs            `python -c CODE`, PYTHONPATH=no-pycs and
                             PYTHONDONTWRITEBYTECODE=1: every module compiled
  rcache exec, warm store    `rcache --store S --python PY exec -c CODE`,
                             PYTHONPATH=no-pycs; bytecode writing left on, so
                             that a pyc written beside a source shows

for CODE in `import sympy`, `import django.db.models` and `pass`. The rcache
runs share a private 0700 XDG_RUNTIME_DIR made for this benchmark, and the
next step starts only once the detached server is done: its socket is gone
and no live process carries that XDG_RUNTIME_DIR any more (before commit
0ee5d01 the server removed its socket before compiling the misses and
writing the store; the second test keeps the wait right for such builds).
The table gives median and minimum milliseconds, rcache exec over
warm-__pycache__ python (goal: at most 1.15x for the imports; the ratio of
the minimums follows in parentheses), and the speed-up over no-pyc python;
below it, `rcache exec -c pass` minus `python -c pass` (goal: at most 10
ms). rcache breaks its contract when a run exits non-zero or warns, when a
`__pycache__` dir appears in `no-pycs` (it is then removed before the next
step), when a timed run misses, or when the store served fewer lookups per
run than the command imports .py modules (counted by a plain python probe
run). Goals missed are shown, not counted as broken contracts.

Interpreters are resolved to their real binary (never a pyenv shim), and
children run without the variables that would change what compileall writes
or where (PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX, SOURCE_DATE_EPOCH, ...).

Usage:
  python3 scripts/bench/bench.py [--rcache PATH] [--python PY] [--runs N]
                                 [--corpus stdlib|packages|venv|exec|remote|all]
                                 [--json-out FILE]

Standard library only. Exit status: 0 when every step behaved as specified,
1 when rcache broke its contract (the problems are listed under the table),
2 on a usage or environment error (missing binary, failing install, ...).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# remote.py (the `remote` corpus) imports this module as `bench`: run as a
# script, it must find this very module, not load a second copy.
sys.modules.setdefault("bench", sys.modules[__name__])

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RCACHE = REPO_ROOT / "target" / "release" / "rcache"
PYENV_PYTHON_GLOB = "versions/3.12.*/bin/python3.12"
CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rcache-bench"
)

# Pinned so that cached virtualenvs and results stay comparable over time.
# Keyed by the oldest interpreter (major, minor) each set supports.
PACKAGE_PINS = {
    (3, 10): ["Django==5.2.19", "sympy==1.14.0", "networkx==3.4.2"],
    (3, 8): ["Django==4.2.30", "sympy==1.13.3", "networkx==3.1"],
}

# Variables that would change what the children compile, where they write it,
# or how much rcache logs. Everything else is inherited unchanged.
SCRUBBED_ENV = (
    "PYTHONDONTWRITEBYTECODE",  # set to 1 on these machines
    "PYTHONPYCACHEPREFIX",  # would move __pycache__ out of the tree
    "PYTHONOPTIMIZE",  # would make compileall write .opt-N.pyc only
    "SOURCE_DATE_EPOCH",  # makes compileall write checked-hash pycs
    "PYTHONHOME",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "RCACHE_STORE",
    "RCACHE_PYTHON",
    "RCACHE_LOG",
)

BASELINE = "compileall -j0 cold"
CORPORA = ("stdlib", "packages", "venv", "exec", "remote")
# rcache never trusts its record of a source changed less than this many
# seconds before it was read (src/source.rs, RACY_MARGIN).
RACY_MARGIN = 0.1


class BenchError(Exception):
    """A usage or environment problem: reported on stderr, exit status 2."""


# --------------------------------------------------------------------------
# Interpreter and corpora
# --------------------------------------------------------------------------


@dataclass
class Interpreter:
    path: str
    version: tuple[int, int, int]
    stdlib: str

    @property
    def version_str(self) -> str:
        return ".".join(map(str, self.version))


def query_python(python: str, expr: str) -> str:
    """Evaluates `expr` in `python` and returns what it prints."""
    code = f"import sys, sysconfig; print({expr})"
    try:
        done = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, env=child_env()
        )
    except OSError as err:
        raise BenchError(f"cannot run {python}: {err}") from err
    if done.returncode != 0:
        raise BenchError(f"{python} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def pyenv_root() -> Path:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    try:
        done = subprocess.run(["pyenv", "root"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return Path(done.stdout.strip())
    except OSError:
        pass
    return Path.home() / ".pyenv"


def resolve_interpreter(requested: str | None) -> Interpreter:
    """Finds the real binary of the interpreter to benchmark.

    `requested` may be a path or a name on PATH (a pyenv shim is fine: the
    interpreter it runs reports its own sys.executable). Without it: CPython
    3.12 from pyenv, else whatever `python3` really is.
    """
    if requested:
        candidate = shutil.which(requested) or requested
    else:
        found = sorted(glob.glob(str(pyenv_root() / PYENV_PYTHON_GLOB)))
        candidate = found[-1] if found else shutil.which("python3")
        if not candidate:
            raise BenchError("no interpreter: pass --python")
    real = os.path.realpath(query_python(candidate, "sys.executable"))
    info = json.loads(
        query_python(
            real,
            "__import__('json').dumps([list(sys.version_info[:3]),"
            " sysconfig.get_paths()['stdlib']])",
        )
    )
    return Interpreter(path=real, version=tuple(info[0]), stdlib=info[1])


@dataclass
class Corpus:
    name: str
    origin: str  # where the sources were copied from
    tree: Path  # the temporary copy that is benchmarked
    files: int = 0
    bytes: int = 0
    symlinks: bool = False  # copied as symlinks (a venv's lib64 -> lib)


def copy_sources(src: Path, dst: Path, skip_at_top: tuple[str, ...] = (),
                 symlinks: bool = False) -> None:
    """Copies `src` to `dst` without __pycache__ dirs (nor `skip_at_top`);
    with `symlinks`, symlinks are copied as symlinks, not followed."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {"__pycache__"}
        if Path(directory) == src:
            skipped.update(skip_at_top)
        return skipped.intersection(names)

    shutil.copytree(src, dst, ignore=ignore, symlinks=symlinks)


def count_sources(tree: Path) -> tuple[int, int]:
    """Number and total size of the .py files under `tree`."""
    files = size = 0
    for directory, dirs, names in os.walk(tree):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if name.endswith(".py"):
                files += 1
                size += os.path.getsize(os.path.join(directory, name))
    return files, size


def make_corpus(name: str, origin: Path, workdir: Path, skip_at_top=(),
                symlinks: bool = False) -> Corpus:
    tree = workdir / f"corpus-{name}"
    copy_sources(origin, tree, skip_at_top, symlinks)
    corpus = Corpus(name=name, origin=str(origin), tree=tree, symlinks=symlinks)
    corpus.files, corpus.bytes = count_sources(tree)
    if corpus.files == 0:
        raise BenchError(f"no .py files found under {origin}")
    return corpus


def stdlib_corpus(python: Interpreter, workdir: Path) -> Corpus:
    return make_corpus(
        "stdlib", Path(python.stdlib), workdir, skip_at_top=("site-packages",)
    )


def package_pins(python: Interpreter) -> list[str]:
    for oldest, pins in sorted(PACKAGE_PINS.items(), reverse=True):
        if python.version[:2] >= oldest:
            return pins
    raise BenchError(f"no package set for Python {python.version_str}")


def cached_venv(python: Interpreter) -> Path:
    """A virtualenv with the pinned packages, installed once and then reused."""
    pins = package_pins(python)
    key = hashlib.sha256("\n".join([python.path, *pins]).encode()).hexdigest()[:12]
    venv = CACHE_DIR / f"venv-py{python.version_str}-{key}"
    done_marker = venv / "rcache-bench-complete"
    if done_marker.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)  # a previous install was interrupted
    print(f"installing {' '.join(pins)} into {venv} ...", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        [python.path, "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-compile",
         *pins],
    ]
    for command in steps:
        if subprocess.run(command, env=child_env()).returncode != 0:
            raise BenchError(f"failed: {' '.join(command)}")
    done_marker.write_text("\n".join(pins) + "\n")
    return venv


def site_packages(python: Interpreter) -> Path:
    """The site-packages of the cached "packages" virtualenv."""
    venv = cached_venv(python)
    return Path(query_python(str(venv / "bin" / "python"),
                             "sysconfig.get_paths()['purelib']"))


def packages_corpus(python: Interpreter, workdir: Path) -> Corpus:
    return make_corpus("packages", site_packages(python), workdir)


def venv_corpus(python: Interpreter, workdir: Path) -> Corpus:
    """The "packages" virtualenv whole, as users name it: its root, with the
    `lib64 -> lib` link `python -m venv` makes (and pip in it)."""
    return make_corpus("venv", cached_venv(python), workdir, symlinks=True)



# --------------------------------------------------------------------------
# Running the steps
# --------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in SCRUBBED_ENV:
        env.pop(name, None)
    return env


class Trash:
    """Moves what a step leaves out of the way, deleting nothing until the
    end: right after mass deletion, ext4 allocates inodes slowly for tens of
    seconds (its `recently_deleted` scan, 20-40% of a run's kernel time in
    `perf`), which would slow whichever step writes files next."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "trash"
        self.dir.mkdir()
        self.count = 0

    def discard(self, path: Path) -> None:
        if os.path.lexists(path):
            self.count += 1
            os.rename(path, self.dir / str(self.count))

    def remove_pycache(self, tree: Path) -> None:
        for directory, dirs, _ in os.walk(tree):
            if "__pycache__" in dirs:
                self.discard(Path(directory) / "__pycache__")
                dirs.remove("__pycache__")

    def remove_store(self, store: Path) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            self.discard(Path(f"{store}{suffix}"))


@dataclass
class Timed:
    seconds: float
    returncode: int
    stdout: str
    stderr: str


def run_child(command: list[str], env: dict[str, str] | None = None) -> Timed:
    """Runs `command` (in `child_env()` unless given `env`) and times it."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=child_env() if env is None else env)
    seconds = time.perf_counter() - start
    return Timed(seconds, done.returncode, done.stdout, done.stderr)


def timed_run(command: list[str], ok_codes: tuple[int, ...],
              env: dict[str, str] | None = None) -> Timed:
    run = run_child(command, env)
    if run.returncode not in ok_codes:
        raise BenchError(
            f"exit {run.returncode} from: {' '.join(command)}\n"
            f"{run.stderr.strip()[-4000:]}"
        )
    return run


@dataclass
class CorpusResult:
    corpus: Corpus
    seconds: dict[str, list[float]] = field(default_factory=dict)
    rcache_reports: dict[str, dict] = field(default_factory=dict)  # last run's
    compileall_failures: int | None = None
    problems: list[str] = field(default_factory=list)

    def record(self, step: str, seconds: float) -> None:
        self.seconds.setdefault(step, []).append(seconds)

    def problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)


class Bench:
    """Runs every step on one corpus, `runs` times, and checks rcache's output."""

    def __init__(self, rcache: Path, python: Interpreter, workdir: Path, workers: int,
                 trash: Trash | None = None):
        self.rcache = rcache
        self.python = python
        self.workdir = workdir
        self.workers = workers
        self.trash = trash or Trash(workdir)

    def compileall(self, tree: Path, jobs: int) -> Timed:
        # compileall exits 1 when some file does not compile (the stdlib has
        # deliberately broken test data); that is part of the workload.
        return timed_run(
            [self.python.path, "-m", "compileall", "-q", f"-j{jobs}", str(tree)],
            ok_codes=(0, 1),
        )

    def rcache_run(self, store: Path, tree: Path, jobs: int,
                   subcommand: str = "warm",
                   remote: str | None = None) -> tuple[Timed, dict]:
        command = [
            str(self.rcache), "--store", str(store), "--python", self.python.path,
            *(["--remote", remote] if remote else []),
            "--json", "-j", str(jobs), subcommand, str(tree),
        ]
        run = timed_run(command, ok_codes=(0, 1))
        try:
            report = json.loads(run.stdout)
        except json.JSONDecodeError as err:
            raise BenchError(
                f"`rcache warm --json` did not print one JSON object ({err}):\n"
                f"{run.stdout[:2000]}"
            ) from err
        if not isinstance(report, dict):
            raise BenchError(f"`rcache warm --json` printed {type(report).__name__}")
        return run, report

    def run(self, corpus: Corpus, runs: int) -> CorpusResult:
        result = CorpusResult(corpus)
        tree = corpus.tree
        for index in range(runs):
            print(f"  [{corpus.name}] run {index + 1}/{runs}", file=sys.stderr)

            self.trash.remove_pycache(tree)
            cold = self.compileall(tree, jobs=0)
            result.record(BASELINE, cold.seconds)
            result.compileall_failures = cold.stdout.count("*** Error compiling")
            result.record("compileall -j0 no-op", self.compileall(tree, 0).seconds)
            result.record("compileall -j1 no-op", self.compileall(tree, 1).seconds)

            self.trash.remove_pycache(tree)
            result.record("compileall -j1 cold", self.compileall(tree, 1).seconds)
            self.trash.remove_pycache(tree)  # rcache gets the same source-only tree

            store = self.workdir / f"store-{corpus.name}-{index}.sqlite"
            self.rcache_step(result, "rcache warm cold", store, self.workers)
            self.rcache_step(result, "rcache warm rewarm", store, self.workers)
            # The store now holds every content: materialize a fresh copy
            # (new files, no pycs), as a new clone or worktree would be.
            fresh = self.workdir / f"fresh-{corpus.name}-{index}"
            copy_sources(tree, fresh, symlinks=corpus.symlinks)
            copied = time.monotonic()
            self.rcache_step(result, "rcache materialize, warm store", store,
                             self.workers, "materialize", tree=fresh)
            # rcache re-reads a source changed in the last 0.1 s (its racy
            # timestamp guard); a no-op run comes later than that in life.
            time.sleep(max(0.0, RACY_MARGIN - (time.monotonic() - copied)))
            self.rcache_step(result, "rcache materialize no-op", store,
                             self.workers, "materialize", tree=fresh)
            self.trash.discard(fresh)
            self.trash.remove_pycache(tree)
            self.trash.remove_store(store)

            self.rcache_step(result, "rcache -j1 warm cold", store, 1)
            self.trash.remove_store(store)

        self.check_consistency(result)
        return result

    def rcache_step(self, result: CorpusResult, step: str, store: Path, jobs: int,
                    subcommand: str = "warm", tree: Path | None = None,
                    remote: str | None = None):
        if "cold" in step and store.exists():
            raise BenchError(f"store {store} should not exist before a cold run")
        run, report = self.rcache_run(store, tree or result.corpus.tree, jobs, subcommand,
                                      remote)
        result.record(step, run.seconds)
        result.rcache_reports[step] = report
        self.check_report(result, step, run, report)

    @staticmethod
    def check_report(result: CorpusResult, step: str, run: Timed, report: dict):
        """Records every way `report` departs from the `warm --json` contract."""
        expected = ("files", "hits", "compiled", "failed", "bytes_source",
                    "bytes_stored", "workers_started", "seconds", "failures")
        missing = [key for key in expected if key not in report]
        if missing:
            result.problem(f"{step}: --json lacks {', '.join(missing)}")
            return
        if report["files"] != result.corpus.files:
            result.problem(
                f"{step}: rcache saw {report['files']} files, "
                f"the corpus has {result.corpus.files} .py files"
            )
        if report["failed"] != len(report["failures"]):
            result.problem(
                f"{step}: failed={report['failed']} but "
                f"{len(report['failures'])} entries in failures"
            )
        if (run.returncode == 1) != (report["failed"] > 0):
            result.problem(
                f"{step}: exit {run.returncode} with failed={report['failed']}"
            )
        if "materialize" in step:
            if report["compiled"] != 0 or report["workers_started"] != 0:
                result.problem(f"{step}: compiled={report['compiled']}, expected 0")
            written = report.get("written", 0)
            if "no-op" in step and written != 0:
                result.problem(f"{step}: written={written}, expected 0")
            if "no-op" not in step and written + report["failed"] != result.corpus.files:
                result.problem(f"{step}: written={written} of {result.corpus.files}")
        if "rewarm" in step:
            if report["workers_started"] != 0:
                result.problem(
                    f"{step}: workers_started={report['workers_started']}, expected 0"
                )
            if report["compiled"] != 0:
                result.problem(f"{step}: compiled={report['compiled']}, expected 0")

    @staticmethod
    def check_consistency(result: CorpusResult) -> None:
        cold = result.rcache_reports.get("rcache warm cold", {})
        for step, report in result.rcache_reports.items():
            if report.get("failed") != cold.get("failed"):
                result.problem(
                    f"{step}: failed={report.get('failed')}, "
                    f"cold run had failed={cold.get('failed')}"
                )
        if cold.get("failed") != result.compileall_failures:
            result.problem(
                f"rcache failed={cold.get('failed')} but compileall reported "
                f"{result.compileall_failures} files it could not compile"
            )


# --------------------------------------------------------------------------
# Import time under `rcache exec`
# --------------------------------------------------------------------------

EXEC_CODES = ("import sympy", "import django.db.models", "pass")
EXEC_MIN_RUNS = 10  # the commands are short: fewer samples would be noise
WITH_PYCS = "python, warm __pycache__"
NO_PYCS = "python, no pycs"
RCACHE_EXEC = "rcache exec, warm store"
EXEC_VARIANTS = (WITH_PYCS, NO_PYCS, RCACHE_EXEC)
EXEC_RATIO_GOAL = 1.15  # rcache exec over warm-__pycache__ python, imports
EXEC_PASS_GOAL_MS = 10.0  # `rcache exec -c pass` minus `python -c pass`
EXEC_SERVER_TIMEOUT = 900.0  # seconds a server may take to compile misses
EXEC_POLL = 0.01

# Prints how many modules with a .py origin CODE imports; those loaded before
# -c runs are left out (they may come before rcache's hook is installed).
EXEC_PROBE = (
    "import sys; _before = set(sys.modules); exec({code!r}); "
    "print(sum(1 for _n, _m in list(sys.modules.items()) if _n not in _before"
    " and str(getattr(getattr(_m, '__spec__', None), 'origin', None))"
    ".endswith('.py')))"
)


def pycache_dirs(tree: Path) -> list[Path]:
    found = []
    for directory, dirs, _ in os.walk(tree):
        if "__pycache__" in dirs:
            found.append(Path(directory) / "__pycache__")
            dirs.remove("__pycache__")
    return found


def exec_servers_alive(runtime_dir: Path) -> bool:
    """Whether an `rcache exec` server started under `runtime_dir` still runs.

    Its socket goes last, but builds before 0ee5d01 removed it before
    compiling the misses and writing the store, so a live process whose environment holds
    this XDG_RUNTIME_DIR counts as well (zombies have no readable environment)."""
    if any((runtime_dir / "rcache").glob("exec-*.sock")):
        return True
    marker = f"XDG_RUNTIME_DIR={runtime_dir}".encode()
    try:
        entries = list(os.scandir("/proc"))
    except OSError:
        return False  # no /proc: the socket is all there is to go by
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            return True
    return False


def wait_for_exec_servers(runtime_dir: Path, timeout: float) -> bool:
    """Waits until every server under `runtime_dir` is done; False on timeout."""
    deadline = time.monotonic() + timeout
    while exec_servers_alive(runtime_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(EXEC_POLL)
    return True


@dataclass
class ExecResult:
    origin: str  # the site-packages both copies were made from
    files: int
    bytes: int
    runs: int
    warm_seconds: float = 0.0
    warm_report: dict = field(default_factory=dict)
    # CODE -> variant -> wall seconds of each timed run
    seconds: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    # CODE -> .py modules it imports (plain python probe)
    source_modules: dict[str, int] = field(default_factory=dict)
    # CODE -> store counters summed over its timed rcache exec runs
    lookups: dict[str, dict[str, int]] = field(default_factory=dict)
    warmup_lookups: dict[str, list[dict[str, int]]] = field(default_factory=dict)
    # CODE -> runs (warm-up included) after which no-pycs held __pycache__
    pycache_runs: dict[str, int] = field(default_factory=dict)
    pycache_examples: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def record(self, code: str, variant: str, seconds: float) -> None:
        self.seconds.setdefault(code, {}).setdefault(variant, []).append(seconds)

    def problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)


class ExecBench:
    """Times imports under `rcache exec` against plain python, side by side."""

    def __init__(self, rcache: Path, python: Interpreter, workdir: Path,
                 workers: int, trash: Trash):
        self.rcache = rcache
        self.python = python
        self.workers = workers
        self.trash = trash
        self.with_pycs = workdir / "exec-with-pycs"
        self.no_pycs = workdir / "exec-no-pycs"
        self.runtime_dir = workdir / "exec-runtime"
        self.store = workdir / "exec-store" / "store.sqlite3"
        self.counters = {"hits": 0, "misses": 0}

    def prepare(self, site_packages: Path) -> ExecResult:
        copy_sources(site_packages, self.with_pycs)
        copy_sources(site_packages, self.no_pycs)
        files, size = count_sources(self.no_pycs)
        if files == 0:
            raise BenchError(f"no .py files found under {site_packages}")
        timed_run([self.python.path, "-m", "compileall", "-q", "-j0",
                   str(self.with_pycs)], ok_codes=(0, 1))
        self.runtime_dir.mkdir(mode=0o700)
        self.runtime_dir.chmod(0o700)  # mkdir's mode goes through the umask
        self.store.parent.mkdir()
        return ExecResult(origin=str(site_packages), files=files, bytes=size, runs=0)

    def python_env(self, tree: Path, write_bytecode: bool) -> dict[str, str]:
        env = child_env()
        env["PYTHONPATH"] = str(tree)
        if not write_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        return env

    def rcache_env(self) -> dict[str, str]:
        env = self.python_env(self.no_pycs, write_bytecode=True)
        env["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        return env

    def rcache_command(self, *args: str) -> list[str]:
        return [str(self.rcache), "--store", str(self.store),
                "--python", self.python.path, *args]

    def variant_run(self, variant: str, code: str) -> Timed:
        if variant == RCACHE_EXEC:
            return run_child(self.rcache_command("exec", "-c", code), self.rcache_env())
        tree = self.with_pycs if variant == WITH_PYCS else self.no_pycs
        command = [self.python.path, "-c", code]
        env = self.python_env(tree, write_bytecode=variant == WITH_PYCS)
        return timed_run(command, ok_codes=(0,), env=env)

    def store_counters(self) -> dict[str, int]:
        run = timed_run(self.rcache_command("--json", "stats"), ok_codes=(0,))
        report = json.loads(run.stdout)
        return {"hits": report.get("lifetime_hits", 0),
                "misses": report.get("lifetime_misses", 0)}

    def warm_tree(self, result: ExecResult) -> None:
        command = self.rcache_command("--json", "-j", str(self.workers), "warm",
                                      str(self.no_pycs))
        run = timed_run(command, ok_codes=(0, 1))
        result.warm_seconds = run.seconds
        result.warm_report = json.loads(run.stdout)
        if pycache_dirs(self.no_pycs):
            result.problem("`rcache warm` wrote __pycache__ dirs into the no-pycs tree")
            self.trash.remove_pycache(self.no_pycs)
        self.counters = self.store_counters()

    def probe_source_modules(self, code: str) -> int:
        command = [self.python.path, "-c", EXEC_PROBE.format(code=code)]
        run = timed_run(command, ok_codes=(0,),
                        env=self.python_env(self.no_pycs, write_bytecode=False))
        return int(run.stdout.split()[-1])

    def rcache_run(self, result: ExecResult, code: str) -> tuple[Timed, dict[str, int]]:
        """One `rcache exec -c CODE`, checked, once its server is done;
        returns the run and the store counters it added."""
        run = self.variant_run(RCACHE_EXEC, code)
        shown = (f"PYTHONPATH={self.no_pycs} XDG_RUNTIME_DIR={self.runtime_dir} "
                 f"{shlex.join(self.rcache_command('exec', '-c', code))}")
        if run.returncode != 0:
            result.problem(f"exit {run.returncode} from: {shown}\n"
                           f"{run.stderr.strip()[-4000:]}")
        warnings = [line for line in run.stderr.splitlines()
                    if line.startswith("rcache:")]
        if warnings:
            result.problem(f"{shown} warned:\n" + "\n".join(warnings[:20]))
        if not wait_for_exec_servers(self.runtime_dir, EXEC_SERVER_TIMEOUT):
            raise BenchError(f"the server of `{shown}` still runs after "
                             f"{EXEC_SERVER_TIMEOUT:.0f} s")
        left = pycache_dirs(self.no_pycs)
        if left:
            result.pycache_runs[code] = result.pycache_runs.get(code, 0) + 1
            examples = result.pycache_examples.setdefault(code, [])
            if not examples:
                examples += [str(path) for path in left[:3]] + [f"{len(left)} dirs"]
            self.trash.remove_pycache(self.no_pycs)
        counters = self.store_counters()
        added = {name: counters[name] - self.counters[name] for name in counters}
        self.counters = counters
        return run, added

    def warm_up(self, result: ExecResult, code: str) -> None:
        """Two untimed rcache runs (the first one's misses get compiled) and
        one of each python, so that every variant starts from a warm page cache."""
        for _ in range(2):
            _, added = self.rcache_run(result, code)
            result.warmup_lookups.setdefault(code, []).append(added)
        self.variant_run(WITH_PYCS, code)
        self.variant_run(NO_PYCS, code)

    def run(self, site_packages: Path, runs: int) -> ExecResult:
        result = self.prepare(site_packages)
        result.runs = max(runs, EXEC_MIN_RUNS)
        print(f"exec: {result.files} .py files copied from {site_packages}; "
              "rcache warm ...", file=sys.stderr)
        self.warm_tree(result)
        for code in EXEC_CODES:
            result.source_modules[code] = self.probe_source_modules(code)
            self.warm_up(result, code)
            result.lookups[code] = {"hits": 0, "misses": 0}
        for index in range(result.runs):
            print(f"  [exec] run {index + 1}/{result.runs}", file=sys.stderr)
            for code in EXEC_CODES:
                for variant in EXEC_VARIANTS:
                    self.timed_step(result, code, variant)
        self.check(result)
        for tree in (self.with_pycs, self.no_pycs):
            self.trash.discard(tree)
        return result

    def timed_step(self, result: ExecResult, code: str, variant: str) -> None:
        if variant != RCACHE_EXEC:
            result.record(code, variant, self.variant_run(variant, code).seconds)
            return
        run, added = self.rcache_run(result, code)
        result.record(code, variant, run.seconds)
        for name, count in added.items():
            result.lookups[code][name] += count

    @staticmethod
    def check(result: ExecResult) -> None:
        """Turns what the runs showed into problems."""
        total_runs = result.runs + 2  # the warm-up runs were checked too
        for code, count in result.pycache_runs.items():
            result.problem(
                f"`rcache exec -c {code!r}` left __pycache__ dirs in the no-pycs "
                f"tree after {count} of {total_runs} runs, e.g. "
                + ", ".join(result.pycache_examples[code]))
        for code in EXEC_CODES:
            lookups = result.lookups[code]
            if lookups["misses"]:
                result.problem(f"`rcache exec -c {code!r}`: {lookups['misses']} misses "
                               f"in {result.runs} timed runs, expected none")
            per_run = (lookups["hits"] + lookups["misses"]) / result.runs
            if per_run < result.source_modules[code]:
                result.problem(
                    f"`rcache exec -c {code!r}`: {per_run:.0f} lookups per run, but "
                    f"the command imports {result.source_modules[code]} .py modules: "
                    "the others bypassed the store")


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

STEP_ORDER = (
    BASELINE,
    "compileall -j0 no-op",
    "compileall -j1 no-op",
    "rcache warm cold",
    "rcache warm rewarm",
    "rcache materialize, warm store",
    "rcache materialize no-op",
    "compileall -j1 cold",
    "rcache -j1 warm cold",
)


def summary(samples: list[float]) -> dict:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "samples": samples,
    }


def markdown_table(result: CorpusResult, python: Interpreter, workers: int,
                   runs: int) -> str:
    corpus = result.corpus
    baseline = statistics.median(result.seconds[BASELINE])
    lines = [
        f"### Corpus `{corpus.name}`: {corpus.files} .py files, "
        f"{corpus.bytes / 1e6:.1f} MB of source",
        "",
        f"CPython {python.version_str} (`{python.path}`), {workers} CPUs "
        f"(`-j {workers}` / `-j0`), {runs} runs, wall seconds.",
        "",
        f"| step | median s | min s | ratio vs `{BASELINE}` |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step in STEP_ORDER:
        stats = summary(result.seconds[step])
        lines.append(
            f"| {step} | {stats['median']:.3f} | {stats['min']:.3f} | "
            f"{stats['median'] / baseline:.2f}x |"
        )
    cold = result.rcache_reports["rcache warm cold"]
    rewarm = result.rcache_reports["rcache warm rewarm"]
    lines += [
        "",
        f"rcache cold: compiled {cold.get('compiled')}, failed {cold.get('failed')}, "
        f"{cold.get('bytes_stored')} bytes stored, {cold.get('workers_started')} "
        f"workers started, {cold.get('seconds')} s by its own clock.",
        f"rcache rewarm: hits {rewarm.get('hits')}, compiled {rewarm.get('compiled')}, "
        f"workers_started {rewarm.get('workers_started')}.",
        f"compileall could not compile {result.compileall_failures} files.",
    ]
    if cold.get("aliases"):
        lines.append(
            f"rcache also walked {cold['aliases']} paths to those files through "
            f"the venv's `lib64 -> lib` and wrote each pyc once, for `lib/`; "
            f"compileall never follows a directory symlink."
        )
    return "\n".join(lines)


def exec_figures(result: ExecResult) -> dict:
    """Medians, minimums and the ratios the goals are about, per command."""
    commands = {}
    for code in EXEC_CODES:
        steps = {variant: summary(result.seconds[code][variant])
                 for variant in EXEC_VARIANTS}
        rcache = steps[RCACHE_EXEC]["median"]
        commands[code] = {
            "steps": steps,
            "ratio_vs_pycache": rcache / steps[WITH_PYCS]["median"],
            "ratio_of_mins_vs_pycache": (steps[RCACHE_EXEC]["min"]
                                         / steps[WITH_PYCS]["min"]),
            "speedup_vs_no_pycs": steps[NO_PYCS]["median"] / rcache,
            "overhead_ms": (rcache - steps[WITH_PYCS]["median"]) * 1000,
            "source_modules": result.source_modules[code],
            "lookups_timed_runs": result.lookups[code],
            "lookups_warm_up_runs": result.warmup_lookups[code],
        }
    return commands


def exec_goals(commands: dict) -> dict[str, bool]:
    goals = {code: figures["ratio_vs_pycache"] <= EXEC_RATIO_GOAL
             for code, figures in commands.items() if code != "pass"}
    goals["pass"] = commands["pass"]["overhead_ms"] <= EXEC_PASS_GOAL_MS
    return goals


def met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def exec_markdown_table(result: ExecResult, python: Interpreter) -> str:
    commands = exec_figures(result)
    goals = exec_goals(commands)

    def cell(stats: dict) -> str:
        return f"{stats['median'] * 1000:.1f} / {stats['min'] * 1000:.1f}"

    lines = [
        f"### `rcache exec`: import time, {result.files} .py files "
        f"({result.bytes / 1e6:.1f} MB) of site-packages",
        "",
        f"CPython {python.version_str} (`{python.path}`), {result.runs} runs, "
        "wall milliseconds as median / min.",
        "",
        f"| `-c` | `{WITH_PYCS}` | `{NO_PYCS}` | `{RCACHE_EXEC}` "
        "| rcache / warm `__pycache__` (of mins) | speed-up vs no pycs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for code, figures in commands.items():
        steps = figures["steps"]
        lines.append(
            f"| `{code}` | {cell(steps[WITH_PYCS])} | {cell(steps[NO_PYCS])} | "
            f"{cell(steps[RCACHE_EXEC])} | {figures['ratio_vs_pycache']:.2f}x "
            f"({figures['ratio_of_mins_vs_pycache']:.2f}x) | "
            f"{figures['speedup_vs_no_pycs']:.2f}x |"
        )
    imports = ", ".join(
        f"`{code}` {commands[code]['ratio_vs_pycache']:.2f}x {met(ok)}"
        for code, ok in goals.items() if code != "pass")
    lines += [
        "",
        f"Goal rcache exec / warm `__pycache__` <= {EXEC_RATIO_GOAL:.2f}x: {imports}.",
        f"Goal `rcache exec -c pass` - `python -c pass` <= {EXEC_PASS_GOAL_MS:.0f} ms: "
        f"{commands['pass']['overhead_ms']:+.1f} ms, {met(goals['pass'])}.",
    ]
    for code, figures in commands.items():
        lookups = figures["lookups_timed_runs"]
        lines.append(
            f"`{code}`: {(lookups['hits'] + lookups['misses']) / result.runs:.0f} "
            f"lookups per timed run ({lookups['misses']} misses in all), "
            f"{figures['source_modules']} .py modules imported."
        )
    warm = result.warm_report
    lines.append(
        f"`rcache warm` of the tree: {warm.get('files')} files, compiled "
        f"{warm.get('compiled')}, failed {warm.get('failed')}, "
        f"{result.warm_seconds:.1f} s."
    )
    return "\n".join(lines)


def exec_json(result: ExecResult) -> dict:
    commands = exec_figures(result)
    return {
        "origin": result.origin,
        "files": result.files,
        "bytes": result.bytes,
        "runs": result.runs,
        "warm_seconds": result.warm_seconds,
        "warm_report": result.warm_report,
        "goals": {"ratio_vs_pycache": EXEC_RATIO_GOAL,
                  "pass_overhead_ms": EXEC_PASS_GOAL_MS},
        "goals_met": exec_goals(commands),
        "commands": commands,
        "pycache_runs": result.pycache_runs,
        "problems": result.problems,
    }


def json_document(results: list[CorpusResult], exec_result: ExecResult | None,
                  remote_result: remote.RemoteResult | None, python: Interpreter,
                  rcache: Path, workers: int, runs: int) -> dict:
    return {
        "python": {"path": python.path, "version": python.version_str},
        "rcache": str(rcache),
        "cpu_count": workers,
        "platform": platform.platform(),
        "runs": runs,
        "baseline": BASELINE,
        "corpora": [
            {
                "name": r.corpus.name,
                "origin": r.corpus.origin,
                "files": r.corpus.files,
                "bytes": r.corpus.bytes,
                "steps": {step: summary(r.seconds[step]) for step in STEP_ORDER},
                "rcache_reports": r.rcache_reports,
                "compileall_failures": r.compileall_failures,
                "problems": r.problems,
            }
            for r in results
        ],
        "exec": exec_json(exec_result) if exec_result else None,
        "remote": remote.json_entry(remote_result) if remote_result else None,
    }


# The `remote` corpus lives in remote.py, built on the definitions above.
import remote  # noqa: E402

# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark `rcache warm` against `python -m compileall`, "
                    "and imports under `rcache exec` against plain python.")
    parser.add_argument("--rcache", type=Path, default=DEFAULT_RCACHE,
                        help="rcache binary (default: %(default)s)")
    parser.add_argument("--python",
                        help="interpreter to compile for (default: pyenv's 3.12, "
                             "else python3's real binary)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each step (default: %(default)s; at "
                             f"least {EXEC_MIN_RUNS} for the exec corpus)")
    parser.add_argument("--corpus", choices=(*CORPORA, "all"),
                        default="stdlib", help="what to compile (default: %(default)s)")
    parser.add_argument("--json-out", type=Path,
                        help="also write the raw numbers to this JSON file")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rcache = args.rcache.resolve()
    if not (rcache.is_file() and os.access(rcache, os.X_OK)):
        raise BenchError(
            f"rcache binary not found at {rcache}: build it with "
            "`cargo build --release` or pass --rcache PATH")
    python = resolve_interpreter(args.python)
    workers = os.cpu_count() or 1
    names = CORPORA if args.corpus == "all" else (args.corpus,)
    builders = {"stdlib": stdlib_corpus, "packages": packages_corpus,
                "venv": venv_corpus}

    results = []
    exec_result = None
    remote_result = None
    with tempfile.TemporaryDirectory(prefix="rcache-bench-") as tmp:
        workdir = Path(tmp)
        bench = Bench(rcache, python, workdir, workers)
        for name in names:
            if name == "exec":
                exec_bench = ExecBench(rcache, python, workdir, workers, bench.trash)
                exec_result = exec_bench.run(site_packages(python), args.runs)
                continue
            if name == "remote":
                corpus = stdlib_corpus(python, workdir)
                print(f"corpus remote: {corpus.files} .py files, {corpus.bytes} bytes, "
                      f"copied from {corpus.origin}", file=sys.stderr)
                remote_bench = remote.RemoteBench(rcache, python, workdir, workers,
                                                  bench.trash)
                remote_result = remote_bench.run(corpus, args.runs)
                bench.trash.discard(corpus.tree)
                continue
            corpus = builders[name](python, workdir)
            print(f"corpus {name}: {corpus.files} .py files, {corpus.bytes} bytes, "
                  f"copied from {corpus.origin}", file=sys.stderr)
            results.append(bench.run(corpus, args.runs))
            bench.trash.discard(corpus.tree)

    for result in results:
        print(markdown_table(result, python, workers, args.runs))
        print()
    if exec_result:
        print(exec_markdown_table(exec_result, python))
        print()
    if remote_result:
        print(remote.markdown_table(remote_result, python, workers, args.runs))
        print()
    if args.json_out:
        document = json_document(results, exec_result, remote_result, python, rcache,
                                 workers, args.runs)
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")

    problems = [f"[{r.corpus.name}] {p}" for r in results for p in r.problems]
    if exec_result:
        problems += [f"[exec] {p}" for p in exec_result.problems]
    if remote_result:
        problems += [f"[remote] {p}" for p in remote_result.problems]
    if problems:
        print("rcache did not behave as specified:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as err:
        print(f"bench.py: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
