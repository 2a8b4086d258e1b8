"""What the gateway keeps for each open stream beyond the manager's connection: the
stream token's lease and the per-user lease it holds, given back when it closes,
and eviction of a user's older streams when the per-user limit says so
(``evict_oldest``), whether this node holds them or another does. The same
per-user leases answer presence: whether a user has a stream open anywhere.
And when the bus loses continuity, every open stream here is sent away to
reconnect.

The leases live in Redis with a cluster of nodes, so giving them back is I/O;
it runs in the background (the manager's close callbacks are synchronous), and
:meth:`OpenStreams.settle` waits for what is still under way at shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog

from herald.auth.stream_tokens import StreamTokens
from herald.bus.base import EventBus
from herald.cluster.control import Command, NodeControl
from herald.cluster.counting import ConnectionCounter, Presence
from herald.config import Settings
from herald.events.names import ROUTING_KEY
from herald.gateway.admission import StreamGrant
from herald.manager import frames
from herald.manager.connection import CloseReason, Connection
from herald.manager.manager import ConnectionManager
from herald.manager.sink import Sink

log = structlog.get_logger("herald.gateway")


class OpenStreams:
    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        manager: ConnectionManager,
        stream_tokens: StreamTokens,
        connection_counts: ConnectionCounter,
        control: NodeControl,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._manager = manager
        self._stream_tokens = stream_tokens
        self._connection_counts = connection_counts
        self._control = control
        self._stream_token_of: dict[str, str] = {}
        self._lease_of: dict[str, tuple[str, str]] = {}
        self._conn_of_lease: dict[str, Connection] = {}
        self._background: set[asyncio.Task[Any]] = set()

    def register(self, sink: Sink, grant: StreamGrant, *, trace: bool = False) -> Connection:
        principal = grant.principal
        conn = self._manager.register(
            sink,
            user_id=principal.user_id,
            session_id=principal.session_id,
            subscriptions=grant.subscriptions,
            expires_at=principal.expires_at,
            trace=trace,
        )
        if principal.stream_token_id is not None:
            self._stream_token_of[conn.id] = principal.stream_token_id
        if grant.lease_id:
            self._lease_of[conn.id] = (principal.user_id, grant.lease_id)
            self._conn_of_lease[grant.lease_id] = conn
        if grant.evict:
            self._evict(principal.user_id, grant.evict)
        return conn

    async def presence(self, user_id: str) -> Presence:
        """Whether ``user_id`` has a stream open anywhere in the cluster (and, with
        lifecycle events on, since when they are announced present)."""
        if not _possible_user_id(user_id):
            return Presence(user_id, 0)  # no stream can have it: nothing to ask Redis
        return await self._connection_counts.presence(user_id)

    # --- the per-user limit: eviction

    def _evict(self, user_id: str, leases: Sequence[str]) -> None:
        """Close the user's streams holding ``leases``: here, or through the node holding them."""
        remote = []
        for lease in leases:
            conn = self._conn_of_lease.get(lease)
            if conn is not None:
                self._close_evicted(conn)
            else:
                remote.append(lease)
        if remote:
            # Uncount them now, so the next admission does not see them; their node
            # closes them on the command (and releases again: idempotent).
            for lease in remote:
                self._in_background(self._connection_counts.release(user_id, lease, CloseReason.EVICTED))
            self._in_background(self._control.tell({"op": "evict", "user_id": user_id, "leases": remote}))

    def on_evict(self, command: Command) -> None:
        """Another node's ``evict`` command: close the streams of these leases held here."""
        for lease in command.get("leases", []):
            conn = self._conn_of_lease.get(str(lease))
            if conn is not None and conn.user_id == command.get("user_id"):
                self._close_evicted(conn)

    def _close_evicted(self, conn: Connection) -> None:
        log.info("sse_connection_evicted", connection_id=conn.id, user_id=conn.user_id)
        self._manager.close(
            conn, CloseReason.EVICTED, frames.evicted(self._settings.max_connections_per_user)
        )

    def on_bus_discontinuity(self, reason: str) -> None:
        """The bus cannot promise this node's streams every record (Redis lost the log, or
        trimmed records this node never read): close them, with a spread ``retry``, so
        every client reconnects and learns ``recovered: false`` rather than miss events
        silently."""
        # Positions of the old log mean nothing in the new one: heartbeats and new
        # streams must hand out the bus's new position, or clients would reconnect
        # with a dead cursor and be told recovered:false a second time.
        self._manager.reset_position(self._bus.head)
        conns = list(self._manager.index.all.values())
        log.warning("bus_discontinuity_streams_closed", reason=reason, connections=len(conns))
        for conn in conns:
            self._manager.send_away(conn, CloseReason.BUS_RESET)

    def on_channels_lost(self, channels: frozenset[str]) -> None:
        """A shard of the bus is away (D28): close the streams that follow any of its channels,
        with a spread ``retry``; they come back when it does (and learn whether anything was
        lost). The other streams are not touched."""
        conns = [c for c in self._manager.index.all.values() if not c.following.isdisjoint(channels)]
        log.warning("bus_channels_lost_streams_closed", channels=len(channels), connections=len(conns))
        for conn in conns:
            self._manager.send_away(conn, CloseReason.BUS_RESET)

    # --- closing: the leases go back

    def release_stream_token(self, conn: Connection) -> None:
        token_id = self._stream_token_of.pop(conn.id, None)
        if token_id is not None:
            self._in_background(self._stream_tokens.leases.release(conn.user_id, token_id))

    def release_connection_lease(self, conn: Connection) -> None:
        lease = self._lease_of.pop(conn.id, None)
        if lease is not None:
            self._conn_of_lease.pop(lease[1], None)
            reason = conn.close_reason or CloseReason.CLIENT_GONE
            self._in_background(self._connection_counts.release(*lease, reason))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait for the releases and evictions still under way (their errors are dropped)."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _possible_user_id(user_id: str) -> bool:
    """A routing key, in valid Unicode (a lone surrogate has no UTF-8 to send Redis)."""
    try:
        user_id.encode()
    except UnicodeEncodeError:
        return False
    return ROUTING_KEY.fullmatch(user_id) is not None
