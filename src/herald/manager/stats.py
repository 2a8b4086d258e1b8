"""Counters the manager keeps on its hot path; :mod:`herald.obs` exports them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class ManagerStats:
    opened: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    dispatched: int = 0
    coalesced: int = 0
    dropped_low: int = 0
    replay_hits: int = 0
    replay_misses: int = 0
    replayed_events: int = 0

    def count_close(self, reason: str) -> None:
        self.closed[reason] = self.closed.get(reason, 0) + 1
