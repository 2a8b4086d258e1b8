"""One shard of three killed with SIGKILL under a live gateway (D28): streams whose channels
live on the other shards never notice; those that follow the lost shard's channels are closed
and refused until it is back, then resume, exactly when the shard kept its data (AOF) and told
`recovered: false` when it did not."""

from __future__ import annotations

import secrets
import time
from contextlib import ExitStack

import pytest

from herald.cluster.placement import shard_of
from tests.support.api import api_client, ids, until_marker, wait_until
from tests.support.gateway import running_gateway
from tests.support.redis import RedisServer, running_redis
from tests.support.shards import user_on
from tests.support.sse import open_stream

SHARDS = 3
#: The shard killed: not the one holding the global channel.
VICTIM = next(i for i in range(SHARDS) if i != shard_of("global", SHARDS))
SURVIVOR = next(i for i in range(SHARDS) if i not in (VICTIM, shard_of("global", SHARDS)))


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "no-aof"])
async def test_a_killed_shard_touches_only_its_channels_streams(redis_server: RedisServer, aof: bool) -> None:
    with ExitStack() as stack:
        shards = [stack.enter_context(running_redis()) for _ in range(SHARDS)]
        if aof:
            victim = shards[VICTIM]
            victim.kill()
            shards[VICTIM] = stack.enter_context(_aof_redis(victim))
        env = {
            "HERALD_BUS": "redis",
            "HERALD_REDIS_URL": redis_server.url,
            "HERALD_REDIS_SHARDS": ",".join(s.url for s in shards),
            "HERALD_REDIS_PREFIX": f"f{secrets.token_hex(3)}",
            "HERALD_REDIS_TIMEOUT_SECONDS": "0.5",
            "HERALD_HEARTBEAT_SECONDS": "0.5",
            "HERALD_COALESCE_INTERVAL_SECONDS": "0",
        }
        gateway = stack.enter_context(running_gateway(env))
        lost_user, kept_user = user_on(VICTIM, SHARDS), user_on(SURVIVOR, SHARDS)
        async with (
            api_client(gateway) as api,
            open_stream(gateway.url, token=gateway.token(lost_user)) as lost,
            open_stream(gateway.url, token=gateway.token(kept_user)) as kept,
        ):
            await lost.next()
            await kept.next()
            before = [await api.publish("task.created", "user", lost_user, {"n": n}) for n in range(3)]
            marker = await api.marker()
            assert ids(await until_marker(lost, marker)) == before
            await until_marker(kept, marker)

            shards[VICTIM].kill()
            killed = time.monotonic()
            # The other shard's user goes on receiving, on the same stream.
            during = []
            for n in range(20):
                during.append(await api.publish("task.created", "user", kept_user, {"n": n}))
            received = await kept.until(lambda e: e.id == during[-1], timeout=15)
            assert [e.id for e in received if e.event == "task.created"] == during
            assert not kept.closed.is_set()
            # The lost shard's stream is closed; publishing to its user is refused meanwhile.
            await wait_until(lost.closed.is_set, timeout=15, what="the lost shard's stream closed")
            assert (await api.post_event(_event(lost_user), gateway.publisher_token)).status_code == 503
            # A user's leases and count live on their own shard: the other shard's users
            # still open streams while it is away.
            async with open_stream(gateway.url, token=gateway.token(kept_user)) as second:
                assert (await second.next()).event == "connection.established"
            print(f"\nshard killed: its streams closed {time.monotonic() - killed:.2f}s later")

            shards[VICTIM].start()
            restarted = time.monotonic()
            resumed = None

            async def back() -> bool:
                nonlocal resumed
                token = gateway.token(lost_user)
                async with open_stream(gateway.url, token=token, last_event_id=marker) as again:
                    first = await again.next()
                    if first.event != "connection.established":
                        return False
                    resumed = first.json()
                    return True

            await wait_until(back, timeout=20, interval=0.2, what="the lost shard's user streaming again")
            print(f"live again {time.monotonic() - restarted:.2f}s after the restart")
            assert resumed is not None
            assert resumed["recovered"] is aof, resumed
            # The other shard's stream lived through the kill and the restart (empty or not).
            after = await api.publish("task.created", "user", kept_user, {"n": 99})
            await kept.until(lambda e: e.id == after, timeout=10)
            assert not kept.closed.is_set()
            assert [e.event for e in kept.events].count("connection.established") == 1


def _event(user: str) -> dict[str, object]:
    return {"event": "task.created", "scope": "user", "key": user, "data": {}}


class _aof_redis:
    """The same port, started again with an append-only file."""

    def __init__(self, old: RedisServer) -> None:
        self.server = RedisServer(old.port, appendonly=True)

    def __enter__(self) -> RedisServer:
        return self.server.start()

    def __exit__(self, *_: object) -> None:
        self.server.close()
