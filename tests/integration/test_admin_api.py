"""The admin console's endpoints (issue 14, D31): nodes, busiest channels, a user's streams
and events across the cluster, disconnecting a user, draining a chosen node. On one node
(the memory bus), on two nodes sharing a real Redis, and on two workers of one server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from tests.support.api import Api, api_client, unique, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Stream, open_stream

ADMIN = "/api/v1/admin"


def admin_headers(gateway: GatewayProcess, sub: str = "ops-carol") -> dict[str, str]:
    return {"authorization": f"Bearer {gateway.token(sub, admin=True)}"}


async def get(gateway: GatewayProcess, path: str, *, url: str | None = None) -> Any:
    async with httpx.AsyncClient(base_url=url or gateway.url, timeout=10) as client:
        answer = await client.get(path, headers=admin_headers(gateway))
    assert answer.status_code == 200, answer.text
    return answer.json()


async def closes_with(stream: Stream, reason: str) -> dict[str, Any]:
    """The stream's ``connection.closing`` (after any events), then its end."""
    while True:
        event = await stream.next(timeout=10)
        if event.event == "connection.closing":
            break
    body: dict[str, Any] = event.json()
    assert body["reason"] == reason, body
    with pytest.raises(EOFError):
        await stream.next()
    return body


# --- one node


async def test_every_admin_endpoint_needs_the_admin_role_and_the_page_does_not(
    gateway: GatewayProcess,
) -> None:
    user = unique("u")
    calls = [
        ("GET", f"{ADMIN}/nodes"),
        ("GET", f"{ADMIN}/channels?top=5"),
        ("GET", f"{ADMIN}/users/{user}/streams"),
        ("DELETE", f"{ADMIN}/users/{user}/streams"),
        ("GET", f"{ADMIN}/users/{user}/events"),
        ("POST", f"{ADMIN}/nodes/some-node/drain"),
    ]
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        for method, path in calls:
            missing = await client.request(method, path)
            assert (missing.status_code, missing.json()["code"]) == (401, "AUTH_MISSING"), path
            plain = await client.request(
                method, path, headers={"authorization": f"Bearer {gateway.token(user)}"}
            )
            assert (plain.status_code, plain.json()["code"]) == (403, "PERMISSION_DENIED"), path
        page = await client.get("/admin")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        assert "Herald · admin console" in page.text
        bad = await client.get(f"{ADMIN}/users/a%20b/streams", headers=admin_headers(gateway))
        assert bad.status_code == 422


async def test_one_node_lists_itself_a_users_streams_and_the_events_sent_to_them(
    gateway: GatewayProcess, api: Api
) -> None:
    user, novel = unique("u"), unique("n")
    token = gateway.token(user, resources=[f"novel:{novel}"])
    opened = time.time()
    async with (
        open_stream(gateway.url, token=token) as plain,
        open_stream(gateway.url, token=token, subscribe=f"novel:{novel}") as reader,
    ):
        first = await api.publish("task.created", "user", user, {"n": 1})
        chapter = await api.publish("chapter.updated", "novel", novel, {"n": 2})
        for stream in (plain, reader):
            await stream.until(lambda e: e.id == first)
        await reader.until(lambda e: e.id == chapter)

        nodes = await get(gateway, f"{ADMIN}/nodes")
        assert len(nodes["nodes"]) == 1
        node = nodes["nodes"][0]
        assert node["node"] == nodes["answered_by"]
        assert (node["ready"], node["draining"]) == (True, False)
        assert node["streams"] >= 2
        assert node["users"] >= 1
        assert node["version"]
        assert node["started_at"] < time.time()

        found = await get(gateway, f"{ADMIN}/users/{user}/streams")
        streams = found["streams"]
        assert [s["subscriptions"] for s in streams] == [[], [f"novel:{novel}"]]
        assert {s["node"] for s in streams} == {node["node"]}
        assert [s["last_event_id"] for s in streams] == [first, chapter]
        assert all(opened - 1 < s["since"] <= time.time() for s in streams)
        assert all(s["state"] == "live" for s in streams)

        events = await get(gateway, f"{ADMIN}/users/{user}/events")
        assert [(e["id"], e["event"], e["channel"]) for e in events["events"]] == [
            (chapter, "chapter.updated", f"novel:{novel}"),
            (first, "task.created", f"user:{user}"),
        ]
        # Events in and out per second follow the traffic (sampled each second).
        for n in range(3):
            await api.publish("task.created", "user", user, {"n": n})

        async def rates_seen() -> bool:
            current = (await get(gateway, f"{ADMIN}/nodes"))["nodes"][0]
            return bool(current["events_in_per_second"] > 0 and current["events_out_per_second"] > 0)

        await wait_until(rates_seen, timeout=5, what="events in and out per second")


