"""Canary events (docs/architecture.md, D32) through real sources and real nodes: each source
carries the nodes' canaries to every node's bus, where their latency and staleness are
measured; a broken source path makes the staleness grow while the socket path still
works; no stream ever receives a canary, nor may publish or subscribe to their scope."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest

from herald.sources.outbox import create_table
from tests.support.api import Api, api_client, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.kafka import running_kafka
from tests.support.metrics import Samples, scrape
from tests.support.postgres import running_postgres
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Stream, StreamRefused, open_stream

INTERVAL = 0.2
#: Stale: no canary for this long, with one due every INTERVAL.
STALE = 10 * INTERVAL


def canary(samples: Samples, name: str, source: str) -> float:
    return samples.get((name, (("source", source),)), 0.0)


async def readings(api: Api, source: str) -> dict[str, float]:
    samples = await scrape(api.client)
    return {
        "observed": canary(samples, "herald_canary_observed_total", source),
        "sent": canary(samples, "herald_canary_sent_total", source),
        "failed": canary(samples, "herald_canary_send_failures_total", source),
        "latency_count": canary(samples, "herald_canary_latency_seconds_count", source),
        "latency_sum": canary(samples, "herald_canary_latency_seconds_sum", source),
        "staleness": canary(samples, "herald_canary_staleness_seconds", source),
    }


async def wait_reading(
    api: Api, source: str, what: str, holds: Any, timeout: float = 20.0
) -> dict[str, float]:
    seen: dict[str, float] = {}

    async def check() -> bool:
        nonlocal seen
        seen = await readings(api, source)
        return bool(holds(seen))

    await wait_until(check, timeout=timeout, interval=0.05, what=f"{source}: {what}")
    return seen


async def the_socket_path_works(api: Api, stream: Stream, user: str) -> None:
    """An event published over HTTP reaches the open stream, and nothing came before it."""
    cursor = await api.publish("task.created", "user", user, {"task_id": "t"})
    marker = await api.marker()
    seen = await until_marker(stream, marker)
    assert [event.id for event in seen] == [cursor], [(e.event, e.data) for e in seen]


def no_canary_reached(stream: Stream) -> None:
    names = {event.event for event in stream.events}
    assert not any(name.startswith("herald.") for name in names), names
    assert not any(
        "herald_canary" in event.data or '"_scope":"herald"' in event.data for event in stream.events
    )


@pytest.fixture
def source_redis() -> Iterator[RedisServer]:
    """A Redis of the sources alone, stopped by the test (the bus has its own)."""
    with running_redis() as server:
        yield server


async def test_redis_canaries_reach_every_node_and_go_stale_when_the_source_redis_stops(
    redis_server: RedisServer, source_redis: RedisServer
) -> None:
    env = cluster_env(
        redis_server,
        HERALD_REDIS_SOURCE_URL=source_redis.url,
        HERALD_REDIS_PUBSUB_SOURCE="true",
        HERALD_REDIS_PUBSUB_CHANNEL=unique("canary-pubsub"),
        HERALD_REDIS_STREAM_SOURCE="true",
        HERALD_REDIS_SOURCE_STREAM=unique("canary-stream"),
        HERALD_CANARY_INTERVAL_SECONDS=str(INTERVAL),
    )
    sources = ("redis-pubsub", "redis-stream")
    with running_cluster(2, env) as nodes:
        user = unique("u")
        async with (
            api_client(nodes[0]) as first,
            api_client(nodes[1]) as second,
            open_stream(nodes[0].url, token=nodes[0].token(user)) as stream,
        ):
            assert (await stream.next()).event == "connection.established"
            for source in sources:
                for api in (first, second):
                    seen = await wait_reading(
                        api, source, "canaries observed", lambda r: r["observed"] >= 5 and r["sent"] >= 2
                    )
                    assert seen["latency_count"] == seen["observed"]
                    assert seen["latency_sum"] / seen["latency_count"] < 1.0
                    assert seen["staleness"] < STALE
                # Every node sees every node's canaries, not only its own.
                for api in (first, second):
                    await wait_reading(api, source, "theirs too", lambda r: r["observed"] >= r["sent"] + 3)
            await the_socket_path_works(first, stream, user)

            source_redis.stop()  # the sources' Redis is gone (its data too); the bus's is not
            for source in sources:
                for api in (first, second):
                    seen = await wait_reading(api, source, "stale", lambda r: r["staleness"] > STALE)
                    assert seen["failed"] >= 1
            await the_socket_path_works(first, stream, user)

            # Back empty: the stream source makes its group again (NOGROUP), the subscriber
            # subscribes again, and canaries flow.
            source_redis.start()
            for source in sources:
                await wait_reading(first, source, "fresh again", lambda r: r["staleness"] < STALE, 30)
            await the_socket_path_works(first, stream, user)
            no_canary_reached(stream)
            # Canaries are no user's events.
            samples = await scrape(first.client)
            assert samples.get(("herald_events_in_total", (("source", "redis-stream"),)), 0) == 0
            assert samples.get(("herald_events_in_total", (("source", "redis-pubsub"),)), 0) == 0


async def test_kafka_canaries_visit_each_partition_and_go_stale_when_the_broker_stops() -> None:
    topic = unique("canary-topic")
    with running_kafka() as broker:
        await broker.create_topics({topic: 3})
        env = {
            "HERALD_KAFKA_BOOTSTRAP": broker.bootstrap,
            "HERALD_KAFKA_TOPICS": topic,
            "HERALD_KAFKA_GROUP": unique("g"),
            "HERALD_KAFKA_SESSION_TIMEOUT_SECONDS": "3",
            "HERALD_CANARY_INTERVAL_SECONDS": str(INTERVAL),
            "HERALD_HEARTBEAT_SECONDS": "0.5",
        }
        with running_gateway(env) as node:
            user = unique("u")
            async with api_client(node) as api, open_stream(node.url, token=node.token(user)) as stream:
                assert (await stream.next()).event == "connection.established"
                seen = await wait_reading(api, "kafka", "canaries observed", lambda r: r["observed"] >= 6, 40)
                assert seen["latency_count"] == seen["observed"]
                assert seen["staleness"] < STALE
                # The canaries went to every partition in turn.
                records = await broker.read_all(topic, 6)
                assert {record.partition for record in records} == {0, 1, 2}
                assert all(b"herald_canary" in record.value for record in records)
                await the_socket_path_works(api, stream, user)

                broker.stop()
                seen = await wait_reading(api, "kafka", "stale", lambda r: r["staleness"] > STALE)
                await the_socket_path_works(api, stream, user)
                no_canary_reached(stream)
                # Readiness does not follow the canaries (the Kafka source reports no health).
                ready = await api.client.get("/api/v1/events/health/ready")
                assert ready.status_code == 200, ready.text


async def test_outbox_canaries_are_rows_the_poller_delivers_and_go_stale_when_postgres_stops() -> None:
    table = f"outbox_{secrets.token_hex(4)}"
    with running_postgres() as postgres:
        connection = await asyncpg.connect(postgres.dsn)
        try:
            await create_table(connection, table)
        finally:
            await connection.close()
        env = {
            "HERALD_OUTBOX_DSN": postgres.dsn,
            "HERALD_OUTBOX_TABLE": table,
            "HERALD_CANARY_INTERVAL_SECONDS": str(INTERVAL),
            "HERALD_HEARTBEAT_SECONDS": "0.5",
        }
        with running_gateway(env) as node:
            user = unique("u")
            async with api_client(node) as api, open_stream(node.url, token=node.token(user)) as stream:
                assert (await stream.next()).event == "connection.established"
                seen = await wait_reading(api, "outbox", "canaries observed", lambda r: r["observed"] >= 8)
                assert seen["latency_count"] == seen["observed"]
                assert seen["latency_sum"] / seen["latency_count"] < 1.0  # NOTIFY, not the 1 s poll
                # Handled canary rows are deleted as the next ones go in: the table stays small.
                connection = await asyncpg.connect(postgres.dsn)
                try:
                    rows = await connection.fetch(f"SELECT event_type, status FROM {table}")  # noqa: S608
                finally:
                    await connection.close()
                assert {row["event_type"] for row in rows} <= {"herald.canary"}
                assert len(rows) <= 3, rows
                await the_socket_path_works(api, stream, user)

                await asyncio.get_running_loop().run_in_executor(None, postgres.stop)
                seen = await wait_reading(api, "outbox", "stale", lambda r: r["staleness"] > STALE)
                assert seen["failed"] >= 1
                await the_socket_path_works(api, stream, user)
                no_canary_reached(stream)


async def test_no_one_publishes_to_or_subscribes_to_the_canary_scope(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    bodies = [
        {"event": "herald.canary", "scope": "herald", "key": "canary", "data": {}},
        {"event": "task.created", "scope": "herald", "key": "canary", "data": {}},
        {"event": "herald.canary", "scope": "user", "key": user, "data": {}},
    ]
    for body in bodies:
        response = await api.post_event(body, gateway.publisher_token)
        assert response.status_code == 422, response.text
    token = gateway.token(user, resources=["herald:*", "herald:canary"])
    with pytest.raises(StreamRefused) as refused:
        async with open_stream(gateway.url, token=token, subscribe="herald:canary"):
            pass
    assert refused.value.status == 422
    assert refused.value.body["code"] == "SUBSCRIPTION_INVALID"
    # With canaries off, their families are still there (dashboards and alerts name them).
    text = (await api.client.get("/metrics")).text
    for family in (
        "herald_canary_latency_seconds",
        "herald_canary_staleness_seconds",
        "herald_canary_sent_total",
    ):
        assert f"# TYPE {family} " in text
