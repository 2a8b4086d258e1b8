"""The PostgreSQL outbox source against a real server: notify, order, failures, outages,
retention, concurrent pollers."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from herald.adapter import Adapter, default_mapping
from herald.sources.outbox import OutboxSource, enqueue
from tests.support.api import wait_until
from tests.support.postgres import PostgresServer
from tests.support.recording_bus import SwitchableBus

ADAPTER = Adapter(default_mapping())


def progress(n: int, user: str = "u1") -> dict[str, Any]:
    return {"user_id": user, "task_id": f"t{n}", "progress": n % 101}


def outbox(
    server: PostgresServer, table: str, bus: SwitchableBus, *, poll_seconds: float = 30.0, **kw: Any
) -> OutboxSource:
    return OutboxSource(bus.offer, ADAPTER, dsn=server.dsn, table=table, poll_seconds=poll_seconds, **kw)


async def statuses(db: asyncpg.Connection, table: str) -> dict[str, int]:
    rows = await db.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")  # noqa: S608
    return {row["status"]: row["n"] for row in rows}


async def test_a_notification_wakes_the_poller_and_rows_arrive_in_order_once(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str
) -> None:
    bus = SwitchableBus()
    # A 30 s tick: only the notification can deliver within the test's bounds.
    source = outbox(postgres_server, table, bus)
    await source.start()
    try:
        await wait_until(source.listening.is_set, timeout=10)
        started = time.monotonic()
        async with db.transaction():
            ids = [await enqueue(db, "TaskProgressUpdateEvent", progress(n), table=table) for n in range(5)]
        await wait_until(lambda: len(bus.messages) == 5, timeout=5)
        latency = time.monotonic() - started
        await wait_until(lambda: source.stats.published == 5, timeout=5)
        # A transaction rolled back leaves no row, so no event.
        transaction = db.transaction()
        await transaction.start()
        await enqueue(db, "TaskProgressUpdateEvent", progress(99), table=table)
        await transaction.rollback()
    finally:
        await source.stop()
    assert latency < 2.0
    assert [m.data["task_id"] for m in bus.messages] == [f"t{n}" for n in range(5)]
    assert bus.keys == [f"outbox:{table}:{i}" for i in ids]
    assert await statuses(db, table) == {"processed": 5}
    assert source.stats.published == 5


async def test_rows_failing_the_mapping_are_marked_failed_with_the_error_and_others_flow(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str
) -> None:
    bus = SwitchableBus()
    good = await enqueue(db, "TaskProgressUpdateEvent", progress(1), table=table)
    bad = await enqueue(db, "TaskProgressUpdateEvent", {"task_id": "t", "progress": 5}, table=table)
    unknown = await enqueue(db, "InvoicePaidEvent", {"user_id": "u1"}, table=table)
    after = await enqueue(db, "TaskProgressUpdateEvent", progress(2), table=table)
    source = outbox(postgres_server, table, bus)
    await source.start()
    try:
        await wait_until(lambda: source.stats.received == 4, timeout=10)
    finally:
        await source.stop()
    assert [m.data["task_id"] for m in bus.messages] == ["t1", "t2"]
    rows = {
        row["id"]: (row["status"], row["error"])
        for row in await db.fetch(f"SELECT id, status, error FROM {table}")  # noqa: S608
    }
    assert rows[good] == ("processed", None)
    assert rows[after] == ("processed", None)
    assert rows[unknown] == ("ignored", None)
    assert rows[bad][0] == "failed"
    assert "'user_id' is missing" in rows[bad][1]
    assert (source.stats.rejected, source.stats.ignored) == (1, 1)


async def test_while_the_bus_is_away_rows_stay_pending_and_are_delivered_after(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str
) -> None:
    bus = SwitchableBus()
    bus.available = False
    source = outbox(postgres_server, table, bus, poll_seconds=0.2)
    await source.start()
    try:
        await wait_until(source.listening.is_set, timeout=10)
        for n in range(3):
            await enqueue(db, "TaskProgressUpdateEvent", progress(n), table=table)
        await wait_until(lambda: bus.refused >= 3, timeout=10)
        assert await statuses(db, table) == {"pending": 3}
        bus.available = True
        await wait_until(lambda: source.stats.published == 3, timeout=10)
    finally:
        await source.stop()
    assert [m.data["task_id"] for m in bus.messages] == ["t0", "t1", "t2"]
    assert await statuses(db, table) == {"processed": 3}
    assert source.stats.retries >= 3


async def test_processed_rows_are_deleted_after_the_retention(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str
) -> None:
    bus = SwitchableBus()
    await enqueue(db, "TaskProgressUpdateEvent", progress(1), table=table)
    await enqueue(db, "TaskProgressUpdateEvent", {"progress": 1}, table=table)  # fails: kept
    source = outbox(postgres_server, table, bus, poll_seconds=0.1, retention_seconds=0.5)
    await source.start()
    try:
        await wait_until(lambda: source.stats.deleted == 1, timeout=10)
    finally:
        await source.stop()
    assert await statuses(db, table) == {"failed": 1}


async def test_concurrent_pollers_never_deliver_a_row_twice(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str
) -> None:
    bus = SwitchableBus()
    sources = [outbox(postgres_server, table, bus, poll_seconds=0.05, batch=7) for _ in range(3)]
    for source in sources:
        await source.start()
    try:
        for start in range(0, 300, 50):
            async with db.transaction():
                for n in range(start, start + 50):
                    await enqueue(db, "TaskProgressUpdateEvent", progress(n), table=table)
        await wait_until(lambda: sum(source.stats.published for source in sources) == 300, timeout=20)
    finally:
        for source in sources:
            await source.stop()
    assert sorted(m.data["task_id"] for m in bus.messages) == sorted(f"t{n}" for n in range(300))
    assert sum(source.stats.duplicates for source in sources) == 0
    assert sum(source.stats.published for source in sources) == 300
    assert sum(1 for source in sources if source.stats.published) >= 2, "the pollers shared the work"
    assert await statuses(db, table) == {"processed": 300}


async def test_a_driver_error_of_an_unexpected_kind_reconnects_rather_than_ending_the_source(
    postgres_server: PostgresServer, db: asyncpg.Connection, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the faults test: a connection caught mid-operation by a dying server raises
    asyncpg's InternalClientError (no InterfaceError), which ended the poller's task for
    good; rows then stayed pending with nothing said."""
    bus = SwitchableBus()
    source = outbox(postgres_server, table, bus, poll_seconds=0.2)
    real = OutboxSource._deliver_batch
    failures = iter(
        [asyncpg.InternalClientError("cannot switch to state 12; another operation is in progress")]
    )

    async def deliver_batch(self: OutboxSource, connection: asyncpg.Connection) -> int:
        if (error := next(failures, None)) is not None:
            raise error
        return await real(self, connection)

    monkeypatch.setattr(OutboxSource, "_deliver_batch", deliver_batch)
    await enqueue(db, "TaskProgressUpdateEvent", progress(1), table=table)
    await source.start()
    try:
        await wait_until(lambda: len(bus.messages) == 1, timeout=10, what="the row after a reconnect")
        assert source._task is not None
        assert not source._task.done()
    finally:
        await source.stop()
    assert await statuses(db, table) == {"processed": 1}
