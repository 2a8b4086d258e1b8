"""The ConnectionCounter contract (src/herald/cluster/counting.py), for every implementation."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from herald.cluster.counting import ConnectionCounter, MemoryConnectionCounter
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_counting import RedisConnectionCounter
from herald.lifecycle.redis_presence import RedisPresenceCounter


@pytest.fixture(params=["memory", "redis", "redis-presence", "shards", "shards-presence"])
async def counter(request: pytest.FixtureRequest) -> AsyncIterator[ConnectionCounter]:
    """The memory counter; the Redis ones over one Redis; and over three shards, where
    each user's leases and presence live on the shard of their channel."""
    if request.param == "memory":
        counter: ConnectionCounter = MemoryConnectionCounter()
        await counter.start()
        yield counter
        await counter.stop()
        return
    servers = (
        [request.getfixturevalue("redis_server")]
        if request.param.startswith("redis")
        else request.getfixturevalue("three_redis_servers")
    )
    shards = [RedisConnections(server.url) for server in servers]
    keys = Keyspace(f"count-{secrets.token_hex(6)}")
    redis_counter: ConnectionCounter = (
        RedisPresenceCounter(shards, keys, stream=keys.lifecycle, node="n1")
        if request.param.endswith("presence")
        else RedisConnectionCounter(shards, keys)
    )
    await redis_counter.start()
    yield redis_counter
    await redis_counter.stop()
    for connections in shards:
        await connections.aclose()


async def test_acquire_answers_the_count_including_the_new_connection(counter: ConnectionCounter) -> None:
    assert await counter.acquire("u1", "a") == 1
    assert await counter.acquire("u1", "b") == 2
    assert await counter.acquire("u2", "c") == 1
    assert await counter.count("u1") == 2
    assert await counter.count("u2") == 1
    assert await counter.count("nobody") == 0


async def test_release_is_idempotent_and_never_goes_below_zero(counter: ConnectionCounter) -> None:
    await counter.acquire("u1", "a")
    await counter.acquire("u1", "b")
    await counter.release("u1", "a")
    await counter.release("u1", "a")
    assert await counter.count("u1") == 1
    await counter.release("u1", "never-acquired")
    await counter.release("u9", "never-acquired")
    assert await counter.count("u1") == 1
    await counter.release("u1", "b")
    assert await counter.count("u1") == 0
    assert await counter.acquire("u1", "c") == 1


async def test_leases_lists_the_users_live_leases_in_order(counter: ConnectionCounter) -> None:
    """The per-user limit orders a user's leases by name (the gateway's names sort by opening time)."""
    for lease in ("0002-b", "0001-a", "0003-c"):
        await counter.acquire("u1", lease)
    await counter.acquire("u2", "0000-z")
    await counter.release("u1", "0002-b")
    assert await counter.leases("u1") == ["0001-a", "0003-c"]
    assert await counter.leases("u2") == ["0000-z"]
    assert await counter.leases("nobody") == []


async def test_presence_says_whether_the_user_has_a_stream_anywhere(counter: ConnectionCounter) -> None:
    await counter.acquire("u1", "a")
    await counter.acquire("u1", "b")
    present = await counter.presence("u1")
    assert (present.user_id, present.connected, present.connections) == ("u1", True, 2)
    await counter.release("u1", "a", "client_gone")
    await counter.release("u1", "b", "shutdown")
    gone = await counter.presence("u1")
    assert (gone.connected, gone.connections) == (False, 0)
    assert not (await counter.presence("nobody")).connected
