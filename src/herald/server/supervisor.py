"""The supervisor of ``herald serve --workers N``: N worker processes on one port.

Each worker is a whole node (:mod:`herald.server.worker_main`): its own
event loop, connections and manager, on the shared port through
``SO_REUSEPORT``, so the kernel spreads new connections over the workers'
listening sockets by a hash of their addresses (no accept lock, no
thundering herd). The supervisor itself serves nothing:

- it reserves the port: a socket bound with ``SO_REUSEPORT`` that never
  listens, so port 0 becomes one real port for every worker, and the port
  stays Herald's while workers come and go (the kernel hands connections
  only to listening sockets);
- with the memory bus it starts the workers' shared log, a private
  redis-server (:mod:`herald.server.embedded_redis`), before them and
  stops it after them, and starts it again if it dies meanwhile (with the
  same growing delay as a worker that keeps dying);
- it restarts a worker that dies (at once after a worker that ran a while,
  with a growing delay while one keeps dying at start:
  :func:`herald.server.workers.restart_delay`);
- on SIGTERM or SIGINT it sends SIGTERM to every worker, which runs the
  usual shutdown steps (docs/architecture.md, D10), waits for them (the
  grace period plus a margin), kills what is left, then stops the log.

Workers write their logs straight to the supervisor's stderr, each line in
one write and carrying ``worker``; their stdout comes to the supervisor,
which reads each one's ``herald_listening`` line and prints its own once
all of them listen.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog

from herald.config import Settings
from herald.server.embedded_redis import EmbeddedRedis, EmbeddedRedisFailed
from herald.server.workers import (
    WorkerPlan,
    WorkersRefused,
    fast_exits_after,
    private_port,
    restart_delay,
    worker_settings,
)

log = structlog.get_logger("herald.server.supervisor")

#: How long a worker may take from its start to listening.
STARTUP_TIMEOUT = 60.0
#: Beyond the shutdown grace, the time workers get for their remaining shutdown steps.
STOP_MARGIN = 10.0
#: How often the supervisor looks whether the shared log is still running.
LOG_POLL_SECONDS = 0.2


def available_cpus() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``(host, port)`` with SO_REUSEPORT that never listens."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    id: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    fast_exits: int = 0
    private_port: int | None = None
    #: Resolved with the worker's first ``herald_listening`` line (``None``), or with its
    #: exit code if it exits before.
    first_ready: asyncio.Future[int | None] = field(default_factory=asyncio.Future)


class Supervisor:
    def __init__(
        self, settings: Settings, plan: WorkerPlan, *, on_ready: Callable[[str], None] | None
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.on_ready = on_ready
        self._workers: list[_Worker] = []
        self._worker_settings: Settings = settings
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal() -> None:
            # At once, not when stopping begins: a worker that Ctrl-C stopped meanwhile
            # (the terminal signals the whole process group) is not to be restarted.
            self._stopping = True
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        loop.add_signal_handler(signal.SIGUSR1, self._drain_workers)
        self._workers = [_Worker(i) for i in range(1, self.plan.workers + 1)]
        reserved = reserve_port(self.settings.host, self.settings.port)
        port = int(reserved.getsockname()[1])
        log_store: EmbeddedRedis | None = None
        try:
            shared_url: str | None = None
            if self.plan.embedded_log:
                log_store = EmbeddedRedis(self.settings.embedded_redis_server)
                shared_url = log_store.start()
                log.info("herald_shared_log_started", pid=log_store.pid, socket=str(log_store.socket_path))
            self._worker_settings = worker_settings(self.settings, port=port, shared_log_url=shared_url)
            log.info(
                "herald_workers_starting",
                workers=self.plan.workers,
                port=port,
                bus=self._worker_settings.bus,
                shared_log="embedded" if log_store is not None else self.settings.bus,
            )
            self._tasks = [loop.create_task(self._keep(worker)) for worker in self._workers]
            if log_store is not None:
                self._tasks.append(loop.create_task(self._keep_log(log_store)))
            failed = await self._first_ready(stop)
            if failed is not None:
                return failed
            if stop.is_set():
                return 0
            self._announce(port)
            await stop.wait()
            return 0
        finally:
            await self._stop_workers()
            if log_store is not None:
                log_store.stop()
                log.info("herald_shared_log_stopped")
            reserved.close()

    # --- starting

    async def _first_ready(self, stop: asyncio.Event) -> int | None:
        """Wait until every worker listened once; the exit code of one that failed first."""
        stopped = asyncio.ensure_future(stop.wait())
        pending: set[asyncio.Future[Any]] = {worker.first_ready for worker in self._workers}
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stopped}, timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    log.error("herald_workers_start_timeout", timeout_s=STARTUP_TIMEOUT)
                    return 1
                if stopped in done:
                    return None
                pending.discard(stopped)
                for future in done:
                    code = future.result()
                    if code is not None:
                        log.error("herald_worker_failed_to_start", returncode=code)
                        return code or 1
            return None
        finally:
            stopped.cancel()

    def _announce(self, port: int) -> None:
        host = self.settings.host
        line = {
            "event": "herald_listening",
            "host": host,
            "port": port,
            "workers": [
                {
                    "worker": w.id,
                    "pid": w.process.pid if w.process is not None else None,
                    "private_port": w.private_port,
                }
                for w in self._workers
            ],
        }
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
        sys.stdout.flush()
        log.info("herald_listening", url=f"http://{host}:{port}", workers=len(self._workers))
        if self.on_ready is not None:
            self.on_ready(f"http://{host}:{port}")

    async def _keep(self, worker: _Worker) -> None:
        """Run one worker for as long as the supervisor runs, restarting it when it dies."""
        while not self._stopping:
            process = await self._spawn(worker)
            listening = await self._wait_listening(worker, process)
            if listening:
                log.info(
                    "herald_worker_ready", worker=worker.id, pid=process.pid, private_port=worker.private_port
                )
                if not worker.first_ready.done():
                    worker.first_ready.set_result(None)
            returncode = await process.wait()
            if self._stopping:
                return
            if not worker.first_ready.done():
                # It never served: a configuration or backend problem, not a crash to retry.
                worker.first_ready.set_result(returncode)
                return
            ran = time.monotonic() - worker.started_at
            worker.fast_exits = fast_exits_after(worker.fast_exits, ran)
            delay = restart_delay(worker.fast_exits)
            log.warning(
                "herald_worker_exited",
                worker=worker.id,
                pid=process.pid,
                returncode=returncode,
                signal=_signal_of(returncode),
                ran_s=round(ran, 3),
                restart_in_s=delay,
            )
            if delay:
                await asyncio.sleep(delay)

    async def _keep_log(self, store: EmbeddedRedis) -> None:
        """Start the shared log again whenever it dies. It comes back empty: the workers see
        a new lifetime of their shard, close the streams that followed it (they learn
        ``recovered: false`` when they return), and their leases are renewed into it;
        meanwhile publishing answers 503 and the workers' readiness says the bus is down."""
        fast_exits = 0
        started = time.monotonic()
        while not self._stopping:
            returncode = store.exited()
            if returncode is None:
                await asyncio.sleep(LOG_POLL_SECONDS)
                continue
            fast_exits = fast_exits_after(fast_exits, time.monotonic() - started)
            delay = restart_delay(fast_exits)
            log.warning(
                "herald_shared_log_exited",
                pid=store.pid,
                returncode=returncode,
                signal=_signal_of(returncode),
                restart_in_s=delay,
            )
            if delay:
                await asyncio.sleep(delay)
            if self._stopping:
                return
            started = time.monotonic()
            try:
                await asyncio.to_thread(store.restart)
            except EmbeddedRedisFailed as exc:
                log.error("herald_shared_log_restart_failed", error=str(exc))
                continue
            log.info("herald_shared_log_restarted", pid=store.pid)

    async def _spawn(self, worker: _Worker) -> asyncio.subprocess.Process:
        worker.started_at = time.monotonic()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "herald.server.worker_main",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        worker.process = process
        assert process.stdin is not None
        brief = {
            "settings": self._worker_settings.model_dump(mode="json"),
            "worker": worker.id,
            "parent": os.getpid(),
            "private_port": private_port(self.settings.worker_port_base, worker.id),
        }
        process.stdin.write(orjson.dumps(brief) + b"\n")
        with contextlib.suppress(ConnectionError):
            await process.stdin.drain()
        process.stdin.close()
        return process

    async def _wait_listening(self, worker: _Worker, process: asyncio.subprocess.Process) -> bool:
        """Read the worker's stdout until its ``herald_listening`` line; whether it came.
        Later lines are passed on to the supervisor's stdout."""
        stdout = process.stdout
        assert stdout is not None
        listening = False
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT):
                while line := await stdout.readline():
                    info = _json_line(line)
                    if info is not None and info.get("event") == "herald_listening":
                        worker.private_port = info.get("private_port")
                        listening = True
                        break
                    sys.stdout.buffer.write(line)
        except TimeoutError:
            log.error("herald_worker_start_timeout", worker=worker.id, pid=process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        if listening:
            task = asyncio.get_running_loop().create_task(_pass_on(stdout))
            self._tasks.append(task)
        return listening

    # --- stopping

    def _drain_workers(self) -> None:
        """SIGUSR1: every worker drains its own streams (each holds a share of the node's)."""
        for worker in self._workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGUSR1)
        log.info("herald_workers_draining", workers=len(self._workers))

    async def _stop_workers(self) -> None:
        self._stopping = True
        running = [w.process for w in self._workers if w.process is not None and w.process.returncode is None]
        log.info("herald_workers_stopping", workers=len(running))
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        bound = self.settings.shutdown_grace_seconds + STOP_MARGIN
        killed = 0
        if running:
            _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running], timeout=bound)
            for process in running:
                if process.returncode is None:
                    killed += 1
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            if late:
                await asyncio.wait(late, timeout=5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("herald_workers_stopped", killed=killed)


def _signal_of(returncode: int) -> str | None:
    """The signal that ended a process (a negative return code), by name."""
    return signal.Signals(-returncode).name if returncode < 0 else None


def _json_line(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b"{"):
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


async def _pass_on(stdout: asyncio.StreamReader) -> None:
    while line := await stdout.readline():
        sys.stdout.buffer.write(line)
        sys.stdout.flush()


def run_workers(
    settings: Settings, plan: WorkerPlan, *, on_ready: Callable[[str], None] | None = None
) -> int:
    """Run the supervisor until it is stopped; the process's exit code."""
    try:
        return asyncio.run(Supervisor(settings, plan, on_ready=on_ready).run())
    except EmbeddedRedisFailed as exc:
        print(f"herald: the workers' shared log did not start: {exc}", file=sys.stderr)
        return 1
    except (OSError, WorkersRefused) as exc:
        print(f"herald: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, WorkersRefused) else 1
