"""``POST /api/v1/events``: 202 with the event's cursor, idempotency keys, and a
status with a JSON ``{code, message}`` body for everything it refuses."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from tests.support.api import Api, ids, unique, until_marker
from tests.support.gateway import GatewayProcess
from tests.support.sse import open_stream

MAX_EVENT_BYTES = 64 * 1024
CURSOR = re.compile(r"\d+-\d+")


def body(**overrides: Any) -> dict[str, Any]:
    return {
        "event": "task.created",
        "scope": "user",
        "key": unique("u"),
        "data": {"task_id": "t1"},
        **overrides,
    }


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()
    assert isinstance(error["code"], str)
    assert isinstance(error["message"], str)
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


async def test_a_published_event_is_accepted_with_its_cursor(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        response = await api.post_event(
            body(key=user, priority="high", coalesce="task:t1", data={"task_id": "t1", "progress": 10}),
            gateway.publisher_token,
        )
        assert response.status_code == 202, response.text
        answer = response.json()
        assert set(answer) == {"id", "duplicate", "coalesced"}
        assert answer["duplicate"] is False
        assert answer["coalesced"] is False  # the first event of its coalesce key goes out at once
        assert CURSOR.fullmatch(answer["id"])
        event = await stream.next()
        assert event.id == answer["id"]
        assert event.event == "task.created"
        assert event.json() == {"task_id": "t1", "progress": 10, "_scope": "user", "_version": "1.0"}


async def test_cursors_increase_with_every_publish(api: Api) -> None:
    cursors = [await api.publish("task.created", "user", unique("u"), {}) for _ in range(20)]
    keys = [tuple(int(part) for part in cursor.split("-")) for cursor in cursors]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


async def test_a_repeated_idempotency_key_publishes_once(gateway: GatewayProcess, api: Api) -> None:
    user, key = unique("u"), unique("idem")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        first = await api.post_event(body(key=user, idempotency_key=key), gateway.publisher_token)
        again = await api.post_event(body(key=user, idempotency_key=key), gateway.publisher_token)
        # The key decides, not the body: a retry with changed data is still the same event.
        changed = await api.post_event(
            body(key=user, idempotency_key=key, data={"task_id": "t2"}), gateway.publisher_token
        )
        other = await api.post_event(body(key=user, idempotency_key=unique("idem")), gateway.publisher_token)
        assert [r.status_code for r in (first, again, changed, other)] == [202] * 4
        assert first.json()["duplicate"] is False
        assert again.json() == {"id": first.json()["id"], "duplicate": True, "coalesced": False}
        assert changed.json() == {"id": first.json()["id"], "duplicate": True, "coalesced": False}
        assert other.json()["duplicate"] is False
        assert other.json()["id"] != first.json()["id"]
        marker = await api.marker()
        received = await until_marker(stream, marker)
        assert ids(received) == [first.json()["id"], other.json()["id"]]
        assert received[0].json()["task_id"] == "t1"


async def test_an_idempotency_key_is_the_publishers_own(gateway: GatewayProcess, api: Api) -> None:
    """Two services that happen to choose one key publish two events: a key only ever
    suppresses a repeat from the publisher (the JWT's ``sub``) that sent it first, on the
    single and the batch endpoint alike."""
    user, key = unique("u"), unique("idem")
    billing = gateway.token("billing-service", publisher=True)
    writer = gateway.token("writer-service", publisher=True)
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        first = await api.post_event(body(key=user, idempotency_key=key), billing)
        second = await api.post_event(body(key=user, idempotency_key=key), writer)
        batched = await api.client.post(
            "/api/v1/events/batch",
            json={"events": [body(key=user, idempotency_key=key)]},
            headers={"authorization": f"Bearer {writer}"},
        )
        repeat = await api.post_event(body(key=user, idempotency_key=key), billing)
        assert (first.json()["duplicate"], second.json()["duplicate"]) == (False, False)
        assert first.json()["id"] != second.json()["id"]
        assert batched.json()["results"][0] == {
            "id": second.json()["id"],
            "duplicate": True,
            "coalesced": False,
        }
        assert repeat.json() == {"id": first.json()["id"], "duplicate": True, "coalesced": False}
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [first.json()["id"], second.json()["id"]]


@pytest.mark.parametrize(
    "event",
    [
        "Bad",
        "task",
        "error",
        "Task.created",
        "task.Created",
        "TASK.CREATED",
        "task.created_now",
        "task..created",
        "task.created.",
        ".created",
        "task.-created",
        "task.created-",
        "task created",
        "task.created\nevent: x",
        "",
        "connection.established",
        "connection.lost",
    ],
)
async def test_a_bad_event_name_is_422(gateway: GatewayProcess, api: Api, event: str) -> None:
    assert_error(await api.post_event(body(event=event), gateway.publisher_token), 422, "EVENT_INVALID")


async def test_an_over_long_event_name_is_422(gateway: GatewayProcess, api: Api) -> None:
    name = "task." + "a" * 200
    assert_error(await api.post_event(body(event=name), gateway.publisher_token), 422)


@pytest.mark.parametrize("event", ["error.quota-exceeded", "task.progress-updated", "a1.b2-c3"])
async def test_good_event_names_are_accepted(gateway: GatewayProcess, api: Api, event: str) -> None:
    response = await api.post_event(body(event=event), gateway.publisher_token)
    assert response.status_code == 202, response.text


@pytest.mark.parametrize(
    "overrides",
    [
        {"scope": "User"},
        {"scope": ""},
        {"scope": "no spaces"},
        {"scope": "x" * 40},
        {"scope": "user", "key": None},
        {"scope": "session", "key": None},
        {"scope": "novel", "key": None},
        {"scope": "user", "key": "a b"},
        {"scope": "user", "key": "a,b"},
        {"scope": "user", "key": ""},
        {"scope": "global", "key": "everyone"},
    ],
    ids=lambda overrides: repr(overrides),
)
async def test_a_bad_scope_or_key_is_422(
    gateway: GatewayProcess, api: Api, overrides: dict[str, Any]
) -> None:
    assert_error(await api.post_event(body(**overrides), gateway.publisher_token), 422, "EVENT_INVALID")


@pytest.mark.parametrize(
    "overrides",
    [
        {"data": [1, 2]},
        {"data": "text"},
        {"data": 3},
        {"data": None},
        {"priority": "urgent"},
        {"priority": "HIGH"},
        {"unknown_field": 1},
        {"idempotency_key": ""},
    ],
    ids=lambda overrides: repr(overrides),
)
async def test_a_malformed_body_is_422(gateway: GatewayProcess, api: Api, overrides: dict[str, Any]) -> None:
    assert_error(await api.post_event(body(**overrides), gateway.publisher_token), 422)


async def test_a_missing_field_or_a_body_that_is_not_json_is_422(gateway: GatewayProcess, api: Api) -> None:
    missing = {k: v for k, v in body().items() if k != "event"}
    assert_error(await api.post_event(missing, gateway.publisher_token), 422)
    response = await api.client.post(
        "/api/v1/events",
        content=b"{not json",
        headers={"authorization": f"Bearer {gateway.publisher_token}", "content-type": "application/json"},
    )
    assert_error(response, 422)


def padded(filler: str, size: int) -> dict[str, Any]:
    """Data whose encoded form (with ``_scope`` and ``_version``) is exactly ``size`` bytes."""
    empty = len(orjson.dumps({"pad": "", "_scope": "user", "_version": "1.0"}))
    width = len(filler.encode())
    assert (size - empty) % width == 0
    data = {"pad": filler * ((size - empty) // width)}
    assert len(orjson.dumps({**data, "_scope": "user", "_version": "1.0"})) == size
    return data


async def test_data_of_exactly_64_kib_is_accepted_and_delivered_whole(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    data = padded("x", MAX_EVENT_BYTES)
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        response = await api.post_event(body(key=user, data=data), gateway.publisher_token)
        assert response.status_code == 202, response.text
        event = await stream.next()
        assert event.id == response.json()["id"]
        assert event.json() == {**data, "_scope": "user", "_version": "1.0"}


@pytest.mark.parametrize("filler", ["x", "é"])
async def test_data_over_64_kib_encoded_is_413(gateway: GatewayProcess, api: Api, filler: str) -> None:
    # "é" is two bytes: the limit counts encoded bytes, not characters.
    data = padded(filler, MAX_EVENT_BYTES + 1)
    error = assert_error(
        await api.post_event(body(data=data), gateway.publisher_token), 413, "EVENT_TOO_LARGE"
    )
    assert error["limit"] == MAX_EVENT_BYTES


async def test_a_request_body_over_the_server_limit_is_413(gateway: GatewayProcess, api: Api) -> None:
    huge = body(data={"pad": "x" * (1024 * 1024)})  # just over the 1 MiB body limit
    response = await api.post_event(huge, gateway.publisher_token)
    assert_error(response, 413)


async def test_publishing_needs_a_publisher(gateway: GatewayProcess, api: Api) -> None:
    assert_error(await api.post_event(body(), None), 401, "AUTH_MISSING")
    assert_error(await api.post_event(body(), "not-a-jwt"), 401, "AUTH_INVALID")
    expired = gateway.token("svc", publisher=True, ttl=-5)
    assert_error(await api.post_event(body(), expired), 401, "AUTH_EXPIRED")
    minted = await api.stream_token(gateway.token("svc", publisher=True))
    assert_error(await api.post_event(body(), minted["token"]), 401, "AUTH_INVALID")
    reader = gateway.token(unique("reader"))
    assert_error(await api.post_event(body(), reader), 403, "PERMISSION_DENIED")


async def test_producers_cannot_set_the_envelope_fields(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        spoofed = {"task_id": "t", "_scope": "global", "_version": "9.9"}
        await api.publish("task.created", "user", user, spoofed)
        assert (await stream.next()).json() == {"task_id": "t", "_scope": "user", "_version": "1.0"}
