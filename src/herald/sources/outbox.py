"""PostgreSQL outbox source: rows an application inserts in its own transaction, delivered once.

The application writes its change and an outbox row in one transaction
(:func:`enqueue`), so an event exists exactly when the change committed.
Herald polls the table:

- **Woken by ``LISTEN/NOTIFY``** (a trigger notifies the channel on insert)
  and by a periodic tick every ``poll_seconds``, because notifications are
  lost while the listening connection is down.
- **Claims a batch with ``FOR UPDATE SKIP LOCKED``**, oldest first: several
  nodes poll the same table and never hold the same row.
- **Appends each row's event, then marks the batch processed in the same
  transaction that claimed it**, committed after the appends. A node that
  dies before that commit releases its rows to the next poll, and the
  append, idempotent on ``outbox:{table}:{id}``, makes the second delivery a
  duplicate the bus absorbs.
- **Held events keep their batch open.** An event the coalesce throttle holds
  (:mod:`herald.bus.throttle`) settles within its interval (appended, or
  superseded by a newer one that is); the batch's transaction waits for its
  held events before marking the rows, so a crash meanwhile leaves them
  pending. A batch costs at most one interval more, however many rows it holds.
- **Rows failing the mapping are marked ``failed``** with the error, never
  retried; rows whose type has no rule are marked ``ignored``. While the
  bus is unavailable the transaction is rolled back (the rows stay
  ``pending``) and the poller backs off.
- **Processed and ignored rows are deleted** ``retention_seconds`` after they
  were handled (default 7 days); failed rows stay for an operator to read
  and requeue (``UPDATE ... SET status = 'pending'``) or delete.

Order: rows enter the bus in ``id`` order within a batch; batches that
different nodes claim at the same moment may interleave.

A row is ``event_type`` (the domain event's type, looked up in the mapping)
and ``payload`` (``jsonb``, the record the mapping reads fields from), and
optionally ``traceparent`` (``text``, nullable): the W3C trace context of the
transaction that wrote it (D30). The column is optional: the poller looks for
it each time it connects and reads it only where it exists, so tables made
before it keep working (``herald outbox init`` adds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import structlog

from herald.adapter import Adapter, PoisonRecord
from herald.bus.base import AppendResult
from herald.bus.throttle import Offered
from herald.cluster.backoff import reconnect_delay
from herald.errors import HeraldError
from herald.events.canary import CANARY_EVENT, Canary
from herald.events.message import SSEMessage, with_traceparent
from herald.sources.incoming import Offer, OfferMany, SourceStats, offer_many_from

log = structlog.get_logger("herald.sources.outbox")
#: What a server going away raises; anything else is logged as an error (and still retried).
_TRANSIENT = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    TimeoutError,
)

DEFAULT_TABLE = "herald_outbox"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?")
#: Old rows are deleted at most this often.
_CLEANUP_SECONDS = 60.0
#: Bound on every statement of the poller's connection (``command_timeout``). A network
#: partition drops packets silently: without a bound, a statement in flight waits for TCP
#: to retransmit after the heal (the backoff reaches two minutes) or, on a long cut, for
#: the kernel to give up (~15 minutes), while readiness still says "listening". Past the
#: bound the connection is dropped and the poller reconnects as after any failure.
COMMAND_TIMEOUT_SECONDS = 10.0
#: The periodic delete of old rows may take longer on a large table; it has its own bound.
_CLEANUP_TIMEOUT_SECONDS = 120.0


def _checked(table: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise ValueError(f"outbox table {table!r} must be a lower-case identifier, optionally schema.table")
    return table


def notify_channel(table: str) -> str:
    """The ``NOTIFY`` channel of ``table`` (one channel per table)."""
    return _checked(table).replace(".", "_")


def schema_sql(table: str = DEFAULT_TABLE) -> str:
    """The table, its indexes and the trigger that notifies pollers: idempotent DDL."""
    table = _checked(table)
    name = table.replace(".", "_")
    channel = notify_channel(table)
    return f"""
