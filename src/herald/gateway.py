"""The gateway: one bus, one manager, the credentials that admit callers, and the
publish path. Everything a front end (the standalone server, or an ASGI app
embedding Herald) needs, with no web framework in sight."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import structlog

from herald.auth.grants import authorize_all, parse_subscriptions
from herald.auth.principal import Principal
from herald.auth.stream_tokens import StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier, bearer_token
from herald.backends import build_backends, build_sources, node_name
from herald.bus.base import AppendResult, EventBus
from herald.config import Settings
from herald.errors import AuthError, BusUnavailable, PermissionDenied
from herald.events.message import SSEMessage, encode_data
from herald.manager.connection import CloseReason, Connection
from herald.manager.manager import ConnectionManager
from herald.manager.sink import Sink

log = structlog.get_logger("herald.gateway")


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """An admitted stream request: who, and which resources it subscribes to."""

    principal: Principal
    subscriptions: frozenset[str]
    #: The connection's lease in the per-user count (``Gateway.connection_counts``).
    lease_id: str = ""
    #: The user's open streams cluster-wide, this one included; ``None`` when the
    #: count could not be had (Redis unavailable): the stream is admitted uncounted.
    user_connections: int | None = None


class Gateway:
    def __init__(self, settings: Settings, bus: EventBus | None = None) -> None:
        self.settings = settings
        #: This process among the cluster's nodes.
        self.node = node_name()
        backends = build_backends(settings, self.node, bus)
        self.bus = backends.bus
        self._redis = backends.redis
        self.connection_counts = backends.connection_counter
        self.manager = ConnectionManager(
            self.bus,
            heartbeat_seconds=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            retry_spread_ms=settings.shutdown_retry_spread_ms,
            slow_consumer_bytes=settings.slow_consumer_bytes,
        )
        self.verifier = TokenVerifier(settings)
        self.stream_tokens = StreamTokens(
            stream_key(settings.stream_token_secret, settings.jwt_secret),
            backends.stream_token_leases,
            ttl_seconds=settings.stream_token_ttl_seconds,
        )
        self.sources, self._source_redis = build_sources(settings, self.publish, self.node)
        self._stream_token_of: dict[str, str] = {}
        self._lease_of: dict[str, tuple[str, str]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.manager.on_close.append(self._release_stream_token)
        self.manager.on_close.append(self._release_connection_lease)
        if backends.bus_discontinuity is not None:
            backends.bus_discontinuity.append(self._on_bus_discontinuity)

    async def start(self) -> None:
        await self.bus.start()
        await self.connection_counts.start()
        await self.manager.start()
        for source in self.sources:
            await source.start()

    async def stop(self) -> None:
        for source in self.sources:
            await source.stop()
        await self.manager.stop()
        await self.bus.stop()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.connection_counts.stop()
        for redis in (self._source_redis, self._redis):
            if redis is not None:
                await redis.aclose()

    # --- publishing

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        """Append ``message`` to the bus; every path in answers with a cursor or an error."""
        data_json = encode_data(message, self.settings.max_event_bytes)
        return await self.bus.append(message, data_json, idempotency_key=idempotency_key)

    # --- admitting callers

    async def authenticate(self, authorization: str | None) -> Principal:
        return await self.verifier.verify(bearer_token(authorization))

    async def authenticate_publisher(self, authorization: str | None) -> Principal:
        principal = await self.authenticate(authorization)
        if not principal.publisher:
            raise PermissionDenied("publishing needs a token with the 'publisher' role")
        return principal

    async def admit_stream(
        self, *, authorization: str | None, stream_token: str | None, subscribe: str | None
    ) -> StreamGrant:
        """Check a stream request's credentials and subscriptions; raises a :class:`HeraldError`.

        A stream token's lease is taken here and given back when the stream
        closes (or at once, if opening fails after this).
        """
        if stream_token is not None and authorization is not None:
            raise AuthError("send either an Authorization header or ?token=, not both")
        if stream_token is not None:
            principal = self.stream_tokens.verify(stream_token)
        else:
            principal = await self.authenticate(authorization)
        keys = parse_subscriptions(subscribe)
        subscriptions = authorize_all(principal, keys)
        if principal.stream_token_id is not None:
            await self.stream_tokens.acquire(principal)
        lease_id = secrets.token_urlsafe(12)
        try:
            user_connections: int | None = await self.connection_counts.acquire(principal.user_id, lease_id)
        except BusUnavailable as exc:
            # Counting serves the per-user limit; while Redis is away the stream is
            # admitted and the lease is counted when the renewal next reaches Redis.
            log.warning("connection_count_unavailable", user_id=principal.user_id, reason=exc.message)
            user_connections = None
        return StreamGrant(principal, subscriptions, lease_id, user_connections)

    async def abandon(self, grant: StreamGrant) -> None:
        """Undo :meth:`admit_stream` for a stream that never opened."""
        if grant.principal.stream_token_id is not None:
            await self.stream_tokens.leases.release(grant.principal.stream_token_id)
        if grant.lease_id:
            await self.connection_counts.release(grant.principal.user_id, grant.lease_id)

    def register_stream(self, sink: Sink, grant: StreamGrant) -> Connection:
        principal = grant.principal
        conn = self.manager.register(
            sink,
            user_id=principal.user_id,
            session_id=principal.session_id,
            subscriptions=grant.subscriptions,
            expires_at=principal.expires_at,
        )
        if principal.stream_token_id is not None:
            self._stream_token_of[conn.id] = principal.stream_token_id
        if grant.lease_id:
            self._lease_of[conn.id] = (principal.user_id, grant.lease_id)
        return conn

    def _release_stream_token(self, conn: Connection) -> None:
        token_id = self._stream_token_of.pop(conn.id, None)
        if token_id is not None:
            self._in_background(self.stream_tokens.leases.release(token_id))

    def _release_connection_lease(self, conn: Connection) -> None:
        lease = self._lease_of.pop(conn.id, None)
        if lease is not None:
            self._in_background(self.connection_counts.release(*lease))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_bus_discontinuity(self, reason: str) -> None:
        """The bus cannot promise this node's streams every record (Redis lost the log, or
        trimmed records this node never read): close them, with a spread ``retry``, so
        every client reconnects and learns ``recovered: false`` rather than miss events
        silently."""
        # Positions of the old log mean nothing in the new one: heartbeats and new
        # streams must hand out the bus's new position, or clients would reconnect
        # with a dead cursor and be told recovered:false a second time.
        self.manager.reset_position(self.bus.head)
        conns = list(self.manager.index.all.values())
        log.warning("bus_discontinuity_streams_closed", reason=reason, connections=len(conns))
        for conn in conns:
            self.manager.send_away(conn, CloseReason.BUS_RESET)

    # --- health

    def health(self) -> dict[str, Any]:
        healthy = self.bus.healthy()
        return {
            "status": "ok" if healthy else "degraded",
            "connections": len(self.manager),
            "users": self.manager.index.users(),
            "position": str(self.manager.position),
            "bus": {"backend": self.settings.bus, "healthy": healthy},
            "accepting": self.manager.accepting,
            "sources": {source.name: source.stats.as_dict() for source in self.sources},
        }
