"""``add_event`` in the application's transaction (SQLAlchemy Session and AsyncSession, asyncpg),
delivered by a real gateway's outbox poller from a real PostgreSQL: a commit once, a rollback
never, and a commit made while no gateway runs once, after one starts."""

from __future__ import annotations

import secrets
import signal
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from herald_publisher import OutboxError, add_event
from herald_publisher.catalogue import TaskFailed, TaskProgressUpdated, TaskStatusChanged
from sqlalchemy import create_engine, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from herald.sources.outbox import create_table
from tests.sdk.test_publisher import until_marker
from tests.support.api import unique, wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import GatewayProcess, running_gateway, start_gateway
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer
from tests.support.sse import Event, Stream, open_stream


def outbox_env(postgres: PostgresServer, table: str) -> dict[str, str]:
    return {
        "HERALD_OUTBOX_DSN": postgres.dsn,
        "HERALD_OUTBOX_TABLE": table,
        "HERALD_OUTBOX_POLL_SECONDS": "0.2",
        "HERALD_COALESCE_INTERVAL_SECONDS": "0",
    }


async def new_tables(postgres: PostgresServer) -> str:
    """A fresh outbox table (as ``herald outbox init`` makes it) and the application's own."""
    table = f"sdk_outbox_{secrets.token_hex(4)}"
    connection = await asyncpg.connect(postgres.dsn)
    try:
        await create_table(connection, table)
        await connection.execute(f"CREATE TABLE {table}_tasks (id text PRIMARY KEY, progress int)")
    finally:
        await connection.close()
    return table


@pytest.fixture(scope="module")
async def outbox_table(postgres_server: PostgresServer) -> str:
    return await new_tables(postgres_server)


@pytest.fixture(scope="module")
def outbox_gateway(postgres_server: PostgresServer, outbox_table: str) -> Iterator[GatewayProcess]:
    with running_gateway(outbox_env(postgres_server, outbox_table)) as gateway:
        yield gateway


@pytest.fixture
async def db(postgres_server: PostgresServer) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(postgres_server.dsn)
    try:
        yield connection
    finally:
        await connection.close()


def sqlalchemy_url(postgres: PostgresServer, driver: str) -> str:
    return postgres.dsn.replace("postgresql://", f"postgresql+{driver}://")


async def statuses(db: asyncpg.Connection, table: str, user: str) -> list[str]:
    rows = await db.fetch(
        f"SELECT status FROM {table} WHERE payload->>'user_id' = $1 ORDER BY id",  # noqa: S608
        user,
    )
    return [row["status"] for row in rows]


async def next_task_event(stream: Stream) -> Event:
    return (await stream.until(lambda event: event.event.startswith("task.")))[-1]


async def test_sqlalchemy_session_commit_delivers_once_and_rollback_never(
    outbox_gateway: GatewayProcess, outbox_table: str, postgres_server: PostgresServer, db: asyncpg.Connection
) -> None:
    user = unique("alice")
    engine = create_engine(sqlalchemy_url(postgres_server, "psycopg"))
    try:
        async with open_stream(outbox_gateway.url, token=outbox_gateway.token(user)) as stream:
            with Session(engine) as session, session.begin():
                session.execute(
                    text(f"INSERT INTO {outbox_table}_tasks VALUES (:id, 50)"),  # noqa: S608
                    {"id": f"{user}-1"},
                )
                row = add_event(
                    session,
                    TaskProgressUpdated(task_id=f"{user}-1", progress=50),
                    key=user,
                    table=outbox_table,
                )
            delivered = await next_task_event(stream)
            with Session(engine) as session:
                session.execute(
                    text(f"INSERT INTO {outbox_table}_tasks VALUES (:id, 10)"),  # noqa: S608
                    {"id": f"{user}-2"},
                )
                add_event(
                    session,
                    TaskProgressUpdated(task_id=f"{user}-2", progress=10),
                    key=user,
                    table=outbox_table,
                )
                session.rollback()
            # by name, in a Core connection's transaction: the event after the rolled-back one
            with engine.begin() as connection:
                add_event(
                    connection,
                    "TaskStatusChangedEvent",
                    {
                        "user_id": user,
                        "task_id": f"{user}-1",
                        "old_status": "running",
                        "new_status": "completed",
                    },
                    table=outbox_table,
                )
            after = await next_task_event(stream)
            await wait_until(
                lambda: _processed(db, outbox_table, user, 2), timeout=10, what="both rows processed"
            )
            events = await until_marker(outbox_gateway, stream, user)
    finally:
        engine.dispose()
    assert isinstance(row, int)
    assert (delivered.event, delivered.json()["progress"]) == ("task.progress-updated", 50)
    assert (after.event, after.json()["new_status"]) == ("task.status-changed", "completed")
    assert events == [], "nothing else: no second delivery, no rolled-back event"
    assert await db.fetchval(f"SELECT count(*) FROM {outbox_table}_tasks WHERE id = $1", f"{user}-2") == 0  # noqa: S608


