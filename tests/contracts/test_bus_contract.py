"""The EventBus contract (src/herald/bus/base.py), for every backend."""

from __future__ import annotations

import asyncio

from herald.bus.base import Append, AppendResult, BusRecord, EventBus
from herald.events.message import SSEMessage, build_message, encode_data
from herald.wire.cursor import Cursor, parse_cursor
from tests.contracts.conftest import BusFactory, FakeClock
from tests.support.waiting import wait_until


def msg(n: int, user: str = "u1") -> SSEMessage:
    return build_message(event="task.progress-updated", scope="user", key=user, data={"n": n})


async def append(bus: EventBus, n: int, **kwargs: str) -> Cursor:
    message = msg(n)
    result = await bus.append(message, encode_data(message, 65536), **kwargs)  # type: ignore[arg-type]
    return result.cursor


#: The channels of the suite's events: a bus that reads by channel delivers only these.
CHANNELS = ("global", "user:u1")


async def started(make_bus: BusFactory, **options: float | int) -> EventBus:
    bus = make_bus(**options)
    await bus.start()
    await bus.follow(CHANNELS)
    return bus


async def test_cursors_increase_and_listeners_see_every_record_in_order(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    cursors = [await append(bus, i) for i in range(50)]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 50
    await wait_until(lambda: len(seen) == 50)
    assert [r.cursor for r in seen] == cursors
    assert bus.head == cursors[-1]


async def test_the_frame_is_the_complete_sse_block(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    cursor = await append(bus, 7)
    await wait_until(lambda: len(seen) == 1)
    assert seen[0].frame == (
        f"id: {cursor}\nevent: task.progress-updated\n".encode()
        + b'data: {"n":7,"_scope":"user","_version":"1.0"}\n\n'
    )


async def test_replay_after_a_held_cursor_returns_the_rest_in_order(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    cursors = [await append(bus, i) for i in range(10)]
    replay = await bus.replay(cursors[3])
    assert replay.exact
    assert [r.cursor for r in replay.records] == cursors[4:]
    last = await bus.replay(cursors[-1])
    assert last.exact
    assert list(last.records) == []


async def test_replay_from_the_floor_of_a_fresh_log_is_exact(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    origin = bus.head
    cursors = [await append(bus, i) for i in range(3)]
    replay = await bus.replay(origin)
    assert replay.exact
    assert [r.cursor for r in replay.records] == cursors


async def test_unknown_and_future_cursors_are_not_exact(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    cursors = [await append(bus, i) for i in range(3)]
    for cursor in (Cursor(1, 0), Cursor(cursors[-1].ms + 10_000, 0), Cursor(cursors[0].ms, 999)):
        replay = await bus.replay(cursor)
        assert not replay.exact, cursor
        assert list(replay.records) == []


async def test_count_retention_moves_the_floor(make_bus: BusFactory) -> None:
    bus = await started(make_bus, max_events=5)
    cursors = [await append(bus, i) for i in range(12)]
    trimmed = await bus.replay(cursors[5])
    assert not trimmed.exact, "trimmed record"
    assert trimmed.floor == cursors[6], "a replay that is not exact names the floor to continue from"
    at_floor = await bus.replay(cursors[6])
    assert at_floor.exact, "the last trimmed cursor is the floor: nothing after it is missing"
    assert [r.cursor for r in at_floor.records] == cursors[7:]


async def test_time_retention_trims_old_records_even_without_new_appends(
    make_bus: BusFactory, clock: FakeClock
) -> None:
    bus = await started(make_bus, window_seconds=60)
    first = await append(bus, 0)
    clock.now += 30
    second = await append(bus, 1)
    clock.now += 45  # first is 75 s old, second 45 s
    assert not (await bus.replay(Cursor(first.ms - 1, 0))).exact
    replay = await bus.replay(first)
    assert replay.exact, "first is now the floor"
    assert [r.cursor for r in replay.records] == [second]
    clock.now += 60  # both out of the window; second becomes the floor
    quiet = await bus.replay(second)
    assert quiet.exact, "a client that saw the last event before a quiet spell resumes exactly"
    assert list(quiet.records) == []
    assert not (await bus.replay(first)).exact


async def test_a_new_log_does_not_accept_cursors_of_an_earlier_one(
    make_bus: BusFactory, clock: FakeClock
) -> None:
    old = await started(make_bus)
    old_cursor = await append(old, 1)
    # Taken now: once the clock moves, the old log's ticks may carry its head to where the
    # new lifetime begins, a position no record of either was issued at.
    old_head = old.head
    clock.now += 1
    new = await started(make_bus)
    await append(new, 1)
    assert not (await new.replay(old_cursor)).exact
    assert not (await new.replay(old_head)).exact


async def test_idempotent_append_returns_the_first_cursor(make_bus: BusFactory, clock: FakeClock) -> None:
    bus = await started(make_bus, idempotency_window_seconds=100)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    message = msg(1)
    body = encode_data(message, 65536)
    first = await bus.append(message, body, idempotency_key="k1")
    again = await bus.append(message, body, idempotency_key="k1")
    other = await bus.append(message, body, idempotency_key="k2")
    assert not first.duplicate
    assert again.duplicate
    assert again.cursor == first.cursor
    assert other.cursor > first.cursor
    await wait_until(lambda: len(seen) == 2)
    clock.now += 101
    later = await bus.append(message, body, idempotency_key="k1")
    assert not later.duplicate, "keys are remembered for the idempotency window only"


async def test_concurrent_duplicate_appends_append_once(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    message = msg(1)
    body = encode_data(message, 65536)
    results = await asyncio.gather(*(bus.append(message, body, idempotency_key="same") for _ in range(20)))
    assert len({r.cursor for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1


async def test_unsubscribe_stops_delivery(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    seen: list[BusRecord] = []
    unsubscribe = bus.subscribe(seen.append)
    await append(bus, 1)
    await wait_until(lambda: len(seen) == 1)
    unsubscribe()
    marker: list[BusRecord] = []
    bus.subscribe(marker.append)
    await append(bus, 2)
    await wait_until(lambda: len(marker) == 1)
    assert len(seen) == 1


def test_cursor_text_round_trips() -> None:
    cursor = Cursor(1767225600000, 3)
    assert parse_cursor(str(cursor)) == cursor


async def test_superseded_keys_answer_the_cursor_that_replaced_them(make_bus: BusFactory) -> None:
    """The throttle's keys: events superseded before they were appended are remembered with
    the cursor of the event that carried the newer content, unless that append is itself a
    duplicate, and a key already known keeps its first cursor."""
    bus = await started(make_bus)
    known = await append(bus, 0, idempotency_key="k0")
    carried = await append(bus, 2, idempotency_key="k2", superseded_keys=["k1", "k0"])  # type: ignore[arg-type]
    assert await bus.append(msg(1), b"{}", idempotency_key="k1") == AppendResult(carried, duplicate=True)
    assert await bus.append(msg(0), b"{}", idempotency_key="k0") == AppendResult(known, duplicate=True)
    # A duplicate append records none of its superseded keys.
    message = msg(3)
    again = await bus.append(
        message, encode_data(message, 65536), idempotency_key="k2", superseded_keys=["k9"]
    )
    assert again == AppendResult(carried, duplicate=True)
    fresh = await bus.append(message, encode_data(message, 65536), idempotency_key="k9")
    assert not fresh.duplicate
    # Without a key of its own, an append still records those it superseded.
    plain = await bus.append(message, encode_data(message, 65536), superseded_keys=["k5"])
    assert await bus.append(message, b"{}", idempotency_key="k5") == AppendResult(
        plain.cursor, duplicate=True
    )


def item(n: int, key: str | None = None, superseded: tuple[str, ...] = (), user: str = "u1") -> Append:
    message = msg(n, user)
    return Append(message, encode_data(message, 65536), key, superseded)


async def test_a_batch_appends_in_order_as_one_by_one(make_bus: BusFactory) -> None:
    bus = await started(make_bus)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    before = await append(bus, -1)
    results = await bus.append_many([item(i) for i in range(300)])
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in results)
    cursors = [r.cursor for r in results if isinstance(r, AppendResult)]
    assert cursors == sorted(cursors)
    assert len(set(cursors)) == 300
    assert cursors[0] > before
    after = await append(bus, 300)
    assert after > cursors[-1]
    await wait_until(lambda: len(seen) == 302)
    assert [r.message.data["n"] for r in seen] == list(range(-1, 301))
    assert [r.cursor for r in seen[1:-1]] == cursors
    replay = await bus.replay(before)
    assert [r.cursor for r in replay.records] == [*cursors, after]
    assert await bus.append_many([]) == []


async def test_a_batch_keeps_idempotency_within_itself_and_with_earlier_appends(
    make_bus: BusFactory,
) -> None:
    bus = await started(make_bus)
    earlier = await append(bus, 0, idempotency_key="k0")
    results = await bus.append_many(
        [item(1, "k1"), item(2, "k0"), item(3), item(4, "k1"), item(5, "k5", ("k6", "k0"))]
    )
    first, dup_earlier, plain, dup_within, carried = results
    assert isinstance(first, AppendResult)
    assert not first.duplicate
    assert dup_earlier == AppendResult(earlier, duplicate=True)
    assert isinstance(plain, AppendResult)
    assert not plain.duplicate
    assert dup_within == AppendResult(first.cursor, duplicate=True)
    assert isinstance(carried, AppendResult)
    assert not carried.duplicate
    assert await bus.append(msg(6), b"{}", idempotency_key="k6") == AppendResult(
        carried.cursor, duplicate=True
    )
    replay = await bus.replay(earlier)
    assert [r.message.data["n"] for r in replay.records] == [1, 3, 5]


async def test_a_batch_larger_than_the_count_limit_is_trimmed_to_it(make_bus: BusFactory) -> None:
    """Trimming keeps up with batches: the log never holds more than ``max_events`` after one."""
    bus = await started(make_bus, max_events=50)
    for round_ in range(3):
        results = await bus.append_many([item(round_ * 400 + i) for i in range(400)])
        last = results[-1]
        assert isinstance(last, AppendResult)
        replay = await bus.replay(last.cursor)
        assert replay.exact
    floor_cursor = results[-51]
    assert isinstance(floor_cursor, AppendResult)
    replay = await bus.replay(floor_cursor.cursor)
    assert replay.exact, "the 51st newest is the floor"
    assert len(replay.records) == 50
    gone = results[-52]
    assert isinstance(gone, AppendResult)
    assert not (await bus.replay(gone.cursor)).exact


def retained_msg(task: str, n: int, user: str = "u1", seconds: int | None = None) -> SSEMessage:
    return build_message(
        event="task.progress-updated",
        scope="user",
        key=user,
        data={"task_id": task, "n": n},
        coalesce=f"task:{task}",
        retain=True,
        retain_seconds=seconds,
    )


async def append_message(bus: EventBus, message: SSEMessage) -> Cursor:
    return (await bus.append(message, encode_data(message, 65536))).cursor


async def test_retained_state_is_the_newest_event_per_channel_and_coalesce_key(
    make_bus: BusFactory, clock: FakeClock
) -> None:
    """D33: the newest wins per (channel, coalesce key), atomically with the append;
    each state lives its own retention; events without ``retain`` are not kept."""
    bus = await started(make_bus, retain_seconds=100)
    await append_message(bus, retained_msg("a", 1))
    b = await append_message(bus, retained_msg("b", 1, seconds=10))
    a = await append_message(bus, retained_msg("a", 2))
    await append(bus, 3)  # no coalesce, not retained
    other = await append_message(bus, retained_msg("a", 9, user="u2"))
    kept = await bus.retained(["user:u1", "global"])
    assert [(r.cursor, r.message.data["n"]) for r in kept] == [(b, 1), (a, 2)]
    assert all(r.frame.startswith(f"id: {r.cursor}\n".encode()) for r in kept)
    assert [r.cursor for r in await bus.retained(["user:u2"])] == [other]
    clock.now += 11  # b's 10 s are over, a's 100 s are not
    assert [r.cursor for r in await bus.retained(["user:u1"])] == [a]
    clock.now += 100
    assert list(await bus.retained(["user:u1"])) == []


async def test_cursor_at_a_time_replays_what_happened_from_then_on(
    make_bus: BusFactory, clock: FakeClock
) -> None:
    bus = await started(make_bus, window_seconds=60)
    early = [await append(bus, i) for i in range(3)]
    clock.now += 5
    since_ms = int(clock.now * 1000)
    later = [await append(bus, i) for i in range(3, 6)]
    after = bus.cursor_at(since_ms)
    assert after is not None
    replay = await bus.replay(after)
    assert replay.exact
    assert [r.cursor for r in replay.records] == later
    assert early[-1] < later[0]
    clock.now += 58  # the early records leave the window, the later ones not yet
    await append(bus, 6)
    before_window = bus.cursor_at(early[0].ms - 1)
    assert before_window is None or not (await bus.replay(before_window)).exact
