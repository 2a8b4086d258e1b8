"""Real gateway processes consuming a real Kafka: the catalogue end to end, a SIGKILL between
append and commit, a broker restart under traffic."""

from __future__ import annotations

import secrets
import signal
from typing import Any

import orjson

from tests.support import catalogue
from tests.support.api import api_client, wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import GatewayProcess, running_gateway, start_gateway
from tests.support.kafka import KafkaBroker, running_kafka
from tests.support.redis import RedisServer
from tests.support.sse import open_stream


def kafka_env(broker: KafkaBroker, topic: str, **extra: str) -> dict[str, str]:
    return {
        "HERALD_KAFKA_BOOTSTRAP": broker.bootstrap,
        "HERALD_KAFKA_TOPICS": topic,
        "HERALD_KAFKA_GROUP": f"g-{topic}",
        "HERALD_KAFKA_AUTO_OFFSET_RESET": "earliest",
        "HERALD_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
        "HERALD_HEARTBEAT_SECONDS": "0.5",
        **extra,
    }


async def kafka_stats(gateway: GatewayProcess) -> dict[str, int]:
    async with api_client(gateway) as api:
        stats: dict[str, int] = (await api.health())["sources"]["kafka"]
        return stats


async def wait_assigned(gateway: GatewayProcess, timeout: float = 30.0) -> None:
    async def holds() -> bool:
        return (await kafka_stats(gateway))["partitions"] > 0

    await wait_until(holds, timeout=timeout, what="the Kafka source's partitions")


def progress(n: int, user: str) -> bytes:
    return orjson.dumps(
        {"event_type": "TaskProgressUpdateEvent", "user_id": user, "task_id": f"t{n}", "progress": n % 101}
    )


def numbers(events: list[Any]) -> list[str]:
    return [event.json()["task_id"] for event in events]


async def test_every_catalogue_type_reaches_the_stream_as_its_browser_event(
    kafka_broker: KafkaBroker,
) -> None:
    topic = f"domain-events-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({topic: 1})
    with running_gateway(kafka_env(kafka_broker, topic)) as gateway:
        await wait_assigned(gateway)
        token = gateway.token(catalogue.USER, sid=catalogue.SESSION, resources=[f"novel:{catalogue.NOVEL}"])
        async with open_stream(gateway.url, token=token, subscribe=f"novel:{catalogue.NOVEL}") as stream:
            await stream.next()  # connection.established
            await kafka_broker.produce(topic, [orjson.dumps(case.record) for case in catalogue.CASES])
            events = await stream.take(len(catalogue.CASES), timeout=20)
        stats = await kafka_stats(gateway)
    for case, event in zip(catalogue.CASES, events, strict=True):
        assert event.event == case.event, case.event_type
        data = event.json()
        assert data.pop("_scope") == case.scope
        assert data.pop("_version") == "1.0"
        assert data == case.data, case.event_type
    assert len({event.id for event in events}) == len(events)
    assert stats["published"] == len(catalogue.CASES)
    assert stats["rejected"] == 0


async def test_a_gateway_killed_between_append_and_commit_loses_and_duplicates_nothing(
    kafka_broker: KafkaBroker, redis_server: RedisServer
) -> None:
    topic = f"kill-{secrets.token_hex(4)}"
    user = f"u-{secrets.token_hex(3)}"
    await kafka_broker.create_topics({topic: 1})
    env = {**cluster_env(redis_server), **kafka_env(kafka_broker, topic)}
    # This node appends but never gets to commit: every record is between append and commit.
    first = start_gateway({**env, "HERALD_KAFKA_COMMIT_INTERVAL_SECONDS": "3600"})
    try:
        await wait_assigned(first)
        async with open_stream(first.url, token=first.token(user)) as stream:
            start = (await stream.next()).id
            await kafka_broker.produce(topic, [progress(n, user) for n in range(20)])
            seen = await stream.take(20, timeout=20)
        assert numbers(seen) == [f"t{n}" for n in range(20)]
        assert await kafka_broker.committed(f"g-{topic}", topic) == {0: 0}
    finally:
        first.stop(signal.SIGKILL)

    with running_gateway(env) as second:
        await wait_assigned(second, timeout=40)

        async def reread() -> bool:
            return (await kafka_stats(second))["duplicates"] == 20

        await wait_until(reread, timeout=20, what="the uncommitted records read again")
        await kafka_broker.produce(topic, [progress(n, user) for n in range(20, 25)])
        async with open_stream(second.url, token=second.token(user), last_event_id=start) as resumed:
            established = (await resumed.next()).json()
            assert established["recovered"] is True
            events = await resumed.take(25, timeout=20)
        stats = await kafka_stats(second)

        async def committed() -> bool:
            return await kafka_broker.committed(f"g-{topic}", topic) == {0: 25}

        await wait_until(committed, timeout=10, what="the offsets committed")
    assert numbers(events) == [f"t{n}" for n in range(25)]
    assert [e.id for e in events[:20]] == [e.id for e in seen]
    assert (stats["published"], stats["duplicates"]) == (5, 20)


async def test_a_broker_restart_under_traffic_delivers_every_record_once_in_order() -> None:
    user = f"u-{secrets.token_hex(3)}"
    with running_kafka() as broker:
        topic = "restart-events"
        await broker.create_topics({topic: 1})
        env = kafka_env(broker, topic, HERALD_KAFKA_MAX_BATCH="5")
        with running_gateway(env) as gateway:
            await wait_assigned(gateway)
            async with open_stream(gateway.url, token=gateway.token(user)) as stream:
                await stream.next()
                await broker.produce(topic, [progress(n, user) for n in range(100)])
                broker.kill()
                broker.start()
                await broker.produce(topic, [progress(n, user) for n in range(100, 200)])
                try:
                    events = await stream.take(200, timeout=60)
                except TimeoutError:
                    # Say where the source stood: a bare timeout in CI told nothing.
                    kafka_logs = [e for e in gateway.logs() if "kafka" in str(e.get("event", ""))]
                    raise AssertionError(
                        f"{len(stream.events)} events; source {await kafka_stats(gateway)}; "
                        f"its log {kafka_logs[-15:]}"
                    ) from None

                async def all_committed() -> bool:
                    return (await broker.committed(f"g-{topic}", topic)).get(0) == 200

                await wait_until(all_committed, timeout=30, what="every offset committed")
            stats = await kafka_stats(gateway)
    assert numbers(events) == [f"t{n}" for n in range(200)]
    assert stats["published"] == 200
