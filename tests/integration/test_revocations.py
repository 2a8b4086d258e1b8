"""Revocation and expiry (issue 13): ``POST /api/v1/admin/revocations`` ends the matching
streams with ``error.auth-revoked`` and refuses the revoked tokens (401 ``AUTH_REVOKED``);
a revoked grant drops that subscription; ``auth.expiring`` comes ahead of expiry.
On one node (the memory bus), then across two nodes sharing a real Redis."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.support.api import Api, api_client, unique, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Event, Stream, StreamRefused, open_stream

REVOCATIONS = "/api/v1/admin/revocations"


async def revoke(gateway: GatewayProcess, body: dict[str, Any], *, admin: bool = True) -> httpx.Response:
    token = gateway.token("ops-alice", admin=admin)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        return await client.post(REVOCATIONS, json=body, headers={"authorization": f"Bearer {token}"})


async def refused(gateway: GatewayProcess, **kwargs: Any) -> StreamRefused:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(gateway.url, **kwargs):
            pass
    return caught.value


async def after_hello(stream: Stream, timeout: float = 5.0) -> Event:
    """The next event after ``connection.established``."""
    event = await stream.next(timeout=timeout)
    if event.event == "connection.established":
        event = await stream.next(timeout=timeout)
    return event


async def ends_revoked(stream: Stream) -> None:
    ending = await after_hello(stream)
    assert ending.event == "error.auth-revoked", ending
    assert ending.json()["code"] == "AUTH_REVOKED"
    with pytest.raises(EOFError):
        await stream.next()


def iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat()


# --- one node


async def test_revoking_a_user_ends_their_streams_and_refuses_their_older_tokens(
    gateway: GatewayProcess, api: Api
) -> None:
    user, other = unique("u"), unique("u")
    old = gateway.token(user, now=time.time() - 30)
    stream_token = (await api.stream_token(old))["token"]
    async with (
        open_stream(gateway.url, token=old) as bearer,
        open_stream(gateway.url, stream_token=stream_token) as native,
        open_stream(gateway.url, token=gateway.token(other)) as bystander,
    ):
        response = await revoke(gateway, {"user": user, "issued_before": iso(time.time() - 5)})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["kind"] == "user"
        assert body["user"] == user
        assert body["until"] > time.time() + 3600
        await ends_revoked(bearer)
        await ends_revoked(native)
        # The other user's stream goes on and still gets its events.
        live = await api.publish("task.created", "user", other, {})
        assert (await after_hello(bystander)).id == live

    refusal = await refused(gateway, token=old)
    assert (refusal.status, refusal.body["code"]) == (401, "AUTH_REVOKED")
    refusal = await refused(gateway, stream_token=stream_token)
    assert (refusal.status, refusal.body["code"]) == (401, "AUTH_REVOKED")
    minted = await api.stream_token_response(f"Bearer {old}")
    assert (minted.status_code, minted.json()["code"]) == (401, "AUTH_REVOKED")
    # A token issued after the cut-off opens as before.
    async with open_stream(gateway.url, token=gateway.token(user)) as fresh:
        live = await api.publish("task.created", "user", user, {})
        assert (await after_hello(fresh)).id == live


async def test_revoking_one_token_ends_only_its_streams(gateway: GatewayProcess, api: Api) -> None:
    user = unique("u")
    revoked_jti, kept_jti = secrets.token_hex(8), secrets.token_hex(8)
    revoked_token = gateway.token(user, jti=revoked_jti)
    kept = gateway.token(user, jti=kept_jti)
    stream_token = (await api.stream_token(revoked_token))["token"]
    async with (
        open_stream(gateway.url, token=revoked_token) as doomed,
        open_stream(gateway.url, stream_token=stream_token) as minted_from_it,
        open_stream(gateway.url, token=kept) as survivor,
    ):
        response = await revoke(gateway, {"jti": revoked_jti})
        assert response.status_code == 201, response.text
        assert response.json()["kind"] == "token"
        await ends_revoked(doomed)
        await ends_revoked(minted_from_it)
        live = await api.publish("task.created", "user", user, {})
        assert (await after_hello(survivor)).id == live
    refusal = await refused(gateway, token=revoked_token)
    assert refusal.body["code"] == "AUTH_REVOKED"


async def test_revoking_a_grant_drops_that_subscription_and_the_stream_goes_on(
    gateway: GatewayProcess, api: Api
) -> None:
    user = unique("u")
    token = gateway.token(user, resources=["novel:*"], now=time.time() - 30)
    gone, kept = f"novel:{unique('n')}", f"novel:{unique('n')}"
    async with open_stream(gateway.url, token=token, subscribe=f"{gone},{kept}") as stream:
        response = await revoke(gateway, {"user": user, "resource": gone})
        assert response.status_code == 201, response.text
        changed = await after_hello(stream)
        assert changed.event == "connection.subscriptions-changed"
        assert changed.json()["removed"] == [gone]
        assert changed.json()["reason"] == "revoked"
        assert changed.json()["subscriptions"] == [kept]
        await api.publish("chapter.updated", "novel", gone.split(":")[1], {"n": 1})
        live = await api.publish("chapter.updated", "novel", kept.split(":")[1], {"n": 2})
        # The revoked resource's event was published first and never arrives.
        assert (await stream.next()).id == live
    refusal = await refused(gateway, token=token, subscribe=gone)
    assert (refusal.status, refusal.body["code"]) == (403, "AUTH_REVOKED")
    assert refusal.body["revoked"] == [gone]
    async with open_stream(gateway.url, token=token, subscribe=kept) as again:
        assert (await again.next()).json()["subscriptions"] == [kept]


async def test_the_admin_api_needs_the_admin_role_and_one_of_three_forms(gateway: GatewayProcess) -> None:
    response = await revoke(gateway, {"user": "someone"}, admin=False)
    assert (response.status_code, response.json()["code"]) == (403, "PERMISSION_DENIED")
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        response = await client.post(REVOCATIONS, json={"user": "someone"})
    assert (response.status_code, response.json()["code"]) == (401, "AUTH_MISSING")
    for body in (
        {},
        {"jti": "x", "user": "someone"},
        {"user": "has space"},
        {"user": "someone", "resource": "not a key"},
        {"user": "someone", "issued_before": iso(time.time() + 600)},
        {"user": "someone", "issued_before": "2026-01-01T00:00:00"},
    ):
        response = await revoke(gateway, body)
        assert response.status_code in (400, 422), (body, response.text)
        assert response.json()["code"] in ("REQUEST_INVALID", "EVENT_INVALID"), response.text
    response = await revoke(gateway, {"user": "someone", "surprise": 1})
    assert response.status_code == 422


async def test_a_stream_hears_auth_expiring_before_its_token_expires() -> None:
    node = start_gateway({"HERALD_AUTH_EXPIRING_SECONDS": "2", "HERALD_HEARTBEAT_SECONDS": "0.5"})
    try:
        user = unique("u")
        async with open_stream(node.url, token=node.token(user, ttl=4)) as stream:
            hello = await stream.next()
            warning = await stream.next(timeout=5)
            assert warning.event == "auth.expiring"
            assert stream.last_event_id == hello.id  # a notice: the client's cursor does not move
            body = warning.json()
            expires_at = datetime.fromisoformat(body["expires_at"]).timestamp()
            assert 0 < body["expires_in"] <= 2.5
            ending = await stream.next(timeout=5)
            assert ending.event == "error.auth-expired"
            # The warning came ahead of the end by about the configured lead.
            assert abs(expires_at - time.time()) < 1.5
    finally:
        node.stop()


# --- two nodes, one Redis


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def env(redis: RedisServer) -> dict[str, str]:
    return cluster_env(redis)


@pytest.fixture(scope="module")
def nodes(env: dict[str, str]) -> Iterator[list[GatewayProcess]]:
    with running_cluster(2, env) as cluster:
        yield cluster


@pytest.fixture
async def apis(nodes: list[GatewayProcess]) -> AsyncIterator[list[Api]]:
    async with api_client(nodes[0]) as a, api_client(nodes[1]) as b:
        yield [a, b]


async def test_a_revocation_on_one_node_ends_streams_on_the_other_within_a_second(
    nodes: list[GatewayProcess], apis: list[Api], env: dict[str, str]
) -> None:
    user = unique("u")
    old = nodes[0].token(user, now=time.time() - 30)
    stream_token = (await apis[0].stream_token(old))["token"]
    async with (
        open_stream(nodes[1].url, token=old) as remote,
        open_stream(nodes[1].url, stream_token=stream_token) as remote_native,
        open_stream(nodes[0].url, token=old) as local,
    ):
        started = time.monotonic()
        response = await revoke(nodes[0], {"user": user})
        assert response.status_code == 201, response.text
        await ends_revoked(remote)
        await ends_revoked(remote_native)
        elapsed = time.monotonic() - started
        print(f"revocation: the other node's streams ended {elapsed * 1000:.0f} ms after the request")
        await ends_revoked(local)
        assert elapsed < 1.0, f"the other node's streams ended after {elapsed:.2f} s"
    for node in nodes:
        refusal = await refused(node, token=old)
        assert (refusal.status, refusal.body["code"]) == (401, "AUTH_REVOKED")
    # A node that starts after the revocation reads it from Redis.
    late = start_gateway(env)
    try:
        refusal = await refused(late, token=old)
        assert (refusal.status, refusal.body["code"]) == (401, "AUTH_REVOKED")
        async with open_stream(late.url, token=late.token(unique("u"))) as unaffected:
            assert (await unaffected.next()).event == "connection.established"
    finally:
        late.stop()


async def test_a_revoked_grant_is_dropped_on_every_node(nodes: list[GatewayProcess], apis: list[Api]) -> None:
    user = unique("u")
    token = nodes[0].token(user, resources=["doc:*"], now=time.time() - 30)
    gone, kept = f"doc:{unique('d')}", f"doc:{unique('d')}"
    async with open_stream(nodes[1].url, token=token, subscribe=f"{gone},{kept}") as stream:
        response = await revoke(nodes[0], {"user": user, "resource": gone})
        assert response.status_code == 201, response.text
        changed = await after_hello(stream, timeout=2)
        assert (changed.event, changed.json()["removed"]) == ("connection.subscriptions-changed", [gone])
        await apis[0].publish("doc.updated", "doc", gone.split(":")[1], {})
        live = await apis[0].publish("doc.updated", "doc", kept.split(":")[1], {})
        assert (await stream.next()).id == live

    async def refused_everywhere() -> bool:
        for node in nodes:
            try:
                async with open_stream(node.url, token=token, subscribe=gone):
                    return False
            except StreamRefused as exc:
                if exc.body["code"] != "AUTH_REVOKED":
                    return False
        return True

    await wait_until(refused_everywhere, timeout=2, what="the grant refused on both nodes")
