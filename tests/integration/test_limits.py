"""Each limit against a real gateway: its status, headers and body; the per-user
limit's two policies, on one node and across two nodes sharing Redis."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from tests.support.api import api_client, unique, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Stream, StreamRefused, open_stream

QUIET = {"HERALD_HEARTBEAT_SECONDS": "30"}


@contextlib.contextmanager
def gateway_with(**env: str) -> Iterator[GatewayProcess]:
    with running_gateway({**QUIET, **{f"HERALD_{k.upper()}": v for k, v in env.items()}}) as gateway:
        yield gateway


async def _admission(url: str, token: str) -> str | tuple[int, str]:
    """``admitted``, or the refusal's status and code."""
    try:
        async with open_stream(url, token=token):
            return "admitted"
    except StreamRefused as exc:
        return exc.status, str(exc.body["code"])


async def refused(url: str, **kwargs: str) -> StreamRefused:
    with pytest.raises(StreamRefused) as caught:
        async with open_stream(url, **kwargs):
            pass
    return caught.value


# --- per user: refuse


@pytest.fixture(scope="module")
def two_per_user() -> Iterator[GatewayProcess]:
    with gateway_with(max_connections_per_user="2", connect_rate_per_user="0") as gateway:
        yield gateway


async def test_over_the_per_user_limit_a_stream_is_refused_429(two_per_user: GatewayProcess) -> None:
    gateway = two_per_user
    user = unique("u")
    token = gateway.token(user)
    async with open_stream(gateway.url, token=token) as first, open_stream(gateway.url, token=token):
        await first.next()
        error = await refused(gateway.url, token=token)
        assert error.status == 429
        assert error.body["code"] == "SSE_CONNECTION_LIMIT"
        assert error.body["limit"] == 2
        assert int(error.headers["retry-after"]) >= 1
        # Another user is not affected.
        async with open_stream(gateway.url, token=gateway.token(unique("other"))) as other:
            assert (await other.next()).event == "connection.established"
        # The refused stream holds no count: after one closes, one more fits.
    async with open_stream(gateway.url, token=token) as a, open_stream(gateway.url, token=token) as b:
        assert [(await s.next()).event for s in (a, b)] == ["connection.established"] * 2
    async with api_client(gateway) as api:
        await api.wait_connections(0)


# --- per user: evict the oldest


async def wait_for_eviction(stream: Stream) -> None:
    seen = await stream.until(lambda e: e.event.startswith("error."), timeout=10)
    notice = seen[-1]
    assert notice.event == "error.connection-evicted"
    assert notice.json()["code"] == "SSE_CONNECTION_LIMIT"
    assert notice.retry == 30_000, "an evicted EventSource does not come straight back"
    with pytest.raises(EOFError):
        await stream.next()


async def test_evict_oldest_closes_the_users_oldest_stream_with_a_notice() -> None:
    with gateway_with(
        max_connections_per_user="2", connection_limit_policy="evict_oldest", connect_rate_per_user="0"
    ) as gateway:
        user = unique("u")
        token = gateway.token(user)
        async with (
            open_stream(gateway.url, token=token) as oldest,
            open_stream(gateway.url, token=token) as middle,
        ):
            await oldest.next()
            await middle.next()
            async with open_stream(gateway.url, token=token) as newest:
                await newest.next()
                await wait_for_eviction(oldest)
                async with api_client(gateway) as api:
                    await api.wait_connections(2)
                    # The two that stay still get the user's events.
                    cursor = await api.publish("task.created", "user", user, {})
                assert (await middle.next()).id == cursor
                assert (await newest.next()).id == cursor
        closed = [e for e in gateway.logs() if e.get("event") == "sse_connection_closed"]
        assert any(e["reason"] == "evicted" for e in closed)


async def test_evict_oldest_reaches_a_stream_on_another_node(redis_server: RedisServer) -> None:
    env = cluster_env(
        redis_server,
        HERALD_MAX_CONNECTIONS_PER_USER="2",
        HERALD_CONNECTION_LIMIT_POLICY="evict_oldest",
        HERALD_HEARTBEAT_SECONDS="30",
    )
    with running_cluster(2, env) as (one, two):
        user = unique("u")
        token = one.token(user)
        async with open_stream(one.url, token=token) as oldest, open_stream(two.url, token=token) as middle:
            await oldest.next()
            await middle.next()
            async with open_stream(two.url, token=token) as newest:
                await newest.next()
                await wait_for_eviction(oldest)
                assert not middle.closed.is_set()
                async with api_client(one) as api:
                    await api.wait_connections(0)
                    cursor = await api.publish("task.created", "user", user, {})
                assert (await middle.next()).id == cursor
                assert (await newest.next()).id == cursor


async def test_refuse_counts_the_users_streams_on_every_node(redis_server: RedisServer) -> None:
    env = cluster_env(redis_server, HERALD_MAX_CONNECTIONS_PER_USER="2", HERALD_HEARTBEAT_SECONDS="30")
    with running_cluster(2, env) as (one, two):
        token = one.token(unique("u"))
        async with open_stream(one.url, token=token) as a, open_stream(two.url, token=token) as b:
            await a.next()
            await b.next()
            for node in (one, two):
                error = await refused(node.url, token=token)
                assert (error.status, error.body["code"]) == (429, "SSE_CONNECTION_LIMIT")


