"""Presence and lifecycle announcements in a real Redis (src/herald/lifecycle/redis_presence.py).

Several counters on one key prefix are several nodes. Each table row is a
story of streams opening and closing on those nodes; the announcements the
stream receives must be exactly the row's.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from herald.cluster.keys import Keyspace
from herald.cluster.placement import user_shard
from herald.cluster.redis_client import RedisConnections
from herald.lifecycle.events import decode, gone_within
from herald.lifecycle.redis_presence import RedisPresenceCounter
from tests.support.redis import RedisServer

LEASE = 1.0
GRACE = 0.3
SWEEP = 0.05


@dataclass
class Nodes:
    keys: Keyspace
    #: One Redis, or three shards (each user's state on the shard of their channel).
    servers: list[RedisServer]
    redis: list[RedisConnections]
    counters: dict[str, RedisPresenceCounter]

    def node(self, name: str, *, grace: float = GRACE) -> RedisPresenceCounter:
        if name not in self.counters:
            self.counters[name] = RedisPresenceCounter(
                self.redis,
                self.keys,
                lease_seconds=LEASE,
                stream=self.keys.lifecycle,
                node=name,
                grace_seconds=grace,
                sweep_seconds=SWEEP,
            )
        return self.counters[name]

    def server_of(self, user: str) -> RedisServer:
        return self.servers[user_shard(user, len(self.servers))]

    async def events(self) -> list[dict[str, Any]]:
        """Every shard's stream, shard after shard (a user's are all on one)."""
        events = []
        for redis in self.redis:
            entries = await redis.commands.xrange(self.keys.lifecycle)
            events += [decode(entry_id, fields) for entry_id, fields in entries]
        return events

    async def story(self, user: str) -> list[tuple[str, str | None]]:
        return [(e["event"], e.get("reason")) for e in await self.events() if e["user_id"] == user]


@pytest.fixture(params=["one-redis", "three-shards"])
async def nodes(request: pytest.FixtureRequest) -> AsyncIterator[Nodes]:
    servers: list[RedisServer] = (
        [request.getfixturevalue("redis_server")]
        if request.param == "one-redis"
        else request.getfixturevalue("three_redis_servers")
    )
    redis = [RedisConnections(server.url) for server in servers]
    cluster = Nodes(Keyspace(f"life-{secrets.token_hex(6)}"), servers, redis, {})
    yield cluster
    for counter in cluster.counters.values():
        await counter.stop()
    for connections in redis:
        await connections.aclose()


OPENED = ("connection.opened", None)


def closed(reason: str) -> tuple[str, str]:
    return ("connection.closed", reason)


# Steps: ("open", node, lease) | ("close", node, lease, reason) | ("settle",): sweep once the grace is over.
STORIES: list[tuple[str, list[tuple[Any, ...]], list[tuple[str, str | None]]]] = [
    ("one stream opens and closes", [("open", "a", "1"), ("close", "a", "1", "client_gone"), ("settle",)],
     [OPENED, closed("client_gone")]),
    ("streams on two nodes: one presence, closed with the last stream's reason",
     [("open", "a", "1"), ("open", "b", "2"), ("close", "a", "1", "client_gone"), ("settle",),
      ("close", "b", "2", "auth_expired"), ("settle",)],
     [OPENED, closed("auth_expired")]),
    ("a reconnect within the grace, on another node, is no disconnect",
     [("open", "a", "1"), ("close", "a", "1", "shutdown"), ("open", "b", "2"), ("settle",)],
     [OPENED]),
    ("a reconnect after the grace is a new presence",
     [("open", "a", "1"), ("close", "a", "1", "client_gone"), ("settle",), ("open", "b", "2"),
      ("close", "b", "2", "evicted"), ("settle",)],
     [OPENED, closed("client_gone"), OPENED, closed("evicted")]),
    ("releasing twice, or a lease never counted, announces nothing more",
     [("open", "a", "1"), ("close", "a", "1", "client_gone"), ("close", "a", "1", "slow_consumer"),
      ("close", "b", "never", "client_gone"), ("settle",)],
     [OPENED, closed("client_gone")]),
]  # fmt: skip


@pytest.mark.parametrize(("title", "steps", "expected"), STORIES, ids=[s[0] for s in STORIES])
async def test_story(nodes: Nodes, title: str, steps: list[tuple[Any, ...]], expected: list[Any]) -> None:
    user = f"u-{secrets.token_hex(3)}"
    for step in steps:
        if step[0] == "open":
            await nodes.node(step[1]).acquire(user, step[2])
        elif step[0] == "close":
            await nodes.node(step[1]).release(user, step[2], step[3])
        else:
            await asyncio.sleep(GRACE)  # the grace is the behaviour under test: it must pass
            await nodes.node("sweeper").sweep()
    assert await nodes.story(user) == expected


async def test_closed_carries_when_and_how_long(nodes: Nodes) -> None:
    a = nodes.node("a")
    await a.acquire("u", "1")
    await asyncio.sleep(0.2)  # a presence that lasts
    await a.release("u", "1", "client_gone")
    await asyncio.sleep(GRACE)  # the grace must pass before the close is announced
    await a.sweep()
    opened, gone = await nodes.events()
    assert gone["opened_at_ms"] == opened["at_ms"]
    assert gone["duration_ms"] == gone["at_ms"] - opened["at_ms"]
    assert gone["duration_ms"] >= 200
    assert gone["node"] == "a"
    assert opened["connections"] == 1
    assert gone["id"] > opened["id"]


async def test_nodes_opening_at_once_announce_one_opened(nodes: Nodes) -> None:
    users = [f"u{i}" for i in range(20)]
    await asyncio.gather(
        *(nodes.node(node).acquire(user, f"{node}-{user}") for user in users for node in ("a", "b", "c"))
    )
    events = await nodes.events()
    assert sorted(e["user_id"] for e in events) == sorted(users)
    assert {e["event"] for e in events} == {"connection.opened"}


async def test_nodes_sweeping_at_once_announce_one_closed(nodes: Nodes) -> None:
    users = [f"u{i}" for i in range(300)]  # more than one sweep batch
    for user in users:
        await nodes.node("a").acquire(user, "1")
        await nodes.node("a").release(user, "1", "client_gone")
    await asyncio.sleep(GRACE)
    counts = await asyncio.gather(*(nodes.node(n).sweep() for n in ("a", "b", "c")))
    assert sum(counts) == len(users)
    closes = [e for e in await nodes.events() if e["event"] == "connection.closed"]
    assert sorted(e["user_id"] for e in closes) == sorted(users)


async def test_the_users_of_a_vanished_node_are_declared_gone_in_bounded_time(nodes: Nodes) -> None:
    alive, vanished = nodes.node("alive"), nodes.node("vanished")
    await alive.start()  # renews its leases and sweeps; ``vanished`` never does anything again
    await alive.acquire("stays", "s1")
    await vanished.acquire("both", "v1")
    await alive.acquire("both", "a1")
    await vanished.acquire("lost", "v2")
    lost_at = time.monotonic()
    bound = gone_within(lease_seconds=LEASE, grace_seconds=GRACE, sweep_seconds=SWEEP)

    async def gone() -> bool:
        return ("connection.closed", "node_lost") in await nodes.story("lost")

    deadline = lost_at + 3 * bound
    while not await gone():
        assert time.monotonic() < deadline, "never declared gone"
        await asyncio.sleep(0.02)
    assert time.monotonic() - lost_at <= 3 * bound
    assert time.monotonic() - lost_at >= LEASE * 0.9, "not before its lease lapsed"
    # Users with a stream on a live node stay present.
    assert await nodes.story("stays") == [OPENED]
    assert await nodes.story("both") == [OPENED]
    assert (await alive.presence("both")).connections == 1


async def test_presence_answers_connected_since_and_grace(nodes: Nodes) -> None:
    a = nodes.node("a", grace=5.0)
    before = time.time()
    await a.acquire("u", "1")
    await nodes.node("b", grace=5.0).acquire("u", "2")
    present = await a.presence("u")
    assert (present.connected, present.connections, present.grace_until) == (True, 2, None)
    assert present.online_since is not None
    assert before - 1 <= present.online_since <= time.time() + 1
    await a.release("u", "1")
    await nodes.node("b").release("u", "2")
    leaving = await a.presence("u")
    assert (leaving.connected, leaving.online_since) == (False, present.online_since)
    assert leaving.grace_until is not None
    assert 4 <= leaving.grace_until - time.time() <= 6
    nobody = await a.presence("nobody")
    assert (nobody.connected, nobody.online_since, nobody.grace_until) == (False, None, None)


async def test_a_presence_redis_lost_is_announced_again_by_the_renewal(nodes: Nodes) -> None:
    a = nodes.node("a")
    await a.acquire("u", "1")
    with nodes.server_of("u").client() as admin:
        admin.delete(nodes.keys.presence("u"))
    await a.renew()
    events = await nodes.events()
    assert [(e["event"], e.get("restored")) for e in events] == [
        ("connection.opened", None),
        ("connection.opened", 1),
    ]
    assert (await a.presence("u")).online_since is not None


async def test_each_users_state_lives_on_the_shard_of_their_channel(nodes: Nodes) -> None:
    """Leases, presence and announcements of a user are on one Redis (the one of their
    events); the renewal and the sweeper reach every shard."""
    users = [f"u{i}" for i in range(30)]
    a = nodes.node("a")
    for user in users:
        await a.acquire(user, "1")
    await a.renew()
    for user in users[:10]:
        await a.release(user, "1", "client_gone")
    await asyncio.sleep(GRACE)  # the grace is the behaviour under test: it must pass
    assert await a.sweep() == 10
    placed = {user: nodes.server_of(user) for user in users}
    if len(nodes.servers) > 1:
        assert len({server.url for server in placed.values()}) == len(nodes.servers), "users on every shard"
    for server in nodes.servers:
        with server.client() as admin:
            here = {user for user in users if admin.exists(nodes.keys.connections(user))}
            announced = {fields[b"user_id"].decode() for _, fields in admin.xrange(nodes.keys.lifecycle)}
        expected = {user for user, home in placed.items() if home is server}
        assert here == expected - set(users[:10])
        assert announced == expected
