"""What every part of the harness shares: the wire contract, tokens, servers as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import jwt
import psutil

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

STREAM_PATH = "/api/v1/events/stream"
PUBLISH_PATH = "/api/v1/events"
#: The secret every server of one run shares (HS256; loopback only).
SECRET = "bench-secret-" + "x" * 40
EVENT_NAME = "bench.tick-sent"
#: Each user has N / USER_GROUPS connections, so a user-scope event reaches 1 % of them.
USER_GROUPS = 100
#: The open-files limit the benchmark's processes raise their soft limit to.
NOFILE = 20_000

SERVERS = ("herald", "sse_starlette", "ceiling", "centrifugo")
#: What ``python -m bench`` runs when ``--servers`` is not given: Herald and its Python baselines.
DEFAULT_SERVERS = ("herald", "sse_starlette", "ceiling")
LABELS = {
    "herald": "Herald (herald serve)",
    "sse_starlette": "FastAPI + sse-starlette (uvicorn)",
    "ceiling": "raw asyncio Protocol (uvloop)",
    "herald_workers": "Herald, N workers (herald serve --workers N)",
    "centrifugo": "Centrifugo (uni_sse, HTTP API)",
}
#: ``bench.workers``'s variant: Herald with this many workers (the machine's cores by default).
HERALD_WORKERS = "herald_workers"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def stop_on_signals(seconds: float) -> None:
    """SIGTERM, and an alarm after ``seconds``, raise KeyboardInterrupt in the run, whose
    ``finally`` then stops everything it started (``signal.alarm(0)`` and :func:`stop_all`)."""

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(seconds))


T = TypeVar("T")


def run_guarded(run: Coroutine[Any, Any, T], *cleanups: Callable[[], None]) -> T | None:
    """``asyncio.run(run)``, then stop every process the bench started, whatever happened
    (the alarm's and SIGTERM's KeyboardInterrupt included: :func:`stop_on_signals`), and run
    ``cleanups``; None when it was interrupted."""
    try:
        return asyncio.run(run)
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc}); everything started was stopped")
        return None
    finally:
        signal.alarm(0)
        stop_all()
        for cleanup in cleanups:
            cleanup()


def save_run(
    doc: dict[str, object],
    out: Path,
    table: str,
    write_docs: Callable[[dict[str, object], Path], list[Path]] | None,
) -> None:
    """Write a run's JSON to ``out``, print its table, and render the docs unless ``write_docs``
    is None."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1))
    print()
    print(table)
    log(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    for path in write_docs(doc, out) if write_docs is not None else []:
        log(f"wrote {path.relative_to(ROOT)}")


def raise_nofile(limit: int = NOFILE) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(limit, hard) if hard != resource.RLIM_INFINITY else limit
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    """A loopback port nothing listens on now (for servers that cannot report the one they bound)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def mint(
    sub: str, *, publisher: bool = False, ttl_seconds: int = 6 * 3600, resources: list[str] | None = None
) -> str:
    """The same claims as ``herald.auth.minting.mint_token``: every Python server verifies them."""
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "iat": now,
        "exp": now + ttl_seconds,
        "resources": resources or [],
    }
    if publisher:
        claims["roles"] = ["publisher"]
    return jwt.encode(claims, SECRET, algorithm="HS256")


def user_of(index: int) -> str:
    return f"u{index % USER_GROUPS}"


def server_command(
    name: str,
    gc_log: str | None = None,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    port: int = 0,
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    env.update(
        {
            "HERALD_JWT_SECRET": SECRET,
            "HERALD_LOG_LEVEL": "warning",
            "BENCH_SECRET": SECRET,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = str(ROOT)
    if name in ("herald", HERALD_WORKERS):
        cmd = [str(VENV_BIN / "herald"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        # One load generator on one IP opens N streams for 100 users: the limits that
        # protect a production node (docs/operations.md, "Limits") would refuse it.
        env.update(
            {
                "HERALD_MAX_CONNECTIONS_PER_USER": "0",
                "HERALD_MAX_CLIENTS": "0",
                "HERALD_CONNECT_RATE_PER_USER": "0",
                "HERALD_CONNECT_RATE_PER_IP": "0",
                # One process: the per-worker comparison is bench.workers's.
                "HERALD_WORKERS": str(workers if name == HERALD_WORKERS else 1),
            }
        )
        watched = [sys.executable, "-m", "bench.gcwatch", "herald", *cmd[1:]]
        if name == HERALD_WORKERS:
            watched = cmd  # gcwatch would watch the supervisor, which serves nothing
    elif name == "sse_starlette":
        cmd = [sys.executable, "-m", "bench.baselines.sse_starlette_app", "--port", str(port)]
        watched = [sys.executable, "-m", "bench.gcwatch", *cmd[1:]]
    elif name == "ceiling":
        cmd = [sys.executable, "-m", "bench.baselines.raw_asyncio", "--port", str(port)]
        watched = [sys.executable, "-m", "bench.gcwatch", *cmd[1:]]
    else:
        raise ValueError(f"unknown server {name!r}")
    env.update(extra_env or {})
    if gc_log is None:
        return cmd, env
    env["BENCH_GC_LOG"] = gc_log
    return watched, env


def _child_setup() -> None:
    raise_nofile()


@dataclass
class ServerProcess:
    """A server under test, in its own process group, killed whatever happens."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    ps: psutil.Process
    stderr_tail: list[str] = field(default_factory=list)
    #: Where ``bench.gcwatch`` writes the server's collections when it exits.
    gc_log: str | None = None
    #: Count the server's child processes too (workers, their embedded Redis).
    tree: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def processes(self) -> list[psutil.Process]:
        if not self.tree:
            return [self.ps]
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return [self.ps]

    def rss(self) -> int:
        total = 0
        for ps in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += int(ps.memory_info().rss)
        return total

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(ps) for ps in self.processes())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        stop_group(self.proc)

    def collections(self) -> list[tuple[int, int, int, int]] | None:
        """(start ns, generation, duration ns, collected) of every collection, once stopped."""
        if self.gc_log is None:
            return None
        try:
            with open(self.gc_log) as f:
                events: list[tuple[int, int, int, int]] = [tuple(e) for e in json.load(f)["collections"]]
            os.unlink(self.gc_log)
        except (OSError, ValueError, KeyError):
            return None
        return events


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


