"""The Kafka source against a real broker: poison records, bus outages, commits, lag."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import orjson
import pytest

from herald.adapter import Adapter, default_mapping
from herald.sources.kafka import KafkaSource
from tests.support.api import wait_until
from tests.support.kafka import KafkaBroker
from tests.support.recording_bus import SwitchableBus


def progress(n: int, user: str = "u1") -> bytes:
    return orjson.dumps(
        {"event_type": "TaskProgressUpdateEvent", "user_id": user, "task_id": f"t{n}", "progress": n}
    )


@pytest.fixture
async def topic(kafka_broker: KafkaBroker) -> str:
    name = f"events-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({name: 1})
    return name


@pytest.fixture
async def bus() -> SwitchableBus:
    return SwitchableBus()


@pytest.fixture
async def source(kafka_broker: KafkaBroker, topic: str, bus: SwitchableBus) -> AsyncIterator[KafkaSource]:
    kafka = KafkaSource(
        bus.offer,
        Adapter(default_mapping()),
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group=f"g-{topic}",
        auto_offset_reset="earliest",
        commit_interval_seconds=0,
        session_timeout_seconds=6,
    )
    await kafka.start()
    try:
        await wait_until(kafka.assigned.is_set, timeout=30)
        yield kafka
    finally:
        await kafka.stop()


async def test_poison_records_go_to_the_dead_letter_topic_while_good_records_keep_flowing(
    kafka_broker: KafkaBroker, topic: str, bus: SwitchableBus, source: KafkaSource
) -> None:
    values = [
        progress(1),
        b"not json at all",
        progress(2),
        orjson.dumps({"event_type": "TaskProgressUpdateEvent", "task_id": "t", "progress": 1}),  # no user_id
        orjson.dumps({"event_type": "InvoicePaidEvent", "user_id": "u1"}),  # no rule: ignored
        orjson.dumps({"user_id": "u1"}),  # no event_type
        progress(3),
    ]
    await kafka_broker.produce(topic, values, partition=0)
    await wait_until(lambda: source.stats.received == 7, timeout=20)

    assert [m.data["progress"] for m in bus.messages] == [1, 2, 3]
    assert bus.keys == [f"kafka:{topic}:0:{offset}" for offset in (0, 2, 6)]
    assert [m.source for m in bus.messages] == bus.keys
    dead = await kafka_broker.read_all(f"{topic}.dlq", 3)
    assert [record.value for record in dead] == [values[1], values[3], values[5]]
    headers = [dict(record.headers) for record in dead]
    assert [h["herald-source"].decode() for h in headers] == [f"kafka:{topic}:0:{o}" for o in (1, 3, 5)]
    assert b"not JSON" in headers[0]["herald-error"]
    assert b"'user_id' is missing" in headers[1]["herald-error"]
    assert headers[1]["herald-event-type"] == b"TaskProgressUpdateEvent"
    assert b"'event_type'" in headers[2]["herald-error"]
    stats = source.stats.as_dict()
    assert {k: stats[k] for k in ("received", "published", "rejected", "dead_lettered", "ignored")} == {
        "received": 7,
        "published": 3,
        "rejected": 3,
        "dead_lettered": 3,
        "ignored": 1,
    }

    async def all_committed() -> bool:
        return await kafka_broker.committed(source.group, topic) == {0: 7}

    await wait_until(all_committed, timeout=10)
    assert source.stats.lag == 0


async def test_a_bus_outage_holds_the_partition_and_commits_nothing_past_it(
    kafka_broker: KafkaBroker, topic: str, bus: SwitchableBus, source: KafkaSource
) -> None:
    bus.available = False
    await kafka_broker.produce(topic, [progress(n) for n in range(5)], partition=0)
    await wait_until(lambda: bus.refused >= 4, timeout=20)
    # The first record is being retried: nothing is in the bus, nothing past the start committed.
    assert bus.messages == []
    assert await kafka_broker.committed(source.group, topic) == {0: 0}
    assert source.stats.received == 1
    await wait_until(lambda: source.stats.lag == 5, timeout=10)

    bus.available = True
    await wait_until(lambda: len(bus.messages) == 5, timeout=20)
    assert [m.data["progress"] for m in bus.messages] == [0, 1, 2, 3, 4]
    assert source.stats.retries >= 4
    assert source.stats.published == 5

    async def all_committed() -> bool:
        return await kafka_broker.committed(source.group, topic) == {0: 5}

    await wait_until(all_committed, timeout=10)
    await wait_until(lambda: source.stats.lag == 0, timeout=10)
