"""``SSEMessage``: the envelope every event travels in, from adapter to browser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from herald.errors import EventTooLarge, InvalidEvent
from herald.events.names import check_event_name, check_key, check_scope, encodable
from herald.obs.tracing import parse_traceparent
from herald.types import Priority

PROTOCOL_VERSION = "1.0"
#: Longest coalesce key / source accepted; they are bookkeeping, not payload.
MAX_TAG_CHARS = 256
#: Longest a publisher may ask a retained state to be kept (``retain_seconds``): 30 days.
MAX_RETAIN_SECONDS = 30 * 86400


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """An event as the gateway routes it; the bus gives it its cursor.

    ``scope`` + ``key`` say who receives it: ``user``/``session`` + their id,
    ``global`` + ``None``, or a resource type + resource id (``novel``, ``42``).
    ``coalesce``: a newer event with the same value replaces an older one still
    waiting in a connection's queue. ``source``: the producer's coordinates
    (``kafka:domain-events:3:1200``), for tracing and idempotent ingestion.
    ``traceparent``: the W3C trace context the event travels in (the producer's, or
    the ingest span's once a node traced it; D30); never part of the frame.
    ``retain``: ``None``, or the event is also kept as the retained state of its
    ``(channel, coalesce)`` for this many seconds (0: the bus's ``RETAIN_SECONDS``; D33).
    """

    event: str
    scope: str
    key: str | None
    data: Mapping[str, Any]
    priority: Priority = Priority.NORMAL
    coalesce: str | None = None
    source: str | None = None
    version: str = PROTOCOL_VERSION
    traceparent: str | None = None
    retain: int | None = None


def build_message(
    *,
    event: str,
    scope: str,
    key: str | None,
    data: Any,
    priority: Priority | str = Priority.NORMAL,
    coalesce: str | None = None,
    source: str | None = None,
    internal: bool = False,
    traceparent: str | bytes | None = None,
    retain: bool = False,
    retain_seconds: int | None = None,
) -> SSEMessage:
    """A validated message, or :class:`InvalidEvent` naming the field at fault. A malformed
    ``traceparent`` is dropped, never refused (W3C Trace Context). ``retain`` needs
    ``coalesce`` (the key of the retained state); ``retain_seconds`` needs ``retain``."""
    check_event_name(event, internal=internal)
    check_scope(scope, internal=internal)
    key = check_key(scope, key)
    if not isinstance(data, Mapping):
        raise InvalidEvent("data must be a JSON object", field="data")
    if isinstance(priority, str):
        try:
            priority = Priority.parse(priority)
        except KeyError:
            raise InvalidEvent("priority must be high, normal or low", field="priority") from None
    for name, tag in (("coalesce", coalesce), ("source", source)):
        if tag is not None and not (0 < len(tag) <= MAX_TAG_CHARS and encodable(tag)):
            raise InvalidEvent(f"{name} must be 1-{MAX_TAG_CHARS} characters of valid text", field=name)
    trace = parse_traceparent(traceparent) if traceparent is not None else None
    kept = _retention(retain, retain_seconds, coalesce)
    return SSEMessage(event, scope, key, data, priority, coalesce, source, PROTOCOL_VERSION, trace, kept)


def _retention(retain: bool, retain_seconds: int | None, coalesce: str | None) -> int | None:
    """``SSEMessage.retain`` for a publish's ``retain``/``retain_seconds``, or :class:`InvalidEvent`."""
    if not retain:
        if retain_seconds is not None:
            raise InvalidEvent("retain_seconds needs retain: true", field="retain_seconds")
        return None
    if coalesce is None:
        raise InvalidEvent(
            "retain needs a coalesce key: the retained state is the newest event per coalesce key",
            field="coalesce",
        )
    if retain_seconds is None:
        return 0
    if isinstance(retain_seconds, bool) or not 1 <= retain_seconds <= MAX_RETAIN_SECONDS:
        raise InvalidEvent(f"retain_seconds must be 1-{MAX_RETAIN_SECONDS}", field="retain_seconds")
    return retain_seconds


def with_traceparent(message: SSEMessage, traceparent: str | bytes | None) -> SSEMessage:
    """``message`` carrying ``traceparent`` (a source's record header or column), if it is a
    valid one; else ``message`` as it is (a malformed traceparent is ignored)."""
    trace = parse_traceparent(traceparent) if traceparent is not None else None
    if trace is None or trace == message.traceparent:
        return message
    return carrying(message, trace)


def carrying(message: SSEMessage, traceparent: str | None) -> SSEMessage:
    """``message`` with ``traceparent`` as it is (already valid): ``dataclasses.replace``
    without its cost, for the traced publish path."""
    return SSEMessage(
        message.event,
        message.scope,
        message.key,
        message.data,
        message.priority,
        message.coalesce,
        message.source,
        message.version,
        traceparent,
        message.retain,
    )


def encode_data(message: SSEMessage, max_bytes: int) -> bytes:
    """The ``data`` line's JSON, with ``_scope`` and ``_version``; encoded once per event.

    Raises :class:`EventTooLarge` past ``max_bytes``, :class:`InvalidEvent` for
    values JSON cannot carry.
    """
    try:
        body = orjson.dumps({**message.data, "_scope": message.scope, "_version": message.version})
    except TypeError as exc:
        raise InvalidEvent(f"data is not JSON-serialisable: {exc}", field="data") from None
    if len(body) > max_bytes:
        raise EventTooLarge(
            f"encoded data is {len(body)} bytes; the limit is {max_bytes}",
            size=len(body),
            limit=max_bytes,
        )
    return body
