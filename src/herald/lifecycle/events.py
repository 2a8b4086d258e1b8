"""The lifecycle events' schema, and the arithmetic of when they come: pure.

Each announcement is one Redis Stream entry (docs/events.md, "Lifecycle
events"), whose id is the event's ``id``:

``connection.opened``
    ``user_id``, ``at_ms`` (when the user's first stream in the cluster
    opened), ``connections`` (their streams then), ``node``; ``restored: 1``
    when Redis had lost the user's presence and a renewal found them
    connected (an opened that may repeat one announced before the loss).
``connection.closed``
    ``user_id``, ``at_ms`` (when their last stream closed, or when its lease
    lapsed), ``reason`` (why that stream closed; ``node_lost`` when its node
    vanished), ``opened_at_ms``, ``duration_ms`` (``at_ms - opened_at_ms``),
    ``node`` (the node that announced it).

Times are Redis's clock, milliseconds since the epoch. On Kafka the record's
key is the user id and its value the same fields as a JSON object, numbers
as numbers, plus ``id``: with several shards (each with its own stream, whose
entry ids may coincide) the entry id and the shard, ``ms-seq@shard``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

OPENED = "connection.opened"
CLOSED = "connection.closed"
#: The reason of a ``connection.closed`` whose streams' node vanished (their leases lapsed).
NODE_LOST = "node_lost"
#: The reason when a stream admitted for a user never opened (the client left during admission).
ABANDONED = "abandoned"

#: Fields that hold integers; every other field is text.
_INTEGER_FIELDS = frozenset({"at_ms", "connections", "restored", "opened_at_ms", "duration_ms"})

Fields = Mapping[bytes, bytes] | Mapping[str, str]


def decode(entry_id: bytes | str, fields: Fields) -> dict[str, object]:
    """One stream entry as the event's JSON object."""
    event: dict[str, object] = {"id": _text(entry_id)}
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name), _text(raw_value)
        event[name] = int(value) if name in _INTEGER_FIELDS else value
    return event


def kafka_record(entry_id: bytes | str, fields: Fields, shard: int | None = None) -> tuple[bytes, bytes, str]:
    """The Kafka key (the user id: one user's events stay in one partition, in order),
    value and ``id`` of one announcement; ``shard``: the stream's shard, when there are
    several."""
    event = decode(entry_id, fields)
    event_id = _text(entry_id) if shard is None else f"{_text(entry_id)}@{shard}"
    event["id"] = event_id
    return str(event.get("user_id", "")).encode(), orjson.dumps(event), event_id


def gone_within(*, lease_seconds: float, grace_seconds: float, sweep_seconds: float) -> float:
    """The longest a user whose node vanished (SIGKILL, a lost machine) stays announced as
    present: their leases lapse within ``lease_seconds`` of the node's last renewal, a
    sweep notices within ``sweep_seconds``, and the grace applies as after any close."""
    return lease_seconds + grace_seconds + sweep_seconds


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
