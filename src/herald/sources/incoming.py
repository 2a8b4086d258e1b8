"""What sources share: the event body apps send, how each source publishes, what it counts.

The body is the one ``POST /api/v1/events`` takes, so an app can move
between HTTP and Redis without reshaping its events::

    {"event": "task.progress-updated", "scope": "user", "key": "u1",
     "data": {"task_id": "t1", "progress": 50}, "priority": "normal",
     "coalesce": "task:t1", "id": "task-t1-progress-50"}

``traceparent`` (W3C Trace Context) puts the event's spans in the producer's
trace (D30). ``id`` (or ``idempotency_key``, its synonym from the HTTP API) makes the
delivery idempotent: the same id within the idempotency window is one event,
however many nodes or retries hand it in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

import orjson

from herald.bus.base import AppendResult
from herald.bus.throttle import Offered
from herald.errors import HeraldError, InvalidEvent
from herald.events.canary import CANARY_EVENT, canary_message
from herald.events.message import SSEMessage, build_message

_FIELDS = frozenset(
    {"event", "scope", "key", "data", "priority", "coalesce", "id", "idempotency_key", "traceparent"}
)
MAX_ID_CHARS = 256


class Publish(Protocol):
    """``Gateway.publish``: append a message; a cursor, or a :class:`HeraldError`."""

    def __call__(
        self, message: SSEMessage, *, idempotency_key: str | None = None
    ) -> Awaitable[AppendResult]: ...


class Offer(Protocol):
    """``Gateway.offer``: hand a message to the publish path; returns once it is in the bus
    or held by the coalesce throttle (:class:`herald.bus.throttle.Offered`), so a source
    can go on with its next record and commit past this one once it is settled."""

    def __call__(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Awaitable[Offered]: ...


#: An event to offer with its idempotency key.
OfferItem = tuple[SSEMessage, "str | None"]


class OfferMany(Protocol):
    """``Gateway.offer_many``: several messages, in order, each taken as ``offer`` takes
    one, the bus appending them together (one round trip per store). One result per
    message, in order: its :class:`Offered`, or the error that refused it; once the bus
    refuses one, it and every later valid one answer that (retriable) error, so what a
    source retries comes after everything that went in."""

    def __call__(self, items: Sequence[OfferItem]) -> Awaitable[list[Offered | HeraldError]]: ...


def offer_many_from(offer: Offer) -> OfferMany:
    """An :class:`OfferMany` that offers one message at a time (for publish paths without
    a batch append)."""

    async def offer_many(items: Sequence[OfferItem]) -> list[Offered | HeraldError]:
        results: list[Offered | HeraldError] = []
        for message, key in items:
            try:
                results.append(await offer(message, idempotency_key=key))
            except HeraldError as exc:
                results.append(exc)
                if exc.retriable:
                    results.extend([exc] * (len(items) - len(results)))
                    break
        return results

    return offer_many


def offer_from(publish: Publish) -> Offer:
    """An :class:`Offer` that waits for every event to be appended (no throttle)."""

    async def offer(message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        return Offered(await publish(message, idempotency_key=idempotency_key))

    return offer


class Source(Protocol):
    """A producer feeding the bus; the gateway starts it after the bus and stops it first."""

    name: str

    @property
    def stats(self) -> SourceStats:
        """What it did so far (health lists it; a source may count more in a subclass)."""
        ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class IncomingEvent:
    message: SSEMessage
    #: The producer's id for the event, if it gave one.
    event_id: str | None


@dataclass(slots=True)
class SourceStats:
    """What a source did with what it received; every message ends in exactly one of
    ``published``, ``duplicates``, ``rejected`` (bad message, skipped) or ``failed``
    (the bus refused it and retrying did not help)."""

    received: int = 0
    published: int = 0
    duplicates: int = 0
    rejected: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        """Every counter, subclasses' included (health and metrics read this)."""
        return {field.name: getattr(self, field.name) for field in fields(self)}


def parse_event_json(raw: bytes | str, *, source: str, canaries: bool = False) -> IncomingEvent:
    """The event a JSON text carries; :class:`InvalidEvent` naming what is wrong."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"the message is not JSON: {exc}") from None
    return parse_event_body(body, source=source, canaries=canaries)


def parse_event_body(body: Any, *, source: str, canaries: bool = False) -> IncomingEvent:
    """``canaries``: a ``herald.canary`` body is taken as a canary (a source's; the HTTP
    publish path refuses the gateway's own event names and scope)."""
    if not isinstance(body, Mapping):
        raise InvalidEvent("the message must be a JSON object")
    if canaries and body.get("event") == CANARY_EVENT:
        event_id = body.get("id")
        return IncomingEvent(
            canary_message(body.get("data"), source=source),
            event_id if isinstance(event_id, str) and 0 < len(event_id) <= MAX_ID_CHARS else None,
        )
    unknown = sorted(str(name) for name in body if name not in _FIELDS)
    if unknown:
        raise InvalidEvent(f"unknown fields {unknown[:5]}", field=unknown[0])
    event = _text(body, "event", required=True)
    scope = _text(body, "scope", required=True)
    assert event is not None
    assert scope is not None
    if "data" not in body:
        raise InvalidEvent("data is required", field="data")
    event_id = _text(body, "id")
    idempotency_key = _text(body, "idempotency_key")
    if event_id is not None and idempotency_key is not None and event_id != idempotency_key:
        raise InvalidEvent("id and idempotency_key differ; send one", field="id")
    event_id = event_id or idempotency_key
    if event_id is not None and len(event_id) > MAX_ID_CHARS:
        raise InvalidEvent(f"id must be 1-{MAX_ID_CHARS} characters", field="id")
    message = build_message(
        event=event,
        scope=scope,
        key=_text(body, "key"),
        data=body["data"],
        priority=_text(body, "priority") or "normal",
        coalesce=_text(body, "coalesce"),
        source=source,
        traceparent=body.get("traceparent"),  # ignored when malformed (D30)
    )
    return IncomingEvent(message, event_id)


def _text(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"{name} is required", field=name)
        return None
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{name} must be a non-empty string", field=name)
    return value
