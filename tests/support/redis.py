"""Real ``redis-server`` processes for tests: a free loopback port, no persistence
unless a test asks for a dump, stopped afterwards.

A test that needs Redis and cannot start it fails (with the server's log);
it never skips. ``scripts/install-system-deps.sh`` installs the Debian
package ``redis-server``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.waiting import wait_until_sync

STARTUP_TIMEOUT = 10.0


def redis_server_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        raise RuntimeError("redis-server is not installed: run scripts/install-system-deps.sh")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One ``redis-server`` on 127.0.0.1; :meth:`stop` and :meth:`start` again keep the port.

    The working directory holds ``dump.rdb`` only when a test stops the
    server with ``save=True`` (a restart then loads it: the data survives);
    otherwise a restart comes back empty.
    """

    def __init__(self, port: int | None = None, *, appendonly: bool = False) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="herald-redis-"))
        self.process: subprocess.Popen[bytes] | None = None
        #: An append-only file (fsync every second): what Redis acknowledged survives
        #: a ``kill -9`` of the server (the kernel keeps what it was written).
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def client(self) -> redis.Redis:
        """A plain client; it fails at once rather than retry (redis-py retries by default)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, retry=Retry(NoBackoff(), 0))

    def start(self) -> RedisServer:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec",
                "--dir", str(self.dir),
                "--dbfilename", "dump.rdb",
                "--logfile", str(self.log_path),
                "--maxmemory-policy", "noeviction",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_until_sync(self._answers, timeout=STARTUP_TIMEOUT)
        except TimeoutError:
            self.kill()
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}") from None
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"redis-server exited: {self.log_path.read_text(errors='replace')}")
        with contextlib.suppress(redis.RedisError), self.client() as client:
            return bool(client.ping())
        return False

    def stop(self, *, save: bool = False) -> None:
        """Shut the server down; with ``save`` its data is dumped and the next start loads it."""
        if self.process is None:
            return
        if not save:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        with contextlib.suppress(redis.ConnectionError), self.client() as client:
            client.shutdown(save=save, nosave=not save)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None
        if not save:
            (self.dir / "dump.rdb").unlink(missing_ok=True)

    def wipe(self) -> None:
        """Delete the stopped server's data (dump and append-only files): the next start is empty."""
        assert self.process is None, "stop or kill the server first"
        (self.dir / "dump.rdb").unlink(missing_ok=True)
        shutil.rmtree(self.dir / "appendonlydir", ignore_errors=True)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open and nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One Redis for the session; tests keep apart by key prefix. Tests that stop
    or restart Redis start their own with :func:`running_redis`."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def three_redis_servers() -> Iterator[list[RedisServer]]:
    """Three Redis for the session, the shards of a sharded deployment; tests keep apart
    by key prefix."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(running_redis()) for _ in range(3)]
