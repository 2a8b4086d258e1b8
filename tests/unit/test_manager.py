"""The manager's own logic: routing, the replay seam, backpressure, heartbeats, expiry.

The sink is a recording stand-in for a socket: what is under test is what the
manager hands it, not the socket (the integration tests cover real sockets).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence

import orjson
import pytest

from herald.bus.base import BusRecord, Replay
from herald.bus.memory import MemoryBus
from herald.events.message import SSEMessage, build_message, encode_data
from herald.manager.connection import CloseReason, Connection
from herald.manager.manager import ConnectionManager
from herald.types import Priority
from herald.wire.cursor import Cursor
from tests.support.sse import SSEParser
from tests.support.waiting import wait_until


class RecordingSink:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False
        self.pending = 0
        self.parser = SSEParser()

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writer(self) -> Callable[[bytes], None]:
        return self.write

    def backlog(self) -> int:
        return self.pending

    def close(self) -> None:
        self.closed = True

    def events(self) -> list[tuple[str, str | None, dict[str, object]]]:
        parser = SSEParser()
        out = []
        for block in parser.feed(b"".join(self.written).decode()):
            event = parser.to_event(block)
            if event is not None:
                out.append((event.event, event.id, orjson.loads(event.data)))
        return out

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events()]


def message(user: str, n: int, **kw: object) -> SSEMessage:
    return build_message(event="task.progress-updated", scope="user", key=user, data={"n": n}, **kw)  # type: ignore[arg-type]


async def publish(bus: MemoryBus, msg: SSEMessage) -> Cursor:
    return (await bus.append(msg, encode_data(msg, 65536))).cursor


_started: list[ConnectionManager] = []


@pytest.fixture(autouse=True)
async def _stop_managers() -> AsyncIterator[None]:
    yield
    while _started:
        await _started.pop().stop()


async def make_manager(bus: MemoryBus | None = None, **kw: object) -> tuple[MemoryBus, ConnectionManager]:
    bus = bus if bus is not None else MemoryBus()
    manager = ConnectionManager(bus, **kw)  # type: ignore[arg-type]
    await manager.start()
    _started.append(manager)
    return bus, manager


async def connect(
    manager: ConnectionManager,
    user: str = "alice",
    *,
    session: str | None = None,
    subscriptions: Sequence[str] = (),
    last_event_id: str | None = None,
    expires_at: float | None = None,
) -> tuple[Connection, RecordingSink]:
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id=user, session_id=session, subscriptions=frozenset(subscriptions), expires_at=expires_at
    )
    await manager.start_stream(conn, last_event_id)
    return conn, sink


async def flushed() -> None:
    """Let the manager's end-of-turn flush run."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_each_scope_reaches_exactly_its_receivers() -> None:
    bus, manager = await make_manager()
    _, alice = await connect(manager, "alice", session="s1", subscriptions=["novel:42"])
    _, bob = await connect(manager, "bob", session="s2")
    await publish(bus, message("alice", 1))
    await publish(bus, build_message(event="genesis.step-completed", scope="session", key="s2", data={}))
    await publish(bus, build_message(event="novel.status-changed", scope="novel", key="42", data={}))
    await publish(bus, build_message(event="novel.status-changed", scope="novel", key="7", data={}))
    await publish(bus, build_message(event="system.notification", scope="global", key=None, data={}))
    await flushed()
    assert alice.names() == [
        "connection.established",
        "task.progress-updated",
        "novel.status-changed",
        "system.notification",
    ]
    assert bob.names() == ["connection.established", "genesis.step-completed", "system.notification"]


async def test_events_of_one_turn_reach_the_socket_in_one_write() -> None:
    bus, manager = await make_manager()
    _, sink = await connect(manager)
    await flushed()
    sink.written.clear()
    for n in range(5):
        await publish(bus, message("alice", n))
    await flushed()
    assert len(sink.written) == 1
    assert [data["n"] for _, _, data in sink.events()] == [0, 1, 2, 3, 4]


async def test_every_receiver_gets_the_same_frame_object() -> None:
    bus, manager = await make_manager()
    sinks = [(await connect(manager, "alice"))[1] for _ in range(3)]
    await flushed()
    for sink in sinks:
        sink.written.clear()
    await publish(bus, message("alice", 1))
    await flushed()
    frames = [sink.written[0] for sink in sinks]
    assert all(frame is frames[0] for frame in frames), "encoded once, shared by every receiver"


