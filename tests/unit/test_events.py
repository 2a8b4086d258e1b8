from __future__ import annotations

import orjson
import pytest

from herald.errors import EventTooLarge, InvalidEvent
from herald.events.message import build_message, encode_data
from herald.events.names import check_event_name
from herald.types import Priority


@pytest.mark.parametrize(
    "name",
    ["task.progress-updated", "novel.created", "worldview.entry-created", "error.task-failed", "a1.b2-c3"],
)
def test_valid_event_names(name: str) -> None:
    assert check_event_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "error",
        "task",
        "Task.created",
        "task.Created",
        "task.progress_updated",
        "task..created",
        "task.created.",
        "task.-created",
        "task.created-",
        "task created",
        "task.created\n",
        "1task.created",
        "x." + "a" * 100,
        "",
    ],
)
def test_invalid_event_names(name: str) -> None:
    with pytest.raises(InvalidEvent):
        check_event_name(name)


@pytest.mark.parametrize(
    "name", ["connection.established", "connection.opened", "error.slow-consumer", "error.auth-expired"]
)
def test_the_gateways_own_events_are_reserved(name: str) -> None:
    with pytest.raises(InvalidEvent):
        check_event_name(name)
    assert check_event_name(name, internal=True) == name


@pytest.mark.parametrize(
    ("scope", "key"),
    [
        ("user", None),
        ("user", ""),
        ("user", "a b"),
        ("user", "a,b"),
        ("global", "x"),
        ("Novel", "1"),
        ("", "1"),
    ],
)
def test_scope_and_key_rules(scope: str, key: str | None) -> None:
    with pytest.raises(InvalidEvent):
        build_message(event="task.created", scope=scope, key=key, data={})


def test_build_message_accepts_resource_scopes_and_priorities() -> None:
    message = build_message(
        event="novel.status-changed", scope="novel", key="42", data={"a": 1}, priority="low"
    )
    assert message.priority is Priority.LOW
    assert build_message(event="system.notification", scope="global", key=None, data={}).key is None


def test_data_must_be_an_object() -> None:
    with pytest.raises(InvalidEvent):
        build_message(event="task.created", scope="user", key="u", data=[1, 2])


def test_encoded_data_carries_scope_and_version_and_one_line() -> None:
    message = build_message(event="task.created", scope="user", key="u", data={"text": "a\nb\r\nc"})
    body = encode_data(message, 1024)
    assert b"\n" not in body
    assert b"\r" not in body
    assert orjson.loads(body) == {"text": "a\nb\r\nc", "_scope": "user", "_version": "1.0"}


def test_encoded_data_over_the_limit_is_refused_at_the_limit_accepted() -> None:
    message = build_message(event="task.created", scope="user", key="u", data={"blob": ""})
    overhead = len(encode_data(message, 10**6))
    fits = build_message(event="task.created", scope="user", key="u", data={"blob": "x" * (1000 - overhead)})
    assert len(encode_data(fits, 1000)) == 1000
    too_big = build_message(
        event="task.created", scope="user", key="u", data={"blob": "x" * (1001 - overhead)}
    )
    with pytest.raises(EventTooLarge):
        encode_data(too_big, 1000)
