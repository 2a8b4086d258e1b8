"""Start ``herald serve`` as a real process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from herald.auth.minting import mint_token

SECRET = "test-secret-0123456789-abcdefghijklmnopqrstuvwxyz"
STARTUP_TIMEOUT = 20.0


@dataclass
class GatewayProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    secret: str = SECRET
    env: dict[str, str] = field(default_factory=dict)
    #: The ``herald_listening`` line (with ``--workers N``: each worker's pid and own port).
    listening: dict[str, Any] = field(default_factory=dict)

    def token(
        self,
        sub: str,
        *,
        sid: str | None = None,
        resources: tuple[str, ...] | list[str] = (),
        publisher: bool = False,
        admin: bool = False,
        ttl: float = 3600,
        jti: str | None = None,
        now: float | None = None,
    ) -> str:
        return mint_token(
            self.secret,
            sub=sub,
            sid=sid,
            resources=resources,
            publisher=publisher,
            admin=admin,
            ttl_seconds=ttl,
            jti=jti,
            now=now,
        )

    @property
    def publisher_token(self) -> str:
        return self.token("publisher-service", publisher=True)

    def publish(self, event: str, scope: str, key: str | None, data: Mapping[str, Any], **extra: Any) -> str:
        """Publish through the HTTP API; returns the event's cursor."""
        body = {"event": event, "scope": scope, "key": key, "data": dict(data), **extra}
        response = httpx.post(
            f"{self.url}/api/v1/events",
            json=body,
            headers={"authorization": f"Bearer {self.publisher_token}"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        cursor: str = response.json()["id"]
        return cursor

    def logs(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    entries.append(orjson.loads(line))
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_gateway(
    env: Mapping[str, str] | None = None,
    *,
    port: int = 0,
    args: list[str] | None = None,
    host: str = "127.0.0.1",
    command: Callable[[list[str]], list[str]] = list,
) -> GatewayProcess:
    """A running gateway on ``host``; raises with its log if it does not come up.
    ``command``: how its command line is run (in a network namespace, for one)."""
    full_env = {
        **os.environ,
        "HERALD_JWT_SECRET": SECRET,
        "HERALD_LOG_LEVEL": "info",
        "HERALD_LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
        # One process, as the tests of one node expect; the worker tests ask for more.
        "HERALD_WORKERS": "1",
        **(env or {}),
    }
    log_file = tempfile.NamedTemporaryFile(prefix="herald-", suffix=".log", delete=False)  # noqa: SIM115
    argv = [sys.executable, "-m", "herald", "serve", "--host", host, "--port", str(port), *(args or [])]
    process = subprocess.Popen(
        command(argv),
        stdout=subprocess.PIPE,
        stderr=log_file,
        env=full_env,
    )
    log_file.close()
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.1)
        if ready:
            line = process.stdout.readline()
            if b"herald_listening" in line:
                break
        if process.poll() is not None:
            break
    else:
        process.kill()
    if b"herald_listening" not in line:
        process.kill()
        process.wait(5)
        process.stdout.close()
        raise RuntimeError(f"gateway did not start on {host}:\n{Path(log_file.name).read_text()}")
    info = orjson.loads(line)
    return GatewayProcess(
        url=f"http://{host}:{info['port']}",
        port=info["port"],
        process=process,
        log_path=Path(log_file.name),
        env=dict(env or {}),
        listening=info,
    )


@contextlib.contextmanager
def running_gateway(env: Mapping[str, str] | None = None, **kwargs: Any) -> Iterator[GatewayProcess]:
    gateway = start_gateway(env, **kwargs)
    try:
        yield gateway
    finally:
        gateway.stop()
