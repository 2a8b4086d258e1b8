"""The lifecycle events' schema and timing bound (src/herald/lifecycle/events.py)."""

from __future__ import annotations

import orjson
import pytest

from herald.lifecycle.events import decode, gone_within, kafka_record

OPENED_FIELDS = {
    b"event": b"connection.opened",
    b"user_id": b"alice",
    b"at_ms": b"1767225600123",
    b"connections": b"1",
    b"node": b"host-1-ab",
}
CLOSED_FIELDS = {
    "event": "connection.closed",
    "user_id": "bob",
    "at_ms": "1767225660123",
    "reason": "node_lost",
    "opened_at_ms": "1767225600123",
    "duration_ms": "60000",
    "node": "host-2-cd",
}


@pytest.mark.parametrize(
    ("entry_id", "fields", "expected"),
    [
        (
            b"1767225600123-0",
            OPENED_FIELDS,
            {
                "id": "1767225600123-0",
                "event": "connection.opened",
                "user_id": "alice",
                "at_ms": 1767225600123,
                "connections": 1,
                "node": "host-1-ab",
            },
        ),
        (
            "1767225661000-3",
            CLOSED_FIELDS,
            {
                "id": "1767225661000-3",
                "event": "connection.closed",
                "user_id": "bob",
                "at_ms": 1767225660123,
                "reason": "node_lost",
                "opened_at_ms": 1767225600123,
                "duration_ms": 60000,
                "node": "host-2-cd",
            },
        ),
        # A user id that looks like a number stays text.
        ("1-0", {"event": "connection.opened", "user_id": "42", "restored": "1"}, {
            "id": "1-0", "event": "connection.opened", "user_id": "42", "restored": 1,
        }),
    ],
)  # fmt: skip
def test_decode(entry_id: bytes | str, fields: dict[bytes, bytes], expected: dict[str, object]) -> None:
    assert decode(entry_id, fields) == expected


def test_a_kafka_record_is_keyed_by_user_and_carries_the_entry_id() -> None:
    key, value, event_id = kafka_record(b"1767225661000-3", CLOSED_FIELDS)
    assert (key, event_id) == (b"bob", "1767225661000-3")
    assert orjson.loads(value) == decode(b"1767225661000-3", CLOSED_FIELDS)


def test_with_several_shards_a_kafka_records_id_names_its_shard() -> None:
    """Two shards' streams may issue one entry id; the records must not look like duplicates."""
    ids = {kafka_record(b"1767225661000-0", CLOSED_FIELDS, shard)[2] for shard in (0, 1, 2)}
    assert ids == {"1767225661000-0@0", "1767225661000-0@1", "1767225661000-0@2"}
    _, value, event_id = kafka_record(b"1767225661000-0", CLOSED_FIELDS, 1)
    assert orjson.loads(value)["id"] == event_id


@pytest.mark.parametrize(
    ("lease", "grace", "sweep", "bound"), [(30, 15, 1, 46), (1, 0.5, 0.1, 1.6), (30, 0, 1, 31)]
)
def test_a_vanished_nodes_users_are_gone_within_lease_grace_and_sweep(
    lease: float, grace: float, sweep: float, bound: float
) -> None:
    assert gone_within(lease_seconds=lease, grace_seconds=grace, sweep_seconds=sweep) == pytest.approx(bound)
