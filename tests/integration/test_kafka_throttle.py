"""Kafka through the coalesce throttle, against a real broker: a gateway killed while it holds
progress loses no final value, and progress-heavy traffic is pipelined, not held up a second
per record."""

from __future__ import annotations

import secrets
import signal
import time

import orjson

from herald.adapter import Adapter, default_mapping
from herald.bus.memory import MemoryBus
from herald.bus.throttle import Offered, Throttle
from herald.events.message import SSEMessage, encode_data
from herald.sources.kafka import KafkaSource
from tests.integration.test_kafka_gateway import kafka_env, kafka_stats, wait_assigned
from tests.support.api import wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import running_gateway, start_gateway
from tests.support.kafka import KafkaBroker
from tests.support.redis import RedisServer
from tests.support.sse import open_stream


def progress(user: str, task: str, value: int) -> bytes:
    return orjson.dumps(
        {"event_type": "TaskProgressUpdateEvent", "user_id": user, "task_id": task, "progress": value}
    )


async def test_a_gateway_killed_while_holding_progress_loses_no_final_value(
    kafka_broker: KafkaBroker, redis_server: RedisServer
) -> None:
    topic = f"held-{secrets.token_hex(4)}"
    user = f"u-{secrets.token_hex(3)}"
    group = f"g-{topic}"
    await kafka_broker.create_topics({topic: 1})
    env = {
        **cluster_env(redis_server),
        **kafka_env(kafka_broker, topic),
        "HERALD_KAFKA_COMMIT_INTERVAL_SECONDS": "0",
    }
    # A long interval: the kill lands while the gateway holds values 2..10.
    first = start_gateway({**env, "HERALD_COALESCE_INTERVAL_SECONDS": "60"})
    try:
        await wait_assigned(first)
        async with open_stream(first.url, token=first.token(user)) as stream:
            await stream.next()
            await kafka_broker.produce(topic, [progress(user, "t1", v) for v in range(1, 11)])
            seen = await stream.next(timeout=20)
            assert seen.json()["progress"] == 1

            async def all_held() -> bool:
                stats = await kafka_stats(first)
                return stats["received"] == 10 and stats["held"] == 9

            await wait_until(all_held, timeout=20, what="values 2..10 held")

            async def first_committed() -> bool:
                return await kafka_broker.committed(group, topic) == {0: 1}

            await wait_until(first_committed, timeout=10, what="the offset after value 1 committed")
    finally:
        first.stop(signal.SIGKILL)
    # Nothing past the first held record was committed.
    assert await kafka_broker.committed(group, topic) == {0: 1}

    with running_gateway({**env, "HERALD_COALESCE_INTERVAL_SECONDS": "0.5"}) as second:
        await wait_assigned(second, timeout=40)
        async with open_stream(second.url, token=second.token(user), last_event_id=seen.id) as resumed:
            assert (await resumed.next()).json()["recovered"] is True
            events = await resumed.until(lambda e: e.json().get("progress") == 10, timeout=20)

            async def all_committed() -> bool:
                return await kafka_broker.committed(group, topic) == {0: 10}

            await wait_until(all_committed, timeout=10, what="every offset committed")
        stats = await kafka_stats(second)
    values = [e.json()["progress"] for e in events]
    assert values[-1] == 10
    assert values == sorted(values)
    assert set(values) <= set(range(2, 11))
    assert len(values) <= 2  # the first re-read at once, the newest after the interval
    assert stats["received"] == 9
    assert stats["published"] + stats["coalesced"] == 9


async def drain(kafka_broker: KafkaBroker, topic: str, interval: float, records: int) -> tuple[float, float]:
    """Seconds until a Kafka source feeding a throttled memory bus has handled every record
    of ``topic``, and until every one is settled (appended or superseded)."""
    bus = MemoryBus(max_events=records + 10)
    throttle = Throttle(
        lambda m, d, k, s: bus.append(m, d, idempotency_key=k, superseded_keys=s),
        interval,
    )

    async def offer(message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        return await throttle.offer(message, encode_data(message, 65536), idempotency_key)

    source = KafkaSource(
        offer,
        Adapter(default_mapping()),
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group=f"g-{topic}-{interval}",
        auto_offset_reset="earliest",
    )
    started = time.perf_counter()
    await source.start()
    try:
        await wait_until(lambda: source.stats.received == records, timeout=120, interval=0.01)
        handled = time.perf_counter() - started
        stats = source.stats
        await wait_until(
            lambda: stats.published + stats.coalesced + stats.duplicates == records, timeout=30, interval=0.01
        )
        settled = time.perf_counter() - started
    finally:
        await throttle.close()
        await source.stop()
    return handled, settled


async def test_progress_heavy_traffic_is_pipelined_through_the_throttle(kafka_broker: KafkaBroker) -> None:
    """200 tasks x 50 progress values, as fast as Kafka hands them over: with the throttle the
    source keeps handling records while their events are held, so it takes about as long
    as without it, plus at most one interval for the last held values."""
    topic = f"heavy-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({topic: 1})
    tasks, values = 200, 50
    records = tasks * values
    async with kafka_broker.producer() as producer:
        for value in range(values):
            batch = producer.create_batch()
            for task in range(tasks):
                if batch.append(key=None, value=progress("u1", f"t{task}", value), timestamp=None) is None:
                    await producer.send_batch(batch, topic, partition=0)
                    batch = producer.create_batch()
                    batch.append(key=None, value=progress("u1", f"t{task}", value), timestamp=None)
            await producer.send_batch(batch, topic, partition=0)
        await producer.flush()
    interval = 1.0
    _, off_settled = await drain(kafka_broker, topic, 0.0, records)
    on_handled, on_settled = await drain(kafka_broker, topic, interval, records)
    print(
        f"Kafka -> bus, {records} progress records over {tasks} tasks: "
        f"throttle off {records / off_settled:,.0f} records/s ({off_settled:.2f} s); "
        f"throttle on ({interval} s): handled in {on_handled:.2f} s ({records / on_handled:,.0f} records/s), "
        f"all settled in {on_settled:.2f} s"
    )
    assert on_handled <= 3 * off_settled + interval
    assert on_settled - on_handled <= 2 * interval + 1
