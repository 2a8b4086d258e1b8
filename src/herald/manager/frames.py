"""The frames the gateway writes on its own behalf (not bus records)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from herald import __version__
from herald.events.message import PROTOCOL_VERSION
from herald.events.notices import CONNECTION_EVICTED, SUBSCRIPTIONS_CHANGED
from herald.events.system import (
    AUTH_EXPIRED,
    AUTH_EXPIRING,
    AUTH_REVOKED,
    CONNECTION_ESTABLISHED,
    SERVER_SHUTDOWN,
    SLOW_CONSUMER,
)
from herald.wire.cursor import Cursor
from herald.wire.encoder import event_frame, retry_frame

_SYSTEM_SCOPE = "connection"


def _data(payload: dict[str, Any]) -> bytes:
    return orjson.dumps({**payload, "_scope": _SYSTEM_SCOPE, "_version": PROTOCOL_VERSION})


def _untracked_frame(event: str, payload: dict[str, Any]) -> bytes:
    # No ``id:`` line: a gateway notice must not move the client's Last-Event-ID.
    return b"event: %s\ndata: %s\n\n" % (event.encode(), _data(payload))


def established(
    *,
    retry_ms: int,
    position: Cursor,
    connection_id: str,
    recovered: bool,
    replay_miss: str | None,
    subscriptions: list[str],
    deep_replay: dict[str, Any] | None = None,
) -> bytes:
    """``retry:`` then ``connection.established``.

    Its ``id`` is the position the stream continues from, so a client that
    disconnects before its first event still resumes without a gap.
    """
    payload = {
        "connection_id": connection_id,
        "server_time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "server_version": __version__,
        "recovered": recovered,
        "replay_miss": replay_miss,
        "subscriptions": subscriptions,
        "deep_replay": deep_replay,
    }
    return retry_frame(retry_ms) + event_frame(str(position), CONNECTION_ESTABLISHED, _data(payload))


def error(event: str, code: str, message: str, retry_after: float | None = None) -> bytes:
    payload: dict[str, Any] = {"level": "error", "code": code, "message": message}
    if retry_after is not None:
        payload["retry_after"] = retry_after
    return _untracked_frame(event, payload)


def slow_consumer() -> bytes:
    return error(
        SLOW_CONSUMER,
        "SLOW_CONSUMER",
        "the connection fell too far behind; reconnect with Last-Event-ID to resume",
    )


def auth_expired() -> bytes:
    return error(
        AUTH_EXPIRED,
        "AUTH_EXPIRED",
        "the token behind this stream expired; reconnect with a fresh one",
    )


def auth_revoked() -> bytes:
    return error(
        AUTH_REVOKED,
        "AUTH_REVOKED",
        "the token behind this stream was revoked; the application must sign the user in again",
    )


def auth_expiring(expires_at: float, expires_in: float) -> bytes:
    when = datetime.fromtimestamp(expires_at, UTC).isoformat(timespec="milliseconds")
    return _untracked_frame(AUTH_EXPIRING, {"expires_at": when, "expires_in": round(max(0.0, expires_in), 3)})


#: ``retry:`` of an evicted stream: a native EventSource comes back this late rather than
#: evicting, at once, the newer stream that replaced it.
EVICTED_RETRY_MS = 30_000


def evicted(limit: int) -> bytes:
    return retry_frame(EVICTED_RETRY_MS) + error(
        CONNECTION_EVICTED,
        "SSE_CONNECTION_LIMIT",
        f"the user opened more than {limit} streams; this one, the oldest, was closed",
    )


def subscriptions_changed(
    position: Cursor,
    *,
    exact: bool,
    subscriptions: list[str],
    added: list[str],
    removed: list[str],
    reason: str | None = None,
) -> bytes:
    """``connection.subscriptions-changed``; with an ``id`` (``position``) only when ``exact``:
    every record up to ``position`` is already ahead of it on the way to the client."""
    payload: dict[str, Any] = {
        "subscriptions": subscriptions,
        "added": added,
        "removed": removed,
        "live_from": str(position),
    }
    if reason is not None:
        payload["reason"] = reason
    if exact:
        return event_frame(str(position), SUBSCRIPTIONS_CHANGED, _data(payload))
    return _untracked_frame(SUBSCRIPTIONS_CHANGED, payload)


def closing(retry_ms: int, reason: str = "shutdown") -> bytes:
    """``retry:`` then ``connection.closing``: come back after ``retry_ms``."""
    return retry_frame(retry_ms) + _untracked_frame(SERVER_SHUTDOWN, {"reason": reason, "retry_ms": retry_ms})


def retained(record_frame: bytes) -> bytes:
    """A bus record's frame as a retained state (D33): without its ``id:`` line (it must not
    move the client's Last-Event-ID, which may be past it) and with ``"_retained":true`` in
    its data object (a bus frame ends with its single-line data object, ``…}\n\n``)."""
    frame = record_frame.partition(b"\n")[2] if record_frame.startswith(b"id: ") else record_frame
    return b'%s,"_retained":true}\n\n' % frame[:-3]


def heartbeat(position: Cursor | None) -> bytes:
    """A comment; with ``position``, the comment names it and an ``id`` line sets it.

    Browsers keep the ``id`` of a block that has no data without firing an
    event (WHATWG: "set the last event ID string" precedes the empty-data
    check), and parsers such as eventsource-parser hand the comment text to
    the client. Either way a quiet client's Last-Event-ID keeps up with the
    log, so its reconnect stays inside the replay window.
    """
    if position is None:
        return b":\n\n"
    text = str(position).encode()
    return b": %s\nid: %s\n\n" % (text, text)
