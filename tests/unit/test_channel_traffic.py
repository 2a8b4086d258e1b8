"""The busiest channels (herald.manager.traffic, D31): counted once per event per channel,
over a minute of ten-second slices, with a bounded number of channels per slice."""

from __future__ import annotations

from herald.events.message import build_message
from herald.manager.traffic import OTHER, ChannelTraffic


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def message(scope: str, key: str | None) -> object:
    return build_message(event="task.created", scope=scope, key=key, data={})


def test_top_ranks_channels_by_deliveries_over_the_window_and_forgets_older_slices() -> None:
    clock = Clock()
    traffic = ChannelTraffic(clock=clock, slice_seconds=10, slices=3)
    for _ in range(3):
        traffic.count(message("novel", "1"), 10)  # type: ignore[arg-type]
    traffic.count(message("user", "alice"), 1)  # type: ignore[arg-type]
    traffic.count(message("global", None), 50)  # type: ignore[arg-type]
    assert traffic.top(2) == [("global", 1, 50), ("novel:1", 3, 30)]
    clock.now += 10
    traffic.rotate()
    traffic.count(message("user", "alice"), 2)  # type: ignore[arg-type]
    assert traffic.top(5)[-1] == ("user:alice", 2, 3)
    assert traffic.window_seconds == 20
    clock.now += 20
    traffic.rotate()
    clock.now += 10
    traffic.rotate()
    assert traffic.top(5) == []
    assert (traffic.events, traffic.deliveries) == (6, 83)


def test_a_full_slice_counts_further_channels_as_other() -> None:
    traffic = ChannelTraffic(clock=Clock(), max_channels=2)
    for user in ("a", "b", "c", "d"):
        traffic.count(message("user", user), 1)  # type: ignore[arg-type]
    traffic.count(message("user", "a"), 1)  # type: ignore[arg-type]
    assert {c: d for c, _, d in traffic.top(5)} == {"user:a": 2, "user:b": 1, OTHER: 2}
