"""The gateway: one bus, one manager, the credentials that admit callers, and the
publish path. Everything a front end (the standalone server, or an ASGI app
embedding Herald) needs, with no web framework in sight."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import structlog

from herald.auth.grants import authorize_all, parse_subscriptions
from herald.auth.principal import Principal
from herald.auth.stream_tokens import MemoryStreamTokenLeases, StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier, bearer_token
from herald.bus.base import AppendResult, EventBus
from herald.bus.memory import MemoryBus
from herald.config import Settings
from herald.errors import AuthError, PermissionDenied
from herald.events.message import SSEMessage, encode_data
from herald.manager.connection import Connection
from herald.manager.manager import ConnectionManager
from herald.manager.sink import Sink

log = structlog.get_logger("herald.gateway")


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """An admitted stream request: who, and which resources it subscribes to."""

    principal: Principal
    subscriptions: frozenset[str]


def build_bus(settings: Settings) -> EventBus:
    return MemoryBus(
        window_seconds=settings.replay_window_seconds,
        max_events=settings.replay_max_events,
        idempotency_window_seconds=settings.idempotency_window_seconds,
    )


class Gateway:
    def __init__(self, settings: Settings, bus: EventBus | None = None) -> None:
        self.settings = settings
        self.bus = bus if bus is not None else build_bus(settings)
        self.manager = ConnectionManager(
            self.bus,
            heartbeat_seconds=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            slow_consumer_bytes=settings.slow_consumer_bytes,
        )
        self.verifier = TokenVerifier(settings)
        self.stream_tokens = StreamTokens(
            stream_key(settings.stream_token_secret, settings.jwt_secret),
            MemoryStreamTokenLeases(),
            ttl_seconds=settings.stream_token_ttl_seconds,
        )
        self._stream_token_of: dict[str, str] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.manager.on_close.append(self._release_stream_token)

    async def start(self) -> None:
        await self.bus.start()
        await self.manager.start()

    async def stop(self) -> None:
        await self.manager.stop()
        await self.bus.stop()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

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
        keys = parse_subscriptions(subscribe)
        if stream_token is not None:
            principal = self.stream_tokens.verify(stream_token)
        else:
            principal = await self.authenticate(authorization)
        subscriptions = authorize_all(principal, keys)
        if principal.stream_token_id is not None:
            await self.stream_tokens.acquire(principal)
        return StreamGrant(principal, subscriptions)

    async def abandon(self, grant: StreamGrant) -> None:
        """Undo :meth:`admit_stream` for a stream that never opened."""
        if grant.principal.stream_token_id is not None:
            await self.stream_tokens.leases.release(grant.principal.stream_token_id)

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
        return conn

    def _release_stream_token(self, conn: Connection) -> None:
        token_id = self._stream_token_of.pop(conn.id, None)
        if token_id is None:
            return
        task = asyncio.get_running_loop().create_task(self.stream_tokens.leases.release(token_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
        }
