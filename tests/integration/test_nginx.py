"""``deploy/nginx/herald.conf`` in real nginx in front of two gateway nodes sharing a
Redis bus: streams pass unbuffered with their heartbeats, the control API goes
through, and a stream whose node stops resumes on the other with Last-Event-ID."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.support.api import Api, api_client, ids, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.nginx import Nginx, running_nginx
from tests.support.redis import RedisServer
from tests.support.sse import open_stream


@pytest.fixture
def deployment(redis_server: RedisServer) -> Iterator[tuple[Nginx, list[GatewayProcess]]]:
    env = cluster_env(
        redis_server,
        HERALD_HEARTBEAT_SECONDS="0.5",
        HERALD_RETRY_MS="100",
        HERALD_SHUTDOWN_RETRY_SPREAD_MS="100",
        HERALD_TRUSTED_PROXIES='["127.0.0.1"]',
    )
    with running_cluster(2, env) as nodes, running_nginx([node.port for node in nodes]) as nginx:
        yield nginx, nodes


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


@contextlib.asynccontextmanager
async def through(nginx: Nginx, node: GatewayProcess) -> AsyncIterator[Api]:
    """The control API through nginx (tokens minted with ``node``'s secret)."""
    async with httpx.AsyncClient(base_url=nginx.url, timeout=10.0) as client:
        yield Api(node, client)


async def holder(nodes: list[GatewayProcess]) -> GatewayProcess:
    """The node that holds the one open stream."""
    for node in nodes:
        async with api_client(node) as api:
            if await api.connections() == 1:
                return node
    raise AssertionError("no node holds the stream")


async def test_streams_through_nginx_are_unbuffered_keep_their_heartbeats_and_resume_elsewhere(
    deployment: tuple[Nginx, list[GatewayProcess]],
) -> None:
    nginx, nodes = deployment
    user = unique("u")
    token = nodes[0].token(user)
    async with through(nginx, nodes[0]) as proxied, open_stream(nginx.url, token=token) as stream:
        hello = await stream.next(timeout=5)
        assert hello.event == "connection.established"
        assert stream.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        # Unbuffered: each small event arrives on its own, not when a buffer fills.
        for n in range(3):
            cursor = await proxied.publish("task.created", "user", user, {"n": n})
            assert (await stream.next(timeout=2)).id == cursor
        # Heartbeats (comments) pass through, and keep the idle stream open. Their id is the
        # node's position: the last event's cursor, or past it once the bus's clock moved on
        # with nothing published (D6, D28).
        seen = stream.heartbeats
        await wait_until(lambda: stream.heartbeats >= seen + 2, timeout=5, what="heartbeats through nginx")
        assert stream.last_event_id is not None
        assert cursor_key(stream.last_event_id) >= cursor_key(cursor)

        node = await holder(nodes)
        stop = asyncio.get_running_loop().run_in_executor(None, node.stop)
        closing = await stream.next(timeout=10)
        assert closing.event == "connection.closing"
        assert closing.json()["reason"] == "shutdown"
        assert await stop == 0
        resume_from = stream.last_event_id
        missed = [await proxied.publish("task.created", "user", user, {"n": n}) for n in range(3, 6)]
    # The reconnect goes through nginx, which skips the stopped node.
    async with open_stream(nginx.url, token=token, last_event_id=resume_from) as again:
        hello = (await again.next(timeout=5)).json()
        assert hello["recovered"] is True
        assert ids(await again.take(3)) == missed
        survivor = next(n for n in nodes if n is not node)
        async with api_client(survivor) as api:
            assert await api.connections() == 1
            marker = await api.marker()
        assert ids(await until_marker(again, marker)) == []
    # The node saw the browser's address, named by nginx.
    opened = [e for e in survivor.logs() if e.get("event") == "sse_connection_established"]
    assert opened
    assert opened[-1]["ip"] == "127.0.0.1"


async def test_the_control_api_and_refusals_pass_through_nginx(
    deployment: tuple[Nginx, list[GatewayProcess]],
) -> None:
    nginx, nodes = deployment
    async with through(nginx, nodes[0]) as api:
        assert (await api.client.get("/api/v1/events/health/ready")).status_code == 200
        minted = await api.stream_token(nodes[0].token(unique("u")))
        async with open_stream(nginx.url, stream_token=minted["token"]) as stream:
            assert (await stream.next()).event == "connection.established"
        refused = await api.client.get("/api/v1/events/stream", headers={"authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert refused.json()["code"] == "AUTH_INVALID"
        assert "herald_connections" in (await api.client.get("/metrics")).text
