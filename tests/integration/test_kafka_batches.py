"""The Kafka source offering each fetched batch at once (``offer_many``, as the gateway wires
it) against a real broker: a poison record in the middle of a batch goes to the dead-letter
topic while the records around it reach the bus in offset order, and a refused tail is
retried without appending anything twice or out of order.

The records are produced before the source starts, so its first fetch holds all of them; the
bus records every ``append_many`` call, which shows they were offered together."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Sequence

import orjson
import pytest

from herald.adapter import Adapter, default_mapping
from herald.bus.base import Append, BatchResult
from herald.bus.memory import MemoryBus
from herald.config import Settings
from herald.errors import BusUnavailable
from herald.gateway.publishing import Publishing
from herald.sources.kafka import KafkaSource
from tests.integration.test_kafka_source import progress
from tests.support.api import wait_until
from tests.support.kafka import KafkaBroker


class BatchBus(MemoryBus):
    """A memory bus that records the idempotency keys of each ``append_many`` call and, after
    ``room`` more items (``None``: no limit), refuses every item as a store gone away does."""

    def __init__(self) -> None:
        super().__init__()
        self.room: int | None = None
        self.calls: list[list[str | None]] = []
        self.refused = 0

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        self.calls.append([item.idempotency_key for item in appends])
        results: list[BatchResult] = []
        for item in appends:
            if self.room is not None and self.room <= 0:
                self.refused += 1
                results.append(BusUnavailable("the store went away", retry_after=1))
                continue
            if self.room is not None:
                self.room -= 1
            results.append(
                self.append_now(item.message, item.data_json, idempotency_key=item.idempotency_key)
            )
        return results

    def sources(self) -> list[str | None]:
        return [record.message.source for record in self.records()]


@pytest.fixture
async def topic(kafka_broker: KafkaBroker) -> str:
    name = f"batches-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({name: 1})
    return name


@pytest.fixture
def bus() -> BatchBus:
    return BatchBus()


@pytest.fixture
def publishing(bus: BatchBus) -> Publishing:
    return Publishing(Settings(jwt_secret="x" * 32, coalesce_interval_seconds=0), bus)


@pytest.fixture
async def source(kafka_broker: KafkaBroker, topic: str, publishing: Publishing) -> AsyncIterator[KafkaSource]:
    """The source, not started yet (the test starts it once its records are in the topic)."""
    kafka = KafkaSource(
        publishing.offer,
        Adapter(default_mapping()),
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group=f"g-{topic}",
        auto_offset_reset="earliest",
        commit_interval_seconds=0,
        session_timeout_seconds=6,
        offer_many=publishing.offer_many,
    )
    try:
        yield kafka
    finally:
        await kafka.stop()


async def test_a_poison_record_in_the_middle_of_a_batch_is_dead_lettered_and_the_rest_go_in_order(
    kafka_broker: KafkaBroker, topic: str, bus: BatchBus, source: KafkaSource
) -> None:
    too_large = orjson.dumps(
        {
            "event_type": "TaskProgressUpdateEvent",
            "user_id": "u1",
            "task_id": "t3",
            "progress": 3,
            "message": "x" * (70 * 1024),  # maps, but the event is over MAX_EVENT_BYTES
        }
    )
    values = [progress(0), progress(1), b"not json at all", too_large, progress(4), progress(5)]
    await kafka_broker.produce(topic, values, partition=0)
    await source.start()
    await wait_until(lambda: source.stats.received == 6 and source.stats.dead_lettered == 2, timeout=30)

    keys = [f"kafka:{topic}:0:{offset}" for offset in (0, 1, 4, 5)]
    assert bus.sources() == keys, "the records around the poison ones, in offset order"
    assert [record.message.data["progress"] for record in bus.records()] == [0, 1, 4, 5]
    assert bus.calls == [keys], "one fetched batch, offered with one append_many"

    dead = await kafka_broker.read_all(f"{topic}.dlq", 2)
    assert [record.value for record in dead] == [values[2], values[3]]
    headers = [dict(record.headers) for record in dead]
    assert [h["herald-source"].decode() for h in headers] == [f"kafka:{topic}:0:{o}" for o in (2, 3)]
    assert b"not JSON" in headers[0]["herald-error"]
    assert headers[1]["herald-error"].startswith(b"EVENT_TOO_LARGE: ")
    stats = source.stats.as_dict()
    assert {k: stats[k] for k in ("received", "published", "rejected", "dead_lettered", "retries")} == {
        "received": 6,
        "published": 4,
        "rejected": 2,
        "dead_lettered": 2,
        "retries": 0,
    }

    async def all_committed() -> bool:
        return await kafka_broker.committed(source.group, topic) == {0: 6}

    await wait_until(all_committed, timeout=10, what="the offset past every record committed")


async def test_the_refused_tail_of_a_batch_is_retried_and_each_record_goes_in_once_in_order(
    kafka_broker: KafkaBroker, topic: str, bus: BatchBus, publishing: Publishing, source: KafkaSource
) -> None:
    await kafka_broker.produce(topic, [progress(n) for n in range(6)], partition=0)
    keys = [f"kafka:{topic}:0:{offset}" for offset in range(6)]
    bus.room = 2  # the store takes two events of the batch, then goes away
    await source.start()
    await wait_until(lambda: len(bus.calls) >= 3, timeout=30, what="the refused tail retried")
    assert bus.sources() == keys[:2]
    assert source.stats.published == 2
    assert await kafka_broker.committed(source.group, topic) == {0: 0}, "nothing committed past the tail"

    bus.room = None
    await wait_until(lambda: source.stats.published == 6, timeout=20)
    assert bus.sources() == keys, "every record once, in offset order"
    assert bus.calls[0] == keys, "one fetched batch, offered together"
    assert all(call == keys[2:] for call in bus.calls[1:]), "only the refused tail is offered again"
    assert source.stats.duplicates == 0
    assert source.stats.retries == len(bus.calls) - 1
    assert publishing.events_in == {"kafka": 6}

    async def all_committed() -> bool:
        return await kafka_broker.committed(source.group, topic) == {0: 6}

    await wait_until(all_committed, timeout=10, what="every offset committed")
