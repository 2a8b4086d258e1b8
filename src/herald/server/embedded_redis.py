"""A private ``redis-server`` holding the shared log of one machine's workers.

With the memory bus and several workers, the log, the stream-token leases,
the per-user counts and the commands between workers must outlive any one
worker, so that a client resumes exactly on any of them and a worker's death
loses nothing (docs/architecture.md, D21). This server holds them: a Unix
socket in a directory only this user can enter, no TCP port, no
persistence (it dies with Herald, as the memory bus's log does),
``noeviction`` (a full log refuses publishes rather than drop leases).

It is started before the workers and stopped after them, and the kernel
stops it if the supervisor is killed outright (:mod:`herald.server.parent_death`).
If it dies meanwhile, the supervisor starts it again on the same socket
(:meth:`restart`): empty, so the workers see a new lifetime of their shard and
close the streams that followed it, which learn ``recovered: false`` on their
return (docs/architecture.md, D25).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from herald.server.parent_death import child_setup

STARTUP_TIMEOUT = 10.0


class EmbeddedRedisFailed(RuntimeError):
    pass


def find_redis_server(binary: str) -> str | None:
    """The path of ``binary`` (a name on PATH or a path), if it can be run."""
    if os.sep in binary:
        return binary if os.access(binary, os.X_OK) else None
    return shutil.which(binary)


class EmbeddedRedis:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="herald-log-"))  # mode 0700
        self.socket_path = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> str:
        """Start the server and wait until it answers; its URL."""
        try:
            self._launch()
        except EmbeddedRedisFailed:
            self.stop()
            raise
        return self.url

    def restart(self) -> None:
        """Start it again after it died, on the same socket (the workers reconnect there)."""
        dead, self.process = self.process, None
        if dead is not None and dead.poll() is None:
            dead.kill()
            dead.wait()
        self._launch()

    def exited(self) -> int | None:
        """Its exit code (negative: the signal) if it is no longer running."""
        return self.process.poll() if self.process is not None else None

    def _launch(self) -> None:
        log_file = self.dir / "redis.log"
        self.process = subprocess.Popen(  # noqa: S603 - the configured binary, fixed arguments
            [
                self.binary,
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--maxmemory-policy", "noeviction",
                "--dir", str(self.dir),
                "--logfile", str(log_file),
                "--daemonize", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C must not stop the log before the workers.
            start_new_session=True,
            preexec_fn=child_setup(),  # only a prctl: safe before exec
        )  # fmt: skip
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = log_file.read_text(errors="replace")[-2000:] if log_file.exists() else ""
                if self.process.poll() is None:
                    self.process.kill()
                    self.process.wait()
                raise EmbeddedRedisFailed(f"{self.binary} did not start: {tail.strip() or 'no log'}")
            time.sleep(0.02)

    def _answers(self) -> bool:
        """A PING over the socket, spoken by hand (only the Redis modules use redis-py)."""
        if not self.socket_path.exists():
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)