# --- the node's capacity


async def test_past_max_clients_the_node_answers_503_with_a_polling_fallback() -> None:
    with gateway_with(max_clients="2") as gateway:
        async with (
            open_stream(gateway.url, token=gateway.token(unique("a"))) as a,
            open_stream(gateway.url, token=gateway.token(unique("b"))) as b,
        ):
            await a.next()
            await b.next()
            error = await refused(gateway.url, token=gateway.token(unique("c")))
            assert error.status == 503
            assert error.body["code"] == "SERVER_OVERLOAD"
            assert error.body["fallback"] == "polling"
            assert 5 <= int(error.headers["retry-after"]) <= 15
            assert error.body["retry_after"] == int(error.headers["retry-after"])
        async with api_client(gateway) as api:
            await api.wait_connections(0)
        async with open_stream(gateway.url, token=gateway.token(unique("c"))) as again:
            assert (await again.next()).event == "connection.established"


# --- connect rates


async def test_a_user_opening_streams_too_fast_gets_429_rate_limit_exceeded() -> None:
    with gateway_with(connect_rate_per_user="0.5", connect_burst_per_user="2") as gateway:
        token = gateway.token(unique("u"))
        for _ in range(2):
            async with open_stream(gateway.url, token=token) as stream:
                await stream.next()
        error = await refused(gateway.url, token=token)
        assert error.status == 429
        assert error.body["code"] == "RATE_LIMIT_EXCEEDED"
        assert error.body["limit"] == "user"
        assert 1 <= int(error.headers["retry-after"]) <= 2
        # Other users have buckets of their own.
        async with open_stream(gateway.url, token=gateway.token(unique("v"))) as other:
            await other.next()

        async def refilled() -> bool:
            try:
                async with open_stream(gateway.url, token=token) as stream:
                    await stream.next()
                    return True
            except StreamRefused:
                return False

        await wait_until(refilled, timeout=5, interval=0.25, what="a token refilled")


async def test_connect_rates_hold_across_the_nodes_and_fall_back_to_each_node_without_redis() -> None:
    """On the Redis bus a user's bucket is the cluster's (issue 13): two streams on one node
    and a third on another exhaust a burst of two. With Redis away each node's own bucket
    decides: a fresh user is not refused for the rate."""
    with running_redis() as redis:
        env = cluster_env(redis, HERALD_CONNECT_RATE_PER_USER="0.2", HERALD_CONNECT_BURST_PER_USER="2")
        with running_cluster(2, env) as (one, two):
            token = one.token(unique("u"))
            for _ in range(2):
                async with open_stream(one.url, token=token) as stream:
                    await stream.next()
            error = await refused(two.url, token=token)
            assert (error.status, error.body["code"], error.body["limit"]) == (
                429,
                "RATE_LIMIT_EXCEEDED",
                "user",
            )
            assert 1 <= int(error.headers["retry-after"]) <= 5
            # Another user of the same nodes has a bucket of their own.
            async with open_stream(two.url, token=two.token(unique("v"))) as other:
                await other.next()
            redis.kill()
            fresh = two.token(unique("w"))
            for node in (one, two):
                outcome = await _admission(node.url, fresh)
                assert outcome in ("admitted", (503, "BUS_UNAVAILABLE")), outcome


async def test_a_client_ip_opening_streams_too_fast_is_refused_before_its_token_is_checked() -> None:
    with gateway_with(connect_rate_per_ip="0.2", connect_burst_per_ip="3") as gateway:
        for n in range(3):
            async with open_stream(gateway.url, token=gateway.token(unique(f"u{n}"))) as stream:
                await stream.next()
        error = await refused(gateway.url, token="not even a token")
        assert (error.status, error.body["code"], error.body["limit"]) == (429, "RATE_LIMIT_EXCEEDED", "ip")
        assert int(error.headers["retry-after"]) >= 1
        async with api_client(gateway) as api:
            metrics = (await api.client.get("/metrics")).text
        assert 'herald_connections_refused_total{code="RATE_LIMIT_EXCEEDED"} 1.0' in metrics


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client() -> None:
    with gateway_with(
        connect_rate_per_ip="0.2", connect_burst_per_ip="2", trusted_proxies='["127.0.0.1"]'
    ) as gateway:
        token = gateway.token(unique("u"))
        for _ in range(2):
            async with open_stream(
                gateway.url, token=token, headers={"x-forwarded-for": "198.51.100.7"}
            ) as stream:
                await stream.next()
        error = await refused(gateway.url, token=token, headers={"x-forwarded-for": "198.51.100.7"})  # type: ignore[arg-type]
        assert error.body["limit"] == "ip"
        # Another client behind the same proxy has its own bucket; a spoofed
        # left-hand entry does not change whose bucket it is.
        async with open_stream(
            gateway.url, token=token, headers={"x-forwarded-for": "198.51.100.8"}
        ) as stream:
            await stream.next()
        spoofed = await refused(
            gateway.url,
            token=token,
            headers={"x-forwarded-for": "203.0.113.1, 198.51.100.7"},  # type: ignore[arg-type]
        )
        assert spoofed.body["limit"] == "ip"
        logged = [e for e in gateway.logs() if e.get("event") == "sse_connection_established"]
        assert {e["ip"] for e in logged} == {"198.51.100.7", "198.51.100.8"}
