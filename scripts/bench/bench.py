#!/usr/bin/env python3
"""End-to-end benchmark: `rcache warm` against `python -m compileall`.

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
  all       both of the above, one table each

Every step runs --runs times; the table gives the median and the minimum wall
time (process start to exit) and the ratio of the medians to `compileall -j0
cold`. Below 1.0x means faster than that baseline.

Interpreters are resolved to their real binary (never a pyenv shim), and
children run without the variables that would change what compileall writes
or where (PYTHONDONTWRITEBYTECODE, PYTHONPYCACHEPREFIX, SOURCE_DATE_EPOCH, ...).

Usage:
  python3 scripts/bench/bench.py [--rcache PATH] [--python PY] [--runs N]
                                 [--corpus stdlib|packages|all]
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
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

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


def copy_sources(src: Path, dst: Path, skip_at_top: tuple[str, ...] = ()) -> None:
    """Copies `src` to `dst` without __pycache__ dirs (nor `skip_at_top`)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {"__pycache__"}
        if Path(directory) == src:
            skipped.update(skip_at_top)
        return skipped.intersection(names)

    shutil.copytree(src, dst, ignore=ignore)


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


def make_corpus(name: str, origin: Path, workdir: Path, skip_at_top=()) -> Corpus:
    tree = workdir / f"corpus-{name}"
    copy_sources(origin, tree, skip_at_top)
    corpus = Corpus(name=name, origin=str(origin), tree=tree)
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


def packages_corpus(python: Interpreter, workdir: Path) -> Corpus:
    venv = cached_venv(python)
    purelib = query_python(str(venv / "bin" / "python"), "sysconfig.get_paths()['purelib']")
    return make_corpus("packages", Path(purelib), workdir)


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


def timed_run(command: list[str], ok_codes: tuple[int, ...]) -> Timed:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=child_env())
    seconds = time.perf_counter() - start
    if done.returncode not in ok_codes:
        raise BenchError(
            f"exit {done.returncode} from: {' '.join(command)}\n"
            f"{done.stderr.strip()[-4000:]}"
        )
    return Timed(seconds, done.returncode, done.stdout, done.stderr)


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

    def __init__(self, rcache: Path, python: Interpreter, workdir: Path, workers: int):
        self.rcache = rcache
        self.python = python
        self.workdir = workdir
        self.workers = workers
        self.trash = Trash(workdir)

    def compileall(self, tree: Path, jobs: int) -> Timed:
        # compileall exits 1 when some file does not compile (the stdlib has
        # deliberately broken test data); that is part of the workload.
        return timed_run(
            [self.python.path, "-m", "compileall", "-q", f"-j{jobs}", str(tree)],
            ok_codes=(0, 1),
        )

    def rcache_run(self, store: Path, tree: Path, jobs: int,
                   subcommand: str = "warm") -> tuple[Timed, dict]:
        command = [
            str(self.rcache), "--store", str(store), "--python", self.python.path,
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
            copy_sources(tree, fresh)
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
                    subcommand: str = "warm", tree: Path | None = None):
        if "cold" in step and store.exists():
            raise BenchError(f"store {store} should not exist before a cold run")
        run, report = self.rcache_run(store, tree or result.corpus.tree, jobs, subcommand)
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
    return "\n".join(lines)


def json_document(results: list[CorpusResult], python: Interpreter, rcache: Path,
                  workers: int, runs: int) -> dict:
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
    }


# --------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark `rcache warm` against `python -m compileall`.")
    parser.add_argument("--rcache", type=Path, default=DEFAULT_RCACHE,
                        help="rcache binary (default: %(default)s)")
    parser.add_argument("--python",
                        help="interpreter to compile for (default: pyenv's 3.12, "
                             "else python3's real binary)")
    parser.add_argument("--runs", type=int, default=3,
                        help="runs of each step (default: %(default)s)")
    parser.add_argument("--corpus", choices=("stdlib", "packages", "all"),
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
    names = ("stdlib", "packages") if args.corpus == "all" else (args.corpus,)
    builders = {"stdlib": stdlib_corpus, "packages": packages_corpus}

    results = []
    with tempfile.TemporaryDirectory(prefix="rcache-bench-") as tmp:
        workdir = Path(tmp)
        bench = Bench(rcache, python, workdir, workers)
        for name in names:
            corpus = builders[name](python, workdir)
            print(f"corpus {name}: {corpus.files} .py files, {corpus.bytes} bytes, "
                  f"copied from {corpus.origin}", file=sys.stderr)
            results.append(bench.run(corpus, args.runs))
            bench.trash.discard(corpus.tree)

    for result in results:
        print(markdown_table(result, python, workers, args.runs))
        print()
    if args.json_out:
        document = json_document(results, python, rcache, workers, args.runs)
        args.json_out.write_text(json.dumps(document, indent=2) + "\n")

    problems = [f"[{r.corpus.name}] {p}" for r in results for p in r.problems]
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