async def test_the_busiest_channels_are_counted_per_event_with_their_deliveries(
    gateway: GatewayProcess, api: Api
) -> None:
    novel = unique("n")
    token = gateway.token(unique("u"), resources=[f"novel:{novel}"])
    async with (
        open_stream(gateway.url, token=token, subscribe=f"novel:{novel}") as a,
        open_stream(gateway.url, token=token, subscribe=f"novel:{novel}") as b,
    ):
        cursors = [await api.publish("chapter.updated", "novel", novel, {"n": n}) for n in range(40)]
        for stream in (a, b):
            await stream.until(lambda e: e.id == cursors[-1])
        body = await get(gateway, f"{ADMIN}/channels?top=10")
    assert body["window_seconds"] >= 10
    # The module's other tests share the node and may have published more within the minute.
    ours = [c for c in body["channels"] if c["channel"] == f"novel:{novel}"]
    assert [(c["events"], c["deliveries"]) for c in ours] == [(40, 80)], body["channels"]
    deliveries = [c["deliveries"] for c in body["channels"]]
    assert deliveries == sorted(deliveries, reverse=True), "busiest first, by deliveries"


async def test_deleting_a_users_streams_closes_them_with_reason_disconnected_and_no_one_elses(
    gateway: GatewayProcess, api: Api
) -> None:
    user, other = unique("u"), unique("u")
    async with (
        open_stream(gateway.url, token=gateway.token(user)) as one,
        open_stream(gateway.url, token=gateway.token(user)) as two,
        open_stream(gateway.url, token=gateway.token(other)) as bystander,
    ):
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            answer = await client.delete(f"{ADMIN}/users/{user}/streams", headers=admin_headers(gateway))
        assert answer.status_code == 200, answer.text
        assert answer.json()["closed"] == 2
        for stream in (one, two):
            body = await closes_with(stream, "disconnected")
            assert body["retry_ms"] >= 1000
        live = await api.publish("task.created", "user", other, {})
        assert (await bystander.until(lambda e: e.id == live))[-1].id == live
    assert (await get(gateway, f"{ADMIN}/users/{user}/streams"))["streams"] == []
    # The console's per-user views stay behind the admin endpoints: no user id in the metrics.
    metrics = (await api.client.get("/metrics")).text
    assert user not in metrics
    assert other not in metrics
    actions = [e for e in gateway.logs() if e.get("event") == "admin_action" and e.get("user_id") == user]
    assert {(e["action"], e["by"]) for e in actions} == {
        ("disconnect_requested", "ops-carol"),
        ("disconnect", "ops-carol"),
    }


# --- two nodes on one Redis


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def env(redis: RedisServer) -> dict[str, str]:
    return cluster_env(redis, HERALD_MAX_CONNECTIONS_PER_USER="0")


@pytest.fixture(scope="module")
def nodes(env: dict[str, str]) -> Iterator[list[GatewayProcess]]:
    with running_cluster(2, env) as cluster:
        yield cluster


@pytest.fixture
async def apis(nodes: list[GatewayProcess]) -> AsyncIterator[list[Api]]:
    async with api_client(nodes[0]) as a, api_client(nodes[1]) as b:
        yield [a, b]


async def node_id(node: GatewayProcess) -> str:
    answered_by: str = (await get(node, f"{ADMIN}/nodes"))["answered_by"]
    return answered_by


async def test_two_nodes_each_list_both_with_their_own_streams(nodes: list[GatewayProcess]) -> None:
    ids = [await node_id(node) for node in nodes]
    users = [unique("u") for _ in range(3)]
    async with (
        open_stream(nodes[0].url, token=nodes[0].token(users[0])),
        open_stream(nodes[1].url, token=nodes[1].token(users[1])),
        open_stream(nodes[1].url, token=nodes[1].token(users[2])),
    ):
        for asked in nodes:
            listed = {n["node"]: n for n in (await get(asked, f"{ADMIN}/nodes"))["nodes"]}
            assert sorted(listed) == sorted(ids)
            assert (listed[ids[0]]["streams"], listed[ids[1]]["streams"]) == (1, 2)
            assert (listed[ids[0]]["users"], listed[ids[1]]["users"]) == (1, 2)


