"""The NodeControl contract (src/herald/cluster/control.py): ``tell``, ``ask`` and ``gather``.

A cluster of three controls on one real Redis (every node its own subscriber), and the
single node of the memory deployment, which has nobody to ask.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator

import pytest

from herald.cluster.control import Answer, Command, SingleNodeControl
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_control import RedisNodeControl
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until


class Node:
    def __init__(self, name: str, control: RedisNodeControl) -> None:
        self.name = name
        self.control = control
        self.heard: list[Command] = []
        self.silent = False

    async def handle(self, command: Command) -> Answer | None:
        self.heard.append(command)
        if self.silent:
            await asyncio.sleep(30)
        if command.get("op") == "whoami":
            return {"node": self.name}
        if command.get("op") == "owner" and command.get("node") == self.name:
            return {"owner": self.name}
        return None


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[list[Node]]:
    keys = Keyspace(f"control-{secrets.token_hex(6)}")
    connections = [RedisConnections(redis_server.url) for _ in range(3)]
    nodes = [Node(f"n{i}", RedisNodeControl(c, keys, f"n{i}")) for i, c in enumerate(connections)]
    for node in nodes:
        await node.control.start(node.handle)
        assert node.control.healthy()
    yield nodes
    for node in nodes:
        await node.control.stop()
    for c in connections:
        await c.aclose()


async def test_gather_returns_every_other_nodes_answer_and_not_the_askers(nodes: list[Node]) -> None:
    answers = await nodes[0].control.gather({"op": "whoami"}, timeout=5)
    assert sorted(a["node"] for a in answers) == ["n1", "n2"]
    assert nodes[0].heard == []


async def test_gather_returns_as_soon_as_every_node_answered_none_included(nodes: list[Node]) -> None:
    started = time.monotonic()
    assert await nodes[1].control.gather({"op": "nothing"}, timeout=5) == []
    assert time.monotonic() - started < 1.0


async def test_gather_returns_the_answers_so_far_at_the_timeout(nodes: list[Node]) -> None:
    nodes[2].silent = True
    started = time.monotonic()
    answers = await nodes[0].control.gather({"op": "whoami"}, timeout=0.5)
    assert [a["node"] for a in answers] == ["n1"]
    assert 0.4 < time.monotonic() - started < 2.0


async def test_ask_returns_the_one_answer_and_tell_reaches_every_other_node(nodes: list[Node]) -> None:
    assert await nodes[0].control.ask({"op": "owner", "node": "n2"}, timeout=5) == {"owner": "n2"}
    assert await nodes[0].control.ask({"op": "owner", "node": "nobody"}, timeout=5) is None
    await nodes[1].control.tell({"op": "note"})
    for node in (nodes[0], nodes[2]):
        await wait_until(lambda heard=node.heard: any(c.get("op") == "note" for c in heard), timeout=5)
    assert not any(c.get("op") == "note" for c in nodes[1].heard)


async def test_a_single_node_has_nobody_to_ask() -> None:
    control = SingleNodeControl()
    await control.start(lambda command: asyncio.sleep(0, None))
    assert await control.gather({"op": "whoami"}, timeout=1) == []
    assert await control.ask({"op": "whoami"}, timeout=1) is None
    await control.stop()
