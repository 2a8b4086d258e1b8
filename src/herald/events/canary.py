"""Canary events: synthetic events a node writes into its own sources, to prove the path.

A node with ``HERALD_CANARY_INTERVAL_SECONDS`` set writes, every interval, a
canary into each source it consumes (a Kafka record, an outbox row, a Redis
message or stream entry). The canary goes the way of any event (consume,
map, append, bus) and every node's watcher sees it arrive on the bus
(docs/architecture.md, D32). It carries its send time and the sending node.

A canary is the event ``herald.canary`` in the scope ``herald`` with the key
``canary``: the channel ``herald:canary``. No stream ever receives it: the
scope is reserved (no producer may publish to it, no stream may subscribe to
it), so neither routing nor replay finds a receiver. Pure: no I/O.

In a domain record (Kafka, the outbox) a canary is recognised before any
mapping rule, by its type (the outbox's ``event_type`` column) or by the
top-level field ``herald_canary``, whatever the mapping's type field is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from herald.errors import InvalidEvent
from herald.events.message import SSEMessage, build_message
from herald.types import Priority

CANARY_EVENT: Final = "herald.canary"
#: The gateway's own scope (reserved, :data:`herald.events.names.RESERVED_SCOPES`).
CANARY_SCOPE: Final = "herald"
CANARY_KEY: Final = "canary"
#: The bus channel canaries are appended to (``{scope}:{key}``).
CANARY_CHANNEL: Final = f"{CANARY_SCOPE}:{CANARY_KEY}"
#: The top-level field of a domain record that marks it as a canary.
CANARY_FIELD: Final = "herald_canary"
#: Sources a canary can travel through: the ``source`` label of the canary metrics
#: takes only these values (a message naming another is not counted).
CANARY_SOURCES: Final = frozenset({"kafka", "outbox", "redis-pubsub", "redis-stream"})


@dataclass(frozen=True, slots=True)
class Canary:
    """What a canary carries: which source it was sent through, by whom, when."""

    source: str
    node: str
    seq: int
    #: Unix seconds (the sender's wall clock).
    sent_at: float

    def data(self) -> dict[str, Any]:
        return {"source": self.source, "node": self.node, "seq": self.seq, "sent_at": self.sent_at}

    def record(self) -> dict[str, Any]:
        """The domain record a mapped source (Kafka) carries: recognised by its field."""
        return {"type": CANARY_EVENT, CANARY_FIELD: self.data()}

    def body(self) -> dict[str, Any]:
        """The event body a Redis source carries (the shape ``POST /api/v1/events`` takes)."""
        return {
            "event": CANARY_EVENT,
            "scope": CANARY_SCOPE,
            "key": CANARY_KEY,
            "data": self.data(),
            "priority": "low",
            "id": f"herald-canary:{self.node}:{self.source}:{self.seq}"[:256],
        }


def is_canary_record(record: Mapping[str, Any], event_type: str | None = None) -> bool:
    """Whether a domain record is a canary (by its type column, or its field)."""
    return event_type == CANARY_EVENT or CANARY_FIELD in record


def canary_message(data: Any, *, source: str | None) -> SSEMessage:
    """The bus message of a canary whose payload is ``data``; :class:`InvalidEvent` if
    ``data`` is not a canary's."""
    if isinstance(data, Mapping) and CANARY_FIELD in data and "sent_at" not in data:
        data = data[CANARY_FIELD]
    canary = parse_canary(data)
    return build_message(
        event=CANARY_EVENT,
        scope=CANARY_SCOPE,
        key=CANARY_KEY,
        data=canary.data(),
        priority=Priority.LOW,
        source=source,
        internal=True,
    )


def parse_canary(data: Any) -> Canary:
    """A canary's payload; :class:`InvalidEvent` naming what is wrong."""
    if not isinstance(data, Mapping):
        raise InvalidEvent("a canary's data is an object", field="data")
    source, node, seq, sent_at = (data.get(name) for name in ("source", "node", "seq", "sent_at"))
    if not isinstance(source, str) or not isinstance(node, str) or not 0 < len(node) <= 128:
        raise InvalidEvent("a canary names its source and node", field="data")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidEvent("a canary's seq is an integer", field="data")
    if not isinstance(sent_at, int | float) or isinstance(sent_at, bool):
        raise InvalidEvent("a canary's sent_at is Unix seconds", field="data")
    return Canary(source[:32], node, seq, float(sent_at))


def is_canary(message: SSEMessage) -> bool:
    return message.scope == CANARY_SCOPE and message.event == CANARY_EVENT