class SlowReplayBus(MemoryBus):
    """A memory bus whose replay yields to the loop, as a networked bus does,
    letting the test publish while a replay is in flight."""

    def __init__(self) -> None:
        super().__init__()
        self.replay_started = asyncio.Event()
        self.release = asyncio.Event()

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        self.replay_started.set()
        await self.release.wait()
        return self.replay_now(after)


async def test_events_published_during_the_replay_arrive_once_in_order() -> None:
    bus = SlowReplayBus()
    _, manager = await make_manager(bus)
    cursors = [await publish(bus, message("alice", n)) for n in range(5)]
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id="alice", session_id=None, subscriptions=frozenset(), expires_at=None
    )
    task = asyncio.create_task(manager.start_stream(conn, str(cursors[1])))
    await bus.replay_started.wait()
    cursors += [await publish(bus, message("alice", n)) for n in range(5, 9)]  # during the replay
    bus.release.set()
    assert await task is True
    cursors += [await publish(bus, message("alice", n)) for n in range(9, 11)]
    await flushed()
    received = [cursor for name, cursor, _ in sink.events() if name == "task.progress-updated"]
    assert received == [str(c) for c in cursors[2:]]


async def test_established_id_is_the_resume_position_for_fresh_streams() -> None:
    bus, manager = await make_manager()
    before = await publish(bus, message("bob", 1))
    _, sink = await connect(manager)
    await flushed()
    name, established_id, data = sink.events()[0]
    assert name == "connection.established"
    assert established_id == str(before)
    assert data["recovered"] is False
    assert data["replay_miss"] == "none"
    missed = await publish(bus, message("alice", 2))
    replay = await bus.replay(Cursor(*map(int, established_id.split("-"))))
    assert [r.cursor for r in replay.records] == [missed]


async def test_malformed_and_stale_cursors_start_live_and_say_so() -> None:
    bus, manager = await make_manager()
    await publish(bus, message("alice", 1))
    _, garbage = await connect(manager, last_event_id="not-a-cursor")
    _, stale = await connect(manager, last_event_id="1-0")
    await flushed()
    assert garbage.events()[0][2]["replay_miss"] == "malformed"
    assert stale.events()[0][2]["replay_miss"] == "stale"
    assert [len(s.events()) for s in (garbage, stale)] == [1, 1], "no replay"
    assert manager.stats.replay_misses == 2


async def test_replay_only_contains_what_the_connection_may_see() -> None:
    bus, manager = await make_manager()
    start = bus.head
    await publish(bus, message("bob", 1))
    mine = await publish(bus, message("alice", 2))
    await publish(bus, build_message(event="novel.created", scope="novel", key="9", data={}))
    _, sink = await connect(manager, last_event_id=str(start))
    await flushed()
    events = sink.events()
    assert events[0][2]["recovered"] is True
    assert [cursor for _, cursor, _ in events[1:]] == [str(mine)]


async def test_a_paused_connection_coalesces_then_resumes_in_cursor_order() -> None:
    bus, manager = await make_manager()
    conn, sink = await connect(manager)
    await flushed()
    sink.written.clear()
    conn.pause_writing()
    await publish(bus, message("alice", 1, coalesce="task:t1"))
    other = await publish(bus, message("alice", 2))
    latest = await publish(bus, message("alice", 3, coalesce="task:t1"))
    assert manager.stats.coalesced == 1
    conn.resume_writing()
    await flushed()
    assert [c for _, c, _ in sink.events()] == [str(other), str(latest)]


async def test_low_priority_is_dropped_first_then_a_slow_consumer_is_closed() -> None:
    bus, manager = await make_manager(slow_consumer_bytes=4096)
    conn, sink = await connect(manager)
    await flushed()
    conn.pause_writing()
    big = "x" * 1500
    for n in range(2):
        await publish(
            bus,
            build_message(
                event="task.created",
                scope="user",
                key="alice",
                data={"b": big, "n": n},
                priority=Priority.LOW,
            ),
        )
    await publish(
        bus,
        build_message(
            event="task.created", scope="user", key="alice", data={"b": big}, priority=Priority.HIGH
        ),
    )
    await publish(
        bus,
        build_message(
            event="task.created", scope="user", key="alice", data={"b": big}, priority=Priority.HIGH
        ),
    )
    assert manager.stats.dropped_low >= 1
    assert not conn.closed
    for _ in range(3):
        await publish(bus, build_message(event="task.created", scope="user", key="alice", data={"b": big}))
    await flushed()
    assert conn.closed
    assert conn.close_reason == CloseReason.SLOW_CONSUMER
    assert sink.closed
    assert sink.names()[-1] == "error.slow-consumer"
    assert len(manager) == 0


