"""Payloads of the events the gateway itself emits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, Field

CONNECTION_ESTABLISHED = "connection.established"
SLOW_CONSUMER = "error.slow-consumer"
AUTH_EXPIRED = "error.auth-expired"
SERVER_SHUTDOWN = "connection.closing"


class ConnectionEstablished(BaseModel):
    """First event of every stream.

    ``recovered`` is true when the stream continues exactly after the client's
    ``Last-Event-ID``; false when the client sent none, or sent one that could
    not be replayed exactly (malformed, unknown, older than the window): the
    client must then re-fetch its state.
    """

    connection_id: str
    server_time: str = Field(description="ISO 8601, UTC")
    recovered: bool
    #: Why replay was not possible: ``none``, ``malformed``, ``stale`` (outside the
    #: window or from another log), or ``null`` when recovered.
    replay_miss: Literal["none", "malformed", "stale"] | None = None
    subscriptions: list[str] = Field(default_factory=list)


class ErrorEvent(BaseModel):
    """Body of every ``error.*`` event."""

    level: Literal["info", "warning", "error"] = "error"
    code: str
    message: str
    retry_after: float | None = None
    correlation_id: str | None = None


class ConnectionClosing(BaseModel):
    """Sent before the gateway closes a stream it wants the client back on; ``retry_ms`` is jittered.

    ``reason``: the node is shutting down, its bus lost or rewound its log
    (``bus_reset``), or the replay could not be read (``replay_unavailable``).
    """

    reason: Literal["shutdown", "bus_reset", "replay_unavailable"]
    retry_ms: int


#: The payload model of each event the gateway sends (read by ``herald schema``
#: to generate the TypeScript client's types; every ``herald.events`` module
#: may declare such a mapping).
EVENT_PAYLOADS: Final[Mapping[str, type[BaseModel]]] = {
    CONNECTION_ESTABLISHED: ConnectionEstablished,
    SERVER_SHUTDOWN: ConnectionClosing,
    AUTH_EXPIRED: ErrorEvent,
    SLOW_CONSUMER: ErrorEvent,
}
