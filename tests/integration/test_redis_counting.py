"""The cluster-wide per-user count in a real Redis: leases the owning node renews."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_counting import RedisConnectionCounter
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until

LEASE = 1.0


@pytest.fixture
async def connections(redis_server: RedisServer) -> AsyncIterator[RedisConnections]:
    redis = RedisConnections(redis_server.url)
    yield redis
    await redis.aclose()


def two_nodes(
    redis: RedisConnections, keys: Keyspace | None = None
) -> tuple[RedisConnectionCounter, RedisConnectionCounter]:
    keys = keys or Keyspace(f"count-{secrets.token_hex(6)}")
    return (
        RedisConnectionCounter(redis, keys, lease_seconds=LEASE),
        RedisConnectionCounter(redis, keys, lease_seconds=LEASE),
    )


async def test_the_count_spans_nodes(connections: RedisConnections) -> None:
    a, b = two_nodes(connections)
    assert await a.acquire("u", "a1") == 1
    assert await b.acquire("u", "b1") == 2
    assert await a.count("u") == 2
    await b.release("u", "b1")
    assert await a.count("u") == 1


async def test_leases_a_node_renews_outlive_the_lease_time_and_others_lapse(
    connections: RedisConnections,
) -> None:
    alive, dead = two_nodes(connections)
    await alive.start()  # ``dead`` never renews: a node that was killed
    try:
        await alive.acquire("u", "alive")
        await dead.acquire("u", "dead")
        assert await alive.count("u") == 2
        deadline = time.monotonic() + 3 * LEASE
        lapsed_at: float | None = None
        while time.monotonic() < deadline:
            count = await alive.count("u")
            assert count >= 1, "the renewed lease never lapses"
            if count == 1 and lapsed_at is None:
                lapsed_at = time.monotonic()
            await asyncio.sleep(0.05)
        assert lapsed_at is not None, "the unrenewed lease lapsed"
        assert await alive.count("u") == 1
    finally:
        await alive.stop()


async def test_renewal_restores_the_count_after_redis_lost_it(
    connections: RedisConnections, redis_server: RedisServer
) -> None:
    keys = Keyspace(f"count-{secrets.token_hex(6)}")
    node, _ = two_nodes(connections, keys)
    await node.acquire("u", "a")
    await node.acquire("u", "b")
    with redis_server.client() as admin:
        admin.delete(keys.connections("u"))
    assert await node.count("u") == 0
    await node.renew()
    assert await node.count("u") == 2


async def test_a_release_during_a_renewal_is_not_undone(connections: RedisConnections) -> None:
    node, _ = two_nodes(connections)
    users = [f"u{i}" for i in range(1200)]  # renewed in three batches
    for user in users:
        await node.acquire(user, "lease")
    # Hold the renewal between its first and second batch.
    gate, batches = asyncio.Event(), 0
    renew_batch = node._renew[0]  # the one shard's renewal script

    async def paused(**kwargs: Any) -> Any:
        nonlocal batches
        batches += 1
        if batches == 2:
            await gate.wait()
        return await renew_batch(**kwargs)

    node._renew[0] = paused  # type: ignore[call-overload]
    renewal = asyncio.create_task(node.renew())
    await wait_until(lambda: batches == 2)
    releases = [asyncio.create_task(node.release(user, "lease")) for user in users[1000:]]
    done, _ = await asyncio.wait(releases, timeout=0.2)
    assert not done, "a release waits for the renewal in flight"
    gate.set()
    await renewal
    await asyncio.gather(*releases)
    assert [await node.count(user) for user in users[1000:]] == [0] * 200
    assert await node.count(users[0]) == 1
