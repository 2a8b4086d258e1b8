"""Retained state (D33) and ``?since=``, on the memory bus and on two nodes sharing a real
Redis: the newest event per (channel, coalesce key) published with ``retain``, sent first
to a stream that does not resume exactly, marked and without ``id``, then the live events
with nothing lost between; never to a stream that resumes from its cursor, never to
another user. ``since=`` replays from a time inside the window, or says ``recovered:
false`` outside it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.api import Api, api_client, unique, until_marker
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.metrics import sample
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Event, Stream, StreamRefused, open_stream
from tests.support.waiting import wait_until

SUBSCRIPTIONS = "/api/v1/events/subscriptions"
PROGRESS = "task.progress-updated"
#: No coalesce throttle: every published value is appended (the throttle is D23's business).
#: One user opens many streams here: no per-user limits (tests/integration/test_limits.py).
ENV = {
    "HERALD_HEARTBEAT_SECONDS": "0.5",
    "HERALD_COALESCE_INTERVAL_SECONDS": "0",
    "HERALD_MAX_CONNECTIONS_PER_USER": "0",
    "HERALD_CONNECT_RATE_PER_USER": "0",
}


@dataclass
class Deployment:
    """Where to publish and where to stream: one node, or two nodes on one Redis."""

    publish: Api
    stream: GatewayProcess
    other: Api


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module", params=["memory", "redis"])
def nodes(request: pytest.FixtureRequest) -> Iterator[list[GatewayProcess]]:
    if request.param == "memory":
        with running_gateway(ENV) as gateway:
            yield [gateway, gateway]
    else:
        server: RedisServer = request.getfixturevalue("redis")
        with running_cluster(2, cluster_env(server, **ENV)) as cluster:
            yield cluster


@pytest.fixture
async def site(nodes: list[GatewayProcess]) -> AsyncIterator[Deployment]:
    async with api_client(nodes[0]) as first, api_client(nodes[1]) as second:
        yield Deployment(publish=first, stream=nodes[1], other=second)


def is_retained(event: Event) -> bool:
    return bool(event.json().get("_retained"))


async def progress(api: Api, scope: str, key: str | None, task: str, value: int, **extra: Any) -> str:
    data = {"task_id": task, "progress": value, "stage": "s"}
    return await api.publish(PROGRESS, scope, key, data, coalesce=f"task:{task}", **extra)


async def retained_then_marker(
    stream: Stream, api: Api, *, with_global: bool = False
) -> tuple[list[Event], list[Event]]:
    """After ``connection.established``: the retained events, then the others up to a marker.
    Global retained states (every test's, on a shared node) only with ``with_global``."""
    marker = await api.marker()
    seen = await until_marker(stream, marker)
    kept = [e for e in seen if is_retained(e)]
    assert seen[: len(kept)] == kept, "retained events come first"
    rest = seen[len(kept) :]
    if not with_global:
        kept = [e for e in kept if e.json()["_scope"] != "global"]
    return kept, rest


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


async def test_a_fresh_stream_gets_the_newest_retained_state_of_each_key_first(site: Deployment) -> None:
    user = unique("u")
    await progress(site.publish, "user", user, "a", 10, retain=True)
    await progress(site.publish, "user", user, "b", 5, retain=True)
    newest_a = await progress(site.publish, "user", user, "a", 20, retain=True)
    await progress(site.publish, "user", user, "c", 1)  # not retained
    async with open_stream(site.stream.url, token=site.stream.token(user)) as stream:
        hello = await stream.next()
        assert hello.json()["recovered"] is False
        assert hello.json()["replay_miss"] == "none"
        kept, rest = await retained_then_marker(stream, site.other)
        assert [(e.json()["task_id"], e.json()["progress"]) for e in kept] == [("b", 5), ("a", 20)]
        for event in kept:
            assert event.event == PROGRESS
            assert event.id == hello.id  # no id line: the cursor stays where established put it
            assert event.json()["_scope"] == "user"
        assert rest == []
        live = await progress(site.publish, "user", user, "a", 30, retain=True)
        event = await stream.next()
        assert (event.id, is_retained(event)) == (live, False)
    assert cursor_key(newest_a) < cursor_key(live)


async def test_the_retained_states_a_node_writes_are_counted_in_its_metrics(site: Deployment) -> None:
    user = unique("u")
    await progress(site.publish, "user", user, "a", 10, retain=True)
    await progress(site.publish, "user", user, "b", 5, retain=True)
    before = await sample(site.other.client, "herald_retained_events_total")
    async with open_stream(site.stream.url, token=site.stream.token(user)) as stream:
        await stream.next()
        kept, _ = await retained_then_marker(stream, site.other, with_global=True)
    assert len([e for e in kept if e.json()["_scope"] == "user"]) == 2
    assert await sample(site.other.client, "herald_retained_events_total") == before + len(kept)


async def test_retained_states_are_seen_only_by_streams_that_may_see_their_channel(site: Deployment) -> None:
    user, other, novel = unique("u"), unique("o"), unique("n")
    await progress(site.publish, "user", other, "t", 50, retain=True)
    await progress(site.publish, "novel", novel, "t", 70, retain=True)
    await progress(site.publish, "global", None, unique("g"), 90, retain=True)
    token = site.stream.token(user, resources=("novel:*",))
    async with open_stream(site.stream.url, token=token) as stream:
        await stream.next()
        kept, _ = await retained_then_marker(stream, site.other, with_global=True)
        scopes = {e.json()["_scope"] for e in kept}
        assert "user" not in scopes  # another user's
        assert "novel" not in scopes  # not subscribed
        assert "global" in scopes
    async with open_stream(site.stream.url, token=token, subscribe=f"novel:{novel}") as stream:
        await stream.next()
        kept, _ = await retained_then_marker(stream, site.other)
        assert [e.json()["progress"] for e in kept if e.json()["_scope"] == "novel"] == [70]


async def test_a_resumed_stream_gets_no_retained_state_and_a_stale_one_does(site: Deployment) -> None:
    user = unique("u")
    token = site.stream.token(user)
    await progress(site.publish, "user", user, "a", 1, retain=True)
    async with open_stream(site.stream.url, token=token) as first:
        await first.next()
        assert [e.json()["progress"] for e in (await retained_then_marker(first, site.other))[0]] == [1]
        cursor = first.last_event_id
    newer = await progress(site.publish, "user", user, "a", 2, retain=True)
    async with open_stream(site.stream.url, token=token, last_event_id=cursor) as resumed:
        hello = await resumed.next()
        assert hello.json()["recovered"] is True
        kept, rest = await retained_then_marker(resumed, site.other)
        assert kept == []
        assert [e.id for e in rest if e.event == PROGRESS] == [newer]
    stale = f"{int(time.time() * 1000) - 3_600_000}-0"
    async with open_stream(site.stream.url, token=token, last_event_id=stale) as lost:
        hello = await lost.next()
        assert (hello.json()["recovered"], hello.json()["replay_miss"]) == (False, "stale")
        kept, _ = await retained_then_marker(lost, site.other)
        assert [e.json()["progress"] for e in kept] == [2]


async def test_a_resource_added_mid_stream_brings_its_retained_states(site: Deployment) -> None:
    user, novel = unique("u"), unique("n")
    token = site.stream.token(user, resources=(f"novel:{novel}",))
    await progress(site.publish, "novel", novel, "x", 40, retain=True)
    await progress(site.publish, "novel", novel, "y", 41, retain=True)
    async with open_stream(site.stream.url, token=token) as stream:
        hello = await stream.next()
        assert (await retained_then_marker(stream, site.other))[0] == []
        async with httpx.AsyncClient(base_url=site.stream.url) as client:
            response = await client.post(
                SUBSCRIPTIONS,
                json={"connection_id": hello.json()["connection_id"], "add": [f"novel:{novel}"]},
                headers={"authorization": f"Bearer {token}"},
            )
        assert response.status_code == 200, response.text
        changed = await stream.next()
        assert changed.event == "connection.subscriptions-changed"
        kept = await stream.take(2)
        assert [(e.json()["task_id"], e.json()["progress"], is_retained(e)) for e in kept] == [
            ("x", 40, True),
            ("y", 41, True),
        ]
        live = await progress(site.publish, "novel", novel, "x", 42, retain=True)
        assert (await stream.next()).id == live


async def test_a_retained_state_expires(site: Deployment) -> None:
    user = unique("u")
    token = site.stream.token(user)
    await progress(site.publish, "user", user, "short", 1, retain=True, retain_seconds=1)
    await progress(site.publish, "user", user, "long", 2, retain=True)

    async def retained_now() -> list[str]:
        async with open_stream(site.stream.url, token=token) as stream:
            await stream.next()
            kept, _ = await retained_then_marker(stream, site.other)
            return sorted(e.json()["task_id"] for e in kept)

    assert await retained_now() == ["long", "short"]
    deadline = time.monotonic() + 5
    while (found := await retained_now()) != ["long"]:
        assert found == ["long", "short"], found
        assert time.monotonic() < deadline, "the short retention did not end"


async def test_retain_needs_a_coalesce_key(site: Deployment) -> None:
    body = {"event": PROGRESS, "scope": "user", "key": "u", "data": {"task_id": "t"}, "retain": True}
    response = await site.publish.post_event(body, site.publish.gateway.publisher_token)
    assert response.status_code == 422, response.text
    assert (response.json()["code"], response.json()["field"]) == ("EVENT_INVALID", "coalesce")
    bad_seconds = {**body, "coalesce": "task:t", "retain_seconds": 0}
    response = await site.publish.post_event(bad_seconds, site.publish.gateway.publisher_token)
    assert (response.status_code, response.json()["field"]) == (422, "retain_seconds")
    response = await site.publish.client.post(
        "/api/v1/events/batch",
        json={"events": [body, {**body, "coalesce": "task:t"}]},
        headers={"authorization": f"Bearer {site.publish.gateway.publisher_token}"},
    )
    assert response.status_code == 207, response.text
    results = response.json()["results"]
    assert (results[0]["error"]["code"], results[0]["error"]["field"]) == ("EVENT_INVALID", "coalesce")
    assert "id" in results[1]


async def test_streams_opening_while_states_change_end_with_every_key_right_and_nothing_lost(
    site: Deployment,
) -> None:
    """Publishers move ten keys through 30 values each while streams keep connecting: each
    stream gets, per key, its retained value (or, when a newer one was appended as it
    opened, that one live) and then every later value live, none missing, and ends on the
    last value."""
    user = unique("u")
    token = site.stream.token(user)
    keys, steps = [f"k{i}" for i in range(10)], 30
    published: dict[str, list[tuple[str, int]]] = {k: [] for k in keys}
    done = asyncio.Event()

    async def publisher(key: str) -> None:
        for value in range(steps):
            cursor = await progress(site.publish, "user", user, key, value, retain=True)
            published[key].append((cursor, value))

    async def watcher() -> dict[str, list[tuple[int, bool]]]:
        async with open_stream(site.stream.url, token=token) as stream:
            await stream.next()
            await done.wait()
            marker = await site.other.marker()
            seen = await until_marker(stream, marker, timeout=15)
        by_key: dict[str, list[tuple[int, bool]]] = {k: [] for k in keys}
        for event in seen:
            body = event.json()
            if event.event == PROGRESS and body["_scope"] == "user":
                by_key[body["task_id"]].append((body["progress"], is_retained(event)))
        return by_key

    async def watchers() -> list[dict[str, list[tuple[int, bool]]]]:
        tasks = []
        for index in range(12):
            # Streams open all along the publishing: the i-th once k0 has 2i values.
            await wait_until(lambda: len(published["k0"]) >= 2 * index, timeout=15)  # noqa: B023
            tasks.append(asyncio.create_task(watcher()))
        return await asyncio.gather(*tasks)

    async def publish_all() -> None:
        await asyncio.gather(*(publisher(k) for k in keys))

    watching = asyncio.create_task(watchers())
    await publish_all()
    done.set()
    results = await watching
    for index, by_key in enumerate(results):
        # Watcher i opened once k0 had 2i values: it starts from one of them or a newer one.
        assert by_key["k0"][0][0] >= 2 * index - 1, (index, by_key["k0"][:3])
    for by_key in results:
        for key in keys:
            values = by_key[key]
            assert values, f"{key}: nothing"
            assert values[-1][0] == steps - 1, (key, values)
            retained = [v for v, r in values if r]
            assert len(retained) <= 1, (key, values)
            assert not retained or values[0][1], ("the retained value comes first", key, values)
            start = values[0][0]
            # After the first value (retained or live), every later value, in order.
            assert [v for v, _ in values] == list(range(start, steps)), (key, values)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


async def test_since_replays_from_a_time_inside_the_window(site: Deployment) -> None:
    user = unique("u")
    token = site.stream.token(user)
    before = await site.publish.publish("task.created", "user", user, {"n": 0})
    before_ms = cursor_key(before)[0]
    await wait_until(lambda: time.time() * 1000 > before_ms + 2)
    after = [await site.publish.publish("task.created", "user", user, {"n": i}) for i in (1, 2)]
    await progress(site.publish, "user", user, "r", 3, retain=True)
    since = iso(before_ms + 1)
    async with open_stream(site.stream.url, token=token, params={"since": since}) as stream:
        hello = await stream.next()
        assert (hello.json()["recovered"], hello.json()["replay_miss"]) == (True, None)
        marker = await site.other.marker()
        seen = [e for e in await until_marker(stream, marker) if e.json().get("_scope") == "user"]
        assert [e.id for e in seen if e.event == "task.created"] == after
        assert not any(is_retained(e) for e in seen)  # the replay carries everything


async def test_since_outside_the_window_is_not_recovered(site: Deployment) -> None:
    user = unique("u")
    await progress(site.publish, "user", user, "r", 7, retain=True)
    since = iso(int(time.time() * 1000) - 3_600_000)
    async with open_stream(site.stream.url, token=site.stream.token(user), params={"since": since}) as s:
        hello = await s.next()
        assert (hello.json()["recovered"], hello.json()["replay_miss"]) == (False, "stale")
        kept, _ = await retained_then_marker(s, site.other)
        assert [e.json()["progress"] for e in kept] == [7]


@pytest.mark.parametrize("since", ["yesterday", "2026-12-05T08:00:00", "", "9999-01-01T00:00:00Z"])
async def test_since_that_is_not_a_past_time_is_refused_with_a_json_error(
    site: Deployment, since: str
) -> None:
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(site.stream.url, token=site.stream.token("u"), params={"since": since}):
            pass
    assert refused.value.status == 400
    assert (refused.value.body["code"], refused.value.body["field"]) == ("REQUEST_INVALID", "since")


#: The ASGI app's stream route (tests/integration/test_asgi_stream.py): what an embedding serves.
ASGI_STREAM = "/api/v1/events/%73tream"


async def test_the_asgi_stream_sends_retained_states_and_reads_since(site: Deployment) -> None:
    user = unique("u")
    token = site.stream.token(user)
    before = await progress(site.publish, "user", user, "a", 1, retain=True)
    await wait_until(lambda: time.time() * 1000 > cursor_key(before)[0] + 2)
    newer = await progress(site.publish, "user", user, "a", 2, retain=True)
    async with open_stream(site.stream.url, token=token, path=ASGI_STREAM) as stream:
        assert stream.response.headers["transfer-encoding"] == "chunked"  # the ASGI cycle
        assert (await stream.next()).json()["recovered"] is False
        kept, _ = await retained_then_marker(stream, site.other)
        assert [e.json()["progress"] for e in kept] == [2]
    since = {"since": iso(cursor_key(before)[0] + 1)}
    async with open_stream(site.stream.url, token=token, path=ASGI_STREAM, params=since) as stream:
        assert (await stream.next()).json()["recovered"] is True
        marker = await site.other.marker()
        seen = [e for e in await until_marker(stream, marker) if e.json()["_scope"] == "user"]
        assert [(e.id, is_retained(e)) for e in seen] == [(newer, False)]
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(site.stream.url, token=token, path=ASGI_STREAM, params={"since": "soon"}):
            pass
    assert (refused.value.status, refused.value.body["field"]) == (400, "since")
