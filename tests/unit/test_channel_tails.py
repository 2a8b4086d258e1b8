"""The channels' tails (herald.bus.tails): complete from where a read began, bounded like the
channel in Redis, and never answering for what they cannot say whole."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from herald.bus.base import BusRecord
from herald.bus.tails import ChannelTails
from herald.events.message import build_message
from herald.wire.cursor import Cursor

NOW = 1_767_225_600.0


def record(ms: int, seq: int = 0) -> BusRecord:
    message = build_message(event="task.created", scope="user", key="u", data={"ms": ms})
    return BusRecord(Cursor(ms, seq), message, b"")


def tails(*, window: float = 300.0, per_channel: int = 1000, total: int = 10_000) -> ChannelTails:
    return ChannelTails(
        window_seconds=window, max_events_per_channel=per_channel, max_records=total, clock=lambda: NOW
    )


T = int(NOW * 1000)


def test_a_tail_answers_only_after_a_read_found_its_records() -> None:
    t = tails()
    assert t.read("user:u", Cursor(T, 0)) is None, "no tail"
    t.collect("user:u")
    t.delivered("user:u", record(T + 5))  # delivered while the read is on its way
    assert t.read("user:u", Cursor(T, 0)) is None, "collecting: nothing is whole yet"
    t.found("user:u", Cursor(T, 0), [record(T + 1), record(T + 3)])
    assert [r.cursor.ms for r in t.read("user:u", Cursor(T, 0)) or []] == [T + 1, T + 3, T + 5]
    assert [r.cursor.ms for r in t.read("user:u", Cursor(T + 3, 0)) or []] == [T + 5]
    assert t.read("user:u", Cursor(T - 1, 0)) is None, "before where the read began"
    t.delivered("user:u", record(T + 5))  # twice (a read and a delivery both had it)
    assert len(t) == 3


def test_the_same_record_objects_are_shared() -> None:
    t = tails()
    t.collect("global")
    found = [record(T + 1)]
    t.found("global", Cursor(T, 0), found)
    first, second = t.read("global", Cursor(T, 0)), t.read("global", Cursor(T, 0))
    assert first is not None
    assert second is not None
    assert first[0] is second[0] is found[0]


def test_the_window_and_the_count_move_where_a_tail_is_complete() -> None:
    t = tails(window=10, per_channel=3)
    t.collect("user:u")
    t.found("user:u", Cursor(T - 20_000, 0), [record(T - 15_000), record(T - 1_000)])
    # The record older than the window is gone, and with it the right to answer before it.
    assert t.read("user:u", Cursor(T - 20_000, 0)) is None
    assert [r.cursor.ms for r in t.read("user:u", Cursor(T - 15_000, 0)) or []] == [T - 1_000]
    for ms in (T + 1, T + 2, T + 3):
        t.delivered("user:u", record(ms))
    # Past the channel's count the oldest goes: a client that saw it still resumes exactly
    # (as from Redis, whose floor it becomes), one that saw less does not.
    assert [r.cursor.ms for r in t.read("user:u", Cursor(T - 1_000, 0)) or []] == [T + 1, T + 2, T + 3]
    assert t.read("user:u", Cursor(T - 1_001, 0)) is None
    assert [r.cursor.ms for r in t.read("user:u", Cursor(T + 1, 0)) or []] == [T + 2, T + 3]


def test_dropped_tails_answer_nothing_and_a_late_read_does_not_revive_them() -> None:
    t = tails()
    t.collect("user:u")
    t.drop(["user:u"])
    t.found("user:u", Cursor(T, 0), [record(T + 1)])
    assert t.read("user:u", Cursor(T, 0)) is None
    assert len(t) == 0
    assert not t.active


def test_the_tails_read_least_lately_go_first_past_the_bound() -> None:
    t = tails(total=4)
    for channel in ("a:1", "b:1", "c:1"):
        t.collect(channel)
        t.found(channel, Cursor(T, 0), [record(T + 1), record(T + 2)])
    assert len(t) <= 4
    assert t.read("c:1", Cursor(T, 0)) is not None
    assert t.read("a:1", Cursor(T, 0)) is None


@given(
    st.lists(st.integers(min_value=1, max_value=200), unique=True, min_size=1, max_size=60),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=0, max_value=200),
)
def test_a_tail_says_exactly_what_the_channel_holds_after_a_cursor(
    offsets: list[int], split: int, after: int
) -> None:
    """Records split at random between what the read found and what was delivered: any
    answer is exactly the channel's records after the cursor."""
    records = [record(T + o) for o in sorted(offsets)]
    t = tails()
    t.collect("user:u")
    delivered, found = records[split:], records[:split]
    for r in delivered:
        t.delivered("user:u", r)
    t.found("user:u", Cursor(T, 0), found)
    answer = t.read("user:u", Cursor(T + after, 0))
    assert answer is not None
    assert answer == [r for r in records if r.cursor > Cursor(T + after, 0)]
