"""Replay after a reconnect: exactly the missed events this connection may see, in
order, then live; no gap and no duplicate at the seam; ``recovered: false``
(never an error, never silence) when the cursor cannot be replayed."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tests.support.api import Api, api_client, ids, publish_pipelined, unique, until_marker, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.sse import Event, Stream, open_stream


def cursor_key(cursor: str | None) -> tuple[int, int]:
    assert cursor is not None
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


def assert_strictly_increasing(cursors: list[str | None]) -> None:
    keys = [cursor_key(c) for c in cursors]
    assert all(a < b for a, b in itertools.pairwise(keys)), cursors


def established(event: Event) -> dict[str, Any]:
    assert event.event == "connection.established"
    body: dict[str, Any] = event.json()
    return body


def open_resumed(
    how: str, url: str, *, token: str, cursor: str | None, subscribe: str | None = None
) -> AbstractAsyncContextManager[Stream]:
    """A stream resuming after ``cursor``, sent as the header or as the query parameter."""
    if how == "header":
        return open_stream(url, token=token, subscribe=subscribe, last_event_id=cursor)
    return open_stream(url, token=token, subscribe=subscribe, query_last_event_id=cursor)


@pytest.mark.parametrize("how", ["header", "query"])
async def test_reconnect_replays_exactly_what_this_connection_missed_then_goes_live(
    gateway: GatewayProcess, api: Api, how: str
) -> None:
    user, sid, novel = unique("u"), unique("sid"), f"novel:{unique('n')}"
    token = gateway.token(user, sid=sid, resources=("novel:*",))
    async with open_stream(gateway.url, token=token, subscribe=novel) as first:
        await first.next()
        seen = await api.publish("task.created", "user", user, {"n": 0})
        assert (await first.next()).id == seen
        cursor = first.last_event_id
    assert cursor == seen

    novel_id = novel.partition(":")[2]
    missed = [
        await api.publish("task.created", "user", user, {"n": 1}),
        await api.publish("genesis.step-completed", "session", sid, {"stage": 2}),
        await api.publish("chapter.draft-created", "novel", novel_id, {"chapter_id": "c"}),
        await api.publish("system.notification", "global", None, {"title": "t"}),
        await api.publish("task.created", "user", user, {"n": 5}),
    ]
    # Events published meanwhile that this connection may not see.
    await api.publish("task.created", "user", unique("other"), {"n": -1})
    await api.publish("genesis.step-completed", "session", unique("sid"), {"stage": -1})
    await api.publish("chapter.draft-created", "novel", unique("n"), {"chapter_id": "x"})
    await api.publish("chapter.draft-created", "chapter", novel_id, {"chapter_id": "y"})

    async with open_resumed(how, gateway.url, token=token, cursor=cursor, subscribe=novel) as second:
        hello = await second.next()
        assert established(hello)["recovered"] is True
        assert established(hello)["replay_miss"] is None
        assert established(hello)["subscriptions"] == [novel]
        assert hello.id == cursor
        replayed = await second.take(len(missed))
        assert ids(replayed) == missed
        assert replayed[0].json() == {"n": 1, "_scope": "user", "_version": "1.0"}
        live = await api.publish("task.created", "user", user, {"n": 6})
        marker = await api.marker()
        assert ids(await until_marker(second, marker)) == [live]


async def test_the_header_wins_over_the_query_parameter(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    first = await api.publish("task.created", "user", user, {"n": 1})
    second = await api.publish("task.created", "user", user, {"n": 2})
    async with open_stream(
        gateway.url, token=gateway.token(user), last_event_id=first, query_last_event_id="garbage"
    ) as stream:
        assert established(await stream.next())["recovered"] is True
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [second]


async def test_reconnects_while_events_are_published_continuously_lose_and_repeat_nothing(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("busy")
    token = gateway.token(user)
    published: list[str] = []
    stop = asyncio.Event()

    def event(key: str, n: int) -> dict[str, Any]:
        return {"event": "task.progress-updated", "scope": "user", "key": key, "data": {"p": n}}

    async def publisher(n: int) -> None:
        while not stop.is_set():
            published.extend(await publish_pipelined(gateway, [event(user, n)] * 10))

    async def noise(n: int) -> None:
        # Other users' events: they make the replays long (many chunks) and are never received.
        while not stop.is_set():
            await publish_pipelined(gateway, [event(unique("other"), n) for _ in range(50)])

    received: list[Event] = []
    async with open_stream(gateway.url, token=token) as stream:
        hello = await stream.next()
        tasks = [asyncio.create_task(publisher(n)) for n in range(3)]
        tasks += [asyncio.create_task(noise(n)) for n in range(2)]
        try:
            received += await stream.take(15)
            # Resume after the last event taken: the reader may have parsed more.
            cursor = received[-1].id
            # Away long enough for events to pile up, then back while more keep coming.
            # Hundreds of missed events are thousands of log records: the replay is
            # written in chunks, with the loop (and the publishers) running between them.
            for away, take in ((20, 30), (400, 500), (5, 30), (20, 30)):
                target = len(published) + away
                await wait_until(lambda t=target: len(published) >= t, what="events published meanwhile")
                async with open_stream(gateway.url, token=token, last_event_id=cursor) as again:
                    assert established(await again.next())["recovered"] is True
                    received += await again.take(take)
                    cursor = received[-1].id
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    final = max(published, key=cursor_key)
    async with open_stream(gateway.url, token=token, last_event_id=cursor) as last:
        assert established(await last.next())["recovered"] is True
        if cursor_key(cursor) < cursor_key(final):
            received += await last.until(lambda e: e.id == final)
        marker = await api.marker()
        assert await until_marker(last, marker) == []

    assert hello.id is not None
    expected = sorted(published, key=cursor_key)
    assert cursor_key(hello.id) < cursor_key(expected[0])
    assert len(expected) >= 600
    got = ids(received)
    assert_strictly_increasing(got)
    assert got == expected
    assert {e.json()["p"] for e in received} == {0, 1, 2}


@pytest.mark.parametrize(
    ("cursor", "miss"),
    [
        ("garbage", "malformed"),
        ("12-", "malformed"),
        ("1-0", "stale"),
        ("99999999999999-0", "stale"),
    ],
)
@pytest.mark.parametrize("how", ["header", "query"])
async def test_a_cursor_that_cannot_be_replayed_opens_unrecovered_with_no_replay(
    gateway: GatewayProcess, api: Api, cursor: str, miss: str, how: str
) -> None:
    user = unique("u")
    await api.publish("task.created", "user", user, {"before": True})
    async with open_resumed(how, gateway.url, token=gateway.token(user), cursor=cursor) as stream:
        hello = established(await stream.next())
        assert hello["recovered"] is False
        assert hello["replay_miss"] == miss
        after = await api.publish("task.created", "user", user, {"after": True})
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [after]


async def test_no_cursor_starts_live_with_replay_miss_none(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    before = await api.publish("task.created", "user", user, {"before": True})
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        hello = await stream.next()
        assert established(hello)["recovered"] is False
        assert established(hello)["replay_miss"] == "none"
        assert hello.id == before  # the node's position: nothing published since
        marker = await api.marker()
        assert await until_marker(stream, marker) == []


async def test_the_established_id_is_where_a_reconnect_resumes(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    await api.publish("task.created", "user", user, {"old": True})
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        hello = await stream.next()
        assert stream.last_event_id == hello.id
    between = [
        await api.publish("task.created", "user", user, {"n": 1}),
        await api.publish("system.notification", "global", None, {"n": 2}),
        await api.publish("task.created", "user", user, {"n": 3}),
    ]
    await api.publish("task.created", "user", unique("other"), {"n": -1})
    async with open_stream(gateway.url, token=gateway.token(user), last_event_id=hello.id) as stream:
        again = await stream.next()
        assert established(again)["recovered"] is True
        assert again.id == hello.id
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == between


async def test_heartbeats_move_a_quiet_clients_cursor_and_resuming_from_it_is_exact(
    gateway: GatewayProcess, api: Api
) -> None:
    quiet, other = unique("quiet"), unique("other")
    async with open_stream(gateway.url, token=gateway.token(quiet)) as stream:
        await stream.next()
        own = await api.publish("task.created", "user", quiet, {"n": 1})
        assert (await stream.next()).id == own
        noise = [await api.publish("task.created", "user", other, {"n": i}) for i in range(3)]
        await wait_until(
            lambda: stream.last_event_id == noise[-1], what="a heartbeat carrying the node's position"
        )
        assert ids(stream.events[1:]) == [own]  # the noise itself never arrived
        assert stream.heartbeats >= 1
        resume_from = stream.last_event_id
    later = await api.publish("task.created", "user", quiet, {"n": 2})
    async with open_stream(gateway.url, token=gateway.token(quiet), last_event_id=resume_from) as stream:
        hello = await stream.next()
        assert established(hello)["recovered"] is True
        assert hello.id == resume_from
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [later]


@pytest.fixture(scope="module")
def short_log() -> Iterator[GatewayProcess]:
    with running_gateway({"HERALD_REPLAY_MAX_EVENTS": "5", "HERALD_HEARTBEAT_SECONDS": "0.5"}) as process:
        yield process


@pytest.fixture
async def short_api(short_log: GatewayProcess) -> AsyncIterator[Api]:
    async with api_client(short_log) as client:
        yield client


async def test_a_trimmed_cursor_is_stale_and_the_floor_still_replays(
    short_log: GatewayProcess, short_api: Api
) -> None:
    user = unique("u")
    token = short_log.token(user)
    events = [await short_api.publish("task.created", "user", user, {"n": i}) for i in range(8)]
    # The log keeps the newest 5; the third is the last one trimmed (the floor).
    async with (
        open_stream(short_log.url, token=token, last_event_id=events[2]) as at_floor,
        open_stream(short_log.url, token=token, last_event_id=events[1]) as trimmed,
        open_stream(short_log.url, token=token, query_last_event_id=events[0]) as oldest,
    ):
        assert established(await at_floor.next())["recovered"] is True
        assert ids(await at_floor.take(5)) == events[3:]
        for stream in (trimmed, oldest):
            hello = established(await stream.next())
            assert hello["recovered"] is False
            assert hello["replay_miss"] == "stale"
        marker = await short_api.marker()
        for stream in (at_floor, trimmed, oldest):
            assert await until_marker(stream, marker) == []


async def test_a_cursor_older_than_the_time_window_is_stale() -> None:
    with running_gateway({"HERALD_REPLAY_WINDOW_SECONDS": "1"}) as process:
        async with api_client(process) as client:
            user = unique("u")
            token = process.token(user)
            old = await client.publish("task.created", "user", user, {"n": 1})
            newer = await client.publish("task.created", "user", user, {"n": 2})
            window_passed = cursor_key(newer)[0] / 1000 + 1.2
            await wait_until(lambda: time.time() > window_passed, what="the window to pass")
            recent = await client.publish("task.created", "user", user, {"n": 3})
            async with open_stream(process.url, token=token, last_event_id=old) as stream:
                hello = established(await stream.next())
                assert (hello["recovered"], hello["replay_miss"]) == (False, "stale")
                marker = await client.marker()
                assert await until_marker(stream, marker) == []
            # The newest event trimmed is the log's floor: replay from it is still exact.
            async with open_stream(process.url, token=token, last_event_id=newer) as stream:
                assert established(await stream.next())["recovered"] is True
                assert (await stream.next()).id == recent


async def test_a_cursor_from_an_earlier_run_of_the_gateway_is_stale() -> None:
    user = unique("u")
    with running_gateway() as first:
        async with api_client(first) as client:
            earlier = await client.publish("task.created", "user", user, {"run": 1})
    with running_gateway() as second:
        async with api_client(second) as client:
            # Before any event, a stream's position is the log's origin, and resumable.
            async with open_stream(second.url, token=second.token(user)) as stream:
                origin = (await stream.next()).id
            later = await client.publish("task.created", "user", user, {"run": 2})
            async with open_stream(second.url, token=second.token(user), last_event_id=earlier) as stream:
                hello = established(await stream.next())
                assert (hello["recovered"], hello["replay_miss"]) == (False, "stale")
                marker = await client.marker()
                assert await until_marker(stream, marker) == []
            async with open_stream(second.url, token=second.token(user), last_event_id=origin) as stream:
                assert established(await stream.next())["recovered"] is True
                assert ids(await until_marker(stream, marker)) == [later]
