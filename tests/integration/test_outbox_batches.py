"""The outbox source offering the rows it claims together (``offer_many``, as the gateway
wires it) against a real PostgreSQL: a poisoned row in the middle of a claimed batch is marked
failed while the others are delivered in id order and marked processed, and a batch the bus
refuses partway is rolled back and delivered whole later, each event once.

The rows are inserted before the source starts, so its first claim holds all of them; the
bus records every ``append_many`` call, which shows they were offered together."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from herald.adapter import Adapter, default_mapping
from herald.config import Settings
from herald.gateway.publishing import Publishing
from herald.sources.outbox import OutboxSource, enqueue
from tests.integration.test_kafka_batches import BatchBus
from tests.integration.test_outbox_source import progress, statuses
from tests.support.api import wait_until
from tests.support.postgres import PostgresServer


@pytest.fixture
def bus() -> BatchBus:
    return BatchBus()


@pytest.fixture
async def source(postgres_server: PostgresServer, table: str, bus: BatchBus) -> AsyncIterator[OutboxSource]:
    """The source, not started yet (the test starts it once its rows are in the table)."""
    publishing = Publishing(Settings(jwt_secret="x" * 32, coalesce_interval_seconds=0), bus)
    outbox = OutboxSource(
        publishing.offer,
        Adapter(default_mapping()),
        dsn=postgres_server.dsn,
        table=table,
        poll_seconds=0.2,
        offer_many=publishing.offer_many,
    )
    try:
        yield outbox
    finally:
        await outbox.stop()


async def test_a_poisoned_row_in_a_claimed_batch_fails_alone_and_the_others_go_in_id_order(
    db: asyncpg.Connection, table: str, bus: BatchBus, source: OutboxSource
) -> None:
    async with db.transaction():
        first = await enqueue(db, "TaskProgressUpdateEvent", progress(1), table=table)
        unmapped = await enqueue(db, "TaskProgressUpdateEvent", {"task_id": "t", "progress": 5}, table=table)
        second = await enqueue(db, "TaskProgressUpdateEvent", progress(2), table=table)
        too_large = await enqueue(
            db, "TaskProgressUpdateEvent", {**progress(3), "message": "x" * (70 * 1024)}, table=table
        )
        third = await enqueue(db, "TaskProgressUpdateEvent", progress(4), table=table)
    await source.start()
    await wait_until(lambda: source.stats.received == 5, timeout=10)

    keys = [f"outbox:{table}:{row_id}" for row_id in (first, second, third)]
    assert bus.sources() == keys, "the good rows, in id order"
    assert [record.message.data["task_id"] for record in bus.records()] == ["t1", "t2", "t4"]
    assert bus.calls == [keys], "the rows claimed together, offered with one append_many"
    rows = {
        row["id"]: (row["status"], row["error"])
        for row in await db.fetch(f"SELECT id, status, error FROM {table}")  # noqa: S608
    }
    assert {row_id: rows[row_id] for row_id in (first, second, third)} == {
        first: ("processed", None),
        second: ("processed", None),
        third: ("processed", None),
    }
    assert rows[unmapped][0] == "failed"
    assert "'user_id' is missing" in rows[unmapped][1]
    assert rows[too_large][0] == "failed"
    assert rows[too_large][1].startswith("EVENT_TOO_LARGE: ")
    assert (source.stats.published, source.stats.rejected, source.stats.retries) == (3, 2, 0)


async def test_a_batch_the_bus_refuses_partway_is_rolled_back_and_later_delivered_once_in_order(
    db: asyncpg.Connection, table: str, bus: BatchBus, source: OutboxSource
) -> None:
    async with db.transaction():
        ids = [await enqueue(db, "TaskProgressUpdateEvent", progress(n), table=table) for n in range(5)]
    keys = [f"outbox:{table}:{row_id}" for row_id in ids]
    bus.room = 2  # the store takes two events of the batch, then goes away
    await source.start()
    await wait_until(lambda: len(bus.calls) >= 3, timeout=10, what="the batch claimed again")
    assert bus.sources() == keys[:2]
    assert await statuses(db, table) == {"pending": 5}, "the refused batch rolled back"
    assert source.stats.published == 0

    bus.room = None
    await wait_until(lambda: source.stats.published + source.stats.duplicates == 5, timeout=10)
    assert bus.sources() == keys, "every row's event once, in id order"
    assert all(call == keys for call in bus.calls), "the whole batch is claimed and offered again"
    # The two appended before the refusal answer as duplicates when the rows come again.
    assert (source.stats.published, source.stats.duplicates) == (3, 2)
    assert source.stats.retries == len(bus.calls) - 1
    assert await statuses(db, table) == {"processed": 5}
