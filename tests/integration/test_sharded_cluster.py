"""Gateways on the sharded bus (D28): three real Redis shards, two nodes. Events of every
scope reach a stream in publish order with the ids the publishers were answered; a reconnect
on the other node replays exactly what was missed; each node subscribes to the notifications
of exactly the channels its streams follow, and to nothing once they close."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from herald.cluster.placement import shard_of
from tests.support.api import api_client, ids, unique, until_marker, wait_until
from tests.support.cluster import running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import open_stream

CURSOR = re.compile(r"\d+-\d+")


@pytest.fixture(scope="module")
def shards() -> Iterator[list[RedisServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running_redis()) for _ in range(3)]


@pytest.fixture(scope="module")
def prefix() -> str:
    return f"s{secrets.token_hex(4)}"


@pytest.fixture(scope="module")
def nodes(shards: list[RedisServer], prefix: str) -> Iterator[list[GatewayProcess]]:
    env = {
        "HERALD_BUS": "redis",
        "HERALD_REDIS_URL": shards[0].url,
        "HERALD_REDIS_SHARDS": ",".join(s.url for s in shards),
        "HERALD_REDIS_PREFIX": prefix,
        "HERALD_HEARTBEAT_SECONDS": "0.5",
        "HERALD_COALESCE_INTERVAL_SECONDS": "0",
    }
    with running_cluster(2, env) as started:
        yield started


def subscribers(shards: list[RedisServer], prefix: str, channel: str) -> int:
    """How many nodes subscribe to ``channel``'s notifications, on its shard."""
    shard = shards[shard_of(channel, len(shards))]
    with shard.client() as client:
        counts: Any = client.pubsub_numsub(f"{prefix}:n:{channel}")
    return int(counts[0][1])


async def test_events_of_every_scope_reach_the_stream_in_order_with_their_ids(
    nodes: list[GatewayProcess],
) -> None:
    user, session, novel = unique("u"), unique("s"), f"novel:{secrets.token_hex(3)}"
    token = nodes[1].token(user, sid=session, resources=[novel])
    async with (
        api_client(nodes[0]) as a,
        open_stream(nodes[1].url, token=token, subscribe=novel) as stream,
    ):
        await stream.next()
        published = []
        for n in range(12):
            scope, key = [("user", user), ("session", session), (novel.split(":")[0], novel.split(":")[1])][
                n % 3
            ]
            published.append(await a.publish("task.progress-updated", scope, key, {"n": n}))
        batch = await a.client.post(
            "/api/v1/events/batch",
            json={
                "events": [
                    {"event": "task.created", "scope": "user", "key": user, "data": {"n": 100 + n}}
                    for n in range(20)
                ]
            },
            headers={"authorization": f"Bearer {nodes[0].publisher_token}"},
        )
        assert batch.status_code == 200, batch.text
        published += [r["id"] for r in batch.json()["results"]]
        marker = await a.marker()
        received = await until_marker(stream, marker, timeout=10)
        assert ids(received) == published
        assert [e.json()["n"] for e in received] == list(range(12)) + list(range(100, 120))
        keys = [tuple(int(x) for x in c.split("-")) for c in published]
        assert keys == sorted(keys), "one order across the shards"


async def test_a_reconnect_on_the_other_node_replays_exactly_what_was_missed(
    nodes: list[GatewayProcess],
) -> None:
    user = unique("u")
    novel = f"novel:{secrets.token_hex(3)}"
    token = nodes[0].token(user, resources=[novel])
    async with api_client(nodes[0]) as a:
        async with open_stream(nodes[0].url, token=token, subscribe=novel) as first:
            await first.next()
            seen = [await a.publish("task.created", "user", user, {"n": n}) for n in range(3)]
            marker = await a.marker()
            got = await until_marker(first, marker)
            assert ids(got) == seen
            last_id = marker
        missed = [
            await a.publish(
                "task.created", *(("user", user) if n % 2 else ("novel", novel.split(":")[1])), {"n": n}
            )
            for n in range(6)
        ]
        async with open_stream(nodes[1].url, token=token, subscribe=novel, last_event_id=last_id) as second:
            established = await second.next()
            assert established.json()["recovered"] is True
            marker = await a.marker()
            replayed = await until_marker(second, marker, timeout=10)
            assert ids(replayed) == missed, [(e.id, e.event, e.data) for e in replayed] + [("last", last_id)]


