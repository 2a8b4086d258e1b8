"""Two gateway nodes on one Redis bus share a Kafka consumer group and an outbox table:
every record and every row reaches the stream exactly once."""

from __future__ import annotations

import secrets

import asyncpg
import orjson

from herald.sources.outbox import create_table, enqueue
from tests.integration.test_kafka_gateway import kafka_env, progress
from tests.support.api import api_client, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.kafka import KafkaBroker
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.sse import open_stream

PARTITIONS = 4


async def sources(node: GatewayProcess) -> dict[str, dict[str, int]]:
    async with api_client(node) as api:
        found: dict[str, dict[str, int]] = (await api.health())["sources"]
        return found


async def test_two_nodes_share_the_partitions_and_the_outbox_without_a_duplicate(
    kafka_broker: KafkaBroker, redis_server: RedisServer, postgres_server: PostgresServer
) -> None:
    topic = f"shared-{secrets.token_hex(4)}"
    table = f"outbox_{secrets.token_hex(4)}"
    user = f"u-{secrets.token_hex(3)}"
    await kafka_broker.create_topics({topic: PARTITIONS})
    db = await asyncpg.connect(postgres_server.dsn)
    try:
        await create_table(db, table)
        env = {
            **cluster_env(redis_server),
            **kafka_env(kafka_broker, topic),
            "HERALD_OUTBOX_DSN": postgres_server.dsn,
            "HERALD_OUTBOX_TABLE": table,
            "HERALD_OUTBOX_BATCH": "5",
        }
        with running_cluster(2, env) as nodes:

            async def spread() -> bool:
                held = [(await sources(node))["kafka"]["partitions"] for node in nodes]
                return sum(held) == PARTITIONS and min(held) > 0

            await wait_until(spread, timeout=40, what="the partitions spread over both nodes")
            async with open_stream(nodes[0].url, token=nodes[0].token(user)) as stream:
                await stream.next()
                records = [progress(n, user) for n in range(40)]
                async with kafka_broker.producer() as producer:
                    for n, value in enumerate(records):
                        await producer.send_and_wait(topic, value, partition=n % PARTITIONS)
                for start in range(0, 40, 10):
                    async with db.transaction():
                        for n in range(start, start + 10):
                            await enqueue(
                                db, "TaskStatusChangedEvent",
                                {"user_id": user, "task_id": f"row{n}", "old_status": "a", "new_status": "b"},
                                table=table,
                            )  # fmt: skip
                events = await stream.take(80, timeout=30)
                marker = await api_marker(nodes[1])
                tail = await stream.until(lambda event: event.id == marker, timeout=10)
            stats = [await sources(node) for node in nodes]
            pending = await db.fetchval(f"SELECT count(*) FROM {table} WHERE status <> 'processed'")  # noqa: S608
    finally:
        await db.close()
    assert len(tail) == 1, "nothing arrived after the 80 events but the marker"
    task_ids = sorted(orjson.loads(event.data)["task_id"] for event in events)
    assert task_ids == sorted([f"t{n}" for n in range(40)] + [f"row{n}" for n in range(40)])
    assert len({event.id for event in events}) == 80
    assert [s["kafka"]["published"] > 0 for s in stats] == [True, True], "both nodes consumed partitions"
    assert sum(s["kafka"]["published"] for s in stats) == 40
    assert sum(s["outbox"]["published"] for s in stats) == 40
    assert sum(s["outbox"]["duplicates"] for s in stats) == 0
    assert pending == 0


async def api_marker(node: GatewayProcess) -> str:
    async with api_client(node) as api:
        return await api.marker()
