"""Deep replay in the manager, with a stand-in source: what a stale cursor's stream is written,
in which order, and when no deep replay is tried. Real Kafka: test_kafka_deep_replay.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence

import pytest

from herald.bus.memory import MemoryBus
from herald.events.message import SSEMessage, build_message
from herald.manager.deep_replay import newest_per_coalesce_key
from herald.wire.cursor import Cursor
from tests.unit.test_manager import RecordingSink, make_manager, message, publish


class Source:
    """Answers with ``found``, filtered as asked; records what it was asked."""

    name = "kafka"

    def __init__(self, found: Sequence[SSEMessage], complete: bool = True) -> None:
        self.found = found
        self.complete = complete
        self.asked: list[tuple[int, frozenset[str]]] = []

    async def recover(
        self, since_ms: int, keep: Callable[[SSEMessage], bool], in_log: Collection[str]
    ) -> tuple[Sequence[SSEMessage], bool] | None:
        self.asked.append((since_ms, frozenset(in_log)))
        await asyncio.sleep(0)  # a source yields: live records meanwhile are held by the seam
        return [m for m in self.found if keep(m) and m.source not in in_log], self.complete


def from_kafka(user: str, n: int, offset: int, **kw: object) -> SSEMessage:
    return build_message(
        event="task.created",
        scope="user",
        key=user,
        data={"n": n},
        source=f"kafka:t:0:{offset}",
        **kw,  # type: ignore[arg-type]
    )


async def stale_setup() -> tuple[MemoryBus, Cursor, Cursor]:
    """A log of 3 events that trimmed the client's cursor; its floor."""
    bus = MemoryBus(max_events=3)
    cursor = await publish(bus, message("alice", 0))
    for n in range(1, 5):  # the cursor and bob's first are trimmed: the floor is past the cursor
        await publish(bus, message("bob", n))
    assert not (await bus.replay(cursor)).exact
    return bus, cursor, bus.floor


async def test_a_stale_cursor_gets_the_recovered_events_then_the_floor_then_the_log_then_live() -> None:
    bus, cursor, _ = await stale_setup()
    in_log = await publish(bus, from_kafka("alice", 9, offset=9))  # after the floor: from the log
    floor = bus.floor
    source = Source(
        [
            from_kafka("alice", 1, offset=1),
            from_kafka("bob", 2, offset=2),  # not this stream's
            build_message(
                event="task.progress-updated", scope="user", key="alice", data={"p": 1}, coalesce="t:1"
            ),
            from_kafka("alice", 3, offset=3),
            build_message(
                event="task.progress-updated", scope="user", key="alice", data={"p": 2}, coalesce="t:1"
            ),
            from_kafka("alice", 9, offset=9),  # in the log's replay: not from here
        ]
    )
    _, manager = await make_manager(bus)
    manager.deep_replay = source
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id="alice", session_id=None, subscriptions=frozenset(), expires_at=None
    )
    opening = asyncio.create_task(manager.start_stream(conn, str(cursor)))
    await asyncio.sleep(0)
    live = await publish(bus, message("alice", 10))  # during the deep replay: held, then after the log
    assert await opening is False
    conn.flush()
    events = sink.events()
    name, hello_id, hello = events[0]
    assert (name, hello_id) == ("connection.established", str(floor))
    assert hello["recovered"] is False
    assert hello["replay_miss"] == "stale"
    assert hello["deep_replay"] == {
        "source": "kafka",
        "events": 3,
        "complete": True,
        "since": hello["deep_replay"]["since"],
    }
    assert [(e[1], e[2]) for e in events[1:4]] == [
        ("", {"n": 1, "_scope": "user", "_version": "1.0"}),
        ("", {"n": 3, "_scope": "user", "_version": "1.0"}),
        ("", {"p": 2, "_scope": "user", "_version": "1.0"}),
    ]
    assert [e[1] for e in events[4:]] == [str(in_log), str(live)]
    # The floor block sits between the recovered events and the log.
    written = b"".join(sink.written)
    assert written.index(b"id: %s\n\n" % str(floor).encode()) < written.index(str(in_log).encode())
    assert source.asked == [(cursor.ms, frozenset({"kafka:t:0:9"}))]


@pytest.mark.parametrize(
    ("last_event_id", "miss"),
    [(None, "none"), ("garbage", "malformed"), ("99999999999999-0", "stale")],
)
async def test_no_deep_replay_without_a_cursor_older_than_the_floor(
    last_event_id: str | None, miss: str
) -> None:
    bus, _, _ = await stale_setup()
    source = Source([from_kafka("alice", 1, offset=1)])
    _, manager = await make_manager(bus)
    manager.deep_replay = source
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id="alice", session_id=None, subscriptions=frozenset(), expires_at=None
    )
    assert await manager.start_stream(conn, last_event_id) is False
    conn.flush()
    hello = sink.events()[0][2]
    assert (hello["replay_miss"], hello["deep_replay"]) == (miss, None)
    assert source.asked == []


async def test_a_source_that_declines_leaves_the_plain_miss() -> None:
    bus, cursor, _ = await stale_setup()

    class Busy(Source):
        async def recover(
            self, since_ms: int, keep: Callable[[SSEMessage], bool], in_log: Collection[str]
        ) -> tuple[Sequence[SSEMessage], bool] | None:
            return None

    _, manager = await make_manager(bus)
    manager.deep_replay = Busy([])
    sink = RecordingSink()
    conn = manager.register(
        sink, user_id="alice", session_id=None, subscriptions=frozenset(), expires_at=None
    )
    await manager.start_stream(conn, str(cursor))
    conn.flush()
    assert [e[0] for e in sink.events()] == ["connection.established"]
    assert sink.events()[0][2]["deep_replay"] is None


def progress(task: str, p: int, user: str = "u") -> SSEMessage:
    return build_message(
        event="task.progress-updated", scope="user", key=user, data={"p": p}, coalesce=f"task:{task}"
    )


def created(n: int) -> SSEMessage:
    return build_message(event="task.created", scope="user", key="u", data={"n": n})


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param([created(1), created(2)], [created(1), created(2)], id="nothing to coalesce"),
        pytest.param(
            [progress("a", 1), created(1), progress("a", 2), progress("b", 1), progress("a", 3)],
            [created(1), progress("b", 1), progress("a", 3)],
            id="the newest per key, where it stood",
        ),
        pytest.param(
            [progress("a", 1, user="u1"), progress("a", 2, user="u2")],
            [progress("a", 1, user="u1"), progress("a", 2, user="u2")],
            id="the same coalesce key for two users is two keys",
        ),
    ],
)
def test_newest_per_coalesce_key(messages: list[SSEMessage], expected: list[SSEMessage]) -> None:
    assert newest_per_coalesce_key(messages) == expected
