"""``SSEMessage``: the envelope every event travels in, from adapter to browser."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from herald.errors import EventTooLarge, InvalidEvent
from herald.events.names import check_event_name, check_key, check_scope, encodable
from herald.types import Priority

PROTOCOL_VERSION = "1.0"
#: Longest coalesce key / source accepted; they are bookkeeping, not payload.
MAX_TAG_CHARS = 256


@dataclass(frozen=True, slots=True)
class SSEMessage:
    """An event as the gateway routes it; the bus gives it its cursor.

    ``scope`` + ``key`` say who receives it: ``user``/``session`` + their id,
    ``global`` + ``None``, or a resource type + resource id (``novel``, ``42``).
    ``coalesce``: a newer event with the same value replaces an older one still
    waiting in a connection's queue. ``source``: the producer's coordinates
    (``kafka:domain-events:3:1200``), for tracing and idempotent ingestion.
    """

    event: str
    scope: str
    key: str | None
    data: Mapping[str, Any]
    priority: Priority = Priority.NORMAL
    coalesce: str | None = None
    source: str | None = None
    version: str = PROTOCOL_VERSION


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
) -> SSEMessage:
    """A validated message, or :class:`InvalidEvent` naming the field at fault."""
    check_event_name(event, internal=internal)
    check_scope(scope)
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
    return SSEMessage(event, scope, key, data, priority, coalesce, source)


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