async def test_a_users_streams_are_found_and_disconnected_on_every_node(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    ids = [await node_id(node) for node in nodes]
    user, other = unique("u"), unique("u")
    async with (
        open_stream(nodes[0].url, token=nodes[0].token(user)) as here,
        open_stream(nodes[1].url, token=nodes[1].token(user)) as there,
        open_stream(nodes[1].url, token=nodes[1].token(other)) as bystander,
    ):
        sent = await apis[0].publish("task.created", "user", user, {})
        for stream in (here, there):
            await stream.until(lambda e: e.id == sent)
        found = await get(nodes[1], f"{ADMIN}/users/{user}/streams")
        assert sorted(s["node"] for s in found["streams"]) == sorted(ids)
        assert {s["last_event_id"] for s in found["streams"]} == {sent}
        events = await get(nodes[1], f"{ADMIN}/users/{user}/events")
        assert [e["id"] for e in events["events"]] == [sent]

        async with httpx.AsyncClient(base_url=nodes[0].url, timeout=10) as client:
            answer = await client.delete(f"{ADMIN}/users/{user}/streams", headers=admin_headers(nodes[0]))
        assert answer.status_code == 200, answer.text
        assert answer.json()["closed"] == 2
        assert answer.json()["nodes"] == {ids[0]: 1, ids[1]: 1}
        await asyncio.gather(closes_with(here, "disconnected"), closes_with(there, "disconnected"))
        live = await apis[1].publish("task.created", "user", other, {})
        await bystander.until(lambda e: e.id == live)
    assert (await get(nodes[0], f"{ADMIN}/users/{user}/streams"))["streams"] == []
    assert any(
        e.get("event") == "admin_action" and e.get("action") == "disconnect" and e.get("by") == "ops-carol"
        for e in nodes[1].logs()
    )


async def test_draining_a_chosen_node_through_another(
    nodes: list[GatewayProcess], env: dict[str, str]
) -> None:
    # A third node joins for this test only: the drained node stays drained until it stops.
    with running_gateway({**env, "HERALD_RETRY_MS": "1000"}) as extra:
        target = await node_id(extra)
        async with (
            open_stream(extra.url, token=extra.token(unique("u"))) as moved,
            open_stream(nodes[0].url, token=nodes[0].token(unique("u"))) as stays,
            httpx.AsyncClient(base_url=nodes[0].url, timeout=10) as client,
        ):
            unknown = await client.post(
                f"{ADMIN}/nodes/no-such-node/drain", json={}, headers=admin_headers(nodes[0])
            )
            assert (unknown.status_code, unknown.json()["code"]) == (404, "NODE_NOT_FOUND")
            answer = await client.post(
                f"{ADMIN}/nodes/{target}/drain", json={"window_seconds": 0.5}, headers=admin_headers(nodes[0])
            )
            assert answer.status_code == 202, answer.text
            assert answer.json()["node"] == target
            assert answer.json()["draining"] is True
            await closes_with(moved, "drain")
            listed = {n["node"]: n for n in (await get(nodes[0], f"{ADMIN}/nodes"))["nodes"]}
            assert (listed[target]["draining"], listed[target]["ready"]) == (True, False)
            assert [n["draining"] for name, n in listed.items() if name != target] == [False, False]
            ready = await client.get(f"{extra.url}/api/v1/events/health/ready")
            assert ready.status_code == 503
            assert not stays.closed.is_set()
        assert any(
            e.get("event") == "admin_action" and e.get("action") == "drain" and e.get("by") == "ops-carol"
            for e in extra.logs()
        )


# --- workers of one server


async def test_every_worker_of_one_server_is_a_node_of_the_console() -> None:
    env = {"HERALD_WORKERS": "2", "HERALD_WORKER_PORT_BASE": "0", "HERALD_HEARTBEAT_SECONDS": "0.5"}
    with running_gateway(env) as server:
        workers = server.listening["workers"]
        ports = [w["private_port"] for w in workers]
        async with open_stream(f"http://127.0.0.1:{ports[1]}", token=server.token(unique("u"))):
            listed = await get(server, f"{ADMIN}/nodes", url=f"http://127.0.0.1:{ports[0]}")
            assert len(listed["nodes"]) == 2
            assert sorted(n["pid"] for n in listed["nodes"]) == sorted(w["pid"] for w in workers)
            assert sum(n["streams"] for n in listed["nodes"]) == 1
