"""A bus record as the fields of a Redis Stream entry, and back.

The entry keeps the routing envelope and the encoded data JSON exactly as
the publishing node produced it, so every node builds byte-identical
frames without re-encoding. Field names are spelled out: an operator
reading the log with ``XRANGE`` should not need a decoder ring.

The format evolves by optional fields only (D30): a writer adds a field only
if a reader that does not know it loses nothing it needs; a reader ignores
the fields it does not know and does without the optional ones that are
missing. ``traceparent`` (D30) is such a field. A change that old readers
would misread needs a new stream key, not a new field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import orjson

from herald.bus.base import BusRecord
from herald.events.message import SSEMessage
from herald.obs.tracing import parse_traceparent
from herald.types import Priority
from herald.wire.cursor import Cursor
from herald.wire.encoder import event_frame

#: Keys ``encode_data`` adds to the data object; not part of ``SSEMessage.data``.
_ENVELOPE_KEYS = ("_scope", "_version")


def entry_fields(message: SSEMessage, data_json: bytes) -> list[bytes | str]:
    """Field/value pairs, flattened, for ``XADD``."""
    fields: list[bytes | str] = [
        "event",
        message.event,
        "scope",
        message.scope,
        "priority",
        message.priority.name.lower(),
        "version",
        message.version,
        "data",
        data_json,
    ]
    for name, value in (
        ("key", message.key),
        ("coalesce", message.coalesce),
        ("source", message.source),
        ("traceparent", message.traceparent),
    ):
        if value is not None:
            fields += [name, value]
    return fields


def pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """``[f1, v1, f2, v2]`` (a script's reply) as a mapping."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def record_from_entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> BusRecord:
    """The record of one stream entry; ``KeyError``/``ValueError`` if it is not one of ours.
    Fields it does not know are ignored; a malformed ``traceparent`` is dropped."""
    cursor_text = entry_id.decode()
    ms, _, seq = cursor_text.partition("-")
    data_json = fields[b"data"]
    data = orjson.loads(data_json)
    for name in _ENVELOPE_KEYS:
        data.pop(name, None)
    event = fields[b"event"].decode()
    message = SSEMessage(
        event=event,
        scope=fields[b"scope"].decode(),
        key=_optional(fields, b"key"),
        data=data,
        priority=Priority.parse(fields[b"priority"].decode()),
        coalesce=_optional(fields, b"coalesce"),
        source=_optional(fields, b"source"),
        version=fields[b"version"].decode(),
        traceparent=parse_traceparent(fields.get(b"traceparent")),
    )
    return BusRecord(Cursor(int(ms), int(seq)), message, event_frame(cursor_text, event, data_json))


def _optional(fields: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = fields.get(name)
    return None if value is None else value.decode()
