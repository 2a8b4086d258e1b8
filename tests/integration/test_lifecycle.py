"""Lifecycle events from real gateway processes: ``connection.opened`` / ``connection.closed``
per user, to a Redis Stream or a Kafka topic, debounced, once per transition
however many nodes see it, and the users of a node killed with SIGKILL declared
gone within the bound the leases give."""

from __future__ import annotations

import contextlib
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from herald.lifecycle.events import decode, gone_within
from tests.support.api import unique, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.kafka import KafkaBroker
from tests.support.redis import RedisServer
from tests.support.shards import user_on
from tests.support.sse import Stream, open_stream

LEASE = 1.0
GRACE = 0.5
SWEEP = 0.1
#: How long a vanished node's users may stay present: ``gone_within``, with room for a busy machine.
GONE_BOUND = 3 * gone_within(lease_seconds=LEASE, grace_seconds=GRACE, sweep_seconds=SWEEP)


def lifecycle_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return cluster_env(
        redis,
        **{
            "HERALD_LIFECYCLE_EVENTS": "redis",
            "HERALD_LIFECYCLE_GRACE_SECONDS": str(GRACE),
            "HERALD_CONNECTION_LEASE_SECONDS": str(LEASE),
            "HERALD_LIFECYCLE_SWEEP_SECONDS": str(SWEEP),
            **extra,
        },
    )


def stream_key(env: dict[str, str]) -> str:
    return f"{{{env['HERALD_REDIS_PREFIX']}}}:lifecycle"


def story(redis: RedisServer | list[RedisServer], env: dict[str, str], user: str) -> list[dict[str, Any]]:
    """``user``'s announcements, from the stream of one Redis or of every shard."""
    entries = []
    for server in redis if isinstance(redis, list) else [redis]:
        with server.client() as client:
            entries += client.xrange(stream_key(env))
    return [e for e in (decode(i, f) for i, f in entries) if e["user_id"] == user]


@pytest.fixture(params=["one-redis", "three-shards"])
def placement(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> tuple[list[RedisServer], dict[str, str]]:
    """Where presence lives: the one Redis of the bus, or three shards (each user's state on
    the shard of their channel, each shard with its own stream and relay); and the env."""
    if request.param == "one-redis":
        return [redis_server], {}
    shards: list[RedisServer] = request.getfixturevalue("three_redis_servers")
    return shards, {"HERALD_REDIS_SHARDS": ",".join(s.url for s in shards)}


def spread_users(servers: list[RedisServer], *names: str) -> list[str]:
    """Fresh users, one per shard in turn."""
    return [
        user_on(i % len(servers), len(servers)) if len(servers) > 1 else unique(n)
        for i, n in enumerate(names)
    ]


def steps(events: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["event"], e.get("reason")) for e in events]


@contextlib.asynccontextmanager
async def streaming(gateway: GatewayProcess, user: str) -> AsyncIterator[Stream]:
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        assert (await stream.next()).event == "connection.established"
        yield stream


@pytest.fixture(scope="module")
def env(redis_server: RedisServer) -> dict[str, str]:
    return lifecycle_env(redis_server)


@pytest.fixture(scope="module")
def pair(env: dict[str, str]) -> Iterator[list[GatewayProcess]]:
    with running_cluster(2, env) as nodes:
        yield nodes


async def test_one_opened_and_one_closed_per_user_across_nodes(
    pair: list[GatewayProcess], env: dict[str, str], redis_server: RedisServer
) -> None:
    user = unique("u")
    a, b = pair
    async with streaming(a, user):
        await wait_until(lambda: len(story(redis_server, env, user)) == 1, what="opened")
        async with streaming(b, user):
            pass  # a second stream, on the other node, opens and closes: no transition
        async with streaming(b, user):
            pass
    await wait_until(lambda: len(story(redis_server, env, user)) >= 2, timeout=10, what="closed")
    events = story(redis_server, env, user)
    assert steps(events) == [("connection.opened", None), ("connection.closed", "client_gone")]
    first, last = events
    assert first["connections"] == 1
    assert last["opened_at_ms"] == first["at_ms"]
    assert last["duration_ms"] == last["at_ms"] - first["at_ms"] > 0


