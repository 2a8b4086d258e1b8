"""Payloads of the events the gateway itself emits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, Field

CONNECTION_ESTABLISHED = "connection.established"
SLOW_CONSUMER = "error.slow-consumer"
AUTH_EXPIRED = "error.auth-expired"
AUTH_REVOKED = "error.auth-revoked"
AUTH_EXPIRING = "auth.expiring"
SERVER_SHUTDOWN = "connection.closing"


class DeepReplay(BaseModel):
    """Events recovered from a source beyond the log's window, sent before the log's own replay.

    They come right after ``connection.established``, in the source's order
    (Kafka: per partition in offset order, partitions merged by record time),
    each with an empty ``id`` (they have no cursor; a client's Last-Event-ID
    does not move), only the newest per coalesce key; then an ``id`` block with
    the log's floor, then the log's exact replay from there, then live. They are
    only what the source still holds and this stream may see: events of other
    sources, and records near the cursor's time, may be missing or repeated, so
    the stream is still ``recovered: false``.
    """

    source: Literal["kafka"]
    #: Events sent (after filtering for this stream).
    events: int
    #: False when the recovery stopped at its bounds (time, count) or could not read
    #: everything: events between those sent and the floor are missing.
    complete: bool
    #: ISO 8601 time the recovery searched from: the cursor's.
    since: str


class ConnectionEstablished(BaseModel):
    """First event of every stream.

    ``recovered`` is true when the stream continues exactly after the client's
    ``Last-Event-ID``; false when the client sent none, or sent one that could
    not be replayed exactly (malformed, unknown, older than the window): the
    client must then re-fetch its state.
    """

    connection_id: str
    server_time: str = Field(description="ISO 8601, UTC")
    #: The gateway's version (also in every response's ``Herald-Version`` header), so a
    #: client can tell which side of a gray release it reached.
    server_version: str
    recovered: bool
    #: Why replay was not possible: ``none``, ``malformed``, ``stale`` (outside the
    #: window or from another log), or ``null`` when recovered.
    replay_miss: Literal["none", "malformed", "stale"] | None = None
    subscriptions: list[str] = Field(default_factory=list)
    #: With ``replay_miss: "stale"``: what was recovered from beyond the window, if anything
    #: (:class:`DeepReplay`); ``null`` when nothing was tried.
    deep_replay: DeepReplay | None = None


class ErrorEvent(BaseModel):
    """Body of every ``error.*`` event."""

    level: Literal["info", "warning", "error"] = "error"
    code: str
    message: str
    retry_after: float | None = None
    correlation_id: str | None = None


class AuthExpiring(BaseModel):
    """Sent ``HERALD_AUTH_EXPIRING_SECONDS`` before the token behind a stream expires (at
    once when it opens with less left): fetch a new token and reconnect with
    Last-Event-ID before ``error.auth-expired`` cuts the stream. Nothing is lost."""

    expires_at: str = Field(description="ISO 8601, UTC: when the stream ends with error.auth-expired")
    expires_in: float = Field(description="seconds left when it was sent")


class ConnectionClosing(BaseModel):
    """Sent before the gateway closes a stream it wants the client back on; ``retry_ms`` is jittered.

    ``reason``: the node is shutting down, is being drained (``drain``: come back
    through the load balancer, another node takes the stream), its bus lost or
    rewound its log (``bus_reset``), the replay could not be read
    (``replay_unavailable``), or an admin disconnected the user's streams
    (``disconnected``: the token stays valid; a revocation would end the stream
    with ``error.auth-revoked`` instead).
    """

    reason: Literal["shutdown", "drain", "bus_reset", "replay_unavailable", "disconnected"]
    retry_ms: int


#: The payload model of each event the gateway sends (read by ``herald schema``
#: to generate the TypeScript client's types; every ``herald.events`` module
#: may declare such a mapping).
EVENT_PAYLOADS: Final[Mapping[str, type[BaseModel]]] = {
    CONNECTION_ESTABLISHED: ConnectionEstablished,
    SERVER_SHUTDOWN: ConnectionClosing,
    AUTH_EXPIRED: ErrorEvent,
    AUTH_REVOKED: ErrorEvent,
    AUTH_EXPIRING: AuthExpiring,
    SLOW_CONSUMER: ErrorEvent,
}
