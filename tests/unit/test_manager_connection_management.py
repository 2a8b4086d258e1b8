"""The manager's side of connection management: subscription changes on a live
stream and their replay seam, and the counters the metrics read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from herald.bus.memory import MemoryBus
from herald.events.message import SSEMessage, build_message, encode_data
from herald.manager.connection import Connection
from herald.manager.manager import ConnectionManager
from herald.types import Priority
from herald.wire.cursor import Cursor, parse_cursor
from tests.unit.test_manager import RecordingSink


def novel(key: str, n: int, **kw: object) -> SSEMessage:
    return build_message(event="chapter.draft-created", scope="novel", key=key, data={"n": n}, **kw)  # type: ignore[arg-type]


def mine(n: int, **kw: object) -> SSEMessage:
    return build_message(event="task.progress-updated", scope="user", key="alice", data={"n": n}, **kw)  # type: ignore[arg-type]


async def publish(bus: MemoryBus, msg: SSEMessage) -> Cursor:
    return (await bus.append(msg, encode_data(msg, 65536))).cursor


async def flushed() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


@pytest.fixture
async def setup() -> AsyncIterator[tuple[MemoryBus, ConnectionManager]]:
    bus = MemoryBus()
    manager = ConnectionManager(bus, slow_consumer_bytes=4096)
    await manager.start()
    yield bus, manager
    await manager.stop()


async def connect(
    manager: ConnectionManager, subscriptions: tuple[str, ...] = (), last_event_id: str | None = None
) -> tuple[Connection, RecordingSink]:
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id="alice", session_id=None, subscriptions=frozenset(subscriptions), expires_at=None
    )
    await manager.start_stream(conn, last_event_id)
    return conn, sink


async def test_an_added_subscription_is_live_from_the_change_and_a_removed_one_stops(
    setup: tuple[MemoryBus, ConnectionManager],
) -> None:
    bus, manager = setup
    conn, sink = await connect(manager, ("novel:1",))
    before = await publish(bus, novel("2", 0))  # before the change: never sent
    added, removed, live_from = await manager.change_subscriptions(conn, ["novel:2", "novel:1"], ["novel:7"])
    assert (added, removed, live_from) == (["novel:2"], [], before)  # what it had, or never had: no change
    after = await publish(bus, novel("2", 1))
    await flushed()
    events = sink.events()
    notice = events[1]
    assert notice[0] == "connection.subscriptions-changed"
    assert notice[1] == str(before), "live with nothing waiting: the notice moves the cursor"
    assert notice[2]["live_from"] == str(before)
    assert notice[2]["subscriptions"] == ["novel:1", "novel:2"]
    assert [cursor for name, cursor, _ in events[2:]] == [str(after)]

    added, removed, _ = await manager.change_subscriptions(conn, [], ["novel:1"])
    assert (added, removed) == ([], ["novel:1"])
    await publish(bus, novel("1", 2))
    assert "novel:1" not in manager.index.by_resource
    assert conn.subscriptions == frozenset({"novel:2"})


async def test_a_reconnect_from_the_notice_with_the_new_list_neither_loses_nor_duplicates(
    setup: tuple[MemoryBus, ConnectionManager],
) -> None:
    bus, manager = setup
    conn, sink = await connect(manager)
    await publish(bus, novel("9", 0))  # before the subscription: not the client's
    await manager.change_subscriptions(conn, ["novel:9"], [])
    live = [await publish(bus, novel("9", n)) for n in (1, 2)]
    await flushed()
    received = [cursor for name, cursor, _ in sink.events() if name == "chapter.draft-created"]
    assert received == [str(c) for c in live]
    cursor = sink.events()[-1][1]
    conn.connection_lost()
    missed = [await publish(bus, novel("9", n)) for n in (3, 4)]
    # The reconnect names the new list in ?subscribe= and sends its Last-Event-ID.
    _, again = await connect(manager, ("novel:9",), last_event_id=cursor)
    await flushed()
    events = again.events()
    assert events[0][2]["recovered"] is True
    assert [c for _, c, _ in events[1:]] == [str(c) for c in missed]


async def test_the_notice_of_a_backlogged_stream_carries_no_cursor(
    setup: tuple[MemoryBus, ConnectionManager],
) -> None:
    bus, manager = setup
    conn, sink = await connect(manager)
    await flushed()
    conn.pause_writing()
    queued = await publish(bus, mine(1))  # waits in the queue, behind the socket
    await manager.change_subscriptions(conn, ["novel:3"], [])
    await flushed()
    block = b"".join(sink.written).split(b"\n\n")[-2]
    assert block.startswith(b"event: connection.subscriptions-changed\n")
    assert b"id:" not in block, "an id would pass the queued event"
    conn.resume_writing()
    await flushed()
    assert sink.events()[-1][1] == str(queued)


async def test_backpressure_counters_by_priority(setup: tuple[MemoryBus, ConnectionManager]) -> None:
    bus, manager = setup
    conn, _ = await connect(manager)
    await flushed()
    conn.pause_writing()
    conn.pause_writing()  # twice: one backlogged connection
    assert manager.stats.backlogged == 1
    await publish(bus, mine(1, coalesce="t1", priority=Priority.HIGH))
    await publish(bus, mine(2, coalesce="t1", priority=Priority.HIGH))
    for n in range(3):
        await publish(
            bus,
            build_message(
                event="task.created",
                scope="user",
                key="alice",
                data={"p": "x" * 1500, "n": n},
                priority=Priority.LOW,
            ),
        )
    stats = manager.stats
    assert stats.coalesced_by_priority == [0, 0, 1]
    assert stats.dropped_by_priority[Priority.LOW] >= 1
    assert stats.dropped_by_priority[Priority.HIGH] == 0
    conn.resume_writing()
    assert stats.backlogged == 0
    conn.pause_writing()
    conn.connection_lost()
    assert stats.backlogged == 0, "a closed connection is not backlogged"


async def test_a_doomed_connection_stops_queueing(setup: tuple[MemoryBus, ConnectionManager]) -> None:
    bus, manager = setup
    conn, sink = await connect(manager)
    await flushed()
    conn.pause_writing()
    for n in range(10):
        await publish(bus, mine(n, priority=Priority.HIGH) if n else mine(n))
        await publish(
            bus, build_message(event="task.created", scope="user", key="alice", data={"p": "y" * 2000})
        )
    assert conn._queue_bytes <= 4096 + 2200, "nothing piles up behind the slow-consumer verdict"
    await flushed()
    assert conn.closed
    assert sink.names()[-1] == "error.slow-consumer"


async def test_replays_and_write_latency_are_measured(setup: tuple[MemoryBus, ConnectionManager]) -> None:
    bus, manager = setup
    start = bus.head
    for n in range(3):
        await publish(bus, mine(n))
    await publish(bus, novel("5", 0))
    await connect(manager, last_event_id=str(start))
    await connect(manager, last_event_id="99-0")
    await connect(manager, last_event_id="garbage")
    stats = manager.stats
    assert (stats.replay_hits, stats.replay_miss_reasons) == (1, {"stale": 1, "malformed": 1})
    assert stats.replay_sizes.count == 1
    assert stats.replay_sizes.sum == 3  # the novel event is not alice's
    before = stats.write_latency.count
    await publish(bus, mine(9))
    await flushed()
    assert stats.write_latency.count == before + 1
    assert stats.write_latency.sum >= 0
    nobody = build_message(event="task.created", scope="user", key="nobody", data={})
    await publish(bus, nobody)
    await flushed()
    assert stats.write_latency.count == before + 1, "an event nobody receives is never written"
    assert parse_cursor(str(manager.position)) is not None