#: Every server this process started and has not stopped: killed on exit whatever happens.
_RUNNING: list[subprocess.Popen[bytes]] = []


def stop_all() -> None:
    while _RUNNING:
        stop_group(_RUNNING.pop())


def cpu_seconds(ps: psutil.Process) -> float:
    """CPU time of every thread of ``ps``, in ns resolution from ``schedstat`` where the
    kernel has it (``cpu_times`` counts 10 ms ticks: too coarse for short stages)."""
    total = 0
    try:
        for task in os.listdir(f"/proc/{ps.pid}/task"):
            with open(f"/proc/{ps.pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        times = ps.cpu_times()
        return float(times.user + times.system)


def spawn(name: str, cmd: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], list[str]]:
    """Start ``cmd`` in its own process group, registered to be killed on the way out; its
    stderr's last lines are kept (for the report when it fails)."""
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup,  # only raises an rlimit: safe before exec
    )
    _RUNNING.append(proc)
    tail: list[str] = []

    def drain_stderr() -> None:
        assert proc.stderr is not None
        with proc.stderr:  # closed at the process's end, not left to the collector
            for raw in proc.stderr:
                tail.append(raw.decode(errors="replace").rstrip())
                if len(tail) > 50:
                    del tail[:10]

    threading.Thread(target=drain_stderr, daemon=True).start()
    return proc, tail


def drain_stdout(proc: subprocess.Popen[bytes]) -> None:
    def drain() -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for _ in proc.stdout:
                pass

    threading.Thread(target=drain, daemon=True).start()


def forget(proc: subprocess.Popen[bytes]) -> None:
    """Stop ``proc`` and drop it from the processes killed on exit."""
    stop_group(proc)
    with contextlib.suppress(ValueError):
        _RUNNING.remove(proc)


def start_server(
    name: str,
    timeout: float = 30.0,
    gcwatch: bool = True,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    port: int = 0,
) -> ServerProcess:
    """A Python server of the bench (Herald or a baseline), ready once it printed its
    ``herald_listening`` line; ``port`` 0 lets it choose (a restart passes the old one)."""
    gcwatch = gcwatch and name != HERALD_WORKERS
    gc_log = (
        f"{tempfile.gettempdir()}/bench-gc-{name}-{os.getpid()}-{time.monotonic_ns()}.json"
        if gcwatch
        else None
    )
    cmd, env = server_command(name, gc_log, workers, extra_env, port)
    proc, tail = spawn(name, cmd, env)
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    bound: int | None = None
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            with contextlib.suppress(ValueError):
                msg = json.loads(line)
                if isinstance(msg, dict) and msg.get("event") == "herald_listening":
                    bound = int(msg["port"])
                    break
        if bound is None:
            raise RuntimeError(f"{name} did not start: {' | '.join(tail[-10:])}")
    except BaseException:
        forget(proc)
        raise
    drain_stdout(proc)
    return ServerProcess(
        name, proc, bound, psutil.Process(proc.pid), tail, gc_log, tree=name == HERALD_WORKERS
    )


@contextlib.contextmanager
def running_server(name: str, gcwatch: bool = True, workers: int = 1) -> Iterator[ServerProcess]:
    server = start_server(name, gcwatch=gcwatch, workers=workers)
    try:
        yield server
    finally:
        forget(server.proc)


def listening_line(host: str, port: int) -> str:
    """The line every server prints on stdout when ready (Herald's format)."""
    return json.dumps({"event": "herald_listening", "host": host, "port": port})
