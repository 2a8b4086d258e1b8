"""Soak: connects, disconnects, reconnects with cursors and publishes at a steady rate,
for an hour under ``make reliability`` (a couple of minutes in ``make test``).

Two nodes share a Redis bus. Each node's resident memory, open file descriptors and
event-loop tasks (``herald_asyncio_tasks`` on /metrics), and the bus's size (the
Redis Stream's length, Redis's key count and memory) are sampled at a fixed interval
(each minute in the full run). Each must level off: the growth over the last third
of the run may be at most half the growth over the first third, or within a noise
tolerance (``tests.reliability.levels``). The samples go to JSON; the report plots
them (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from herald.auth.minting import mint_token
from tests.reliability.client import STREAM
from tests.reliability.ledger import Ledger
from tests.reliability.levels import levelling
from tests.reliability.mode import pick, write_result
from tests.reliability.traffic import HttpTraffic
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import SECRET, GatewayProcess
from tests.support.redis import running_redis

DURATION = pick(100.0, 3600.0)
SAMPLE_EVERY = pick(5.0, 60.0)
SLOTS = pick(40, 160)
PUBLISH_RATE = pick(40.0, 80.0)
#: Short enough that the log reaches its steady size within the first third of the run.
WINDOW = pick(20, 300)
SESSION_SECONDS = (0.5, 8.0)

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(DURATION + 240)]


class Churn:
    """Streams that open, read for a while, close and come back, mostly with their cursor."""

    def __init__(self, nodes: list[GatewayProcess], users: list[str]) -> None:
        self.nodes = nodes
        self.tokens = {
            u: mint_token(SECRET, sub=u, resources=["novel:*"], ttl_seconds=DURATION + 600) for u in users
        }
        self.users = users
        self.outcomes: Counter[str] = Counter()
        self.events = 0

    async def slot(self, n: int, stop: asyncio.Event) -> None:
        rng = random.Random(n)
        user = self.users[n % len(self.users)]
        cursor: str | None = None
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=10.0)) as http:
            while not stop.is_set():
                node = rng.choice(self.nodes)
                send_cursor = cursor is not None and rng.random() < 0.85
                headers = {"authorization": f"Bearer {self.tokens[user]}"}
                if send_cursor and cursor is not None:
                    headers["last-event-id"] = cursor
                params = {"subscribe": f"novel:{rng.randrange(5)}"} if rng.random() < 0.5 else {}
                try:
                    cursor = await self._session(http, node.url, headers, params, rng, send_cursor) or cursor
                except (httpx.HTTPError, TimeoutError):
                    self.outcomes["transport_error"] += 1
                await asyncio.sleep(rng.uniform(0.0, 1.0))

    async def _session(
        self,
        http: httpx.AsyncClient,
        url: str,
        headers: dict[str, str],
        params: dict[str, str],
        rng: random.Random,
        sent_cursor: bool,
    ) -> str | None:
        cursor = None
        async with http.stream("GET", url + STREAM, headers=headers, params=params) as response:
            if response.status_code != 200:
                self.outcomes[f"refused_{response.status_code}"] += 1
                return None
            self.outcomes["opened"] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rng.uniform(*SESSION_SECONDS)):
                    async for line in response.aiter_lines():
                        if line.startswith("id: "):
                            cursor = line[4:]
                        elif line.startswith("data: ") and '"recovered"' in line:
                            if '"recovered":true' in line:
                                self.outcomes["recovered"] += 1
                            elif sent_cursor:
                                self.outcomes["not_recovered_with_cursor"] += 1
                        elif line.startswith("data: "):
                            self.events += 1
        return cursor


async def _sample(nodes: list[GatewayProcess], redis: Any, log_key: str, started: float) -> dict[str, Any]:
    row: dict[str, Any] = {"t": round(time.monotonic() - started, 1), "nodes": []}
    async with httpx.AsyncClient(timeout=5.0) as http:
        for node in nodes:
            process = psutil.Process(node.process.pid)
            family = [process, *process.children(recursive=True)]
            text = (await http.get(node.url + "/metrics")).text
            values = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}
            row["nodes"].append(
                {
                    "rss_mib": round(sum(p.memory_info().rss for p in family) / 2**20, 2),
                    "fds": sum(p.num_fds() for p in family),
                    "tasks": int(values.get("herald_asyncio_tasks", -1)),
                    "connections": int(values.get("herald_connections", 0)),
                }
            )
    info = redis.info("memory")
    row["bus"] = {
        "log_entries": int(redis.xlen(log_key)),
        "redis_keys": int(redis.dbsize()),
        "redis_used_mib": round(info["used_memory"] / 2**20, 2),
    }
    return row


async def test_a_steady_soak_levels_off() -> None:
    with running_redis() as redis:
        env = cluster_env(
            redis,
            HERALD_HEARTBEAT_SECONDS="2",
            HERALD_REPLAY_WINDOW_SECONDS=str(WINDOW),
            HERALD_IDEMPOTENCY_WINDOW_SECONDS=str(WINDOW),
            HERALD_CONNECT_RATE_PER_IP="0",
            HERALD_LOG_LEVEL="warning",
        )
        users = [f"soak{i}" for i in range(SLOTS // 2)]
        with running_cluster(2, env) as nodes, redis.client() as plain:
            log_key = f"{{{env['HERALD_REDIS_PREFIX']}}}:log"
            churn = Churn(nodes, users)
            ledger = Ledger()
            publisher = mint_token(SECRET, sub="soak", publisher=True, ttl_seconds=DURATION + 600)
            traffic = HttpTraffic(lambda: [n.url for n in nodes], publisher, users, ledger, rate=PUBLISH_RATE)
            stop = asyncio.Event()
            tasks = [asyncio.create_task(churn.slot(n, stop)) for n in range(SLOTS)]
            tasks.append(asyncio.create_task(traffic.run(stop)))
            samples = []
            started = time.monotonic()
            try:
                while (elapsed := time.monotonic() - started) < DURATION:
                    samples.append(await _sample(nodes, plain, log_key, started))
                    # The sampling interval is the experiment's clock, not a wait for a condition.
                    await asyncio.sleep(max(0.0, SAMPLE_EVERY * len(samples) - elapsed))
                samples.append(await _sample(nodes, plain, log_key, started))
            finally:
                stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)

    xs = [s["t"] for s in samples]
    series: dict[str, tuple[list[float], float]] = {}
    for i in range(len(nodes)):
        rss = [s["nodes"][i]["rss_mib"] for s in samples]
        series[f"node{i}.rss_mib"] = (rss, pick(4.0, 8.0))
        series[f"node{i}.fds"] = ([s["nodes"][i]["fds"] for s in samples], max(10.0, SLOTS * 0.15))
        series[f"node{i}.tasks"] = ([s["nodes"][i]["tasks"] for s in samples], max(10.0, SLOTS * 0.1))
    entries = [s["bus"]["log_entries"] for s in samples]
    series["bus.log_entries"] = (entries, 0.15 * max(entries))
    keys = [s["bus"]["redis_keys"] for s in samples]
    series["bus.redis_keys"] = (keys, 0.15 * max(keys))
    used = [s["bus"]["redis_used_mib"] for s in samples]
    series["bus.redis_used_mib"] = (used, 0.15 * max(used))
    verdicts = {name: levelling(xs, [float(v) for v in ys], tol) for name, (ys, tol) in series.items()}
    write_result(
        "soak",
        {
            "duration_s": DURATION,
            "sample_every_s": SAMPLE_EVERY,
            "slots": SLOTS,
            "publish_rate": PUBLISH_RATE,
            "replay_window_s": WINDOW,
            "published": len(ledger.accepted),
            "events_read": churn.events,
            "outcomes": dict(churn.outcomes),
            "samples": samples,
            "verdicts": {
                name: {
                    "first_third_growth": round(v.first_third_growth, 3),
                    "last_third_growth": round(v.last_third_growth, 3),
                    "tolerance": round(v.tolerance, 3),
                    "levels_off": v.levels_off,
                }
                for name, v in verdicts.items()
            },
        },
    )
    assert churn.outcomes["opened"] > SLOTS, churn.outcomes
    assert churn.outcomes["recovered"] > 0
    # Every cursor a client came back with was inside the window: each resumed exactly.
    assert churn.outcomes["not_recovered_with_cursor"] == 0, churn.outcomes
    assert not [k for k in churn.outcomes if k.startswith("refused_5")], churn.outcomes
    growing = {name: v for name, v in verdicts.items() if not v.levels_off}
    assert not growing, growing
