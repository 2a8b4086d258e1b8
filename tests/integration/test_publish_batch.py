"""``POST /api/v1/events/batch``: up to 500 events in one request, one result per event in
order; an invalid event fails alone; 200, 207 and 503 as docs/api.md defines them; the same
results on the memory bus, a Redis bus shared by two nodes, and through the coalesce throttle."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from tests.support.api import Api, api_client, ids, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.redis import running_redis
from tests.support.sse import open_stream

BATCH = "/api/v1/events/batch"
CURSOR = re.compile(r"\d+-\d+")


def event(user: str, n: int, **extra: Any) -> dict[str, Any]:
    return {"event": "task.progress-updated", "scope": "user", "key": user, "data": {"n": n}, **extra}


async def post_batch(api: Api, events: list[Any] | Any, token: str | None = None) -> httpx.Response:
    token = api.gateway.publisher_token if token is None else token
    payload = events if isinstance(events, bytes) else orjson.dumps({"events": events})
    return await api.client.post(
        BATCH,
        content=payload,
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, seq = cursor.split("-")
    return int(ms), int(seq)


async def test_a_batch_is_appended_in_order_and_reaches_the_stream_so(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        response = await post_batch(api, [event(user, n) for n in range(100)])
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["accepted"] == 100
        assert answer["failed"] == 0
        results = answer["results"]
        assert all(set(r) == {"id", "duplicate", "coalesced"} for r in results)
        cursors = [r["id"] for r in results]
        assert all(CURSOR.fullmatch(c) for c in cursors)
        assert sorted(cursors, key=cursor_key) == cursors
        assert len(set(cursors)) == 100
        marker = await api.marker()
        received = await until_marker(stream, marker)
        assert ids(received) == cursors
        assert [e.json()["n"] for e in received] == list(range(100))


async def test_an_invalid_event_fails_alone_and_the_others_go_out_in_order(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    idem = unique("idem")
    events: list[Any] = [
        event(user, 0),
        event(user, 1, event="Not A Name"),  # refused by the name rules
        event(user, 2, data={"blob": "x" * (70 * 1024)}),  # over the 64 KiB limit
        event(user, 3, idempotency_key=idem),
        "not an object",
        event(user, 5, surprise=True),  # a field the API does not know
        event(user, 6, idempotency_key=idem),  # the same key again: a duplicate of item 3
        event(user, 7, scope="user", key=None),  # a user event needs its key
        event(user, 8),
    ]
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        response = await post_batch(api, events)
        assert response.status_code == 207, response.text
        answer = response.json()
        results = answer["results"]
        assert len(results) == len(events)
        codes = [r["error"]["code"] if "error" in r else None for r in results]
        assert codes == [
            None,
            "EVENT_INVALID",
            "EVENT_TOO_LARGE",
            None,
            "EVENT_INVALID",
            "EVENT_INVALID",
            None,
            "EVENT_INVALID",
            None,
        ]
        for result in results:
            if "error" in result:
                assert result["error"]["retriable"] is False
                assert result["error"]["message"]
                assert "id" not in result
        assert results[6] == {"id": results[3]["id"], "duplicate": True, "coalesced": False}
        assert answer["accepted"] == 4
        assert answer["failed"] == 5
        marker = await api.marker()
        received = await until_marker(stream, marker)
        assert [e.json()["n"] for e in received] == [0, 3, 8]
        assert ids(received) == [results[i]["id"] for i in (0, 3, 8)]


async def test_a_batch_the_body_of_which_is_wrong_is_refused_whole(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        await stream.next()
        cases: list[tuple[bytes, int, str]] = [
            (b"{not json", 422, "REQUEST_INVALID"),
            (orjson.dumps([event(user, 0)]), 422, "REQUEST_INVALID"),
            (orjson.dumps({"events": []}), 422, "REQUEST_INVALID"),
            (orjson.dumps({"events": event(user, 0)}), 422, "REQUEST_INVALID"),
            (orjson.dumps({"events": [event(user, 0)], "more": 1}), 422, "REQUEST_INVALID"),
            (orjson.dumps({"events": [event(user, n) for n in range(501)]}), 413, "BATCH_TOO_LARGE"),
            (
                orjson.dumps({"events": [event(user, 0, data={"pad": "x" * (1024 * 1024)})]}),
                413,
                "BODY_TOO_LARGE",
            ),
        ]
        for payload, status, code in cases:
            response = await post_batch(api, payload)
            assert response.status_code == status, (payload[:60], response.text)
            assert response.json()["code"] == code
            assert response.json()["message"]
        unauthenticated = await api.client.post(BATCH, json={"events": [event(user, 0)]})
        assert unauthenticated.status_code == 401
        not_publisher = await post_batch(api, [event(user, 0)], token=gateway.token(user))
        assert not_publisher.status_code == 403
        assert not_publisher.json()["code"] == "PERMISSION_DENIED"
        marker = await api.marker()
        assert await until_marker(stream, marker) == [], "nothing of a refused batch went out"


async def test_on_a_shared_redis_a_batch_reaches_every_node_and_a_retry_is_a_duplicate() -> None:
    with running_redis() as redis, running_cluster(2, cluster_env(redis)) as nodes:
        user = unique("u")
        async with (
            api_client(nodes[0]) as a,
            api_client(nodes[1]) as b,
            open_stream(nodes[1].url, token=nodes[1].token(user)) as on_b,
        ):
            await on_b.next()
            events = [event(user, n, idempotency_key=f"{user}-{n}") for n in range(200)]
            first = await post_batch(a, events)
            assert first.status_code == 200, first.text
            cursors = [r["id"] for r in first.json()["results"]]
            again = await post_batch(b, events)
            assert again.status_code == 200, again.text
            assert [r["id"] for r in again.json()["results"]] == cursors
            assert all(r["duplicate"] for r in again.json()["results"])
            marker = await b.marker()
            received = await until_marker(on_b, marker)
            assert ids(received) == cursors


async def test_with_the_bus_away_the_batch_answers_503_and_each_item_is_retriable() -> None:
    with (
        running_redis() as redis,
        running_cluster(1, cluster_env(redis, HERALD_REDIS_TIMEOUT_SECONDS="0.5")) as nodes,
    ):
        user = unique("u")
        async with api_client(nodes[0]) as api:
            events = [event(user, n, idempotency_key=f"{user}-{n}") for n in range(10)]
            redis.stop(save=True)
            response = await post_batch(api, [*events, event(user, 99, event="Bad Name")])
            assert response.status_code == 207, response.text
            results = response.json()["results"]
            assert {r["error"]["code"] for r in results[:10]} == {"BUS_UNAVAILABLE"}
            assert all(r["error"]["retriable"] for r in results[:10])
            assert results[10]["error"]["code"] == "EVENT_INVALID"
            response = await post_batch(api, events)
            assert response.status_code == 503, response.text
            assert int(response.headers["retry-after"]) >= 1
            assert response.json()["failed"] == 10
            redis.start()
            answers: list[httpx.Response] = []

            async def taken() -> bool:
                answers.append(await post_batch(api, events))
                return answers[-1].status_code == 200

            await wait_until(taken, timeout=10, what="the batch taken once Redis is back")
            results = answers[-1].json()["results"]
            assert len({r["id"] for r in results}) == 10
            assert not any(r["duplicate"] for r in results), "nothing was appended while Redis was away"


@pytest.fixture(scope="module")
def throttled() -> Any:
    with running_gateway(
        {"HERALD_HEARTBEAT_SECONDS": "0.5", "HERALD_COALESCE_INTERVAL_SECONDS": "0.4"}
    ) as gateway:
        yield gateway


async def test_coalesced_events_in_a_batch_pass_the_throttle_and_nothing_overtakes_them(
    throttled: GatewayProcess,
) -> None:
    user = unique("u")

    def progress(n: int) -> dict[str, Any]:
        return event(user, n, coalesce="task:t1")

    done = {"event": "task.status-changed", "scope": "user", "key": user, "data": {"n": 9}}
    async with (
        api_client(throttled) as api,
        open_stream(throttled.url, token=throttled.token(user)) as stream,
    ):
        await stream.next()
        response = await post_batch(api, [progress(1), progress(2), progress(3), done])
        assert response.status_code == 200, response.text
        first, second, third, status = response.json()["results"]
        assert first["coalesced"] is False
        assert second == {"id": third["id"], "duplicate": False, "coalesced": True}
        assert third["coalesced"] is False
        assert cursor_key(first["id"]) < cursor_key(third["id"]) < cursor_key(status["id"])
        marker = await api.marker()
        received = await until_marker(stream, marker)
        assert [e.json()["n"] for e in received] == [1, 3, 9], "the status never overtakes progress"
        assert ids(received) == [first["id"], third["id"], status["id"]]
