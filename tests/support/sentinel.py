"""A Redis primary, its replica and Redis Sentinels, all real processes on loopback ports.

Sentinel mode is built into ``redis-server`` (``redis-server <conf> --sentinel``, what
Debian's ``redis-sentinel`` package runs), so the package ``redis-server`` that
``scripts/install-system-deps.sh`` installs is all it takes. The Sentinels are
configured to fail over quickly (``down_after_ms``): a test kills the primary with
SIGKILL and waits for the promotion. Everything is stopped and deleted afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.support.redis import RedisServer, free_port, redis_server_binary
from tests.support.waiting import wait_until_sync

SERVICE = "herald"
STARTUP_TIMEOUT = 15.0


class SentinelProcess:
    def __init__(
        self, primary_port: int, *, quorum: int, down_after_ms: int, failover_timeout_ms: int
    ) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="herald-sentinel-"))
        # Sentinel rewrites its configuration file (what it learnt): it must be its own.
        self.conf = self.dir / "sentinel.conf"
        self.conf.write_text(
            "\n".join(
                [
                    f"port {self.port}",
                    "bind 127.0.0.1",
                    f"dir {self.dir}",
                    f"logfile {self.dir / 'sentinel.log'}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {primary_port} {quorum}",
                    f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}",
                    f"sentinel failover-timeout {SERVICE} {failover_timeout_ms}",
                    f"sentinel parallel-syncs {SERVICE} 1",
                    "",
                ]
            )
        )
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            socket_timeout=2,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
        )

    def start(self) -> SentinelProcess:
        self.process = subprocess.Popen(
            [redis_server_binary(), str(self.conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        return self

    def master(self) -> dict[str, Any]:
        """``SENTINEL MASTER``: what this Sentinel knows of the service."""
        with self.client() as client:
            state: dict[str, Any] = client.sentinel_master(SERVICE)
            return state

    def primary_port(self) -> int | None:
        with contextlib.suppress(redis.RedisError), self.client() as client:
            answer = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            if answer:
                return int(answer[1])
        return None

    def log(self) -> str:
        path = self.dir / "sentinel.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelGroup:
    """``primary`` (replicated to each of ``replicas``) watched by ``sentinels``; :attr:`url`
    is what Herald is given (``redis+sentinel://…/herald``)."""

    def __init__(
        self,
        sentinels: int = 3,
        *,
        replicas: int = 1,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.primary = RedisServer()
        self.replicas = [RedisServer() for _ in range(replicas)]
        self.sentinels = [
            SentinelProcess(
                self.primary.port,
                quorum=sentinels // 2 + 1,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def start(self) -> SentinelGroup:
        self.primary.start()
        for replica in self.replicas:
            replica.start()
            with replica.client() as client:
                client.execute_command("REPLICAOF", "127.0.0.1", str(self.primary.port))
        wait_until_sync(self._replicas_linked, timeout=STARTUP_TIMEOUT)
        for sentinel in self.sentinels:
            sentinel.start()
        try:
            # Each Sentinel must know the replica (from the primary's INFO) and the other
            # Sentinels (their hellos, every 2 s) before a failover can be agreed on.
            wait_until_sync(self._sentinels_ready, timeout=STARTUP_TIMEOUT, interval=0.1)
        except TimeoutError:
            logs = "\n".join(s.log()[-2000:] for s in self.sentinels)
            raise RuntimeError(f"the Sentinels did not find each other and the replica:\n{logs}") from None
        return self

    def _replicas_linked(self) -> bool:
        for replica in self.replicas:
            with replica.client() as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            try:
                state = sentinel.master()
            except redis.RedisError:
                return False
            if int(state.get("num-slaves", 0)) < len(self.replicas):
                return False
            if int(state.get("num-other-sentinels", 0)) < len(self.sentinels) - 1:
                return False
        return True

    def kill_primary(self) -> None:
        """SIGKILL, as a crash: what the replica had not received is gone."""
        self.primary.kill()

    def cut_replicas(self) -> None:
        """Make every replica fall behind, as a slow link would: freeze it (SIGSTOP, so it
        cannot reconnect) and close its link on the primary. What the primary takes from
        now on stays in its backlog; a kill -9 of the primary before the replica is resumed
        loses it. (A frozen replica alone loses nothing: what the primary sent waits in the
        replica's socket buffer and is read when it wakes.)"""
        for replica in self.replicas:
            replica.pause()
        with self.primary.client() as client:
            client.execute_command("CLIENT", "KILL", "TYPE", "replica")

    def resume_replicas(self) -> None:
        for replica in self.replicas:
            replica.resume()

    @property
    def replica(self) -> RedisServer:
        """The replica the Sentinels promoted (the first, before a failover)."""
        named = {s.primary_port() for s in self.sentinels}
        return next((r for r in self.replicas if r.port in named), self.replicas[0])

    def promoted(self) -> bool:
        """Whether every Sentinel names the same replica as the primary, and it accepts writes."""
        named = {s.primary_port() for s in self.sentinels}
        if len(named) != 1 or named == {self.primary.port}:
            return False
        replica = next((r for r in self.replicas if r.port in named), None)
        if replica is None:
            return False
        with contextlib.suppress(redis.RedisError), replica.client() as client:
            return client.info("replication").get("role") == "master"
        return False

    def wait_promoted(self, timeout: float = 30.0) -> float:
        """Seconds until the replica was promoted (polled every 20 ms)."""
        started = time.monotonic()
        try:
            wait_until_sync(self.promoted, timeout=timeout, interval=0.02)
        except TimeoutError:
            logs = "\n".join(s.log()[-3000:] for s in self.sentinels)
            raise RuntimeError(f"no failover within {timeout} s:\n{logs}") from None
        return time.monotonic() - started

    def logs(self, tail: int = 4000) -> str:
        """The end of each Sentinel's log: what it saw and decided."""
        return "\n".join(f"--- sentinel {s.port}\n{s.log()[-tail:]}" for s in self.sentinels)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for replica in self.replicas:
            replica.close()
        self.primary.close()


@contextlib.contextmanager
def running_sentinel_group(sentinels: int = 3, **options: int) -> Iterator[SentinelGroup]:
    """A started :class:`SentinelGroup`; every process stopped and its files deleted after."""
    group = SentinelGroup(sentinels, **options)
    try:
        yield group.start()
    finally:
        group.close()
