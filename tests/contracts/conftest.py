"""One contract suite for every EventBus backend: each backend adds a factory here."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from herald.bus.base import EventBus
from herald.bus.memory import MemoryBus
from herald.bus.redis import RedisBus
from herald.cluster.keys import Keyspace
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


def redis_factory(clock: FakeClock, closers: Closers, server: RedisServer) -> BusFactory:
    """Each bus is a log of its own (a fresh key prefix) on the session's real Redis."""

    def make(**options: float | int) -> EventBus:
        connections = RedisConnections(server.url)
        bus = RedisBus(connections, keys=Keyspace(f"contract-{secrets.token_hex(6)}"), clock=clock, **options)  # type: ignore[arg-type]
        closers.append(bus.stop)
        closers.append(connections.aclose)
        return bus

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "redis"])
async def make_bus(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[BusFactory]:
    """``make_bus(window_seconds=…, max_events=…, idempotency_window_seconds=…)``."""
    closers: Closers = []
    if request.param == "redis":
        make = redis_factory(clock, closers, request.getfixturevalue("redis_server"))
    else:
        make = memory_factory(clock, closers)
    yield make
    for close in closers:
        await close()
