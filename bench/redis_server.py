"""A redis-server of the benchmark's own: a free loopback port, no persistence, noeviction.

Shared by every bench that puts a server on Redis (``bench.scaling``, the peer
suite's Redis engines), so its CPU can be read apart from the servers'.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from bench.common import cpu_seconds, free_port

HOST = "127.0.0.1"


class RedisServer:
    def __init__(self, *args: str, port: int | None = None) -> None:
        """``args``: more redis-server options (``--cluster-enabled yes`` …)."""
        self.dir = Path(tempfile.mkdtemp(prefix="bench-redis-"))
        self.port = port or free_port()
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (scripts/install-system-deps.sh installs it)")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--maxmemory-policy", "noeviction", "--dir", str(self.dir), *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        with self.client() as client:
            for _ in range(200):
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return self
                if self.proc.poll() is not None:
                    break  # it refused to start: no point in waiting
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def client(self) -> redis.Redis:
        # No retries: a server that is not up yet answers at the next poll.
        return redis.Redis(host=HOST, port=self.port, retry=Retry(NoBackoff(), 0))

    def cpu_seconds(self) -> float:
        if self.proc is None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            return cpu_seconds(psutil.Process(self.proc.pid))
        return 0.0

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