CREATE TABLE IF NOT EXISTS {table} (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type   text        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processed', 'ignored', 'failed')),
    processed_at timestamptz,
    error        text,
    traceparent  text
);
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS traceparent text;
CREATE INDEX IF NOT EXISTS {name}_pending ON {table} (id) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS {name}_done ON {table} (processed_at) WHERE status IN ('processed', 'ignored');
CREATE OR REPLACE FUNCTION {name}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {name}_notify ON {table};
CREATE TRIGGER {name}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {name}_notify();
""".strip()


async def create_table(connection: asyncpg.Connection, table: str = DEFAULT_TABLE) -> None:
    """Create the outbox table (``herald outbox init``); harmless when it exists."""
    await connection.execute(schema_sql(table))


async def init_outbox(dsn: str, table: str = DEFAULT_TABLE) -> None:
    """Connect to ``dsn`` and create the outbox table there (``herald outbox init``)."""
    connection = await asyncpg.connect(dsn, timeout=10)
    try:
        await create_table(connection, table)
    finally:
        await connection.close()


async def enqueue(
    connection: asyncpg.Connection,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    table: str = DEFAULT_TABLE,
    traceparent: str | None = None,
) -> int:
    """Insert an outbox row; call it inside the transaction that makes the change::

        async with connection.transaction():
            await connection.execute("UPDATE tasks SET progress = $1 WHERE id = $2", 50, task_id)
            await enqueue(connection, "TaskProgressUpdateEvent",
                          {"user_id": user_id, "task_id": task_id, "progress": 50})

    Returns the row's id. Herald delivers the event only if the transaction commits.
    ``traceparent``: the W3C trace context to deliver it in (the table needs the column).
    """
    table = _checked(table)
    if traceparent is not None:
        traced_id: int = await connection.fetchval(
            f"INSERT INTO {table} (event_type, payload, traceparent) "  # noqa: S608
            "VALUES ($1, $2::jsonb, $3) RETURNING id",
            event_type,
            orjson.dumps(dict(payload)).decode(),
            traceparent,
        )
        return traced_id
    row_id: int = await connection.fetchval(
        f"INSERT INTO {table} (event_type, payload) VALUES ($1, $2::jsonb) RETURNING id",  # noqa: S608
        event_type,
        orjson.dumps(dict(payload)).decode(),
    )
    return row_id


@dataclass(slots=True)
class OutboxSourceStats(SourceStats):
    """``rejected``: rows marked failed; ``ignored``: rows whose type has no rule."""

    ignored: int = 0
    batches: int = 0
    retries: int = 0
    deleted: int = 0
    #: Rows pending after the last batch (0 when it was not full).
    backlog: int = 0
    #: Rows whose held event was superseded by a newer one with the same coalesce key
    #: (marked processed: the newer content is in the bus).
    coalesced: int = 0


class OutboxSource:
    name = "outbox"

    def __init__(
        self,
        offer: Offer,
        adapter: Adapter,
        *,
        dsn: str,
        table: str = DEFAULT_TABLE,
        batch: int = 100,
        poll_seconds: float = 1.0,
        retention_seconds: float = 7 * 24 * 3600.0,
        offer_many: OfferMany | None = None,
    ) -> None:
        """``offer_many``: the publish path's batch append (``Gateway.offer_many``); without
        it, the claimed rows are offered one at a time."""
        self.table = _checked(table)
        self.channel = notify_channel(table)
        self._dsn = dsn
        self._offer_many = offer_many or offer_many_from(offer)
        self._adapter = adapter
        self._batch = batch
        self._poll_seconds = poll_seconds
        self._retention_seconds = retention_seconds
        self.stats = OutboxSourceStats()
        #: Set once the poller is connected and listening.
        self.listening = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._next_cleanup = 0.0
        #: The connection canaries are inserted through (D32), and the ids of this node's
        #: canary rows not yet deleted.
        self._canary_connection: asyncpg.Connection | None = None
        self._canary_rows: list[int] = []
        self._claim = self._claim_sql(traced=False)

    def _claim_sql(self, *, traced: bool) -> str:
        """The claim query; ``traced``: the table has the ``traceparent`` column (D30)."""
        columns = "id, event_type, payload::text AS payload" + (", traceparent" if traced else "")
        return (
            f"SELECT {columns} FROM {self.table} "  # noqa: S608
            "WHERE status = 'pending' ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        )

    async def _detect_columns(self, connection: asyncpg.Connection) -> None:
        """Read ``traceparent`` only from a table that has it (looked up at each connect, so a
        column added meanwhile is read after the next reconnect)."""
        traced = await connection.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass($1) "
            "AND attname = 'traceparent' AND NOT attisdropped)",
            self.table,
        )
        self._claim = self._claim_sql(traced=bool(traced))

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-outbox-source")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await _finish(self._task)
            self._task = None
        await self._close_canary_connection()

    async def send_canary(self, canary: Canary) -> None:
        """Insert a canary row (D32); this node's earlier canary rows, once handled, are
        deleted at the same time (they would otherwise wait out the retention)."""
        connection = self._canary_connection
        try:
            if connection is None or connection.is_closed():
                connection = self._canary_connection = await asyncpg.connect(
                    self._dsn, timeout=10, command_timeout=COMMAND_TIMEOUT_SECONDS
                )
            if self._canary_rows:
                done = await connection.fetch(
                    f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[]) "  # noqa: S608
                    "AND status <> 'pending' RETURNING id",
                    self._canary_rows,
                )
                gone = {row["id"] for row in done}
                self._canary_rows = [row_id for row_id in self._canary_rows if row_id not in gone][-1000:]
            self._canary_rows.append(await enqueue(connection, CANARY_EVENT, canary.data(), table=self.table))
        except BaseException:
            await self._close_canary_connection()
            raise

    async def _close_canary_connection(self) -> None:
        connection, self._canary_connection = self._canary_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 2)

    # --- the loop

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            connection: asyncpg.Connection | None = None
            try:
                connection = await asyncpg.connect(
                    self._dsn, timeout=10, command_timeout=COMMAND_TIMEOUT_SECONDS
                )
                await self._detect_columns(connection)
                await connection.add_listener(self.channel, self._notified)
                self.listening.set()
                log.info("outbox_listening", table=self.table, channel=self.channel)
                attempt = 0
                await self._poll(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever a dying server leaves behind (asyncpg raises InternalClientError,
                # not an InterfaceError, for a connection caught mid-operation), the source
                # reconnects: a source that ended here would stop delivering without a sound.
                self.listening.clear()
                if self._stopping:
                    return
                if attempt == 0:
                    transient = isinstance(exc, _TRANSIENT)
                    (log.warning if transient else log.error)("outbox_disconnected", error=repr(exc))
                await asyncio.sleep(reconnect_delay(attempt, base=0.1, cap=5.0))
                attempt += 1
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), 2)

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _poll(self, connection: asyncpg.Connection) -> None:
        while not self._stopping:
            self._wake.clear()
            handled = await self._deliver_batch(connection)
            if time.monotonic() >= self._next_cleanup:
                await self._delete_old(connection)
            if handled == self._batch:
                continue  # more may be waiting
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_seconds):
                    await self._wake.wait()

    async def _deliver_batch(self, connection: asyncpg.Connection) -> int:
        """Claim, append and mark one batch; the number of rows it held."""
        attempt = 0
        while True:
            try:
                async with connection.transaction():
                    rows = await connection.fetch(self._claim, self._batch)
                    outcome = await self._append_rows(rows)
                    await self._mark(connection, outcome)
            except HeraldError as exc:  # the bus is away: the rows stay pending
                if self._stopping:
                    return 0
                self.stats.retries += 1
                if attempt == 0:
                    log.warning("outbox_append_retry", code=exc.code, reason=exc.message)
                await asyncio.sleep(reconnect_delay(attempt, base=0.05, cap=2.0))
                attempt += 1
                continue
            self._count(outcome)
            if len(rows) < self._batch:
                self.stats.backlog = 0
            else:
                self.stats.backlog = await connection.fetchval(
                    f"SELECT count(*) FROM {self.table} WHERE status = 'pending'"  # noqa: S608
                )
            return len(rows)

    async def _append_rows(self, rows: list[asyncpg.Record]) -> _Outcome:
        """Map the claimed rows and offer their events together, in id order. A retriable
        refusal raises: the transaction rolls back and the rows are claimed again (those
        already appended answer as duplicates then, by their ``outbox:`` key)."""
        outcome = _Outcome()
        todo: list[tuple[int, SSEMessage, str]] = []
        for row in rows:
            row_id: int = row["id"]
            source = f"outbox:{self.table}:{row_id}"
            try:
                record = orjson.loads(row["payload"])
                if not isinstance(record, dict):
                    raise PoisonRecord("the payload is not a JSON object")
                message = self._adapter.map(record, source=source, event_type=row["event_type"])
                if message is not None and len(row) > 3:
                    message = with_traceparent(message, row["traceparent"])
            except PoisonRecord as exc:
                outcome.failed.append((row_id, exc.message))
                log.warning("outbox_row_failed", id=row_id, reason=exc.message)
                continue
            if message is None:
                outcome.ignored.append(row_id)
                continue
            todo.append((row_id, message, source))
        results = await self._offer_many([(message, source) for _, message, source in todo]) if todo else []
        held: list[tuple[int, Offered]] = []
        for (row_id, _, _), result in zip(todo, results, strict=True):
            if isinstance(result, HeraldError):
                if result.retriable:
                    raise result
                outcome.failed.append((row_id, f"{result.code}: {result.message}"))
                log.warning("outbox_row_failed", id=row_id, reason=result.message)
            elif result.result is not None:
                outcome.add(row_id, result.result)
            else:
                held.append((row_id, result))
        for row_id, offered in held:
            outcome.add(row_id, await offered.wait())
        return outcome

    async def _mark(self, connection: asyncpg.Connection, outcome: _Outcome) -> None:
        delivered = outcome.published + outcome.duplicates
        if delivered:
            await connection.execute(
                f"UPDATE {self.table} SET status = 'processed', processed_at = now() "  # noqa: S608
                "WHERE id = ANY($1::bigint[])",
                delivered,
            )
        if outcome.ignored:
            await connection.execute(
                f"UPDATE {self.table} SET status = 'ignored', processed_at = now() "  # noqa: S608
                "WHERE id = ANY($1::bigint[])",
                outcome.ignored,
            )
        if outcome.failed:
            await connection.executemany(
                f"UPDATE {self.table} SET status = 'failed', processed_at = now(), error = $2 "  # noqa: S608
                "WHERE id = $1",
                outcome.failed,
            )

    def _count(self, outcome: _Outcome) -> None:
        stats = self.stats
        received = len(outcome.published) + len(outcome.duplicates) + len(outcome.ignored)
        stats.received += received + len(outcome.failed)
        stats.published += len(outcome.published) - outcome.coalesced
        stats.duplicates += len(outcome.duplicates)
        stats.coalesced += outcome.coalesced
        stats.ignored += len(outcome.ignored)
        stats.rejected += len(outcome.failed)
        if received or outcome.failed:
            stats.batches += 1

    async def _delete_old(self, connection: asyncpg.Connection) -> None:
        self._next_cleanup = time.monotonic() + min(_CLEANUP_SECONDS, self._retention_seconds / 2)
        status = await connection.execute(
            f"DELETE FROM {self.table} WHERE status IN ('processed', 'ignored') "  # noqa: S608
            "AND processed_at < now() - make_interval(secs => $1)",
            self._retention_seconds,
            timeout=_CLEANUP_TIMEOUT_SECONDS,
        )
        deleted = int(status.rsplit(" ", 1)[-1]) if status.startswith("DELETE") else 0
        self.stats.deleted += deleted
        if deleted:
            log.info("outbox_rows_deleted", rows=deleted, table=self.table)


class _Outcome:
    """What became of each row of a batch, by id."""

    __slots__ = ("coalesced", "duplicates", "failed", "ignored", "published")

    def __init__(self) -> None:
        #: Of the published, how many were superseded by a newer event of their coalesce key.
        self.coalesced = 0
        self.published: list[int] = []
        self.duplicates: list[int] = []
        self.ignored: list[int] = []
        self.failed: list[tuple[int, str]] = []

    def add(self, row_id: int, result: AppendResult) -> None:
        if result.coalesced:
            self.coalesced += 1
        (self.duplicates if result.duplicate else self.published).append(row_id)


async def _finish(task: asyncio.Task[None], grace_seconds: float = 5.0) -> None:
    """Let the loop end at its next check (the batch in hand is completed), else cancel it."""
    done, _ = await asyncio.wait({task}, timeout=grace_seconds)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
