"""The Redis sources end to end: apps PUBLISH or XADD events, clients on any node get
each exactly once; bad messages are logged, counted and skipped."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from herald.bus.shard_log import ShardKeys
from tests.support.api import Api, api_client, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Event, open_stream

MALFORMED: list[bytes] = [
    b"not json",
    b"[1, 2, 3]",
    b'{"event": "Not A Name", "scope": "user", "key": "u", "data": {}}',
    b'{"event": "task.created", "scope": "user", "data": {}}',
    b'{"event": "task.created", "scope": "user", "key": "u", "data": [1]}',
    b'{"event": "task.created", "scope": "user", "key": "u", "data": {}, "surprise": 1}',
    orjson.dumps({"event": "task.created", "scope": "user", "key": "u", "data": {"x": "y" * 70_000}}),
]


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


def events_named(events: list[Event], name: str) -> list[Any]:
    return [event.json() for event in events if event.event == name]


async def sources_of(api: Api, name: str) -> dict[str, int]:
    stats: dict[str, int] = (await api.health())["sources"][name]
    return stats


async def test_pubsub_messages_reach_clients_once_however_many_nodes_subscribe(redis: RedisServer) -> None:
    channel = unique("herald:publish")
    env = cluster_env(redis, HERALD_REDIS_PUBSUB_SOURCE="true", HERALD_REDIS_PUBSUB_CHANNEL=channel)
    with running_cluster(2, env) as nodes, redis.client() as app:
        await wait_until(lambda: app.pubsub_numsub(channel)[0][1] == 2, what="both nodes subscribed")
        user = unique("u")
        async with (
            api_client(nodes[0]) as a,
            api_client(nodes[1]) as b,
            open_stream(nodes[1].url, token=nodes[1].token(user)) as stream,
        ):
            await stream.next()
            body = {"event": "task.created", "scope": "user", "key": user}
            app.publish(channel, orjson.dumps({**body, "data": {"n": 1}, "id": unique("m")}))
            for bad in MALFORMED:
                app.publish(channel, bad)
            # No id: the nodes agree on a digest of the bytes.
            app.publish(channel, orjson.dumps({**body, "data": {"n": 2}, "priority": "high"}))
            app.publish(channel, orjson.dumps({**body, "data": {"n": 3}, "idempotency_key": unique("m")}))

            async def handled_everything() -> bool:
                counts = [(await sources_of(api, "redis-pubsub"))["received"] for api in (a, b)]
                return counts == [len(MALFORMED) + 3] * 2

            await wait_until(handled_everything, what="both nodes to handle every message")
            marker = await a.marker()
            received = await until_marker(stream, marker)
            assert [e["n"] for e in events_named(received, "task.created")] == [1, 2, 3]
            stats = [await sources_of(api, "redis-pubsub") for api in (a, b)]
            totals = {k: sum(s[k] for s in stats) for k in ("published", "duplicates", "rejected", "failed")}
            assert totals == {"published": 3, "duplicates": 3, "rejected": 2 * len(MALFORMED), "failed": 0}
            rejected = [e for e in nodes[0].logs() if e.get("event") == "redis_pubsub_message_rejected"]
            assert len(rejected) == len(MALFORMED)
            assert all(entry["reason"] for entry in rejected)
            assert any("not JSON" in entry["reason"] for entry in rejected)
            assert any(entry.get("field") == "key" for entry in rejected)


async def test_stream_entries_reach_clients_once_and_are_acknowledged(redis: RedisServer) -> None:
    stream_key = unique("app:events")
    env = cluster_env(redis, HERALD_REDIS_STREAM_SOURCE="true", HERALD_REDIS_SOURCE_STREAM=stream_key)
    with running_cluster(2, env) as nodes, redis.client() as app:

        def both_consuming() -> bool:
            return bool(app.exists(stream_key)) and len(app.xinfo_consumers(stream_key, "herald")) == 2

        await wait_until(both_consuming, what="both nodes in the consumer group")
        user = unique("u")
        bad_entries: list[dict[bytes, bytes]] = [{b"json": bad} for bad in MALFORMED] + [
            {b"event": b"task.created", b"scope": b"user", b"key": b"u", b"data": b"{not json"},
            {b"event": b"\xff\xfe", b"scope": b"user"},
        ]
        async with (
            api_client(nodes[0]) as a,
            api_client(nodes[1]) as b,
            open_stream(nodes[0].url, token=nodes[0].token(user)) as stream,
        ):
            await stream.next()
            for n in range(10):
                event = {"event": "task.created", "scope": "user", "key": user}
                if n % 2:  # the whole body in one field ...
                    app.xadd(stream_key, {"json": orjson.dumps({**event, "data": {"n": n}})})
                else:  # ... or its fields as entry fields
                    app.xadd(stream_key, {**event, "data": orjson.dumps({"n": n})})
                if n == 4:
                    for bad in bad_entries:
                        app.xadd(stream_key, bad)  # type: ignore[arg-type]

            async def all_handled() -> bool:
                received = sum([(await sources_of(api, "redis-stream"))["received"] for api in (a, b)])
                return received == 10 + len(bad_entries)

            await wait_until(all_handled, what="every entry handled")
            assert app.xpending(stream_key, "herald")["pending"] == 0, "every entry acknowledged"
            marker = await a.marker()
            received = events_named(await until_marker(stream, marker), "task.created")
            # The nodes share the entries out; each entry is one event.
            assert sorted(e["n"] for e in received) == list(range(10))
            stats = [await sources_of(api, "redis-stream") for api in (a, b)]
            assert sum(s["rejected"] for s in stats) == len(bad_entries)
            assert sum(s["published"] for s in stats) == 10


async def test_entries_a_crashed_consumer_left_pending_are_claimed_and_delivered(redis: RedisServer) -> None:
    stream_key = unique("app:events")
    prefix = f"t{secrets.token_hex(4)}"
    user = unique("u")
    with redis.client() as app:
        app.xgroup_create(stream_key, "herald", id="0", mkstream=True)
        for n in range(3):
            app.xadd(
                stream_key,
                {"event": "task.created", "scope": "user", "key": user, "data": orjson.dumps({"n": n})},
            )
        # A node read them and died before acknowledging.
        app.xreadgroup("herald", "crashed-node", {stream_key: ">"})
        assert app.xpending(stream_key, "herald")["pending"] == 3
        env = cluster_env(
            redis,
            prefix,
            HERALD_REDIS_STREAM_SOURCE="true",
            HERALD_REDIS_SOURCE_STREAM=stream_key,
            HERALD_REDIS_SOURCE_CLAIM_IDLE_SECONDS="1",
        )
        with running_cluster(1, env) as (node,):
            # Resume from the shard's origin: whatever was appended since the node came up.
            origin = app.hget(ShardKeys(prefix).shard, "origin")
            assert origin is not None
            async with open_stream(node.url, token=node.token(user), last_event_id=origin.decode()) as stream:
                assert (await stream.next()).json()["recovered"] is True
                claimed = await stream.take(3, timeout=10)
                assert [e.json()["n"] for e in claimed] == [0, 1, 2]
            await wait_until(
                lambda: app.xpending(stream_key, "herald")["pending"] == 0,
                what="claimed entries acknowledged",
            )
