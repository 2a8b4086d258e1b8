"""The cluster's connect-rate buckets in real Redis (herald.cluster.redis_rates): a burst,
then one connect per interval, in Redis's clock; each user's bucket on their shard."""

from __future__ import annotations

import asyncio
import secrets

from herald.cluster.keys import Keyspace
from herald.cluster.placement import user_shard
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_rates import RedisConnectRates
from tests.support.redis import RedisServer


async def test_a_burst_then_one_connect_per_interval(redis_server: RedisServer) -> None:
    connections = RedisConnections(redis_server.url)
    rates = RedisConnectRates(connections, Keyspace(f"r{secrets.token_hex(4)}"))
    try:
        waits = [await rates.take("user", "alice", rate=10.0, burst=3) for _ in range(4)]
        assert waits[:3] == [0.0, 0.0, 0.0]
        assert 0 < waits[3] <= 0.1
        # Buckets are per kind and per key.
        assert await rates.take("ip", "alice", rate=10.0, burst=3) == 0.0
        assert await rates.take("user", "bob", rate=10.0, burst=3) == 0.0
        await asyncio.sleep(waits[3])  # the refill is the behaviour under test: time must pass
        assert await rates.take("user", "alice", rate=10.0, burst=3) == 0.0
        assert await rates.take("user", "alice", rate=10.0, burst=3) > 0
    finally:
        await connections.aclose()


async def test_a_users_bucket_lives_on_their_shard(three_redis_servers: list[RedisServer]) -> None:
    shards = [RedisConnections(server.url) for server in three_redis_servers]
    keys = Keyspace(f"r{secrets.token_hex(4)}")
    rates = RedisConnectRates(shards, keys)
    try:
        users = [f"u{n}" for n in range(12)]
        for user in users:
            assert await rates.take("user", user, rate=1.0, burst=1) == 0.0
        for index, server in enumerate(three_redis_servers):
            with server.client() as client:
                here = {user for user in users if client.exists(keys.connect_rate("user", user))}
            assert here == {user for user in users if user_shard(user, 3) == index}
    finally:
        for connections in shards:
            await connections.aclose()
