"""The TypeScript client's event types come from the payload models, and the committed copy is current."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from herald.events import system
from herald.events.schema import event_payloads, events_json_schema, payload_models
from herald.events.typescript import render_typescript

GENERATED = Path(__file__).resolve().parents[2] / "clients/js/packages/client/src/generated/events.ts"


def test_the_committed_typescript_types_are_current() -> None:
    assert GENERATED.read_text() == render_typescript(events_json_schema()), (
        "the client's generated types are stale: run `make types`"
    )


def test_the_gateway_events_are_typed() -> None:
    events = events_json_schema()["events"]
    assert events[system.CONNECTION_ESTABLISHED] == "ConnectionEstablished"
    assert events[system.SERVER_SHUTDOWN] == "ConnectionClosing"
    assert events[system.AUTH_EXPIRED] == events[system.SLOW_CONSUMER] == "ErrorEvent"


class Shipped(BaseModel):
    """A payload of a module added later."""

    item_id: str
    count: int = 0


def _module_with_a_new_model() -> types.ModuleType:
    module = types.ModuleType("herald.events.extra")
    Shipped.__module__ = module.__name__
    module.Shipped = Shipped  # type: ignore[attr-defined]
    module.BaseModel = BaseModel  # type: ignore[attr-defined]  # imported, not defined: ignored
    module.PAYLOADS = {"order.shipped": Shipped}  # type: ignore[attr-defined]
    module.OTHER = {"not an event name": Shipped}  # type: ignore[attr-defined]
    return module


def test_a_new_module_s_models_and_event_names_are_picked_up_without_registration() -> None:
    module = _module_with_a_new_model()
    assert payload_models([module]) == [Shipped]
    assert event_payloads([module]) == {"order.shipped": Shipped}


def test_two_models_for_one_event_name_are_refused() -> None:
    class Other(BaseModel):
        x: int

    first = types.ModuleType("a")
    first.M = {"order.shipped": Shipped}  # type: ignore[attr-defined]
    second = types.ModuleType("b")
    second.M = {"order.shipped": Other}  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="two payload models"):
        event_payloads([first, second])


def _render(defs: dict[str, Any], events: dict[str, str] | None = None) -> str:
    return render_typescript({"$defs": defs, "events": events or {}, "envelope": ["_scope"]})


@pytest.mark.parametrize(
    ("prop", "expected"),
    [
        ({"type": "string"}, "readonly a: string;"),
        ({"type": "integer"}, "readonly a: number;"),
        ({"type": "boolean"}, "readonly a: boolean;"),
        ({"type": "string", "format": "date-time"}, "readonly a: string;"),
        ({"const": "shutdown"}, 'readonly a: "shutdown";'),
        ({"enum": ["a", "b"], "type": "string"}, 'readonly a: "a" | "b";'),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "readonly a: string | null;"),
        ({"type": "array", "items": {"type": "string"}}, "readonly a: readonly string[];"),
        (
            {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "readonly a: readonly (string | number)[];",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            "readonly a: Readonly<Record<string, number>>;",
        ),
        ({"type": "object"}, "readonly a: Readonly<Record<string, unknown>>;"),
        ({"$ref": "#/$defs/Other"}, "readonly a: Other;"),
        ({}, "readonly a: unknown;"),
    ],
)
def test_schema_constructs_become_typescript(prop: dict[str, Any], expected: str) -> None:
    text = _render({"M": {"type": "object", "properties": {"a": prop}, "required": ["a"]}})
    assert f"  {expected}\n" in text


def test_optional_fields_descriptions_and_odd_keys() -> None:
    text = _render(
        {
            "M": {
                "type": "object",
                "description": "A model.",
                "properties": {"a": {"type": "string", "description": "the a"}, "b-c": {"type": "integer"}},
                "required": ["a"],
            }
        },
        {"m.happened": "M"},
    )
    assert "/**\n * A model.\n */\nexport interface M {\n" in text
    assert "  /**\n   * the a\n   */\n  readonly a: string;\n" in text
    assert '  readonly "b-c"?: number;\n' in text
    assert '  "m.happened": M & HeraldEnvelope;\n' in text
    assert 'export const HERALD_EVENT_NAMES = [\n  "m.happened",\n] as const;' in text


def test_an_unknown_construct_fails_loudly() -> None:
    with pytest.raises(ValueError, match="no TypeScript"):
        _render({"M": {"type": "object", "properties": {"a": {"type": "tuple-ish"}}}})


def test_literal_reasons_reach_the_client() -> None:
    class Closing(BaseModel):
        reason: Literal["shutdown", "bus_reset"]

    text = _render({"Closing": Closing.model_json_schema(mode="serialization")})
    assert 'readonly reason: "shutdown" | "bus_reset";' in text