async def test_closing_removes_every_reference() -> None:
    _bus, manager = await make_manager()
    conn, _ = await connect(manager, "alice", session="s", subscriptions=["novel:1"])
    conn.connection_lost()
    assert len(manager) == 0
    assert manager.index.by_user == {}
    assert manager.index.by_session == {}
    assert manager.index.by_resource == {}
    assert all(conn not in bucket for bucket in manager._buckets)


async def test_heartbeats_carry_the_position_for_idle_live_connections() -> None:
    bus, manager = await make_manager(heartbeat_seconds=0.05)
    _, sink = await connect(manager, "alice")
    cursor = await publish(bus, message("bob", 1))
    await wait_until(lambda: f"id: {cursor}".encode() in b"".join(sink.written))
    assert f": {cursor}\nid: {cursor}\n\n".encode() in b"".join(sink.written)


async def test_a_stream_ends_with_auth_expired_when_its_token_does() -> None:
    now = [1000.0]
    _bus, manager = await make_manager(heartbeat_seconds=0.05, clock=lambda: now[0])
    conn, sink = await connect(manager, expires_at=1001.0)
    now[0] = 1002.0
    await wait_until(lambda: conn.closed)
    assert conn.close_reason == CloseReason.AUTH_EXPIRED
    assert sink.names()[-1] == "error.auth-expired"


async def test_shutdown_tells_each_stream_when_to_return_with_jitter() -> None:
    _bus, manager = await make_manager(retry_ms=1000)
    sinks = [(await connect(manager, f"u{i}"))[1] for i in range(20)]
    await manager.shutdown(grace_seconds=1, spread_ms=5000)
    retries = set()
    for sink in sinks:
        assert sink.closed
        parser = SSEParser()
        for block in parser.feed(b"".join(sink.written).decode()):
            parser.to_event(block)
        assert parser.retry is not None
        assert 1000 <= parser.retry <= 6000
        retries.add(parser.retry)
    assert len(retries) > 1, "jittered"
    assert not manager.accepting


async def test_an_empty_last_event_id_is_no_cursor() -> None:
    _, manager = await make_manager()
    _, sink = await connect(manager, last_event_id="  ")
    await flushed()
    assert sink.events()[0][2]["replay_miss"] == "none"
    assert manager.stats.replay_misses == 0


async def test_expiry_entries_of_closed_streams_do_not_pile_up() -> None:
    _, manager = await make_manager()
    for _ in range(3000):
        conn, _ = await connect(manager, expires_at=10**12)
        conn.connection_lost()
    assert len(manager) == 0
    manager._expire()
    assert len(manager._expiries) == 0


