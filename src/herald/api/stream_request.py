"""What a stream request says, read the same way by the native server and by ASGI.

Query strings may carry stream tokens, so nothing here ever logs one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs

import structlog
from starlette.types import Scope

from herald.errors import RequestInvalid
from herald.manager.connection import Connection

log = structlog.get_logger("herald.stream")

#: What the TypeScript client sends with each stream request: its own version, so a gray
#: release can see which clients meet which servers.
CLIENT_VERSION_HEADER = b"herald-client-version"

_MAX_LOGGED_CHARS = 200
#: ``?since=`` may be this far ahead of the gateway's clock (a client's clock a little fast).
SINCE_SKEW_SECONDS = 5.0
_MAX_FIELDS = 50
_WANTED = frozenset(
    (b"authorization", b"last-event-id", b"user-agent", b"origin", b"x-forwarded-for", CLIENT_VERSION_HEADER)
)


@dataclass(frozen=True, slots=True)
class StreamRequest:
    authorization: str | None
    token: str | None
    last_event_id: str | None
    subscribe: str | None
    client_ip: str | None
    user_agent: str | None
    #: The page's origin, for CORS (browsers send it on cross-origin requests).
    origin: str | None = None
    #: ``X-Forwarded-For``, believed only from trusted proxies (``Gateway.admit_stream``).
    forwarded_for: str | None = None
    #: ``Herald-Client-Version``: the TypeScript client's version, when it sent one.
    client_version: str | None = None
    #: ``?trace=1``: each event's data carries its ``trace_id`` (D30).
    trace: bool = False
    #: ``?since=``: an ISO 8601 time, read by :meth:`since_ms` (D33).
    since: str | None = None

    @classmethod
    def parse(
        cls, query: bytes, headers: Iterable[tuple[bytes, bytes]], client_ip: str | None
    ) -> StreamRequest:
        wanted: dict[bytes, str] = {}
        for name, value in headers:
            lname = name.lower()
            if lname in _WANTED and lname not in wanted:
                wanted[lname] = value.decode("latin-1")
        try:
            params = parse_qs(query.decode("latin-1"), keep_blank_values=True, max_num_fields=_MAX_FIELDS)
        except ValueError:  # more fields than allowed: refused, never an unanswered request
            raise RequestInvalid(f"a stream request takes at most {_MAX_FIELDS} query parameters") from None
        token = params.get("token", [None])[0]
        subscribe = ",".join(params["subscribe"]) if "subscribe" in params else None
        # The header wins: it is what EventSource sends on its own reconnects,
        # newer than the ``last_event_id`` baked into the URL.
        last_event_id = wanted.get(b"last-event-id", params.get("last_event_id", [None])[0])
        return cls(
            authorization=wanted.get(b"authorization"),
            token=token,
            last_event_id=last_event_id,
            subscribe=subscribe,
            client_ip=client_ip,
            user_agent=wanted.get(b"user-agent"),
            origin=wanted.get(b"origin"),
            forwarded_for=wanted.get(b"x-forwarded-for"),
            client_version=wanted.get(CLIENT_VERSION_HEADER),
            trace=params.get("trace", [""])[0].lower() in ("1", "true"),
            since=params.get("since", [None])[0],
        )

    def since_ms(self, now: float | None = None) -> int | None:
        """``?since=`` in Unix milliseconds, when the stream has no cursor to resume from
        (a cursor wins); :class:`RequestInvalid` naming the parameter for a time that is
        not ISO 8601 with a zone, or is in the future."""
        if self.since is None or (self.last_event_id is not None and self.last_event_id.strip()):
            return None
        text = self.since.strip()
        try:
            when = datetime.fromisoformat(text) if 0 < len(text) <= 64 else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise RequestInvalid(
                "since must be an ISO 8601 time with a zone, e.g. 2026-12-05T08:00:00Z",
                field="since",
            )
        ms = int(when.timestamp() * 1000)
        clock = time.time() if now is None else now
        if ms > (clock + SINCE_SKEW_SECONDS) * 1000:
            raise RequestInvalid("since is in the future", field="since", server_time_ms=int(clock * 1000))
        return max(0, ms)

    @classmethod
    def from_asgi(cls, scope: Scope) -> StreamRequest:
        client = scope.get("client")
        return cls.parse(scope.get("query_string", b""), scope["headers"], client[0] if client else None)


def stream_headers() -> list[tuple[str, str]]:
    return [
        ("content-type", "text/event-stream; charset=utf-8"),
        ("cache-control", "no-cache, no-store, no-transform"),
        # nginx: do not buffer this response.
        ("x-accel-buffering", "no"),
    ]


def log_stream_opened(conn: Connection, request: StreamRequest, ip: str | None = None) -> None:
    """``ip``: the client's address when a trusted proxy named it (else the peer's)."""
    log.info(
        "sse_connection_established",
        connection_id=conn.id,
        user_id=conn.user_id,
        session_id=conn.session_id,
        ip=ip or request.client_ip,
        user_agent=(request.user_agent or "")[:_MAX_LOGGED_CHARS],
        client_version=(request.client_version or "")[:32] or None,
        last_event_id=(request.last_event_id or "")[:64] or None,
        subscriptions=sorted(conn.subscriptions),
        credentials="stream_token" if request.token is not None else "bearer",
    )
