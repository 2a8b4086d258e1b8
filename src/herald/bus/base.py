"""The ``EventBus`` contract every backend keeps.

Ordering
    ``append`` gives each event a cursor greater than every cursor before it,
    deployment-wide. Listeners receive records strictly in cursor order, each
    record once.

Replay
    ``replay(after)`` returns every record with a cursor greater than ``after``
    that is still in the log, in order, up to the newest, *if* the log can
    prove nothing after ``after`` has been trimmed away. It can when ``after``
    is the cursor of a record still held, or the log's ``floor``: the cursor
    of the last record trimmed (or the log's origin, when nothing was). For
    a cursor older than the window, from another log's lifetime, or ahead of
    what the log issued, it answers ``exact=False`` and no records. A single
    log also refuses a cursor it never issued; a sharded bus cannot tell one
    (it may be another shard's) and replays after it when nothing after it
    was trimmed (D28).

    Example: the log holds ``100-0 100-1 105-0``, floor ``99-3``.
    ``replay(100-0)`` gives ``100-1 105-0``; ``replay(99-3)`` gives all three;
    ``replay(99-2)`` and ``replay(101-0)`` are not exact.

Idempotency
    An ``idempotency_key`` seen within the idempotency window appends
    nothing and answers with the first append's cursor and ``duplicate=True``.
    ``superseded_keys`` given with an append are remembered as if they had been
    that append's own keys (a key already known keeps its cursor).

Batches
    ``append_many`` appends several events as if appended one by one, in the
    order given (an idempotency key repeated within the batch is a duplicate of
    its first item), and answers one result per item, in order. A backend keeps
    a batch to one round trip per store it writes to.

Interest
    ``follow(channels)`` tells the bus that a stream of this node follows
    ``channels`` (:mod:`herald.bus.channels`), ``unfollow`` that it no
    longer does; each ``follow`` is undone by one ``unfollow``. Listeners
    receive the records of every followed channel; a bus that reads by
    channel (D28) receives nothing else, one that reads a whole log delivers
    everything. ``follow`` returns an awaitable, done once those records
    flow: a stream's replay is read after it, so nothing falls between the
    replay and the live records (D4).

Retained state (D33)
    An event whose message has ``retain`` set is also kept as the retained state of
    its ``(channel, coalesce)``, atomically with its append, until its retention
    passes: the newest event of the key (by cursor) wins. ``retained(channels)``
    answers the live retained states of ``channels``, one per key, in cursor order.
    ``cursor_at(ms)`` turns a time into a cursor to replay after (``since=``): every
    record at or after ``ms`` is after it, none before; ``None`` when the log can
    already tell that records at or after ``ms`` were trimmed.

Failure
    A backend that cannot reach its store raises
    :class:`herald.errors.BusUnavailable` (retriable); it never drops silently.
    In a batch, the items a store could not take answer ``BusUnavailable``
    in place of their result; the others are appended.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from herald.errors import BusUnavailable
from herald.events.message import SSEMessage
from herald.wire.cursor import Cursor


@dataclass(frozen=True)
class BusRecord:
    """An event in the log: its cursor, routing envelope and wire frame.

    ``frame`` is the complete SSE block (``id``, ``event``, ``data``), encoded
    once when the record enters this node and shared by every receiver.
    The slot ``traced`` (not a field: a record is made without it, at no cost)
    holds the frame with ``trace_id`` in its data, made the first time a stream
    that asked for it (``?trace=1``) receives the record, then shared by all
    such streams (D30; ``herald.manager.connection.traced_frame``).
    """

    __slots__ = ("cursor", "frame", "message", "traced")

    cursor: Cursor
    message: SSEMessage
    frame: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Where an event is in the log. ``duplicate``: its idempotency key was seen
    before, and ``cursor`` is the first event's. ``coalesced``: the event was held
    by the throttle and superseded by a newer one with the same coalesce key,
    which went out at ``cursor`` (:mod:`herald.bus.throttle`)."""

    cursor: Cursor
    duplicate: bool = False
    coalesced: bool = False


@dataclass(frozen=True, slots=True)
class Append:
    """One event of a batch: what ``append`` takes, as a value."""

    message: SSEMessage
    data_json: bytes
    idempotency_key: str | None = None
    superseded_keys: Sequence[str] = ()


#: One item's outcome in a batch: its place in the log, or why it is not there.
BatchResult = AppendResult | BusUnavailable


@dataclass(frozen=True, slots=True)
class Replay:
    exact: bool
    records: Sequence[BusRecord] = ()
    #: When not exact: the log's floor, from which a replay is exact (a deep replay
    #: recovers what came before it elsewhere, then replays the log from there).
    floor: Cursor | None = None


Listener = Callable[[BusRecord], None]


class EventBus(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def append(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        """``superseded_keys``: idempotency keys of events this one replaced before they
        were appended (the throttle's); recorded with this event's cursor, unless the
        append is a duplicate or a key is known already."""
        ...

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        """Each of ``appends`` in order, one result per item (see "Batches" above)."""
        ...

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        """``channels``: those the reader follows (``None``: every channel this node follows).
        A bus reading one whole log may return records of other channels too; the
        manager keeps only what each stream may see."""
        ...

    def follow(self, channels: Collection[str]) -> Awaitable[None]:
        """A stream of this node follows ``channels`` (see "Interest" above)."""
        ...

    def unfollow(self, channels: Collection[str]) -> None: ...

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every record appended from now on; returns the unsubscribe."""
        ...

    @property
    def head(self) -> Cursor:
        """The newest cursor this node has delivered to listeners (the floor when empty)."""
        ...

    def retained(self, channels: Collection[str]) -> Awaitable[Sequence[BusRecord]]:
        """The retained states of ``channels`` not yet expired (see "Retained state")."""
        ...

    def cursor_at(self, ms: int) -> Cursor | None:
        """The cursor a replay of what happened from ``ms`` on starts after (``since=``)."""
        ...

    def healthy(self) -> bool: ...
