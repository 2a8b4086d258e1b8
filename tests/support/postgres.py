"""A real PostgreSQL server for tests: ``initdb`` into a temporary directory, a free loopback port.

The binaries come from Debian's ``postgresql`` package
(``scripts/install-system-deps.sh``). PostgreSQL refuses to run as root, and
the tests run as root in CI: then every server command runs as the
``postgres`` system user the package creates (``runuser``). A test that needs
PostgreSQL and cannot start it fails with the server's log; it never skips.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.redis import free_port

USER = "herald"


def postgres_bin() -> Path:
    """The newest installed server's ``bin`` directory."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/install-system-deps.sh")
    return Path(initdb).resolve().parent


class PostgresServer:
    def __init__(self, *, synchronous_commit: bool = False) -> None:
        #: On, a commit the client saw survives a ``kill -9`` of the server.
        self.synchronous_commit = synchronous_commit
        self.port = free_port()
        #: Where it listens.
        self.address = "127.0.0.1"
        self.dir = Path(tempfile.mkdtemp(prefix="herald-pg-"))
        self.data = self.dir / "data"
        self.running = False
        self._as: list[str] = []
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(self.dir, account.pw_uid, account.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"postgresql://{USER}@{self.address}:{self.port}/postgres"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    def _run(self, *command: str, timeout: float = 60) -> None:
        try:
            subprocess.run([*self._as, *command], check=True, capture_output=True, timeout=timeout)
        except subprocess.CalledProcessError as exc:
            log = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            raise RuntimeError(
                f"{command[0]} failed: {exc.stderr.decode(errors='replace')}\n{log[-4000:]}"
            ) from None

    def start(self) -> PostgresServer:
        binary = postgres_bin()
        if not self.data.exists():
            self._run(str(binary / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                      "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip
            self._initialized()
        options = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={self.address} -c fsync=off "
            f"-c synchronous_commit={'on' if self.synchronous_commit else 'off'} "
            "-c full_page_writes=off -c max_connections=100"
        )
        self._run(str(binary / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log_path),
                  "-w", "-t", "30", "start")  # fmt: skip
        self.running = True
        return self

    def _initialized(self) -> None:
        """A fresh data directory was made (a namespace's server trusts its network here)."""

    def stop(self) -> None:
        if self.running:
            self._run(str(postgres_bin() / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False

    def kill(self, timeout: float = 30.0) -> None:
        """``kill -9`` of the postmaster; returns once its backends have gone too (they notice
        the postmaster's death), so :meth:`start` can run again on the same data."""
        if not self.running:
            return
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        # The postmaster is not ours to reap: wait until whoever adopted it has (a zombie
        # still holds its pid, and the next postmaster refuses a lock file naming a live pid).
        while _cluster_processes(self.data) or Path(f"/proc/{pid}").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL processes of {self.data} outlived the postmaster")
            time.sleep(0.05)
        self.running = False

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _cluster_processes(data: Path) -> list[int]:
    """Processes that still hold ``data`` as their working directory (the server's own)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "cwd") == str(data):
                    found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session; tests keep apart by table name."""
    with running_postgres() as server:
        yield server
