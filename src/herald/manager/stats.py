"""Counters the manager keeps on its hot path; :mod:`herald.obs.metrics` exports them.

Plain integers and lists, bumped in place: nothing here allocates or takes a
lock per event, and nothing calls a metrics library. A scrape reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from herald.obs.metrics import Histogram
from herald.types import Priority

#: Seconds from an event's append (its cursor's clock) to its write to the sockets.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Events written by one replay.
REPLAY_SIZE_BOUNDS = (0, 1, 10, 100, 1000, 10_000, 100_000)


def _by_priority() -> list[int]:
    return [0] * len(Priority)


@dataclass(slots=True)
class ManagerStats:
    opened: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    dispatched: int = 0
    #: Events written to connections that have closed since (open ones count their own).
    delivered_by_closed: int = 0
    #: By :class:`Priority` value: events a newer one with the same coalesce key replaced.
    coalesced_by_priority: list[int] = field(default_factory=_by_priority)
    #: By :class:`Priority` value: events shed from a backlogged connection's queue.
    dropped_by_priority: list[int] = field(default_factory=_by_priority)
    #: Connections whose socket is past its high-water mark now.
    backlogged: int = 0
    replay_hits: int = 0
    #: Retained states written to streams before their replay or live events (D33).
    retained_sent: int = 0
    replay_misses: int = 0
    #: ``stale`` and ``malformed`` cursors (``replay_misses`` split by why).
    replay_miss_reasons: dict[str, int] = field(default_factory=dict)
    replayed_events: int = 0
    replay_sizes: Histogram = field(default_factory=lambda: Histogram(REPLAY_SIZE_BOUNDS))
    write_latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BOUNDS))
    #: Subscription changes applied on a live stream: keys added, keys removed.
    subscriptions_added: int = 0
    subscriptions_removed: int = 0

    def count_close(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def count_miss(self, reason: str) -> None:
        self.replay_misses += 1
        self.replay_miss_reasons[reason] = self.replay_miss_reasons.get(reason, 0) + 1

    @property
    def coalesced(self) -> int:
        return sum(self.coalesced_by_priority)

    @property
    def dropped_low(self) -> int:
        return self.dropped_by_priority[Priority.LOW]
