"""Draining a node (issue 14): ``POST /api/v1/admin/drain``, SIGUSR1 and ``herald drain``
turn the node unready, refuse new streams, and move its open streams off over the window
in batches, each told to come back (elsewhere) with ``connection.closing``, reason ``drain``."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.api import unique, wait_until
from tests.support.gateway import SECRET, GatewayProcess, running_gateway
from tests.support.metrics import parse
from tests.support.sse import Stream, StreamRefused, open_stream

QUICK = {"HERALD_HEARTBEAT_SECONDS": "0.5", "HERALD_RETRY_MS": "1000"}
DRAIN = "/api/v1/admin/drain"


@contextlib.asynccontextmanager
async def streams(gateway: GatewayProcess, count: int) -> AsyncIterator[list[Stream]]:
    async with contextlib.AsyncExitStack() as stack:
        opened = [
            await stack.enter_async_context(open_stream(gateway.url, token=gateway.token(unique("u"))))
            for _ in range(count)
        ]
        for stream in opened:
            await stream.next()  # connection.established
        yield opened


async def closing_time(stream: Stream) -> tuple[float, dict[str, object], int | None]:
    """When ``stream`` got its ``connection.closing``, what it said, and its ``retry:``."""
    event = await stream.next(timeout=15)
    assert event.event == "connection.closing", event
    at = time.monotonic()
    with pytest.raises(EOFError):
        await stream.next()
    body: dict[str, object] = event.json()
    return at, body, event.retry


async def readiness(gateway: GatewayProcess) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        return await client.get("/api/v1/events/health/ready")


async def test_a_drained_node_moves_its_streams_off_over_the_window_in_batches() -> None:
    with running_gateway(QUICK) as gateway:
        async with streams(gateway, 40) as opened, httpx.AsyncClient(base_url=gateway.url) as client:
            admin = {"authorization": f"Bearer {gateway.token('ops', admin=True)}"}
            refused = await client.post(
                DRAIN, json={}, headers={"authorization": f"Bearer {gateway.token('u')}"}
            )
            assert (refused.status_code, refused.json()["code"]) == (403, "PERMISSION_DENIED")
            started = time.monotonic()
            answer = await client.post(DRAIN, json={"window_seconds": 2}, headers=admin)
            assert answer.status_code == 202, answer.text
            assert answer.json()["draining"] is True
            assert answer.json()["window_seconds"] == 2
            assert answer.json()["streams"] == 40
            ready = await readiness(gateway)
            assert ready.status_code == 503
            assert ready.json()["draining"] is True
            with pytest.raises(StreamRefused) as caught:
                async with open_stream(gateway.url, token=gateway.token(unique("u"))):
                    pass
            assert caught.value.status == 503
            assert (caught.value.body["code"], caught.value.body["fallback"]) == ("SERVER_OVERLOAD", "retry")
            closings = await asyncio.gather(*(closing_time(s) for s in opened))
            # Asked again, the drain under way holds (its window, its start).
            again = await client.post(DRAIN, json={"window_seconds": 30}, headers=admin)
            assert again.json()["window_seconds"] == 2
            assert again.json()["since"] == answer.json()["since"]
        assert {body["reason"] for _, body, _ in closings} == {"drain"}
        retries = [retry for _, _, retry in closings]
        assert all(retry is not None and 1000 <= retry <= 1250 for retry in retries), retries
        times = sorted(at - started for at, _, _ in closings)
        # Spread over the window, not at once: the first batch at once, the last near its end.
        assert times[0] < 0.5, times
        assert 1.2 < times[-1] < 3.5, times
        assert times[len(times) // 2] > 0.5, times
        assert (await readiness(gateway)).status_code == 503
        assert any(e.get("event") == "drain_requested" and e.get("by") == "ops" for e in gateway.logs())


async def test_sigusr1_and_the_cli_drain_a_node() -> None:
    with running_gateway({**QUICK, "HERALD_DRAIN_WINDOW_SECONDS": "1"}) as gateway:
        async with streams(gateway, 5) as opened:
            gateway.process.send_signal(signal.SIGUSR1)
            closings = await asyncio.gather(*(closing_time(s) for s in opened))
        assert {body["reason"] for _, body, _ in closings} == {"drain"}
        assert (await readiness(gateway)).json()["draining"] is True
        # The dashboard's drain state and the alerts read it as a gauge too.
        async with httpx.AsyncClient(base_url=gateway.url) as client:
            metrics = parse((await client.get("/metrics")).text)
        assert metrics[("herald_draining", ())] == 1
        assert metrics[("herald_accepting", ())] == 0
    with running_gateway(QUICK) as gateway:
        async with streams(gateway, 3) as opened:
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "herald", "drain", "--url", gateway.url, "--window", "1"],
                env={"HERALD_JWT_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert '"draining":true' in done.stdout
            closings = await asyncio.gather(*(closing_time(s) for s in opened))
        assert {body["reason"] for _, body, _ in closings} == {"drain"}


async def test_sigusr1_to_the_workers_supervisor_drains_every_worker() -> None:
    env = {**QUICK, "HERALD_WORKERS": "2", "HERALD_WORKER_PORT_BASE": "0", "HERALD_DRAIN_WINDOW_SECONDS": "1"}
    with running_gateway(env) as gateway:
        async with streams(gateway, 12) as opened:
            gateway.process.send_signal(signal.SIGUSR1)
            closings = await asyncio.gather(*(closing_time(s) for s in opened))
        assert {body["reason"] for _, body, _ in closings} == {"drain"}
        workers = gateway.listening["workers"]

        async def every_worker_draining() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                for worker in workers:
                    answer = await client.get(
                        f"http://127.0.0.1:{worker['private_port']}/api/v1/events/health/ready"
                    )
                    if not answer.json().get("draining"):
                        return False
            return True

        await wait_until(every_worker_draining, timeout=5, what="every worker draining")
