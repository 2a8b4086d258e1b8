"""Backpressure on real sockets (docs/architecture.md, D7): a client that does not
read is closed with ``error.slow-consumer`` and the others do not notice;
while a client's socket is full its queue coalesces and sheds low priority
first, as seen on the wire once it reads again."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import orjson
import pytest

from tests.support.api import Api, api_client, unique, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.metrics import sample
from tests.support.raw_stream import RawStream

PROBE = "test.probe-sent"
FILLER = "x" * 32_000


class FastClient(asyncio.Protocol):
    """A stream that reads everything at once and notes each probe's latency."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.buffer = b""
        self.latencies: dict[int, float] = {}
        self.established = asyncio.Event()
        self.lost = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = f"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {self.token}\r\n"
        transport.write(request.encode() + b"\r\n")

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        *blocks, self.buffer = self.buffer.split(b"\n\n")
        for block in blocks:
            if b"event: connection.established" in block:
                self.established.set()
            elif b"event: " + PROBE.encode() in block:
                body = orjson.loads(block.rpartition(b"data: ")[2])
                self.latencies[body["n"]] = now - body["t"]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayProcess]:
    env = {"HERALD_HEARTBEAT_SECONDS": "30", "HERALD_MAX_CLIENTS": "0", "HERALD_CONNECT_RATE_PER_IP": "0"}
    with running_gateway(env) as process:
        yield process


@pytest.fixture
async def api(gateway: GatewayProcess) -> AsyncIterator[Api]:
    async with api_client(gateway) as client:
        yield client


async def probes(
    api: Api, first: int, count: int, rate: float, heavy_user: str, heavy_per_probe: int
) -> None:
    """``count`` global probes at ``rate``/s, each followed by ``heavy_per_probe`` big
    events to ``heavy_user``: the node's work is the same whether or not that user
    has a stream."""
    start = time.monotonic()
    for n in range(first, first + count):
        await asyncio.sleep(max(0.0, start + (n - first) / rate - time.monotonic()))
        await api.publish(PROBE, "global", None, {"n": n, "t": time.time()})
        for _ in range(heavy_per_probe):
            await api.publish("task.created", "user", heavy_user, {"filler": FILLER})


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def test_a_client_that_never_reads_is_closed_while_100_others_keep_their_latency(
    gateway: GatewayProcess, api: Api
) -> None:
    loop = asyncio.get_running_loop()
    slow_user = unique("slow")
    clients = []
    for i in range(100):
        _, client = await loop.create_connection(
            lambda i=i: FastClient(gateway.token(f"fast-{i}")), "127.0.0.1", gateway.port
        )
        clients.append(client)
    try:
        await asyncio.wait_for(asyncio.gather(*(c.established.wait() for c in clients)), 20)
        # Baseline: the same traffic, with nobody on the heavy user's stream.
        await probes(api, 0, 60, rate=30, heavy_user=slow_user, heavy_per_probe=2)
        await wait_until(lambda: all(len(c.latencies) == 60 for c in clients), what="every baseline probe")
        baseline = [lat for c in clients for n, lat in c.latencies.items() if n < 60]

        slow = await RawStream.open(gateway.port, gateway.token(slow_user), rcvbuf=4096)
        await probes(api, 60, 60, rate=30, heavy_user=slow_user, heavy_per_probe=2)
        await wait_until(lambda: all(len(c.latencies) == 120 for c in clients), what="every probe")
        loaded = [lat for c in clients for n, lat in c.latencies.items() if n >= 60]
        closes = await sample(api.client, "herald_slow_consumer_closes_total")
        assert closes == 1, "the client that never read was closed"
        # What it never read is still in its socket, then the notice, then the end.
        events = await slow.read_to_end(timeout=10)
        slow.close()
        assert events[-1].event == "error.slow-consumer"
        assert events[-1].json()["code"] == "SLOW_CONSUMER"
        assert all(e.event in ("connection.established", "task.created", PROBE) for e in events[:-1])
        assert not any(c.lost.is_set() for c in clients), "no fast client was closed"
        assert all(len(c.latencies) == 120 for c in clients)
    finally:
        for client in clients:
            if client.transport is not None:
                client.transport.close()

    # The fast clients' latency did not move beyond noise.
    # Ratios, not times: the machine is shared; the floors keep a sub-millisecond
    # baseline from turning scheduler jitter into a failure.
    p50 = (statistics.median(baseline), statistics.median(loaded))
    p90 = (quantile(baseline, 0.9), quantile(loaded, 0.9))
    print(
        f"fast clients' latency p50 {p50[0] * 1000:.1f} -> {p50[1] * 1000:.1f} ms, "
        f"p90 {p90[0] * 1000:.1f} -> {p90[1] * 1000:.1f} ms"
    )
    assert p50[1] <= 4 * max(p50[0], 0.005)
    assert p90[1] <= 4 * max(p90[0], 0.010)


