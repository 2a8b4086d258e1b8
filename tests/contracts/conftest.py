"""One contract suite for every EventBus backend: each backend adds a factory here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from herald.bus.base import EventBus
from herald.bus.memory import MemoryBus


class FakeClock:
    """Wall-clock seconds the test moves by hand (retention is time-based)."""

    def __init__(self, now: float = 1_767_225_600.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


BusFactory = Callable[..., EventBus]


def memory_factory(clock: FakeClock) -> BusFactory:
    def make(**options: float | int) -> EventBus:
        return MemoryBus(clock=clock, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory"])
async def make_bus(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[BusFactory]:
    """``make_bus(window_seconds=…, max_events=…, idempotency_window_seconds=…)``."""
    factories = {"memory": memory_factory}
    started: list[EventBus] = []
    base = factories[request.param](clock)

    def make(**options: float | int) -> EventBus:
        bus = base(**options)
        started.append(bus)
        return bus

    yield make
    for bus in started:
        await bus.stop()
