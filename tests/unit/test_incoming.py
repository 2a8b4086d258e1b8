"""The event body sources accept (the body of POST /api/v1/events), as a table."""

from __future__ import annotations

import orjson
import pytest

from herald.errors import InvalidEvent
from herald.sources.incoming import parse_event_json
from herald.sources.redis_streams import parse_entry
from herald.types import Priority

GOOD = {"event": "task.created", "scope": "user", "key": "u1", "data": {"n": 1}}


@pytest.mark.parametrize(
    ("raw", "field", "reason"),
    [
        (b"not json", None, "not JSON"),
        (b"[1]", None, "JSON object"),
        (b'"text"', None, "JSON object"),
        (orjson.dumps({**GOOD, "extra": 1}), "extra", "unknown fields"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "event"}), "event", "required"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "data"}), "data", "required"),
        (orjson.dumps({**GOOD, "event": "Bad"}), "event", "kebab-case"),
        (orjson.dumps({**GOOD, "event": "connection.established"}), "event", "gateway"),
        (orjson.dumps({**GOOD, "key": None}), "key", "needs a key"),
        (orjson.dumps({**GOOD, "key": 7}), "key", "string"),
        (orjson.dumps({**GOOD, "data": [1]}), "data", "JSON object"),
        (orjson.dumps({**GOOD, "priority": "urgent"}), "priority", "high, normal or low"),
        (orjson.dumps({**GOOD, "id": "a", "idempotency_key": "b"}), "id", "differ"),
        (orjson.dumps({**GOOD, "id": "x" * 257}), "id", "1-256"),
        (orjson.dumps({**GOOD, "id": ""}), "id", "non-empty"),
    ],
)
def test_bad_bodies_are_refused_with_the_reason(raw: bytes, field: str | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_event_json(raw, source="test")
    assert reason in refused.value.message
    assert refused.value.detail.get("field") == field


def test_a_good_body_becomes_a_message_with_its_id_and_source() -> None:
    body = {**GOOD, "priority": "high", "coalesce": "task:t1", "idempotency_key": "k1"}
    incoming = parse_event_json(orjson.dumps(body), source="redis-pubsub:herald:publish")
    assert incoming.event_id == "k1"
    message = incoming.message
    assert (message.event, message.scope, message.key, dict(message.data)) == (
        "task.created",
        "user",
        "u1",
        {"n": 1},
    )
    assert message.priority is Priority.HIGH
    assert message.coalesce == "task:t1"
    assert message.source == "redis-pubsub:herald:publish"


@pytest.mark.parametrize(
    "fields",
    [
        {b"json": orjson.dumps(GOOD)},
        {b"event": b"task.created", b"scope": b"user", b"key": b"u1", b"data": b'{"n":1}'},
    ],
)
def test_a_stream_entry_is_the_body_in_one_field_or_its_fields(fields: dict[bytes, bytes]) -> None:
    message = parse_entry(fields, source="s").message
    assert (message.event, message.key, dict(message.data)) == ("task.created", "u1", {"n": 1})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({b"json": orjson.dumps(GOOD), b"event": b"x.y"}, "no other fields"),
        ({b"event": b"task.created", b"scope": b"user", b"key": b"u1", b"data": b"{nope"}, "JSON object"),
        ({b"event": b"\xff", b"scope": b"user"}, "UTF-8"),
        ({b"event": b"task.created", b"scope": b"user", b"key": b"u1"}, "data is required"),
    ],
)
def test_bad_stream_entries_are_refused_with_the_reason(fields: dict[bytes, bytes], reason: str) -> None:
    with pytest.raises(InvalidEvent) as refused:
        parse_entry(fields, source="s")
    assert reason in refused.value.message
