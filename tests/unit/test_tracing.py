"""Trace context parsing, when tracing is on, and the traced frame variant (D30)."""

from __future__ import annotations

import dataclasses
import sys

import orjson
import pytest
import structlog
import structlog.testing

from herald.bus.base import BusRecord
from herald.bus.redis_entry import entry_fields, pairs, record_from_entry
from herald.events.message import SSEMessage, build_message, carrying, encode_data, with_traceparent
from herald.manager.connection import traced_frame
from herald.obs.tracing import from_environment, parse_traceparent, trace_id_of, tracing_wanted
from herald.wire.cursor import Cursor
from herald.wire.encoder import event_frame

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (VALID, VALID),
        (VALID.encode(), VALID),
        (f"  {VALID} ", VALID),
        # A later version may append fields: a version-00 reader takes the first four.
        ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", VALID),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", VALID[:-2] + "00"),
        (None, None),
        ("", None),
        ("garbage", None),
        (VALID + "-more", None),  # version 00 has exactly four fields
        (VALID.upper(), None),
        ("ff" + VALID[2:], None),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", None),
        (b"\xff\xfe", None),
        ("x" * 10_000, None),
        (42, None),
    ],
)
def test_a_traceparent_is_taken_when_valid_and_ignored_otherwise(value: object, expected: str | None) -> None:
    assert parse_traceparent(value) == expected  # type: ignore[arg-type]


def test_messages_carry_a_valid_traceparent_and_drop_a_malformed_one() -> None:
    message = build_message(event="task.created", scope="user", key="u", data={}, traceparent=VALID)
    assert message.traceparent == VALID
    assert (
        build_message(event="task.created", scope="user", key="u", data={}, traceparent="no").traceparent
        is None
    )
    bare = build_message(event="task.created", scope="user", key="u", data={})
    assert with_traceparent(bare, VALID.encode()).traceparent == VALID
    assert with_traceparent(bare, b"nonsense") is bare
    # The trace context is never part of the data a browser gets.
    assert b"traceparent" not in encode_data(message, 65536)


def test_the_redis_entry_keeps_the_traceparent_as_an_optional_field() -> None:
    message = build_message(event="task.created", scope="user", key="u", data={"n": 1}, traceparent=VALID)
    data_json = encode_data(message, 65536)
    flat = entry_fields(message, data_json)
    assert "traceparent" in flat
    fields = pairs([item.encode() if isinstance(item, str) else item for item in flat])
    record = record_from_entry(b"5-1", fields)
    assert record.message == message
    assert record_from_entry(b"5-1", {**fields, b"traceparent": b"broken"}).message.traceparent is None
    untraced = {name: value for name, value in fields.items() if name != b"traceparent"}
    assert record_from_entry(b"5-1", {**untraced, b"next_version": b"x"}).frame == record.frame


def test_the_traced_frame_adds_the_trace_id_to_the_data_once() -> None:
    message = build_message(event="task.created", scope="user", key="u", data={"n": 1}, traceparent=VALID)
    data_json = encode_data(message, 65536)
    record = BusRecord(Cursor(5, 1), message, event_frame("5-1", message.event, data_json))
    frame = traced_frame(record)
    assert traced_frame(record) is frame, "built once, then shared"
    assert record.frame == event_frame("5-1", message.event, data_json), "the shared frame is untouched"
    head, _, data = frame.rstrip(b"\n").rpartition(b"data: ")
    assert head == b"id: 5-1\nevent: task.created\n"
    assert orjson.loads(data) == {"n": 1, "_scope": "user", "_version": "1.0", "trace_id": trace_id_of(VALID)}
    untraced = BusRecord(
        Cursor(5, 2), build_message(event="task.created", scope="user", key="u", data={}), b"x"
    )
    assert traced_frame(untraced) == b"x"


def test_tracing_is_on_only_with_an_otlp_endpoint() -> None:
    assert not tracing_wanted({})
    assert not tracing_wanted({"OTEL_SERVICE_NAME": "herald"})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing_wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"})
    assert not tracing_wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert not tracing_wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}
    )
    assert from_environment("node", {}) is None


def test_carrying_a_trace_keeps_every_other_field_of_the_message() -> None:
    """``carrying`` builds the message field by field (``dataclasses.replace`` costs more):
    a field added to ``SSEMessage`` must be added there too, or a traced event loses it."""
    values = {field.name: object() for field in dataclasses.fields(SSEMessage)}
    message = SSEMessage(**values)
    carried = carrying(message, VALID)
    for name, value in values.items():
        assert getattr(carried, name) is (VALID if name == "traceparent" else value), name


def test_an_endpoint_without_the_sdk_installed_says_so_and_runs_untraced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The tracing extra missing: its modules cannot be imported.
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with structlog.testing.capture_logs() as logs:
        tracing = from_environment("node", {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert tracing is None
    [entry] = [entry for entry in logs if entry["event"] == "tracing_unavailable"]
    assert entry["log_level"] == "error"
    assert "herald-gateway[tracing]" in entry["reason"]