async def open_backlogged(gateway: GatewayProcess, api: Api, user: str) -> tuple[RawStream, int]:
    """A stream whose socket is full: big events until the gateway reports it backlogged.
    Returns it and how many big events it was sent."""
    stream = await RawStream.open(gateway.port, gateway.token(user), rcvbuf=4096)
    sent = 0
    while await sample(api.client, "herald_connections_backlogged") < 1:
        for _ in range(10):
            await api.publish("task.created", "user", user, {"filler": FILLER, "n": sent})
            sent += 1
        assert sent < 1000, "the socket never filled"
    return stream, sent


async def test_coalescing_is_seen_on_the_wire_only_the_latest_per_key(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("coalesce")
    before = await sample(api.client, "herald_events_coalesced_total", priority="normal")
    stream, filled = await open_backlogged(gateway, api, user)
    progress: dict[str, list[str]] = {"t1": [], "t2": []}
    for n in range(10):
        for task in ("t1", "t2") if n % 2 else ("t1",):
            cursor = await api.publish(
                "task.progress-updated",
                "user",
                user,
                {"task_id": task, "progress": n * 10},
                coalesce=f"task:{task}",
            )
            progress[task].append(cursor)
    marker = await api.publish("task.completed", "user", user, {"task_id": "t1"})
    assert await sample(api.client, "herald_events_coalesced_total", priority="normal") - before == 9 + 4
    events = await stream.read_until(lambda e: e.id == marker, timeout=15)
    stream.close()
    seen = [e for e in events if e.event == "task.progress-updated"]
    # One per task, the latest, in cursor order (so Last-Event-ID never passes an unsent event).
    assert [e.id for e in seen] == sorted(
        [progress["t1"][-1], progress["t2"][-1]], key=lambda c: tuple(map(int, c.split("-")))
    )
    assert [e.json()["progress"] for e in seen] == [90, 90]
    # Nothing that was not coalescible went missing.
    assert [e.json()["n"] for e in events if e.event == "task.created"] == list(range(filled))


async def test_a_full_socket_loses_low_priority_first_and_keeps_its_stream(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("lowprio")
    dropped_before = await sample(api.client, "herald_events_dropped_total", priority="low")
    closes_before = await sample(api.client, "herald_slow_consumer_closes_total")
    stream, _ = await open_backlogged(gateway, api, user)
    high = []
    # 40 low-priority events of 32 KB: past the 256 KiB budget, which only shedding them respects.
    for n in range(40):
        await api.publish("task.logged", "user", user, {"filler": FILLER, "n": n}, priority="low")
        if n % 4 == 0:
            high.append(await api.publish("task.failed", "user", user, {"n": n}, priority="high"))
    dropped = await sample(api.client, "herald_events_dropped_total", priority="low") - dropped_before
    assert dropped >= 30
    assert await sample(api.client, "herald_events_dropped_total", priority="high") == 0
    assert await sample(api.client, "herald_slow_consumer_closes_total") == closes_before
    marker = await api.publish("task.completed", "user", user, {})
    events = await stream.read_until(lambda e: e.id == marker, timeout=15)
    stream.close()
    assert [e.id for e in events if e.event == "task.failed"] == high
    low_seen = [e.json()["n"] for e in events if e.event == "task.logged"]
    assert len(low_seen) == 40 - dropped
    assert low_seen == sorted(low_seen)