async def test_each_node_subscribes_to_exactly_the_channels_of_its_streams(
    nodes: list[GatewayProcess], shards: list[RedisServer], prefix: str
) -> None:
    user = unique("u")
    channel = f"user:{user}"
    assert subscribers(shards, prefix, channel) == 0, "nobody follows a user with no stream"
    async with open_stream(nodes[1].url, token=nodes[1].token(user)) as one:
        await one.next()
        assert subscribers(shards, prefix, channel) == 1, "the node of the stream, and only it"
        async with open_stream(nodes[1].url, token=nodes[1].token(user)) as two:
            await two.next()
            assert subscribers(shards, prefix, channel) == 1, "two streams, one subscription"
        async with open_stream(nodes[0].url, token=nodes[0].token(user)) as elsewhere:
            await elsewhere.next()
            assert subscribers(shards, prefix, channel) == 2
    await wait_until(lambda: subscribers(shards, prefix, channel) == 0, what="every subscription dropped")


async def test_a_resource_added_on_a_live_stream_arrives_in_order_from_live_from_without_gaps(
    nodes: list[GatewayProcess],
) -> None:
    """D17 over shards: the change is asked through the other node while both resources and
    the user get events; the stream gets the added resource's events after ``live_from``
    (all those published after the answer among them), every id once and increasing, and
    a reconnect after the last id repeats nothing."""
    user = unique("u")
    first, added = f"novel:{secrets.token_hex(3)}", f"novel:{secrets.token_hex(3)}"
    token = nodes[1].token(user, resources=[first, added])
    async with api_client(nodes[0]) as a, open_stream(nodes[1].url, token=token, subscribe=first) as stream:
        hello = await stream.next()
        connection_id = hello.json()["connection_id"]
        published: list[tuple[str, str]] = []  # (channel, cursor)

        async def burst(n: int) -> None:
            for i in range(n):
                for channel, (scope, key) in (
                    (f"user:{user}", ("user", user)),
                    (first, tuple(first.split(":"))),
                    (added, tuple(added.split(":"))),
                ):
                    published.append((channel, await a.publish("task.created", scope, key, {"i": i})))

        await burst(5)
        change = await a.client.post(
            "/api/v1/events/subscriptions",
            json={"connection_id": connection_id, "add": [added]},
            headers={"authorization": f"Bearer {token}"},
        )
        assert change.status_code == 200, change.text
        live_from = change.json()["live_from"]
        changed_at = len(published)
        await burst(5)
        marker = await a.marker()
        got = [e for e in await until_marker(stream, marker, timeout=10) if e.event == "task.created"]
        got_ids = [e.id for e in got]
        keys = [tuple(int(x) for x in str(c).split("-")) for c in got_ids]
        assert keys == sorted(keys), "increasing"
        assert len(set(got_ids)) == len(got_ids), "each once"

        def key(cursor: str) -> tuple[int, ...]:
            return tuple(int(x) for x in cursor.split("-"))

        due = [c for ch, c in published if ch != added or key(c) > key(live_from)]
        assert got_ids == due
        later = [c for ch, c in published[changed_at:] if ch == added]
        assert all(key(c) > key(live_from) for c in later), "what is published after the answer is live"
    async with (
        api_client(nodes[0]) as a,
        open_stream(nodes[0].url, token=token, subscribe=f"{first},{added}", last_event_id=marker) as again,
    ):
        assert (await again.next()).json()["recovered"] is True
        after = await a.marker()
        assert await until_marker(again, after) == [], "a reconnect after the last id repeats nothing"
