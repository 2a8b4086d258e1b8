"""``deploy/nginx/canary.conf`` (with ``herald_user.js``) in real nginx in front of a stable
node and a canary node sharing a Redis bus: a stable share of users (a hash of the JWT's
``sub``) reaches the canary node, each user always the same node across reconnects
whether the stream carries a bearer token or a stream token, and a request without a
token still reaches a node and gets its 401."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.nginx import Nginx, running_nginx
from tests.support.redis import RedisServer

USERS = 400
#: The percentage deploy/nginx/canary.conf sends to the canary.
SHARE = 0.10
STREAM = "/api/v1/events/stream"


@pytest.fixture
def gray(redis_server: RedisServer) -> Iterator[tuple[Nginx, GatewayProcess, GatewayProcess]]:
    env = cluster_env(
        redis_server,
        HERALD_TRUSTED_PROXIES='["127.0.0.1"]',
        # Every stream of the test comes from one address (nginx's).
        HERALD_CONNECT_RATE_PER_IP="100000",
        HERALD_CONNECT_BURST_PER_IP="100000",
    )
    with running_cluster(2, env) as nodes, running_nginx([nodes[0].port], canary=[nodes[1].port]) as nginx:
        yield nginx, nodes[0], nodes[1]


async def established(client: httpx.AsyncClient, url: str, **request: object) -> tuple[str, str]:
    """Open a stream, read its ``connection.established``, close it: the node's connection
    id and the pool nginx named (``Herald-Pool``)."""
    async with client.stream("GET", url, **request) as response:  # type: ignore[arg-type]
        assert response.status_code == 200, (response.status_code, await response.aread())
        pool = response.headers.get("herald-pool", "")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:") and event == "connection.established":
                connection_id: str = orjson.loads(line.partition(":")[2])["connection_id"]
                return connection_id, pool
    raise AssertionError("the stream ended before connection.established")


def node_of(connection_id: str) -> str:
    """A connection id begins with its node's random prefix (8 hex digits)."""
    return connection_id[:8]


async def test_a_stable_share_of_users_reaches_the_canary_node_across_reconnects(
    gray: tuple[Nginx, GatewayProcess, GatewayProcess],
) -> None:
    nginx, stable, canary = gray
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=0)
    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        # Each node's identity, asked of it directly.
        nodes = {}
        for name, node in (("herald_stable", stable), ("herald_canary", canary)):
            bearer = {"authorization": f"Bearer {node.token('probe')}"}
            connection_id, _ = await established(client, f"{node.url}{STREAM}", headers=bearer)
            nodes[node_of(connection_id)] = name
        assert len(nodes) == 2

        gate = asyncio.Semaphore(24)

        async def by_bearer(user: str) -> tuple[str, str]:
            async with gate:
                bearer = {"authorization": f"Bearer {stable.token(user)}"}
                return await established(client, f"{nginx.url}{STREAM}", headers=bearer)

        async def by_stream_token(user: str) -> tuple[str, str]:
            async with gate:
                minted = await client.post(
                    f"{nginx.url}/api/v1/auth/sse-token",
                    headers={"authorization": f"Bearer {stable.token(user)}"},
                )
                assert minted.status_code == 200, minted.text
                return await established(
                    client, f"{nginx.url}{STREAM}", params={"token": minted.json()["token"]}
                )

        users = [f"user-{n}" for n in range(USERS)]
        rounds = [
            await asyncio.gather(*(by_bearer(user) for user in users)),
            await asyncio.gather(*(by_stream_token(user) for user in users)),
            await asyncio.gather(*(by_bearer(user) for user in users)),
        ]
        placed = []
        for answers in rounds:
            seen = []
            for connection_id, pool in answers:
                node = nodes[node_of(connection_id)]
                assert node == pool  # the pool nginx chose is the node that answered
                seen.append(node)
            placed.append(seen)
        # Every user on the same node every time, by bearer token or by stream token.
        assert placed[0] == placed[1] == placed[2]
        share = placed[0].count("herald_canary") / USERS
        assert abs(share - SHARE) <= 0.03, share

        # No token, or no JWT: a node still answers (the stable pool's), with its own 401.
        for headers in ({}, {"authorization": "Bearer not-a-jwt"}, {"authorization": "Basic dTpw"}):
            refused = await client.get(f"{nginx.url}{STREAM}", headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.json()["code"].startswith("AUTH_")
            assert refused.headers["herald-pool"] == "herald_stable"
            assert "herald-version" in refused.headers
        print(f"canary share {share:.3f} of {USERS} users")