async def test_a_reconnect_within_the_grace_is_not_a_disconnect(
    pair: list[GatewayProcess], env: dict[str, str], redis_server: RedisServer
) -> None:
    user = unique("u")
    a, b = pair
    async with streaming(a, user):
        pass
    async with streaming(b, user):  # on the other node, at once
        await wait_until(lambda: len(story(redis_server, env, user)) == 1, what="opened")
        async with httpx.AsyncClient() as client:
            seen = (await presence(client, a, user)).json()
        assert (seen["connected"], seen["grace_until"]) == (True, None)
        # Past the grace the first stream started, and a sweep after it.
        until = time.time() + GRACE + 3 * SWEEP
        await wait_until(lambda: time.time() > until, timeout=5, what="the grace to pass")
        assert steps(story(redis_server, env, user)) == [("connection.opened", None)]


async def presence(client: httpx.AsyncClient, gateway: GatewayProcess, user: str) -> httpx.Response:
    return await client.get(
        f"{gateway.url}/api/v1/events/presence/{user}",
        headers={"authorization": f"Bearer {gateway.publisher_token}"},
    )


async def test_is_a_user_connected_anywhere(pair: list[GatewayProcess]) -> None:
    user = unique("u")
    a, b = pair
    async with httpx.AsyncClient() as client:
        assert (await presence(client, b, user)).json() == {
            "user_id": user,
            "connected": False,
            "connections": 0,
            "online_since": None,
            "grace_until": None,
        }
        async with streaming(a, user), streaming(a, user):
            here = (await presence(client, b, user)).json()
            assert (here["connected"], here["connections"]) == (True, 2)
            assert abs(here["online_since"] - time.time()) < 30
        refused = await client.get(
            f"{b.url}/api/v1/events/presence/{user}", headers={"authorization": f"Bearer {b.token(user)}"}
        )
        assert refused.status_code == 403


async def test_presence_during_the_grace(redis_server: RedisServer) -> None:
    env = lifecycle_env(redis_server, HERALD_LIFECYCLE_GRACE_SECONDS="60")
    user = unique("u")
    with running_gateway(env) as node:
        async with httpx.AsyncClient() as client:
            async with streaming(node, user):
                here = (await presence(client, node, user)).json()

            async def left() -> bool:
                return (await presence(client, node, user)).json()["connected"] is False

            await wait_until(left, what="the stream's close to reach the count")
            leaving = (await presence(client, node, user)).json()
    assert (leaving["connections"], leaving["online_since"]) == (0, here["online_since"])
    assert 50 < leaving["grace_until"] - time.time() <= 60


async def test_the_users_of_a_node_killed_outright_are_declared_gone_in_bounded_time(
    env: dict[str, str], placement: tuple[list[RedisServer], dict[str, str]]
) -> None:
    redis_server, extra = placement
    env = {**env, **extra}
    lost, stays = spread_users(redis_server, "lost", "stays")
    with running_cluster(2, env) as (doomed, survivor):
        async with streaming(survivor, stays), streaming(doomed, lost):
            await wait_until(lambda: len(story(redis_server, env, lost)) == 1, what="opened")
            doomed.process.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            await wait_until(
                lambda: len(story(redis_server, env, lost)) == 2, timeout=GONE_BOUND, what="declared gone"
            )
            assert time.monotonic() - killed_at >= GRACE  # the grace applies to a lost node too
            events = story(redis_server, env, lost)
            assert steps(events) == [("connection.opened", None), ("connection.closed", "node_lost")]
            # The surviving node announced it; its own user is still present.
            assert events[1]["node"] != events[0]["node"]
            assert steps(story(redis_server, env, stays)) == [("connection.opened", None)]


