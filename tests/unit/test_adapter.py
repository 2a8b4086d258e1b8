"""The adapter: the default catalogue record by record, transforms, poison records, mapping files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from herald.adapter import Adapter, MappingInvalid, PoisonRecord, default_mapping, load_mapping, parse_mapping
from herald.adapter.values import iso8601, render, summary
from herald.events.catalogue import CATALOGUE
from herald.events.system import ErrorEvent
from herald.types import Priority
from tests.support.catalogue import CASES, NOISE, Case

DEFAULT = Adapter(default_mapping())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.event_type)
def test_every_catalogue_type_becomes_its_browser_event(case: Case) -> None:
    message = DEFAULT.map(case.record, source="kafka:domain-events:0:7")
    assert message is not None
    assert (message.event, message.scope, message.key) == (case.event, case.scope, case.key)
    assert dict(message.data) == case.data
    assert message.priority is Priority.parse(case.priority)
    assert message.coalesce == case.coalesce
    assert message.source == "kafka:domain-events:0:7"
    assert not set(NOISE) & set(message.data), "internal fields must be dropped"


def test_the_default_mapping_covers_the_catalogue_and_keeps_exactly_the_models_fields() -> None:
    table = default_mapping()
    assert len(table) == 21
    assert {rule.event for rule in table.rules.values()} == set(CATALOGUE)
    assert {case.event_type for case in CASES} == set(table.rules)
    for rule in table.rules.values():
        model = CATALOGUE[rule.event]
        if model is ErrorEvent:
            assert rule.error is not None
        else:
            assert set(rule.fields) | set(rule.urls) == set(model.model_fields), rule.source_type


def test_a_type_without_a_rule_is_not_mapped() -> None:
    assert DEFAULT.map({"event_type": "InvoicePaidEvent", "user_id": "u"}) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (None, "no value"),
        (b'{"user_id": "u"}', "'event_type'"),
        (b'{"event_type": 7}', "'event_type'"),
        (b'{"event_type": "TaskCreatedEvent", "task_id": "t", "task_type": "x"}', "routing key 'user_id'"),
        (b'{"event_type": "TaskCreatedEvent", "user_id": {"a": 1}, "task_id": "t", "task_type": "x"}',
         "string or an integer"),
        (b'{"event_type": "TaskCreatedEvent", "user_id": "a b", "task_id": "t", "task_type": "x"}',
         "without whitespace"),
        (b'{"event_type": "TaskProgressUpdateEvent", "user_id": "u", "task_id": "t", "progress": 150}',
         "progress"),
        (b'{"event_type": "TaskProgressUpdateEvent", "user_id": "u", "progress": 5}', "task_id"),
        (b'{"event_type": "NovelCreatedEvent", "user_id": "u", "id": "n", "title": "t", "status": "s",'
         b' "created_at": "yesterday"}', "ISO 8601"),
        (b'{"event_type": "TaskFailedEvent", "user_id": "u", "error_message": {"nested": 1}}', "text"),
    ],
)  # fmt: skip
def test_poison_records_say_why(raw: bytes | None, reason: str) -> None:
    with pytest.raises(PoisonRecord) as caught:
        DEFAULT.map_raw(raw)
    assert reason in caught.value.message


def test_an_integer_routing_key_becomes_text() -> None:
    record = {"event_type": "TaskCreatedEvent", "user_id": 42, "task_id": "t", "task_type": "x"}
    message = DEFAULT.map(record)
    assert message is not None
    assert message.key == "42"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1767225600, "2026-01-01T00:00:00Z"),
        (1767225600.25, "2026-01-01T00:00:00.250Z"),
        (1767225600123, "2026-01-01T00:00:00.123Z"),
        ("2026-01-01T00:00:00", "2026-01-01T00:00:00Z"),
        ("2026-01-01T08:00:00+08:00", "2026-01-01T00:00:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
    ],
)
def test_timestamps_become_iso_8601_in_utc(value: Any, expected: str) -> None:
    assert iso8601(value) == expected


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [("short", 10, "short"), ("abcdefghij", 5, "abcd…"), ({"a": 1}, 50, '{"a":1}'), ("exact", 5, "exact")],
)
def test_summaries_are_cut_with_an_ellipsis(value: Any, limit: int, expected: str) -> None:
    assert summary(value, limit) == expected


def test_url_templates_percent_encode_values() -> None:
    record = {"payload": {"id": "a/b c"}, "n": 3}
    assert render("https://x/{payload.id}/{n}", record, url=True) == "https://x/a%2Fb%20c/3"
    assert render("task:{n}", record) == "task:3"


CUSTOM = """
format = 1
type_field = "meta.type"
payload_path = "payload"
extends = "none"

