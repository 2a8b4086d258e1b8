"""Centrifugo as a server of the bench: built from its public Go module, configured as a user
would for Herald's job, started and stopped like the other servers.

The configuration (written out in docs/benchmarks.md, "Against Centrifugo"):

- ``uni_sse`` on: the same SSE load generator reads both servers; the
  connect request (the token, and on a reconnect each channel's position)
  travels in ``cf_connect``, as a browser's EventSource would send it;
- subscriptions are server-side, from the connection JWT's ``channels`` claim
  (HS256, the bench's secret): ``user:<id>``, ``doc:<resource>``,
  ``global:all``;
- publishing through the HTTP API (``/api/publish``, ``/api/batch``) with an
  API key;
- three namespaces, ``user``, ``doc`` and ``global``, each with history and
  recovery on (``force_recovery``) over a window like Herald's: 300 s and up to
  100,000 publications (Herald keeps 300 s and 100,000 events in all);
- the memory engine beside Herald's memory bus, or the Redis engine on the
  same redis-server as Herald's Redis bus; ``GOMAXPROCS`` 1 or 2 beside
  Herald's one worker or two.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import psutil

from bench.common import ROOT, SECRET, ServerProcess, drain_stdout, forget, spawn
from bench.loadgen.fast_publisher import CENTRIFUGO_API_KEY

#: The pinned release, built by scripts/install-centrifugo.sh (which has the same default).
VERSION = "v6.9.1"
INSTALL = ROOT / "scripts" / "install-centrifugo.sh"
#: History per channel: Herald's window (HERALD_REPLAY_WINDOW_SECONDS, HERALD_REPLAY_MAX_EVENTS).
HISTORY_SIZE = 100_000
HISTORY_TTL = "300s"
NAMESPACES = ("user", "doc", "global")
GLOBAL_CHANNEL = "global:all"


def binary() -> tuple[Path | None, str]:
    """The Centrifugo binary (built once and cached), or None and why it cannot be had."""
    env = dict(os.environ, HERALD_CENTRIFUGO_VERSION=VERSION)
    try:
        done = subprocess.run(
            [str(INSTALL)], env=env, capture_output=True, text=True, timeout=1800, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{INSTALL.name} failed: {exc}"
    if done.returncode == 3:
        return None, done.stderr.strip() or "Go is not installed"
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        return None, f"{INSTALL.name} exited {done.returncode}: {tail}"
    return Path(done.stdout.strip().splitlines()[-1]), ""


def channels(user: str, resource: str) -> list[str]:
    out = [f"user:{user}", GLOBAL_CHANNEL]
    if resource:
        out.append(resource)  # already ``doc:r7``
    return out


def token(user: str, resource: str = "", ttl_seconds: int = 6 * 3600) -> str:
    """A connection JWT whose ``channels`` claim subscribes the stream server-side."""
    now = int(time.time())
    claims = {"sub": user, "iat": now, "exp": now + ttl_seconds, "channels": channels(user, resource)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def config(
    port: int, engine: str, redis_url: str | None = None, prefix: str = "centrifugo"
) -> dict[str, Any]:
    namespace = {"history_size": HISTORY_SIZE, "history_ttl": HISTORY_TTL, "force_recovery": True}
    doc: dict[str, Any] = {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "http_api": {"key": CENTRIFUGO_API_KEY},
        "uni_sse": {"enabled": True},
        "health": {"enabled": True},
        "channel": {"namespaces": [{"name": name, **namespace} for name in NAMESPACES]},
    }
    if engine == "redis":
        if redis_url is None:
            raise ValueError("the Redis engine needs a redis_url")
        doc["engine"] = {"type": "redis", "redis": {"address": [redis_url], "prefix": prefix}}
    elif engine != "memory":
        raise ValueError(f"unknown engine {engine!r}")
    return doc


def start(
    path: Path,
    port: int,
    cores: int,
    engine: str,
    redis_url: str | None = None,
    prefix: str = "centrifugo",
    timeout: float = 30.0,
) -> ServerProcess:
    """Centrifugo on ``port`` with ``GOMAXPROCS=cores``, ready once ``/health`` answers."""
    conf = Path(tempfile.mkdtemp(prefix="bench-centrifugo-")) / "config.json"
    conf.write_text(json.dumps(config(port, engine, redis_url, prefix), indent=1))
    env = dict(os.environ, GOMAXPROCS=str(cores))
    proc, tail = spawn("centrifugo", [str(path), "--config", str(conf)], env)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                health = f"http://127.0.0.1:{port}/health"
                with urllib.request.urlopen(health, timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(
                f"centrifugo did not answer /health in {timeout:.0f} s: {' | '.join(tail[-5:])}"
            )
        if proc.poll() is not None:
            raise RuntimeError(f"centrifugo exited {proc.returncode}: {' | '.join(tail[-10:])}")
    except BaseException:
        forget(proc)
        raise
    drain_stdout(proc)
    return ServerProcess("centrifugo", proc, port, psutil.Process(proc.pid), tail)


def version(path: Path) -> str:
    try:
        out = subprocess.run([str(path), "version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return VERSION
    return out.stdout.strip() or VERSION