async def test_a_memory_bus_node_keeps_presence_in_redis(redis_server: RedisServer) -> None:
    env = {k: v for k, v in lifecycle_env(redis_server).items() if k != "HERALD_BUS"}
    user = unique("u")
    with running_gateway(env) as node:
        async with streaming(node, user):
            await wait_until(lambda: len(story(redis_server, env, user)) == 1, what="opened")
        await wait_until(lambda: len(story(redis_server, env, user)) == 2, timeout=10, what="closed")
        assert steps(story(redis_server, env, user)) == [
            ("connection.opened", None),
            ("connection.closed", "client_gone"),
        ]


# --- Kafka


class TopicReader:
    """Every record of a topic so far, read by a consumer of the test's own."""

    def __init__(self, broker: KafkaBroker, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        self.records: list[Any] = []

    async def read(self) -> list[Any]:
        batch = await self.consumer.getmany(timeout_ms=100)
        for part in batch.values():
            self.records.extend(part)
        return self.records

    def events(self, user: str) -> list[dict[str, Any]]:
        import orjson

        seen: dict[str, dict[str, Any]] = {}
        for record in self.records:
            if record.key == user.encode():
                event = orjson.loads(record.value)
                assert dict(record.headers)["herald-event-id"] == event["id"].encode()
                seen.setdefault(event["id"], event)  # at least once: a duplicate has the same id
        # A user's events all come from one shard: their entry ids order them.
        return sorted(seen.values(), key=lambda e: tuple(int(p) for p in e["id"].split("@")[0].split("-")))


@pytest.fixture
async def kafka_env(
    redis_server: RedisServer, kafka_broker: KafkaBroker, placement: tuple[list[RedisServer], dict[str, str]]
) -> dict[str, str]:
    topic = f"lifecycle-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({topic: 3})
    return lifecycle_env(
        redis_server,
        HERALD_LIFECYCLE_EVENTS="kafka",
        HERALD_LIFECYCLE_KAFKA_BOOTSTRAP=kafka_broker.bootstrap,
        HERALD_LIFECYCLE_KAFKA_TOPIC=topic,
        **placement[1],
    )


async def test_lifecycle_events_reach_kafka_in_order_even_when_a_node_is_killed(
    kafka_env: dict[str, str], kafka_broker: KafkaBroker, placement: tuple[list[RedisServer], dict[str, str]]
) -> None:
    """Over three shards, one relay per shard hands its own users' announcements on."""
    reader = TopicReader(kafka_broker, kafka_env["HERALD_LIFECYCLE_KAFKA_TOPIC"])
    await reader.consumer.start()
    try:
        lost, stays, passes = spread_users(placement[0], "lost", "stays", "passes")
        with running_cluster(2, kafka_env) as (doomed, survivor):
            async with streaming(survivor, passes):
                pass

            async def announced(user: str, n: int) -> bool:
                await reader.read()
                return len(reader.events(user)) >= n

            await wait_until(lambda: announced(passes, 2), timeout=20, what="passes's open and close")
            async with streaming(survivor, stays), streaming(doomed, lost):
                await wait_until(lambda: announced(lost, 1), timeout=20, what="lost's opened")
                doomed.process.send_signal(signal.SIGKILL)
                # Gone within the bound, plus a relay's takeover (its lock lapses like a lease).
                await wait_until(lambda: announced(lost, 2), timeout=GONE_BOUND + 3 * LEASE, what="gone")
            await wait_until(lambda: announced(stays, 2), timeout=20, what="stays's close")
        for user, reason in ((passes, "client_gone"), (lost, "node_lost"), (stays, "client_gone")):
            assert steps(reader.events(user)) == [("connection.opened", None), ("connection.closed", reason)]
        # Over several shards an id names its shard, so two shards' entries never collide.
        shards = len(placement[0])
        ids = [e["id"] for user in (passes, lost, stays) for e in reader.events(user)]
        assert all(("@" in i) is (shards > 1) for i in ids), ids
    finally:
        await reader.consumer.stop()
