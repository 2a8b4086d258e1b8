"""``POST /api/v1/events/subscriptions``: resource subscriptions changed on a live
stream, by its own user only, with refusals and reasons; the replay seam of an
added subscription; a stream on one node changed through another."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.api import Api, api_client, ids, unique, until_marker
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.redis import RedisServer
from tests.support.sse import Stream, open_stream

SUBSCRIPTIONS = "/api/v1/events/subscriptions"


async def change(
    client: httpx.AsyncClient, token: str | None, connection_id: str, **body: Any
) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token is not None else {}
    return await client.post(SUBSCRIPTIONS, json={"connection_id": connection_id, **body}, headers=headers)


async def opened(stream: Stream) -> str:
    hello = await stream.next()
    assert hello.event == "connection.established"
    connection_id: str = hello.json()["connection_id"]
    return connection_id


async def test_add_and_remove_on_a_live_stream_with_refusals(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    n1, n2, n3 = (unique("n") for _ in range(3))
    token = gateway.token(user, resources=[f"novel:{n1}", f"novel:{n2}"])
    async with open_stream(gateway.url, token=token, subscribe=f"novel:{n1}") as stream:
        connection_id = await opened(stream)
        before = await api.publish("chapter.draft-created", "novel", n2, {"n": 0})
        response = await change(
            api.client,
            token,
            connection_id,
            add=[f"novel:{n2}", f"novel:{n3}", "not a key", "user:someone"],
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["connection_id"] == connection_id
        assert body["added"] == [f"novel:{n2}"]
        assert body["removed"] == []
        assert body["subscriptions"] == sorted([f"novel:{n1}", f"novel:{n2}"])
        assert body["live_from"] == before
        refusals = {r["key"]: r["code"] for r in body["refused"]}
        assert refusals == {
            f"novel:{n3}": "PERMISSION_DENIED",
            "not a key": "SUBSCRIPTION_INVALID",
            "user:someone": "SUBSCRIPTION_INVALID",
        }
        assert all(r["message"] for r in body["refused"])

        notice = await stream.next()
        assert notice.event == "connection.subscriptions-changed"
        assert notice.id == before, "nothing was waiting: the notice moves the cursor to the change"
        assert notice.json()["added"] == [f"novel:{n2}"]
        assert notice.json()["live_from"] == before

        live = await api.publish("chapter.draft-created", "novel", n2, {"n": 1})
        await api.publish("chapter.draft-created", "novel", n3, {"n": 1})  # refused: never arrives
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [live]

        response = await change(api.client, token, connection_id, remove=[f"novel:{n1}"])
        assert response.json()["removed"] == [f"novel:{n1}"]
        assert response.json()["subscriptions"] == [f"novel:{n2}"]
        assert (await stream.next()).event == "connection.subscriptions-changed"
        await api.publish("chapter.draft-created", "novel", n1, {"n": 2})
        still = await api.publish("chapter.draft-created", "novel", n2, {"n": 2})
        marker = await api.marker()
        assert ids(await until_marker(stream, marker)) == [still]


async def test_only_the_streams_own_user_may_change_it(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        connection_id = await opened(stream)
        intruder = gateway.token(unique("other"), resources=["novel:*"])
        response = await change(api.client, intruder, connection_id, add=["novel:1"])
        assert response.status_code == 404
        assert response.json()["code"] == "CONNECTION_NOT_FOUND"
        response = await change(api.client, None, connection_id, add=["novel:1"])
        assert (response.status_code, response.json()["code"]) == (401, "AUTH_MISSING")
        response = await change(api.client, gateway.token(user), "no-such-stream", add=[])
        assert response.status_code == 404
        response = await api.client.post(SUBSCRIPTIONS, json={"add": []})
        assert response.status_code == 422
        # The stream was not touched.
        marker = await api.marker()
        assert [e.event for e in await until_marker(stream, marker)] == []


async def test_a_reconnect_with_the_new_list_resumes_without_loss_or_duplicate(
    gateway: GatewayProcess, api: Api
) -> None:
    user, novel = unique("u"), unique("n")
    token = gateway.token(user, resources=["novel:*"])
    async with open_stream(gateway.url, token=token) as stream:
        connection_id = await opened(stream)
        await api.publish("chapter.draft-created", "novel", novel, {"n": 0})  # before: not the client's
        response = await change(api.client, token, connection_id, add=[f"novel:{novel}"])
        assert response.status_code == 200
        await stream.next()  # the notice
        received = [await api.publish("chapter.draft-created", "novel", novel, {"n": n}) for n in (1, 2)]
        assert ids(await stream.take(2)) == received
        cursor = stream.last_event_id
    missed = [await api.publish("chapter.draft-created", "novel", novel, {"n": n}) for n in (3, 4)]
    missed.append(await api.publish("task.created", "user", user, {}))
    async with open_stream(
        gateway.url, token=token, subscribe=f"novel:{novel}", last_event_id=cursor
    ) as again:
        hello = (await again.next()).json()
        assert hello["recovered"] is True
        assert hello["subscriptions"] == [f"novel:{novel}"]
        marker = await api.marker()
        assert ids(await until_marker(again, marker)) == missed


@pytest.mark.parametrize("via", ["the node holding it", "another node"])
async def test_a_stream_is_changed_through_any_node(redis_server: RedisServer, via: str) -> None:
    env = cluster_env(redis_server, HERALD_HEARTBEAT_SECONDS="30")
    with running_cluster(2, env) as (holder, other):
        user, novel = unique("u"), unique("n")
        token = holder.token(user, resources=[f"novel:{novel}"])
        target = holder if via == "the node holding it" else other
        async with (
            open_stream(holder.url, token=token) as stream,
            api_client(target) as api,
        ):
            connection_id = await opened(stream)
            response = await change(api.client, token, connection_id, add=[f"novel:{novel}", "novel:nope"])
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["added"] == [f"novel:{novel}"]
            assert [r["code"] for r in body["refused"]] == ["PERMISSION_DENIED"]
            assert (await stream.next()).event == "connection.subscriptions-changed"
            live = await api.publish("chapter.draft-created", "novel", novel, {})
            marker = await api.marker()
            assert ids(await until_marker(stream, marker)) == [live]
            # Not found anywhere: answered promptly, not after the ask's timeout.
            response = await change(api.client, holder.token(unique("x")), connection_id, add=[])
            assert response.status_code == 404
            assert response.elapsed.total_seconds() < 1.5
