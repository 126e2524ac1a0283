"""The `remote` corpus of bench.py: materializing a fresh checkout from a
warm remote cache (issue 8), against `python -m compileall -j0` cold.

Each run starts its own servers on loopback, each with nothing in it: nginx
with WebDAV PUT (`/usr/sbin/nginx`, Debian's nginx-light) and redis-server
(`--save "" --appendonly no`). On a source-only copy of the standard library:

  compileall -j0 cold        the baseline, as in the other corpora
  rcache warm cold, uploading to nginx
                             `rcache --store A --remote http://... warm TREE`
                             into an empty store A: compiles everything and
                             uploads every object (not a goal; what the first
                             machine pays)
  rcache materialize, empty store, nginx remote
                             `rcache --store B --remote http://... materialize
                             FRESH`: a new copy of the tree (new files, no
                             pycs), an empty store B, so every object comes
                             from nginx. The goal: at least 5x faster than
                             compileall -j0 cold (issue 8, stated for 3.12)
  rcache warm cold, uploading to redis
  rcache materialize, empty store, redis remote
                             the same two with a redis:// remote (stores C, D)
  rcache materialize, warm local store
                             store A, another fresh copy: no remote involved,
                             what the remote costs over a local store

The materializes from a remote must compile nothing, start no worker, see no
remote error, take every hit from the remote and write a pyc for every file
that compiles. The HTTP requests rcache counts (`remote.requests`) must equal
the lines nginx's access log gained during that step, and every object
uploaded must be on the server (a file under www/, a redis key).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import bench

NGINX = "/usr/sbin/nginx"
REDIS_SERVER = "/usr/bin/redis-server"
SERVER_START_TIMEOUT = 10.0  # seconds a server may take to accept connections
SPEED_UP_GOAL = 5.0  # materialize from a warm remote vs compileall -j0 cold

WARM_NGINX = "rcache warm cold, uploading to nginx"
FROM_NGINX = "rcache materialize, empty store, nginx remote"
WARM_REDIS = "rcache warm cold, uploading to redis"
FROM_REDIS = "rcache materialize, empty store, redis remote"
FROM_LOCAL = "rcache materialize, warm local store"
STEP_ORDER = (bench.BASELINE, WARM_NGINX, FROM_NGINX, WARM_REDIS, FROM_REDIS,
              FROM_LOCAL)
GOAL_STEPS = (FROM_NGINX, FROM_REDIS)

NGINX_CONF = """\
user root;
daemon off;
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{}}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/body;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
        location /cache/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            client_max_body_size 64m;
        }}
    }}
}}
"""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(process: subprocess.Popen, port: int, name: str) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise bench.BenchError(f"{name} exited with {process.returncode} at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise bench.BenchError(f"{name} does not accept connections on port {port} "
                           f"after {SERVER_START_TIMEOUT:.0f} s")


class Server:
    """A server process of this benchmark, stopped by `stop` (also on errors)."""

    name = "server"

    def __init__(self, command: list[str], port: int, logs: list[Path]):
        with open(logs[0], "wb") as output:
            self.process = subprocess.Popen(command, stdout=output,
                                            stderr=subprocess.STDOUT,
                                            env=bench.child_env())
        try:
            wait_until_listening(self.process, port, self.name)
        except bench.BenchError as err:
            self.stop()
            said = "".join(log.read_text(errors="replace")[-2000:]
                           for log in logs if log.exists())
            raise bench.BenchError(f"{err}: {shlex.join(command)}\n{said}") from err
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Nginx(Server):
    """nginx serving WebDAV PUT/GET under /cache/ from a fresh www dir."""

    name = "nginx"

    def __init__(self, directory: Path):
        self.dir = directory
        (directory / "www" / "cache").mkdir(parents=True)
        port = free_port()
        conf = directory / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=directory, port=port))
        self.url = f"http://127.0.0.1:{port}/cache"
        self.access_log = directory / "access.log"
        # -e: never open the packaged error log, even before reading the config.
        super().__init__([NGINX, "-c", str(conf), "-p", str(directory),
                          "-e", str(directory / "error.log")],
                         port, [directory / "nginx.out", directory / "error.log"])

    def requests_logged(self) -> int:
        """Lines in the access log so far: one per request answered."""
        if not self.access_log.exists():
            return 0
        with open(self.access_log, "rb") as log:
            return sum(1 for _ in log)

    def objects(self) -> int:
        return sum(len(names) for _, _, names in os.walk(self.dir / "www" / "cache"))


class Redis(Server):
    """redis-server keeping everything in memory."""

    name = "redis-server"

    def __init__(self, directory: Path):
        directory.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        super().__init__([REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                          "--save", "", "--appendonly", "no", "--dir", str(directory)],
                         self.port, [directory / "redis.out"])

    def objects(self) -> int:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "DBSIZE"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise bench.BenchError(f"redis-cli DBSIZE failed: {done.stderr.strip()}")
        return int(done.stdout.strip())


@dataclass
class RemoteResult(bench.CorpusResult):
    # Per run, for the nginx materialize: requests rcache counted, lines the
    # access log gained. Per run and remote step: rcache's `remote` report.
    http_requests: list[tuple[int, int]] = field(default_factory=list)
    remote_reports: dict[str, list[dict]] = field(default_factory=dict)


class RemoteBench(bench.Bench):
    """Runs the remote corpus on one copy of the standard library."""

    def remote_step(self, result: RemoteResult, step: str, store: Path, url: str,
                    subcommand: str, tree: Path) -> dict:
        """Runs one rcache command with `--remote url` and checks its reports."""
        self.rcache_step(result, step, store, self.workers, subcommand, tree=tree,
                         remote=url)
        report = result.rcache_reports[step]
        remote = report.get("remote")
        if not isinstance(remote, dict):
            result.problem(f"{step}: --json lacks the remote report")
            return report
        result.remote_reports.setdefault(step, []).append(remote)
        if remote.get("errors") != 0 or remote.get("skipped"):
            result.problem(f"{step}: remote errors={remote.get('errors')}, "
                           f"skipped={remote.get('skipped')}")
        return report

    @staticmethod
    def check_from_remote(result: RemoteResult, step: str, report: dict) -> None:
        """A materialize into an empty store: every hit must be the remote's."""
        if report.get("from_remote") != report.get("hits"):
            result.problem(f"{step}: from_remote={report.get('from_remote')}, "
                           f"hits={report.get('hits')}: expected every hit from "
                           "the remote")

    @staticmethod
    def check_uploaded(result: RemoteResult, step: str, report: dict,
                       on_server: int) -> None:
        uploaded = report.get("remote", {}).get("uploaded")
        if not uploaded or uploaded != on_server:
            result.problem(f"{step}: uploaded={uploaded}, but the server holds "
                           f"{on_server} objects")

    def fresh_copy(self, tree: Path, name: str) -> Path:
        fresh = self.workdir / name
        bench.copy_sources(tree, fresh)
        return fresh

    def one_run(self, result: RemoteResult, index: int) -> None:
        tree = result.corpus.tree
        self.trash.remove_pycache(tree)
        cold = self.compileall(tree, jobs=0)
        result.record(bench.BASELINE, cold.seconds)
        result.compileall_failures = cold.stdout.count("*** Error compiling")
        self.trash.remove_pycache(tree)

        stores = {name: self.workdir / f"remote-store-{name}-{index}.sqlite"
                  for name in "ABCD"}
        fresh = [self.fresh_copy(tree, f"remote-fresh-{index}-{n}") for n in range(3)]
        servers: list[Server] = []
        try:
            nginx = Nginx(self.workdir / f"nginx-{index}")
            servers.append(nginx)
            report = self.remote_step(result, WARM_NGINX, stores["A"], nginx.url,
                                      "warm", tree)
            self.check_uploaded(result, WARM_NGINX, report, nginx.objects())
            before = nginx.requests_logged()
            report = self.remote_step(result, FROM_NGINX, stores["B"], nginx.url,
                                      "materialize", fresh[0])
            logged = nginx.requests_logged() - before
            result.http_requests.append((report.get("remote", {}).get("requests"),
                                         logged))
            self.check_from_remote(result, FROM_NGINX, report)

            redis = Redis(self.workdir / f"redis-{index}")
            servers.append(redis)
            report = self.remote_step(result, WARM_REDIS, stores["C"], redis.url,
                                      "warm", tree)
            self.check_uploaded(result, WARM_REDIS, report, redis.objects())
            report = self.remote_step(result, FROM_REDIS, stores["D"], redis.url,
                                      "materialize", fresh[1])
            self.check_from_remote(result, FROM_REDIS, report)
        finally:
            for server in servers:
                server.stop()
        # No server runs now: a local store's speed alone, for comparison.
        self.rcache_step(result, FROM_LOCAL, stores["A"], self.workers, "materialize",
                         tree=fresh[2])

        self.trash.remove_pycache(tree)
        for path in fresh:
            self.trash.discard(path)
        for store in stores.values():
            self.trash.remove_store(store)

    def run(self, corpus: bench.Corpus, runs: int) -> RemoteResult:
        for program in (NGINX, REDIS_SERVER):
            if not os.access(program, os.X_OK):
                raise bench.BenchError(f"{program} not found: the remote corpus needs "
                                       "Debian's nginx-light and redis-server")
        if shutil.which("redis-cli") is None:
            raise bench.BenchError("redis-cli not found (Debian's redis-tools)")
        result = RemoteResult(corpus)
        for index in range(runs):
            print(f"  [remote] run {index + 1}/{runs}", file=sys.stderr)
            self.one_run(result, index)
        self.check(result)
        return result

    @staticmethod
    def check(result: RemoteResult) -> None:
        for step, report in result.rcache_reports.items():
            if report.get("failed") != result.compileall_failures:
                result.problem(f"{step}: failed={report.get('failed')}, but compileall "
                               f"could not compile {result.compileall_failures} files")
        for run, (counted, logged) in enumerate(result.http_requests, start=1):
            if counted != logged:
                result.problem(f"{FROM_NGINX}, run {run}: rcache counted {counted} "
                               f"requests, nginx logged {logged}")
        for step, (ratio, ok) in speed_ups(result).items():
            if not ok:
                result.problem(f"{step}: {ratio:.1f}x faster than {bench.BASELINE}, "
                               f"goal at least {SPEED_UP_GOAL:.0f}x")