[rules.DocumentPublished]
event = "document.published"
scope = "team"
key = "team"
fields = ["title", "published_at", "body"]
from = { title = "doc.title" }
timestamps = ["published_at"]
summaries = { body = 10 }
urls = { link = "https://docs.example/{doc.id}" }
priority = "low"
coalesce = "doc:{doc.id}"
"""


def test_a_custom_mapping_reads_paths_envelopes_and_templates() -> None:
    adapter = Adapter(parse_mapping(CUSTOM))
    record = {
        "meta": {"type": "DocumentPublished"},
        "team": "top",  # found at the top level when not under payload
        "payload": {"doc": {"id": "d 1", "title": "Plan"}, "published_at": 0, "body": "x" * 50},
    }
    message = adapter.map(record)
    assert message is not None
    assert (message.event, message.scope, message.key) == ("document.published", "team", "top")
    assert dict(message.data) == {
        "title": "Plan",
        "published_at": "1970-01-01T00:00:00Z",
        "body": "xxxxxxxxx…",
        "link": "https://docs.example/d%201",
    }
    assert message.priority is Priority.LOW
    assert message.coalesce == "doc:d 1"


def test_a_file_extending_the_default_replaces_and_adds_rules(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(
        'extends = "default"\n'
        "[rules.TaskCreatedEvent]\n"
        'event = "task.created"\nscope = "session"\nkey = "session_id"\n'
        "[rules.InvoicePaidEvent]\n"
        'event = "invoice.paid"\nscope = "user"\nkey = "user_id"\nfields = ["invoice_id"]\n'
    )
    table = load_mapping(path)
    assert len(table) == 22
    adapter = Adapter(table)
    task = adapter.map(
        {"event_type": "TaskCreatedEvent", "session_id": "s", "task_id": "t", "task_type": "x"}
    )
    assert task is not None
    assert (task.scope, task.key) == ("session", "s")
    invoice = adapter.map({"event_type": "InvoicePaidEvent", "user_id": "u", "invoice_id": "i", "amount": 3})
    assert invoice is not None
    assert dict(invoice.data) == {"invoice_id": "i"}


A = '[rules.A]\nevent = "a.b"\n'
GLOBAL_X = 'scope = "global"\nfields = ["x"]\n'
TASK = '[rules.A]\nevent = "task.created"\nscope = "user"\nkey = "u"\n'
ERROR = '[rules.A]\nevent = "error.a-failed"\nscope = "global"\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (A + 'scope = "user"\nkey = \n', "mapping.toml:4: not valid TOML"),
        (A + 'scope = "user"\nfields = ["x"]\n', "mapping.toml:1: rule A: scope 'user' needs a key"),
        ('\n[rules.A]\nevent = "Bad"\n' + GLOBAL_X, "mapping.toml:3: rule A: event name 'Bad'"),
        (
            A + 'scope = "global"\nkey = "k"\nfields = ["x"]\n',
            "mapping.toml:4: rule A: a global event has no key",
        ),
        (A + GLOBAL_X + 'prority = "high"\n', "mapping.toml:5: rule A: unknown key 'prority'"),
        (A + GLOBAL_X + 'priority = "urgent"\n', "mapping.toml:5: rule A: priority must be"),
        (A + GLOBAL_X + 'timestamps = ["y"]\n', "rule A: 'y' is transformed but not kept"),
        (A + 'scope = "global"\n', "rule A: keeps no field"),
        (A + GLOBAL_X + 'coalesce = "fixed"\n', "mapping.toml:5: rule A: coalesce must be a template"),
        (ERROR + 'fields = ["x"]\n', "rule A: an error.* event needs an 'error' table"),
        (
            ERROR + 'error = { level = "fatal", code = "c", message = "m" }\n',
            "mapping.toml:4: rule A: error level",
        ),
        ('[rules.A]\nevent = "connection.established"\n' + GLOBAL_X, "gateway's own event names"),
        (TASK + 'fields = ["task_id", "colour"]\n', "'colour' is not a field of task.created"),
        (TASK + 'fields = ["task_id"]\n', "task.created requires 'task_type'"),
        ("typo = 1\n", "mapping.toml:1: unknown setting 'typo'"),
        ('extends = "everything"\n', "mapping.toml:1: extends must be"),
    ],
)
def test_mapping_mistakes_name_the_line_and_the_rule(text: str, expected: str) -> None:
    with pytest.raises(MappingInvalid) as caught:
        parse_mapping(text, base=default_mapping())
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_every_mistake_is_reported_at_once() -> None:
    text = A + 'scope = "user"\nfields = ["x"]\n' + '[rules.B]\nevent = "Bad"\n' + GLOBAL_X
    with pytest.raises(MappingInvalid) as caught:
        parse_mapping(text)
    assert len(caught.value.problems) == 2
    assert caught.value.problems[0].startswith("mapping.toml:1: rule A")
    assert caught.value.problems[1].startswith("mapping.toml:6: rule B")


def test_a_missing_mapping_file_is_a_mapping_error(tmp_path: Path) -> None:
    with pytest.raises(MappingInvalid, match="cannot be read"):
        load_mapping(tmp_path / "absent.toml")


def test_a_rule_may_retain_its_events_per_coalesce_key() -> None:
    """D33: ``retain`` (and ``retain_seconds``) in a rule, as a publish's; it needs ``coalesce``."""
    adapter = Adapter(parse_mapping(CUSTOM + "retain = true\nretain_seconds = 3600\n"))
    record = {"meta": {"type": "DocumentPublished"}, "team": "top", "payload": {"doc": {"id": "d"}}}
    message = adapter.map({**record, "payload": {**record["payload"], "published_at": 0, "body": ""}})
    assert message is not None
    assert (message.coalesce, message.retain) == ("doc:d", 3600)
    defaulted = Adapter(parse_mapping(CUSTOM + "retain = true\n")).map(
        {**record, "payload": {**record["payload"], "published_at": 0, "body": ""}}
    )
    assert defaulted is not None
    assert defaulted.retain == 0  # the bus's RETAIN_SECONDS
    without_coalesce = CUSTOM.replace('coalesce = "doc:{doc.id}"\n', "") + "retain = true\n"
    with pytest.raises(MappingInvalid, match="retain needs a coalesce template"):
        parse_mapping(without_coalesce)
    with pytest.raises(MappingInvalid, match="retain_seconds needs retain = true"):
        parse_mapping(CUSTOM + "retain_seconds = 10\n")