class InterestBus(MemoryBus):
    """A memory bus that records, in order, what the manager tells it and when it replays."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, frozenset[str]]] = []

    def follow(self, channels: Collection[str]) -> Awaitable[None]:
        self.calls.append(("follow", frozenset(channels)))
        return super().follow(channels)

    def unfollow(self, channels: Collection[str]) -> None:
        self.calls.append(("unfollow", frozenset(channels)))
        super().unfollow(channels)

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        self.calls.append(("replay", frozenset(channels or ())))
        return await super().replay(after, channels)


async def test_the_bus_is_told_a_streams_channels_before_its_replay_and_no_longer_after_it_closes() -> None:
    bus = InterestBus()
    _, manager = await make_manager(bus)
    start = await publish(bus, message("alice", 0))
    first, _ = await connect(
        manager, "alice", session="s1", subscriptions=["novel:1"], last_event_id=str(start)
    )
    second, _ = await connect(manager, "alice", subscriptions=["novel:1", "novel:2"])
    channels = {"global", "user:alice", "session:s1", "novel:1"}
    assert bus.calls[:2] == [("follow", frozenset(channels)), ("replay", frozenset(channels))], (
        "followed, then replayed, for the stream's channels"
    )
    assert len(bus.interest) == 5  # global, user:alice, session:s1, novel:1, novel:2
    first.connection_lost()
    assert bus.calls[-1] == ("unfollow", frozenset(channels))
    assert "session:s1" not in bus.interest
    assert "novel:1" in bus.interest, "the second stream still follows it"
    second.connection_lost()
    assert len(bus.interest) == 0, "every follow was undone"
    first.connection_lost()  # closing twice unfollows once
    assert len(bus.interest) == 0
    assert sum(1 for call, _ in bus.calls if call == "unfollow") == 2


async def test_a_subscription_change_follows_and_unfollows_the_resources_channels() -> None:
    bus = InterestBus()
    _, manager = await make_manager(bus)
    conn, _ = await connect(manager, "bob", subscriptions=["doc:1"])
    await manager.change_subscriptions(conn, add=["doc:2", "doc:3"], remove=["doc:1"])
    assert ("follow", frozenset({"doc:2", "doc:3"})) in bus.calls
    assert ("unfollow", frozenset({"doc:1"})) in bus.calls
    assert "doc:1" not in bus.interest
    assert {"doc:2", "doc:3"} <= set(conn.following)
    conn.connection_lost()
    assert len(bus.interest) == 0


class SlowRetainedBus(MemoryBus):
    """Retained states read over a "network": the read answers only when released, and
    returns what the table held when it was sent (D33)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.reads = 0

    async def retained(self, channels: Collection[str]) -> Sequence[BusRecord]:
        found = self.retained_now(channels)
        self.reads += 1
        await self.gate.wait()
        return found


def progress(scope: str, key: str, n: int) -> SSEMessage:
    return build_message(
        event="task.progress-updated", scope=scope, key=key, data={"n": n}, coalesce="task:t", retain=True
    )


async def test_retained_states_go_first_marked_without_id_and_newer_ones_live() -> None:
    bus, manager = await make_manager()
    await publish(bus, progress("user", "alice", 1))
    kept = await publish(bus, progress("user", "alice", 2))
    conn, sink = await connect(manager, "alice")
    live = await publish(bus, progress("user", "alice", 3))
    await flushed()
    events = sink.events()
    assert [(name, data.get("n"), data.get("_retained")) for name, _, data in events] == [
        ("connection.established", None, None),
        ("task.progress-updated", 2, True),
        ("task.progress-updated", 3, None),
    ]
    established_id = events[0][1]
    assert [event_id for _, event_id, _ in events] == [established_id, established_id, str(live)]
    assert b"".join(sink.written).count(b"\nid: ") == 2, "established and the live event; not the retained"
    assert manager.stats.retained_sent == 1
    resumed, resumed_sink = await connect(manager, "alice", last_event_id=str(kept))
    await flushed()
    assert [data.get("n") for _, _, data in resumed_sink.events()[1:]] == [3], "no retained on a resume"
    conn.connection_lost()
    resumed.connection_lost()


async def test_a_resource_added_mid_stream_holds_live_events_behind_its_retained_states() -> None:
    """A live event of the added resource (or any other) that arrives while the retained
    states are read waits for them: the page never goes back to an older state."""
    bus = SlowRetainedBus()
    bus.gate.set()
    _, manager = await make_manager(bus)
    await publish(bus, progress("doc", "1", 10))
    conn, sink = await connect(manager, "bob")
    bus.gate.clear()
    change = asyncio.create_task(manager.change_subscriptions(conn, add=["doc:1"], remove=[]))
    await wait_until(lambda: bus.reads == 2)
    newer = await publish(bus, progress("doc", "1", 11))
    other = await publish(bus, message("bob", 99))
    await flushed()
    assert [name for name, _, _ in sink.events()][-1] == "connection.subscriptions-changed"
    bus.gate.set()
    await change
    await flushed()
    tail = [(event_id, data.get("n"), data.get("_retained")) for _, event_id, data in sink.events()[-3:]]
    assert tail[0][1:] == (10, True)
    assert tail[1:] == [(str(newer), 11, None), (str(other), 99, None)]
    conn.connection_lost()