def speed_ups(result: RemoteResult) -> dict[str, tuple[float, bool]]:
    """Median of compileall -j0 cold over the median of each goal step."""
    baseline = statistics.median(result.seconds[bench.BASELINE])
    figures = {}
    for step in GOAL_STEPS:
        speed_up = baseline / statistics.median(result.seconds[step])
        figures[step] = (speed_up, speed_up >= SPEED_UP_GOAL)
    return figures


def markdown_table(result: RemoteResult, python: bench.Interpreter, workers: int,
                   runs: int) -> str:
    corpus = result.corpus
    baseline = statistics.median(result.seconds[bench.BASELINE])
    lines = [
        f"### Remote caches: corpus `{corpus.name}`, {corpus.files} .py files, "
        f"{corpus.bytes / 1e6:.1f} MB of source",
        "",
        f"CPython {python.version_str} (`{python.path}`), {workers} CPUs "
        f"(`-j {workers}` / `-j0`), {runs} runs, wall seconds; nginx and redis on "
        "loopback.",
        "",
        f"| step | median s | min s | ratio vs `{bench.BASELINE}` |",
        "| --- | ---: | ---: | ---: |",
    ]
    for step in STEP_ORDER:
        stats = bench.summary(result.seconds[step])
        lines.append(f"| {step} | {stats['median']:.3f} | {stats['min']:.3f} | "
                     f"{stats['median'] / baseline:.2f}x |")
    lines.append("")
    for step, (speed_up, ok) in speed_ups(result).items():
        lines.append(f"Goal `{step}` at least {SPEED_UP_GOAL:.0f}x faster than "
                     f"`{bench.BASELINE}`: {speed_up:.1f}x, {bench.met(ok)}.")
    requests = ", ".join(f"{counted} / {logged}"
                         for counted, logged in result.http_requests)
    lines.append(f"HTTP requests of `{FROM_NGINX}` per run, rcache / nginx access "
                 f"log: {requests}.")
    for step in (FROM_NGINX, FROM_REDIS, WARM_NGINX, WARM_REDIS):
        remote = result.remote_reports.get(step, [{}])[-1]
        report = result.rcache_reports.get(step, {})
        written = (f"{report['written']} pycs written, " if "written" in report
                   else "")
        lines.append(
            f"`{step}` (last run): {remote.get('requests')} requests, "
            f"{remote.get('hits')} remote hits, {remote.get('misses')} misses, "
            f"{remote.get('uploaded')} uploaded, "
            f"{remote.get('bytes_down', 0) / 1e6:.1f} MB down, "
            f"{remote.get('bytes_up', 0) / 1e6:.1f} MB up; "
            f"{report.get('from_remote')} files from the remote, "
            f"{report.get('compiled')} compiled, {written}{report.get('failed')} failed.")
    lines.append(f"compileall could not compile {result.compileall_failures} files.")
    return "\n".join(lines)


def json_entry(result: RemoteResult) -> dict:
    return {
        "name": "remote",
        "origin": result.corpus.origin,
        "files": result.corpus.files,
        "bytes": result.corpus.bytes,
        "steps": {step: bench.summary(result.seconds[step]) for step in STEP_ORDER},
        "goal_speed_up_vs_baseline": SPEED_UP_GOAL,
        "speed_ups": {step: {"speed_up": speed_up, "met": ok}
                      for step, (speed_up, ok) in speed_ups(result).items()},
        "http_requests_rcache_vs_access_log": result.http_requests,
        "remote_reports": result.remote_reports,
        "rcache_reports": result.rcache_reports,
        "compileall_failures": result.compileall_failures,
        "problems": result.problems,
    }
