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

from herald.bus.channels import shard_of
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
