"""Herald mounted in another FastAPI application, under real uvicorn: the stream
through ASGI, publishing from the application's own code in-process, a Python
function as the resource authorizer, and a shutdown that does not hang."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from herald import __version__
from herald.auth.minting import mint_token
from tests.support.api import ids
from tests.support.gateway import SECRET
from tests.support.redis import free_port
from tests.support.sse import StreamRefused, open_stream
from tests.support.waiting import wait_until_sync

ROOT = Path(__file__).resolve().parents[2]
HERALD = "/herald"
STREAM = f"{HERALD}/api/v1/events/stream"
GRACE = 2


@dataclass
class Uvicorn:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/orders/42", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def shop() -> Iterator[Uvicorn]:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="herald-uvicorn-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "uvicorn", "tests.support.embedded_app:app",
                "--host", "127.0.0.1", "--port", str(port),
                "--timeout-graceful-shutdown", str(GRACE), "--log-level", "warning",
            ],
            cwd=ROOT,
            env={**os.environ, "HERALD_JWT_SECRET": SECRET, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Uvicorn(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until_sync(lambda: process.poll() is not None or _answers(server.url), timeout=20)
        assert process.poll() is None, log.read_text()
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
        log.unlink(missing_ok=True)


def token(user: str) -> str:
    return mint_token(SECRET, sub=user)


async def test_an_application_serves_herald_and_publishes_in_process(shop: Uvicorn) -> None:
    async with (
        open_stream(shop.url, token=token("alice"), subscribe="order:42", path=STREAM) as stream,
        httpx.AsyncClient(base_url=shop.url) as client,
    ):
        hello = await stream.next()
        assert hello.json()["subscriptions"] == ["order:42"]
        assert hello.json()["server_version"] == __version__
        shipped = (await client.post("/orders/42/ship")).json()["event_id"]
        await client.post("/orders/43/ship")  # bob's order: not alice's to see
        again = (await client.post("/orders/42/ship")).json()["event_id"]
        events = await stream.take(2)
        assert ids(events) == [shipped, again]
        assert events[0].event == "order.shipped"
        assert events[0].json() == {"order_id": "42", "carrier": "owl", "_scope": "order", "_version": "1.0"}
        # The application's function decides who may follow what.
        with pytest.raises(StreamRefused) as refused:
            async with open_stream(shop.url, token=token("alice"), subscribe="order:43", path=STREAM):
                pass
        assert (refused.value.status, refused.value.body["refused"]) == (403, ["order:43"])
        # Herald's other routes are mounted too; the application's own still answer.
        answer = await client.get(f"{HERALD}/api/v1/events/health")
        assert answer.headers.get_list("herald-version") == [__version__]
        health = answer.json()
        assert health["connections"] == 1
        assert "herald_events_in_total" in (await client.get(f"{HERALD}/metrics")).text
        assert (await client.get("/orders/43")).json()["owner"] == "bob"


async def test_the_application_stops_in_bounded_time_with_streams_open(shop: Uvicorn) -> None:
    async with open_stream(shop.url, token=token("bob"), subscribe="order:43", path=STREAM) as stream:
        await stream.next()
        started = time.monotonic()
        shop.process.send_signal(signal.SIGTERM)
        # uvicorn exits 0, or (0.30+) re-raises the signal it caught once it is done.
        assert shop.process.wait(GRACE + 10) in (0, -signal.SIGTERM), shop.log.read_text()
        elapsed = time.monotonic() - started
        await stream.wait_closed(timeout=5)
    # uvicorn waits for open responses up to its graceful-shutdown timeout, then
    # cancels them; the gateway then stops. Without the timeout it would wait for ever.
    assert elapsed < GRACE + 8
