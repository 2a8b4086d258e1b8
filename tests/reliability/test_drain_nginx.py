"""A node drained behind real nginx (issue 14): two nodes on one Redis bus, nginx in
front (``deploy/nginx/herald.conf`` as written), clients that reconnect like browsers
through nginx, a broadcast tick throughout. Node A is drained: it must be empty within
its window (plus a client's ``retry``), every client must resume on node B with every
tick exactly once, and node B must see new streams at a bounded rate (about the drained
streams ÷ the window, not all at once). Quick in ``make test`` (200 streams, 3 s); 5,000
streams over 20 s in ``make reliability``. The clients are
:class:`tests.reliability.light_client.LightClient`s, so that 5,000 fit in the test
process beside a tick every half second."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import secrets
import time

import httpx
import pytest

from herald.auth.minting import mint_token
from tests.reliability.light_client import LightClient, running_light_clients
from tests.reliability.mode import pick, write_result
from tests.support.api import wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import SECRET
from tests.support.metrics import sample
from tests.support.nginx import running_nginx
from tests.support.redis import RedisServer

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(240, 1200))]

STREAMS = pick(200, 5000)
WINDOW = pick(3.0, 20.0)
TICK_SECONDS = pick(0.2, 0.5)
RETRY_MS = 500


async def connections(client: httpx.AsyncClient) -> int:
    return int((await client.get("/api/v1/events/health")).json()["connections"])


async def test_a_drained_node_behind_nginx_empties_in_its_window_and_every_client_resumes(
    redis_server: RedisServer,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * STREAMS + 1024)), hard))
    env = cluster_env(
        redis_server,
        HERALD_DRAIN_WINDOW_SECONDS=str(WINDOW),
        HERALD_RETRY_MS=str(RETRY_MS),
        HERALD_HEARTBEAT_SECONDS="5",
        # Every client comes through nginx from one address, and opens at once.
        HERALD_CONNECT_RATE_PER_IP="0",
        HERALD_MAX_CLIENTS="0",
    )
    with (
        running_cluster(2, env) as (a, b),
        running_nginx([a.port, b.port], connections=2 * STREAMS + 256) as nginx,
    ):
        clients = [
            LightClient(f"c{i}", mint_token(SECRET, sub=f"u{i}"), "127.0.0.1", nginx.port)
            for i in range(STREAMS)
        ]
        publisher = mint_token(SECRET, sub="ticker", publisher=True)
        published: list[str] = []
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=10) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=10) as on_b,
            running_light_clients(clients),
        ):
            await wait_until(
                lambda: all(c.connects for c in clients), timeout=pick(30, 240), what="every client connected"
            )
            on_a_before = await connections(on_a)
            assert 0 < on_a_before < STREAMS, "nginx spread the streams over both nodes"

            async def tick() -> None:
                while True:
                    uid = secrets.token_hex(6)
                    body = {"event": "system.tick", "scope": "global", "key": None, "data": {"uid": uid}}
                    answer = await on_b.post(
                        "/api/v1/events", json=body, headers={"authorization": f"Bearer {publisher}"}
                    )
                    assert answer.status_code == 202, answer.text
                    published.append(uid)
                    await asyncio.sleep(TICK_SECONDS)

            ticking = asyncio.create_task(tick())
            try:
                await wait_until(lambda: len(published) >= 3, timeout=10, what="the ticks flowing")
                opened_before = await sample(on_b, "herald_connections_opened_total")
                admin = {"authorization": f"Bearer {mint_token(SECRET, sub='ops', admin=True)}"}
                started = time.monotonic()
                answer = await on_a.post("/api/v1/admin/drain", json={}, headers=admin)
                assert answer.status_code == 202, answer.text
                opened_on_b: list[tuple[float, float]] = []
                empty_after: float | None = None
                while time.monotonic() - started < WINDOW + 15:
                    # Stamped when the count is in hand: under load the request itself takes time.
                    opened = await sample(on_b, "herald_connections_opened_total")
                    now = time.monotonic() - started
                    opened_on_b.append((now, opened))
                    if empty_after is None and await connections(on_a) == 0:
                        empty_after = now
                    if empty_after is not None and await connections(on_b) == STREAMS:
                        break
                    await asyncio.sleep(0.25)
                assert empty_after is not None, "node A still holds streams"
                assert await connections(on_b) == STREAMS
                # Ticks after everyone is back on B: the last of them must reach every client.
                settled = len(published) + 3
                await wait_until(lambda: len(published) >= settled, timeout=10, what="ticks after the move")
            finally:
                ticking.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticking
            last = published[-1]
            await wait_until(
                lambda: all(c.has(last) for c in clients), timeout=20, what="the last tick everywhere"
            )

    moved = [c for c in clients if len(c.connects) > 1]
    lost = duplicated = 0
    for client in clients:
        received = client.received
        first_seen = min((published.index(uid) for uid in received if uid in published), default=None)
        assert first_seen is not None, client.name
        lost += sum(1 for uid in published[first_seen:] if uid not in received)
        duplicated += sum(count - 1 for count in received.values() if count > 1)
    assert lost == 0
    assert duplicated == 0
    assert len(moved) >= on_a_before
    assert all(c.connects[-1].recovered for c in moved), "every moved client resumed exactly"
    assert all(c.closings and c.closings[-1] == "drain" for c in moved)
    # The connect rate B saw, per second: about the drained streams over the window.
    per_second: list[float] = []
    for t0, count0 in opened_on_b:
        later = [count for t, count in opened_on_b if t0 < t <= t0 + 1.0]
        if later:
            per_second.append(later[-1] - count0)
    peak = max(per_second, default=0.0)
    bound = 2 * on_a_before / WINDOW + 20
    figures = {
        "streams": STREAMS,
        "drained": on_a_before,
        "window_s": WINDOW,
        "empty_after_s": round(empty_after, 2),
        "peak_connects_per_s_on_b": peak,
        "bound_per_s": round(bound, 1),
        "opened_on_b": opened_on_b[-1][1] - opened_before,
        "ticks": len(published),
        "lost": lost,
        "duplicated": duplicated,
    }
    write_result("drain-nginx", figures)
    print(f"drain behind nginx: {figures}")
    assert empty_after <= WINDOW + RETRY_MS / 1000 + 2.0, figures
    assert peak <= bound, figures
