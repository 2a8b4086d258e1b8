"""One contract suite for every EventBus backend: each backend adds a factory here."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from herald.bus.base import EventBus
from herald.bus.memory import MemoryBus
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from tests.support.redis import RedisServer


class FakeClock:
    """Wall-clock seconds the test moves by hand (retention is time-based)."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BusFactory = Callable[..., EventBus]
Closers = list[Callable[[], Awaitable[None]]]


def memory_factory(clock: FakeClock, closers: Closers) -> BusFactory:
    def make(**options: float | int) -> EventBus:
        bus = MemoryBus(clock=clock, **options)  # type: ignore[arg-type]
        closers.append(bus.stop)
        return bus

    return make


def sharded_factory(clock: FakeClock, closers: Closers, servers: list[RedisServer]) -> BusFactory:
    """Each bus is a deployment of its own (a fresh key prefix) over real Redis shards (one
    is the plain Redis deployment); ``max_events`` is per channel (the suite's events are
    one user's)."""

    def make(**options: float | int) -> EventBus:
        shards = [RedisConnections(server.url) for server in servers]
        if "max_events" in options:
            options["max_events_per_channel"] = options.pop("max_events")
        bus = ShardedBus(
            shards,
            keys=ShardKeys(f"contract-{secrets.token_hex(6)}"),
            clock=clock,
            tick_seconds=0.05,
            **options,  # type: ignore[arg-type]
        )
        closers.append(bus.stop)
        closers.extend(connections.aclose for connections in shards)
        return bus

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis", "sharded"])
async def make_bus(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[BusFactory]:
    """``make_bus(window_seconds=…, max_events=…, idempotency_window_seconds=…)``: the
    memory bus; one Redis (one shard); three shards."""
    closers: Closers = []
    if request.param == "redis":
        make = sharded_factory(clock, closers, [request.getfixturevalue("redis_server")])
    elif request.param == "sharded":
        make = sharded_factory(clock, closers, request.getfixturevalue("three_redis_servers"))
    else:
        make = memory_factory(clock, closers)
    yield make
    for close in closers:
        await close()
