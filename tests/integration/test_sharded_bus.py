"""The sharded bus (D28) beyond the shared contract, on three real redis-servers: notices lost
while a node's subscriber was cut off are filled from the channels' streams, in order, once;
and a channel followed only now is caught up from the node's head."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from herald.bus.base import BusRecord
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.placement import shard_of
from herald.cluster.redis_client import RedisConnections
from herald.events.message import build_message, encode_data
from herald.wire.cursor import Cursor
from tests.support.redis import RedisServer, running_redis
from tests.support.shards import user_on
from tests.support.waiting import wait_until


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RedisServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running_redis()) for _ in range(3)]


@pytest.fixture
async def buses(servers: list[RedisServer]) -> AsyncIterator[tuple[ShardedBus, ShardedBus]]:
    """A reading node and a writing node of one deployment."""
    keys = ShardKeys(f"b{secrets.token_hex(4)}")
    made = []
    for _ in range(2):
        shards = [RedisConnections(s.url) for s in servers]
        bus = ShardedBus(shards, keys=keys, tick_seconds=0.1, owns_connections=True)
        await bus.start()
        made.append(bus)
    yield made[0], made[1]
    for bus in made:
        await bus.stop()


async def append(bus: ShardedBus, user: str, n: int) -> Cursor:
    message = build_message(event="task.created", scope="user", key=user, data={"n": n})
    return (await bus.append(message, encode_data(message, 65536))).cursor


async def test_notices_lost_while_the_subscriber_was_cut_off_are_filled_in_order(
    buses: tuple[ShardedBus, ShardedBus], servers: list[RedisServer]
) -> None:
    reader, writer = buses
    seen: list[BusRecord] = []
    reader.subscribe(seen.append)
    users = [f"u{secrets.token_hex(3)}" for _ in range(6)]
    await reader.follow([f"user:{u}" for u in users])
    cursors = [await append(writer, users[n % 6], n) for n in range(12)]
    await wait_until(lambda: len(seen) == 12)
    victim = servers[shard_of(f"user:{users[0]}", 3)]
    with victim.client() as client:
        killed = client.client_kill_filter(_type="pubsub")
    assert killed >= 1
    # Appended while the reader's subscriber is reconnecting: their notices are lost.
    cursors += [await append(writer, users[n % 6], n) for n in range(12, 40)]
    await wait_until(lambda: len(seen) == 40, timeout=10)
    assert [r.cursor for r in seen] == cursors, "every record once, in cursor order"
    assert [r.message.data["n"] for r in seen] == list(range(40))


@dataclass(frozen=True, slots=True)
class _Muted(ShardKeys):
    """The same channels' keys, their notices sent where no node listens."""

    @property
    def notifications(self) -> str:
        return f"{self.prefix}:muted:"


async def test_a_gap_whose_records_were_trimmed_closes_only_that_channels_streams(
    buses: tuple[ShardedBus, ShardedBus], servers: list[RedisServer]
) -> None:
    """Notices lost while the channel's history moved past them (trimmed by its
    per-channel bound): the gap cannot be filled, so the streams of that channel are told
    (``on_channels_lost``), never silently skipped; another channel goes on untouched."""
    reader, writer = buses
    lost: list[frozenset[str]] = []
    reader.on_channels_lost.append(lost.append)
    seen: list[BusRecord] = []
    reader.subscribe(seen.append)
    victim, bystander = f"u{secrets.token_hex(3)}", f"u{secrets.token_hex(3)}"
    await reader.follow([f"user:{victim}", f"user:{bystander}"])
    first = await append(writer, victim, 0)
    await wait_until(lambda: [r.cursor for r in seen] == [first])
    # Five records whose notices nobody gets, on a channel bounded to two.
    silent = ShardedBus(
        [RedisConnections(s.url) for s in servers],
        keys=_Muted(reader.keys.prefix),
        max_events_per_channel=2,
        owns_connections=True,
    )
    await silent.start()
    try:
        for n in range(1, 6):
            await append(silent, victim, n)
    finally:
        await silent.stop()
    assert lost == []
    await append(writer, victim, 6)  # its notice shows the gap
    await wait_until(lambda: lost == [frozenset({f"user:{victim}"})], timeout=5)
    other = await append(writer, bystander, 0)
    await wait_until(lambda: seen[-1].cursor == other, timeout=5)
    assert [r.message.data["n"] for r in seen if r.message.key == victim] == [0], "nothing skipped silently"


