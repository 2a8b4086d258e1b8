"""Canaries (docs/architecture.md, D32): proof that the whole path works, not just the socket.

:class:`CanarySender` writes, every ``canary_interval_seconds``, a canary
(:mod:`herald.events.canary`) into each source of this node that can carry one
(``send_canary``): a Kafka record, an outbox row, a Redis message or stream
entry. It then travels as any event does: consumed (by whichever node the
source gives it to), mapped, appended, and delivered by the bus to every node.

:class:`CanaryWatcher` is a listener of this node's bus, following the
channel ``herald:canary``: for each canary it times the trip (``sent_at``,
the sender's clock, to its arrival here) and notes when the last one of each
source arrived. Every node watches every canary, whichever node sent it, so
each node proves its own bus path (its subscription, its shard) as well as
the source's. No stream ever receives a canary (its scope is reserved).

The readings (``herald_canary_latency_seconds``, ``herald_canary_staleness_seconds``,
``herald_canary_sent_total``, ``herald_canary_observed_total``,
``herald_canary_send_failures_total``, each by source) are metrics only:
readiness does not depend on them (a broken source must not take every node
out of the balancer and cut the streams that still work; an alert does).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from herald.bus.base import BusRecord, EventBus
from herald.errors import BusUnavailable
from herald.events.canary import CANARY_CHANNEL, CANARY_SOURCES, Canary, is_canary
from herald.obs.metrics import CanaryReading, Histogram

log = structlog.get_logger("herald.gateway.canary")

#: Buckets of the send → bus latency: a Kafka round trip is milliseconds, an outbox
#: poll up to ``outbox_poll_seconds`` without a notification, a broken path minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: A send that takes longer than this (a broker that does not answer) counts as failed.
_SEND_BOUND_SECONDS = 5.0


class CanaryCarrier(Protocol):
    """A source that can carry a canary: it writes one into its own input."""

    name: str

    def send_canary(self, canary: Canary) -> Awaitable[None]: ...


@dataclass
class _Track:
    """What this node saw of one source's canaries."""

    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    observed: int = 0
    #: ``time.monotonic()`` of the last arrival (or of the watcher's start).
    last: float = 0.0
    sent: int = 0
    failed: int = 0


class CanaryWatcher:
    """Every canary that reaches this node's bus, by the source that carried it."""

    def __init__(
        self,
        bus: EventBus,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._wall = wall
        self._monotonic = monotonic
        self._tracks: dict[str, _Track] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self._started = monotonic()

    def expect(self, sources: Iterable[str]) -> None:
        """Report these sources' staleness from now on, even before their first canary."""
        for name in sources:
            self._track(name)

    def _track(self, name: str) -> _Track:
        track = self._tracks.get(name)
        if track is None:
            track = self._tracks[name] = _Track(last=self._monotonic())
        return track

    async def start(self) -> None:
        self._started = self._monotonic()
        for track in self._tracks.values():
            track.last = self._started
        self._unsubscribe = self._bus.subscribe(self.observe)
        try:
            await self._bus.follow([CANARY_CHANNEL])
        except BusUnavailable as exc:
            # The interest is kept: the shard's subscriber takes the channel when it is back
            # (meanwhile the staleness grows, as it should).
            log.info("canary_channel_not_followed_yet", reason=exc.message)

    async def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
            self._bus.unfollow([CANARY_CHANNEL])

    def observe(self, record: BusRecord) -> None:
        """The bus listener: a canary's arrival; anything else is not ours."""
        message = record.message
        if not is_canary(message):
            return
        source = (message.source or "").partition(":")[0]
        if source not in CANARY_SOURCES:
            return
        sent_at = message.data.get("sent_at")
        if not isinstance(sent_at, int | float):
            return
        track = self._track(source)
        track.observed += 1
        track.last = self._monotonic()
        # Another node's clock may be a little ahead: never a negative trip.
        track.latency.observe(max(0.0, self._wall() - float(sent_at)))

    def sent(self, source: str, ok: bool) -> None:
        track = self._track(source)
        if ok:
            track.sent += 1
        else:
            track.failed += 1

    def readings(self) -> dict[str, CanaryReading]:
        now = self._monotonic()
        return {
            name: CanaryReading(
                latency=track.latency,
                staleness=max(0.0, now - track.last),
                observed=track.observed,
                sent=track.sent,
                send_failures=track.failed,
            )
            for name, track in sorted(self._tracks.items())
        }


class CanarySender:
    """One task per carrier: a canary every ``interval`` seconds, one in flight at a time."""

    def __init__(
        self, carriers: Sequence[CanaryCarrier], watcher: CanaryWatcher, *, node: str, interval: float
    ) -> None:
        self._carriers = list(carriers)
        self._watcher = watcher
        self._node = node
        self._interval = interval
        self._tasks: list[asyncio.Task[None]] = []
        watcher.expect(carrier.name for carrier in self._carriers)

    async def start(self) -> None:
        for carrier in self._carriers:
            self._tasks.append(asyncio.create_task(self._run(carrier), name=f"herald-canary-{carrier.name}"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, carrier: CanaryCarrier) -> None:
        seq = 0
        failing = False
        bound = max(_SEND_BOUND_SECONDS, self._interval)
        while True:
            await asyncio.sleep(self._interval)
            canary = Canary(carrier.name, self._node, seq, time.time())
            seq += 1
            try:
                async with asyncio.timeout(bound):
                    await carrier.send_canary(canary)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._watcher.sent(carrier.name, ok=False)
                if not failing:  # once per outage, not once per interval
                    log.warning("canary_send_failed", source=carrier.name, error=repr(exc))
                failing = True
                continue
            if failing:
                log.info("canary_send_recovered", source=carrier.name)
            failing = False
            self._watcher.sent(carrier.name, ok=True)


def carriers_of(sources: Iterable[object]) -> list[CanaryCarrier]:
    """The sources that can carry a canary (the demo simulator cannot)."""
    return [source for source in sources if _carries(source)]  # type: ignore[misc]


def _carries(source: object) -> bool:
    return callable(getattr(source, "send_canary", None)) and getattr(source, "name", None) in CANARY_SOURCES