async def _processed(db: asyncpg.Connection, table: str, user: str, rows: int) -> bool:
    return await statuses(db, table, user) == ["processed"] * rows


async def test_sqlalchemy_async_session_commit_delivers_once_and_rollback_never(
    outbox_gateway: GatewayProcess, outbox_table: str, postgres_server: PostgresServer, db: asyncpg.Connection
) -> None:
    user = unique("bob")
    engine = create_async_engine(sqlalchemy_url(postgres_server, "asyncpg"))
    try:
        async with open_stream(outbox_gateway.url, token=outbox_gateway.token(user)) as stream:
            async with AsyncSession(engine) as session:
                await add_event(
                    session,
                    TaskStatusChanged(task_id="t1", old_status="pending", new_status="running"),
                    key=user,
                    table=outbox_table,
                )
                await session.rollback()
            async with AsyncSession(engine) as session, session.begin():
                await add_event(
                    session, TaskProgressUpdated(task_id="t1", progress=70), key=user, table=outbox_table
                )
            delivered = await next_task_event(stream)
            await wait_until(
                lambda: _processed(db, outbox_table, user, 1), timeout=10, what="the row processed"
            )
            events = await until_marker(outbox_gateway, stream, user)
    finally:
        await engine.dispose()
    assert (delivered.event, delivered.json()["progress"]) == ("task.progress-updated", 70)
    assert events == []


async def test_asyncpg_commit_delivers_once_and_rollback_never(
    outbox_gateway: GatewayProcess, outbox_table: str, db: asyncpg.Connection
) -> None:
    user = unique("carol")
    async with open_stream(outbox_gateway.url, token=outbox_gateway.token(user)) as stream:
        with pytest.raises(OutboxError, match="outside a transaction"):
            await add_event(db, TaskProgressUpdated(task_id="t1", progress=1), key=user, table=outbox_table)
        transaction = db.transaction()
        await transaction.start()
        await add_event(db, TaskProgressUpdated(task_id="t1", progress=5), key=user, table=outbox_table)
        await transaction.rollback()
        async with db.transaction():
            await db.execute(f"INSERT INTO {outbox_table}_tasks VALUES ($1, 80)", f"{user}-1")  # noqa: S608
            await add_event(db, TaskProgressUpdated(task_id="t1", progress=80), key=user, table=outbox_table)
        delivered = await next_task_event(stream)
        await wait_until(lambda: _processed(db, outbox_table, user, 1), timeout=10, what="the row processed")
        events = await until_marker(outbox_gateway, stream, user)
    assert (delivered.event, delivered.json()["progress"]) == ("task.progress-updated", 80)
    assert events == []


def test_a_model_whose_rule_reshapes_the_record_is_written_by_its_type() -> None:
    with pytest.raises(OutboxError, match="reshapes"):
        add_event(None, TaskFailed(code="X", message="m"), key="alice")  # type: ignore[call-overload]
    with pytest.raises(OutboxError, match="pass key="):
        add_event(None, TaskProgressUpdated(task_id="t", progress=1))  # type: ignore[call-overload]


async def test_a_commit_made_while_no_gateway_runs_is_delivered_once_after_one_starts(
    postgres_server: PostgresServer, redis_server: RedisServer, db: asyncpg.Connection
) -> None:
    """The crash between commit and delivery: the gateway is killed, the application commits,
    a gateway starts again. The stream resumes from its cursor (the Redis log outlives the
    gateways) and gets each committed row once; a row delivered before the crash is not sent again."""
    table = await new_tables(postgres_server)
    env = {**cluster_env(redis_server), **outbox_env(postgres_server, table)}
    user = unique("dave")
    first = start_gateway(env)
    try:
        async with open_stream(first.url, token=first.token(user)) as stream:
            async with db.transaction():
                await add_event(db, TaskProgressUpdated(task_id="t1", progress=10), key=user, table=table)
            before = await next_task_event(stream)
            await wait_until(
                lambda: _processed(db, table, user, 1), timeout=10, what="the first row processed"
            )
            cursor = before.id
    finally:
        first.stop(signal.SIGKILL)
    async with db.transaction():
        for n in (20, 30):
            await add_event(db, TaskProgressUpdated(task_id="t1", progress=n), key=user, table=table)
    assert await statuses(db, table, user) == ["processed", "pending", "pending"]
    with running_gateway(env) as second:
        await wait_until(lambda: _processed(db, table, user, 3), timeout=15, what="the rows processed")
        async with open_stream(second.url, token=second.token(user), last_event_id=cursor) as stream:
            events = await until_marker(second, stream, user)
            established = stream.events[0].json()
    assert established["recovered"] is True
    assert [(e.event, e.json()["progress"]) for e in events] == [
        ("task.progress-updated", 20),
        ("task.progress-updated", 30),
    ]