async def test_a_channel_followed_now_is_caught_up_from_the_nodes_head(
    buses: tuple[ShardedBus, ShardedBus],
) -> None:
    """What was appended to a channel after the node's head but before its subscription
    took effect reaches the listeners; what came before the head does not."""
    reader, writer = buses
    user = f"u{secrets.token_hex(3)}"
    before = await append(writer, user, 0)
    await wait_until(lambda: reader.head > before, timeout=5)  # the reader's ticks pass it
    seen: list[BusRecord] = []
    reader.subscribe(seen.append)
    followed = reader.follow([f"user:{user}"])
    after = await append(writer, user, 1)  # before the subscription is confirmed, or after
    await followed
    later = await append(writer, user, 2)
    await wait_until(lambda: len(seen) >= 2)
    assert [r.cursor for r in seen] == [after, later]


async def test_a_channel_on_a_shard_behind_the_nodes_head_gets_cursors_after_it(
    servers: list[RedisServer],
) -> None:
    """A node whose head runs ahead of a shard it follows nothing on (another shard's clock
    was pulled ahead) starts to follow a channel there: the records the channel gets
    afterwards come after the head, in order, and none goes out below it."""
    keys = ShardKeys(f"b{secrets.token_hex(4)}")

    def bus(clock: Callable[[], float] | None = None) -> ShardedBus:
        shards = [RedisConnections(s.url) for s in servers]
        return ShardedBus(shards, keys=keys, tick_seconds=0.05, owns_connections=True, clock=clock)

    reader, writer = bus(), bus()
    hurried = bus(lambda: time.time() + 30)  # a node whose clock is 30 s ahead
    for each in (reader, writer, hurried):
        await each.start()
    try:
        ahead, behind = user_on(0), user_on(1)
        seen: list[BusRecord] = []
        reader.subscribe(seen.append)
        await reader.follow([f"user:{ahead}"])
        pulled = await append(hurried, ahead, 0)
        await wait_until(lambda: reader.head >= pulled)
        early = await append(writer, behind, 0)
        assert early < reader.head, "the shard followed by none of the reader's streams is behind"
        head = reader.head
        await reader.follow([f"user:{behind}"])
        later = [await append(writer, behind, n) for n in range(1, 4)]
        await wait_until(lambda: len(seen) >= 4)
        assert all(c > head for c in later)
        assert [r.cursor for r in seen] == [pulled, *later]
    finally:
        for each in (reader, writer, hurried):
            await each.stop()


async def test_a_reconnect_storm_reads_each_channel_once_and_every_replay_is_whole(
    buses: tuple[ShardedBus, ShardedBus],
) -> None:
    """200 streams come back at once with one cursor: one read of the channel from Redis,
    the rest served from its tail, sharing the records; appends racing the storm are in
    every later replay, exactly as Redis holds them."""
    reader, writer = buses
    channel = "global"
    before = (await writer.append(*_broadcast(0))).cursor
    missed = [(await writer.append(*_broadcast(n))).cursor for n in range(1, 31)]
    await reader.follow([channel])
    reads = reader.replay_reads
    storm = await asyncio.gather(*(reader.replay(before, [channel]) for _ in range(200)))
    assert reader.replay_reads - reads == 1
    assert all(r.exact and [x.cursor for x in r.records] == missed for r in storm)
    assert all(r.records[0] is storm[0].records[0] for r in storm), "one record object, one frame"

    async def appending() -> list[Cursor]:
        return [(await writer.append(*_broadcast(n))).cursor for n in range(31, 61)]

    async def replaying() -> None:
        for _ in range(30):
            await reader.replay(missed[-1], [channel])

    late, _ = await asyncio.gather(appending(), replaying())
    await wait_until(lambda: reader.head >= late[-1], timeout=5)
    cached = await reader.replay(before, [channel])
    truth = await reader._shards[shard_of(channel, 3)].replay(channel, before)
    assert [r.cursor for r in cached.records] == [r.cursor for r in truth.records] == missed + late
    assert reader.replay_reads - reads == 1, "all of it from the tail"


def _broadcast(n: int) -> tuple[Any, bytes]:
    message = build_message(event="system.notice", scope="global", key=None, data={"n": n})
    return message, encode_data(message, 65536)
