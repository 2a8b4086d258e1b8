"""Revocations in a real Redis (herald.auth.redis_revocations): every node learns each
one, a node started later reads them all, and a node cut off from Redis reads what it
missed once it is back; until its first read it refuses rather than guess."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from herald.auth.principal import Principal
from herald.auth.redis_revocations import RedisRevocations
from herald.auth.revocations import Revocation
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.errors import AuthRevoked, BusUnavailable
from tests.support.api import wait_until
from tests.support.redis import RedisServer, free_port


class Node:
    """One node's store, and what it was told."""

    def __init__(self, url: str, keys: Keyspace) -> None:
        self.redis = RedisConnections(url, timeout=0.5, name=f"node-{secrets.token_hex(3)}")
        self.store = RedisRevocations(self.redis, keys, ttl_seconds=3600, block_seconds=0.5)
        self.seen: list[Revocation] = []
        self.keys = keys

    async def start(self) -> Node:
        await self.store.start(self.seen.append)
        return self

    async def close(self) -> None:
        await self.store.stop()
        await self.redis.aclose()


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    keys = Keyspace(f"t{secrets.token_hex(4)}")
    made = [await Node(redis_server.url, keys).start() for _ in range(2)]
    try:
        yield made
    finally:
        for node in made:
            await node.close()


def user_cut(user: str) -> Revocation:
    return Revocation("user", until=4_000_000_000, user=user, issued_before=2_000_000_000)


async def test_every_node_learns_a_revocation_and_a_later_node_reads_them_all(
    nodes: list[Node], redis_server: RedisServer
) -> None:
    a, b = nodes
    first, second = user_cut("alice"), Revocation("token", until=4_000_000_000, jti="j1")
    await a.store.revoke(first)
    assert a.seen[0] == first  # its own, at once (and again as it reads it back: harmless)
    await a.store.revoke(second)

    async def b_knows() -> bool:
        return b.seen == [first, second]

    await wait_until(b_knows, timeout=3, what="the other node told")
    with pytest.raises(AuthRevoked):
        b.store.check(Principal("alice", issued_at=1))
    late = await Node(redis_server.url, a.keys).start()
    try:
        assert late.seen == []  # read, not announced: it holds no streams yet
        with pytest.raises(AuthRevoked):
            late.store.check(Principal("bob", token_id="j1"))
    finally:
        await late.close()


async def test_a_node_cut_off_from_redis_reads_what_it_missed(
    nodes: list[Node], redis_server: RedisServer
) -> None:
    a, b = nodes
    # Drop every connection of node b (its follower's too): what a lost link does.
    admin = redis_server.client()
    try:
        killed = [
            admin.client_kill_filter(_id=client["id"])
            for client in admin.client_list()
            if client["name"] == b.redis.name
        ]
    finally:
        admin.close()
    assert killed
    missed = user_cut("carol")
    await a.store.revoke(missed)

    async def caught_up() -> bool:
        return missed in b.seen

    await wait_until(caught_up, timeout=5, what="node b reading what it missed")


async def test_a_node_that_never_read_the_revocations_refuses_streams() -> None:
    nowhere = Node(f"redis://127.0.0.1:{free_port()}/0", Keyspace("t"))
    await nowhere.start()
    try:
        with pytest.raises(BusUnavailable):
            nowhere.store.check(Principal("alice"))
        assert not nowhere.store.healthy()
    finally:
        await nowhere.close()
