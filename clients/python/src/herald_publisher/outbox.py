"""The outbox inside the application's transaction: :func:`add_event`.

The application writes its change and an outbox row in one transaction, so
the event exists exactly when the change committed; Herald's outbox poller
(``HERALD_OUTBOX_DSN``) delivers each committed row once, even across a
gateway's crash or restart, and never a rolled-back one. The row is what the
poller reads (docs/operations.md, "PostgreSQL outbox as a source"):
``event_type`` (the domain event's type, looked up in the gateway's mapping)
and ``payload`` (``jsonb``, the record the mapping reads), optionally
``traceparent``. Create the table with ``herald outbox init`` (or its
``--print-sql`` in your migrations).

::

    with Session(engine) as session, session.begin():          # SQLAlchemy
        session.add(task)
        add_event(session, TaskProgressUpdated(task_id="t1", progress=50), key="alice")

    async with AsyncSession(engine) as session, session.begin():
        await add_event(session, "TaskProgressUpdateEvent",
                        {"user_id": "alice", "task_id": "t1", "progress": 50})

    async with connection.transaction():                       # asyncpg
        await add_event(connection, TaskProgressUpdated(task_id="t1", progress=50), key="alice")

With a catalogue model, the row's type is the default mapping's domain event
(``TaskProgressUpdateEvent``) and ``key`` goes in the record's routing field
(``user_id``); with a type name and a mapping, the row is exactly that.
"""

from __future__ import annotations

import re
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any, overload

from pydantic_core import to_json

from herald_publisher.catalogue import Payload

if TYPE_CHECKING:
    import asyncpg
    import asyncpg.pool
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
    from sqlalchemy.orm import Session

DEFAULT_TABLE = "herald_outbox"
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?")


class OutboxError(ValueError):
    """The row cannot be written as asked (no transaction, no domain event for the model, …)."""


def outbox_row(
    event: str | Payload, payload: Mapping[str, Any] | None = None, *, key: str | None = None
) -> tuple[str, str]:
    """The row's ``event_type`` and ``payload`` (JSON text) for :func:`add_event`'s arguments."""
    if isinstance(event, Payload):
        if payload is not None:
            raise TypeError("pass either a payload model or a payload mapping, not both")
        model = type(event)
        if model.herald_domain_event is None:
            raise OutboxError(
                f"{model.__name__}: the default mapping reshapes its record; "
                "write the domain event by its type: add_event(target, 'TypeName', {...})"
            )
        record = event.model_dump(mode="json")
        field = model.herald_key_field
        if field is not None:
            if key is not None:
                if record.get(field, key) != key:
                    raise OutboxError(f"key {key!r} differs from the payload's {field} {record[field]!r}")
                record[field] = key
            elif field not in record:
                raise OutboxError(f"{model.__name__} is routed by {field!r}: pass key=")
        return model.herald_domain_event, to_json(record).decode()
    if key is not None:
        raise TypeError("key= goes with a catalogue model; put the routing field in the payload")
    if not event:
        raise OutboxError("the row needs its domain event type")
    return event, to_json(dict(payload or {})).decode()


def _insert(table: str, traced: bool, style: str) -> str:
    if not _IDENTIFIER.fullmatch(table):
        raise OutboxError(f"outbox table {table!r} must be a lower-case identifier, optionally schema.table")
    names = ["event_type", "payload", "traceparent"][: 3 if traced else 2]
    if style == "asyncpg":
        values = ["$1", "$2::jsonb", "$3"][: len(names)]
    else:
        values = [":event_type", "CAST(:payload AS jsonb)", ":traceparent"][: len(names)]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(values)}) RETURNING id"  # noqa: S608


@overload
def add_event(
    target: Session | Connection,
    event: str | Payload,
    payload: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    table: str = DEFAULT_TABLE,
    traceparent: str | None = None,
) -> int: ...


@overload
def add_event(
    target: AsyncSession | AsyncConnection | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    event: str | Payload,
    payload: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    table: str = DEFAULT_TABLE,
    traceparent: str | None = None,
) -> Coroutine[Any, Any, int]: ...


def add_event(
    target: Any,
    event: str | Payload,
    payload: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    table: str = DEFAULT_TABLE,
    traceparent: str | None = None,
) -> int | Coroutine[Any, Any, int]:
    """Write an outbox row in ``target``'s current transaction; the row's id.

    ``target``: a SQLAlchemy ``Session`` or ``Connection`` (returns the id), or an
    ``AsyncSession``, ``AsyncConnection`` or asyncpg connection (returns a coroutine:
    ``await`` it). ``event``: a catalogue model (with ``key``: the user, session or
    resource it is for, unless the payload carries it) or a domain event type with its
    ``payload``. ``traceparent``: the W3C trace context to deliver it in (the table
    needs the column: ``herald outbox init`` adds it). Nothing is committed here.
    """
    event_type, body = outbox_row(event, payload, key=key)
    traced = traceparent is not None
    module = type(target).__module__
    if module.startswith("asyncpg"):
        return _asyncpg(target, _insert(table, traced, "asyncpg"), event_type, body, traceparent)
    if not module.startswith("sqlalchemy"):
        raise TypeError(
            f"add_event() takes a SQLAlchemy session or connection, or an asyncpg connection: {target!r}"
        )
    from sqlalchemy import text

    statement = text(_insert(table, traced, "sqlalchemy"))
    parameters: dict[str, Any] = {"event_type": event_type, "payload": body}
    if traced:
        parameters["traceparent"] = traceparent
    if ".ext.asyncio" in module:
        return _sqlalchemy_async(target, statement, parameters)
    row_id: int = target.execute(statement, parameters).scalar_one()
    return row_id


async def _asyncpg(connection: Any, sql: str, event_type: str, body: str, traceparent: str | None) -> int:
    if not connection.is_in_transaction():
        raise OutboxError(
            "add_event() outside a transaction would commit the row on its own: "
            "call it inside `async with connection.transaction():`"
        )
    arguments = [event_type, body] + ([traceparent] if traceparent is not None else [])
    row_id: int = await connection.fetchval(sql, *arguments)
    return row_id


async def _sqlalchemy_async(target: Any, statement: Any, parameters: dict[str, Any]) -> int:
    result = await target.execute(statement, parameters)
    row_id: int = result.scalar_one()
    return row_id
