"""One live stream: where its events wait, and what happens when it falls behind.

The fast path is a list of pre-encoded frames that the manager flushes once
per loop turn. Only while the socket's buffer is above its high-water mark
does a connection hold a queue of its own, and there backpressure applies:
a newer event with the same ``coalesce`` key replaces the waiting one, then
``LOW`` events are dropped, and a connection still over its byte budget is
closed with ``error.slow-consumer``; it reconnects with its cursor and the
replay restores the rest.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING

from herald.bus.base import BusRecord
from herald.manager import frames
from herald.manager.sink import Sink
from herald.obs.tracing import trace_id_of
from herald.types import Priority
from herald.wire.cursor import Cursor

if TYPE_CHECKING:
    from herald.manager.manager import ConnectionManager


def _cursor_of(record: BusRecord) -> Cursor:
    return record.cursor


class State(IntEnum):
    REPLAYING = 0
    LIVE = 1
    CLOSED = 2


class CloseReason:
    CLIENT_GONE = "client_gone"
    SLOW_CONSUMER = "slow_consumer"
    AUTH_EXPIRED = "auth_expired"
    #: Its token (or every token of its user issued before a time) was revoked.
    AUTH_REVOKED = "auth_revoked"
    SHUTDOWN = "shutdown"
    REPLAY_UNAVAILABLE = "replay_unavailable"
    BUS_RESET = "bus_reset"
    #: The node was drained: its streams move to the other nodes.
    DRAIN = "drain"
    #: The user opened a stream past the per-user limit (policy ``evict_oldest``).
    EVICTED = "evicted"
    #: An admin disconnected the user's streams (the console, ``DELETE .../users/{id}/streams``).
    DISCONNECTED = "disconnected"


class Connection:
    __slots__ = (
        "_coalesced",
        "_doomed",
        "_held",
        "_manager",
        "_paused",
        "_queue",
        "_queue_bytes",
        "_sink",
        "bucket",
        "close_reason",
        "direct",
        "events_sent",
        "expires_at",
        "following",
        "id",
        "issued_at",
        "joined_at",
        "last_cursor",
        "opened_at",
        "pending",
        "send",
        "session_id",
        "state",
        "subscriptions",
        "token_id",
        "user_id",
    )

    def __init__(
        self,
        manager: ConnectionManager,
        sink: Sink,
        *,
        connection_id: str,
        user_id: str,
        session_id: str | None,
        subscriptions: frozenset[str],
        expires_at: float | None,
        opened_at: float,
        joined_at: Cursor,
    ) -> None:
        self._manager = manager
        self._sink = sink
        #: The socket's write (the sink's cheapest callable), for the manager's flush.
        self.send = sink.writer()
        self.id = connection_id
        self.user_id = user_id
        self.session_id = session_id
        self.subscriptions = subscriptions
        self.expires_at = expires_at
        #: The token's ``iat`` and ``jti`` (a stream token's: its JWT's), which revocations name.
        self.issued_at: float | None = None
        self.token_id: str | None = None
        self.opened_at = opened_at
        #: The node's position when this connection was indexed: every record
        #: after it reaches the connection live.
        self.joined_at = joined_at
        self.state = State.REPLAYING
        #: Live, not paused and not traced: the manager hands this stream a record's frame
        #: itself, without calling :meth:`push` (the hot path, issue 16). Kept true only
        #: in those states: every change of ``state`` or ``_paused`` sets it again.
        self.direct = False
        self.close_reason: str | None = None
        self.events_sent = 0
        #: The cursor of the newest event handed to this stream (the admin console shows it).
        self.last_cursor: Cursor | None = None
        self.bucket = 0
        #: The channels the bus was told this stream follows (none until its stream starts).
        self.following: frozenset[str] = frozenset()
        #: Frames for the socket, written as one at the end of the loop turn.
        self.pending: list[bytes] = []
        self._held: list[BusRecord] | None = []
        self._queue: dict[Cursor, BusRecord] | None = None
        self._coalesced: dict[str, Cursor] | None = None
        self._queue_bytes = 0
        self._paused = False
        self._doomed = False

    #: Whether this stream asked for each event's trace id in its data (:class:`TracedConnection`).
    trace = False

    def __repr__(self) -> str:
        return f"<Connection {self.id} user={self.user_id} {self.state.name}>"

    def frame_of(self, record: BusRecord) -> bytes:
        """The frame this stream gets for ``record`` (the manager's ``direct`` delivery
        hands streams that are not traced ``record.frame`` itself)."""
        return record.frame

    # --- delivery (what the manager's direct path does not cover)

    def push(self, record: BusRecord) -> None:
        """Deliver a record routed to this connection; called in cursor order. A live,
        unpaused, untraced stream gets its frames from the manager directly (``direct``)."""
        state = self.state
        if state is State.LIVE:
            if self._paused:
                self._enqueue(record)
                return
            out = self.pending
            if not out:
                self._manager.mark_dirty(self)
            out.append(self.frame_of(record))
            self.events_sent += 1
            self.last_cursor = record.cursor
        elif state is State.REPLAYING:
            assert self._held is not None
            self._held.append(record)

    def write_now(self, frame: bytes) -> None:
        """Queue a frame that is not a bus record (preamble, heartbeat, error)."""
        if self.state is State.CLOSED:
            return
        self._manager.settle()  # frames go out in the order they were routed or written
        out = self.pending
        if not out:
            self._manager.mark_dirty(self)
        out.append(frame)

    def flush(self) -> None:
        out = self.pending
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self.state is not State.CLOSED:
            self.send(data)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def idle_and_current(self) -> bool:
        """Live with nothing waiting: a heartbeat may carry the node's cursor."""
        return self.state is State.LIVE and not self._paused

    def _route(self) -> None:
        """Set ``direct`` from the state, and tell the manager which streams are not."""
        state = self.state
        self.direct = direct = state is State.LIVE and not self._paused and not self.trace
        if direct or state is State.CLOSED:
            self._manager.indirect.discard(self)
        else:
            self._manager.indirect.add(self)

    # --- the replay seam

    def hold(self) -> None:
        """Hold live records again, as during a replay, until :meth:`release`: the
        retained states of a resource added mid-stream go out before them (D33)."""
        if self.state is State.LIVE:
            self._manager.settle()
            self.state = State.REPLAYING
            self._route()
            self._held = []

    def release(self) -> None:
        """End a :meth:`hold`: what was held goes out in cursor order (a backlog queue
        flushed by ``resume_writing`` during the hold joined the held records)."""
        if self._held:
            self._held.sort(key=_cursor_of)
        self.go_live(None)

    def go_live(self, seam: Cursor | None) -> None:
        """End the replay: send what arrived live meanwhile, after ``seam``.

        ``seam`` is the newest cursor the replay covered (``None``: no replay,
        send everything held). Records at or before it were in the replay.
        """
        self._manager.settle()  # what was routed while held is held, and cut at the seam
        held, self._held = self._held, None
        self.state = State.LIVE
        self._route()
        for record in held or ():
            if seam is None or record.cursor > seam:
                self.push(record)

    # --- backpressure (slow path)

    def pause_writing(self) -> None:
        if not self._paused and self.state is not State.CLOSED:
            self._manager.settle()
            self._paused = True
            self._route()
            self._manager.stats.backlogged += 1

    def resume_writing(self) -> None:
        if not self._paused:
            return
        self._manager.settle()
        self._paused = False
        self._route()
        self._manager.stats.backlogged -= 1
        queue = self._queue
        if not queue or self.state is State.CLOSED:
            return
        self._queue = None
        self._coalesced = None
        self._queue_bytes = 0
        for record in queue.values():
            self.push(record)

    def connection_lost(self) -> None:
        self._manager.close(self, CloseReason.CLIENT_GONE)

    def over_budget(self) -> bool:
        """Whether what waits for this client (ours and the socket's) is past its budget."""
        return self._queue_bytes + self._sink.backlog() > self._manager.slow_consumer_bytes

    def _enqueue(self, record: BusRecord) -> None:
        if self._doomed:
            return  # closing at the end of this turn; its reconnect replays the rest
        queue = self._queue
        if queue is None:
            queue = self._queue = {}
            self._coalesced = {}
        key = record.message.coalesce
        if key is not None:
            assert self._coalesced is not None
            older = self._coalesced.get(key)
            if older is not None:
                replaced = queue.pop(older, None)
                if replaced is not None:
                    self._queue_bytes -= len(replaced.frame)
                    self._manager.stats.coalesced_by_priority[replaced.message.priority] += 1
            # The newer one goes to the back: frames stay in cursor order, so a
            # client's Last-Event-ID never passes an event it has not received.
            self._coalesced[key] = record.cursor
        queue[record.cursor] = record
        self._queue_bytes += len(record.frame)
        if self.over_budget():
            self._shed()

    def _shed(self) -> None:
        assert self._queue is not None
        budget = self._manager.slow_consumer_bytes - self._sink.backlog()
        for cursor, record in list(self._queue.items()):
            if self._queue_bytes <= budget:
                return
            if record.message.priority is Priority.LOW:
                del self._queue[cursor]
                self._queue_bytes -= len(record.frame)
                self._manager.stats.dropped_by_priority[Priority.LOW] += 1
        if self._queue_bytes > budget:
            self._doomed = True
            self._manager.doom(self, CloseReason.SLOW_CONSUMER, frames.slow_consumer())

    def discard(self) -> None:
        """Forget everything waiting; the connection is closing."""
        self.state = State.CLOSED
        self._route()
        if self._paused:
            self._paused = False
            self._manager.stats.backlogged -= 1
        self._held = None
        self._queue = None
        self._coalesced = None

    def close_sink(self, final: bytes | None) -> None:
        if final is not None:
            self.pending.append(final)
        out = self.pending
        if out:
            self._sink.write(b"".join(out))
            out.clear()
        self._sink.close()


class TracedConnection(Connection):
    """A stream that asked for the trace id of each event in its data (``?trace=1``, D30),
    so that a browser can link its own spans to the producer's trace.

    Every other stream keeps the shared frame and pays nothing for this: the variant
    frame is built once per record, the first time a traced stream receives it, and
    shared by every traced stream (:func:`traced_frame`)."""

    __slots__ = ()
    trace = True

    def frame_of(self, record: BusRecord) -> bytes:
        return traced_frame(record)


def traced_frame(record: BusRecord) -> bytes:
    """``record``'s frame with ``"trace_id"`` (the trace its ``traceparent`` names) added to
    its data object; the frame itself when the event carries no trace. Made once per record."""
    frame: bytes | None = getattr(record, "traced", None)
    if frame is None:
        frame = record.frame
        traceparent = record.message.traceparent
        # A bus frame ends with its single-line data object: ``…}\n\n`` (wire.encoder.event_frame).
        if traceparent is not None and frame.endswith(b"}\n\n"):
            frame = b'%s,"trace_id":"%s"}\n\n' % (frame[:-3], trace_id_of(traceparent).encode())
        object.__setattr__(record, "traced", frame)  # a cache on a frozen record, set once
    return frame
