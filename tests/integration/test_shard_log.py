"""One shard of the sharded bus (herald.bus.shard_log, D28) on real redis-servers: cursors in
one order across three shards, channels with their own history, floors and idempotency, the
notification each append publishes, the watermark probe, and a shard that lost its data."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack

import pytest
from redis.exceptions import ResponseError

from herald.bus.base import Append, AppendResult, BatchResult
from herald.bus.channels import channel_of
from herald.bus.shard_log import ShardKeys, ShardLog, decode_notification
from herald.cluster.redis_client import RedisConnections
from herald.events.message import SSEMessage, build_message, encode_data
from herald.wire.cursor import Cursor
from tests.contracts.conftest import FakeClock
from tests.support.api import wait_until
from tests.support.redis import RedisServer, running_redis
from tests.support.shards import user_on

ZERO = Cursor(0, 0)


@pytest.fixture(scope="module")
def servers() -> Iterator[list[RedisServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(running_redis()) for _ in range(3)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def shards(servers: list[RedisServer], clock: FakeClock) -> AsyncIterator[list[ShardLog]]:
    keys = ShardKeys(f"t{secrets.token_hex(4)}")
    connections = [RedisConnections(server.url) for server in servers]
    yield [
        ShardLog(c, index, keys=keys, window_seconds=60, max_events_per_channel=50, clock=clock)
        for index, c in enumerate(connections)
    ]
    for c in connections:
        await c.aclose()


def event(user: str, n: int, scope: str = "user") -> SSEMessage:
    return build_message(event="task.created", scope=scope, key=user, data={"n": n})


def item(message: SSEMessage, key: str | None = None) -> Append:
    return Append(message, encode_data(message, 65536), key)


def cursors(results: list[BatchResult]) -> list[Cursor]:
    out = []
    for result in results:
        assert isinstance(result, AppendResult), result
        out.append(result.cursor)
    return out


async def test_cursors_are_one_order_across_shards_and_never_collide(
    shards: list[ShardLog], clock: FakeClock
) -> None:
    """Three shards issuing in the same milliseconds: every cursor distinct, each shard's
    increasing, and each carries its shard's index in its low bits."""
    issued: list[tuple[int, Cursor]] = []
    for _ in range(5):
        for shard in shards:
            got = cursors(await shard.append_many([item(event("a", n)) for n in range(4)], ZERO))
            assert got == sorted(got)
            issued += [(shard.index, c) for c in got]
        clock.now += 0.0005  # several appends per millisecond, from every shard
    assert len({c for _, c in issued}) == len(issued)
    for index, cursor in issued:
        assert (cursor.seq - 1) % 64 == index
    for index in range(3):
        mine = [c for i, c in issued if i == index]
        assert mine == sorted(mine)


async def test_a_shard_behind_is_pulled_forward_by_the_hint(shards: list[ShardLog], clock: FakeClock) -> None:
    """A hybrid logical clock: a node that has seen cursor h gets cursors above h from any
    shard, even one whose clock is behind."""
    ahead = Cursor(int(clock.now * 1000) + 60_000, 5)
    got = cursors(await shards[1].append_many([item(event("b", 1))], ahead))
    assert got[0] > ahead
    later = cursors(await shards[1].append_many([item(event("b", 2))], ZERO))
    assert later[0] > got[0], "the clock stays where the hint moved it"


async def test_each_channel_replays_its_own_records_after_any_cursor(
    shards: list[ShardLog], clock: FakeClock
) -> None:
    shard = shards[0]
    start = cursors(await shard.append_many([item(event("other", 0))], ZERO))[0]
    mixed = [item(event("alice", n)) for n in range(3)] + [item(event("bob", n)) for n in range(3)]
    got = cursors(await shard.append_many(mixed, ZERO))
    # A cursor of another shard, in the middle of alice's records.
    foreign = cursors(await shards[2].append_many([item(event("zed", 0))], ZERO))[0]
    alice = await shard.replay("user:alice", start)
    assert alice.exact
    assert [r.cursor for r in alice.records] == got[:3]
    assert [r.message.data["n"] for r in alice.records] == [0, 1, 2]
    bob = await shard.replay("user:bob", got[3])
    assert [r.cursor for r in bob.records] == got[4:]
    after_foreign = await shard.replay("user:alice", foreign)
    assert after_foreign.exact
    assert [r.cursor for r in after_foreign.records] == [c for c in got[:3] if c > foreign]
    nobody = await shard.replay("user:nobody", start)
    assert nobody.exact
    assert nobody.records == []


async def test_a_channel_trimmed_past_a_cursor_cannot_replay_it_exactly(
    shards: list[ShardLog], clock: FakeClock
) -> None:
    shard = shards[0]
    first = cursors(await shard.append_many([item(event("carol", n)) for n in range(60)], ZERO))
    # 50 per channel: the first ten are trimmed, the floor is the tenth.
    assert not (await shard.replay("user:carol", first[0])).exact
    at_floor = await shard.replay("user:carol", first[9])
    assert at_floor.exact
    assert [r.cursor for r in at_floor.records] == first[10:]
    refused = await shard.replay("user:carol", first[8])
    assert refused.floor == first[9]
    # Time: past the window everything is trimmed, and the floor is the newest.
    clock.now += 61
    assert not (await shard.replay("user:carol", first[20])).exact
    assert (await shard.replay("user:carol", first[-1])).exact


async def test_a_channel_never_written_replays_exactly_from_the_shards_lifetime_only(
    shards: list[ShardLog], clock: FakeClock
) -> None:
    shard = shards[0]
    recent = cursors(await shard.append_many([item(event("dave", 0))], ZERO))[0]
    assert (await shard.replay("user:nobody-yet", recent)).exact
    old = Cursor(recent.ms - 120_000, 0)
    assert not (await shard.replay("user:nobody-yet", old)).exact, "older than the shard's lifetime"


async def test_idempotency_is_per_channel_within_and_across_batches(shards: list[ShardLog]) -> None:
    shard = shards[0]
    results = await shard.append_many(
        [item(event("erin", 0), "k"), item(event("erin", 1), "k"), item(event("frank", 2), "k")], ZERO
    )
    first, again, other_channel = results
    assert isinstance(first, AppendResult)
    assert again == AppendResult(first.cursor, duplicate=True)
    assert isinstance(other_channel, AppendResult)
    assert not other_channel.duplicate, "the same key on another channel is another event"
    retry = await shard.append_many([item(event("erin", 9), "k")], ZERO)
    assert retry == [AppendResult(first.cursor, duplicate=True)]


async def test_each_append_notifies_its_channel_with_the_entry_and_a_sequence(
    shards: list[ShardLog], servers: list[RedisServer]
) -> None:
    shard = shards[1]
    user = user_on(1)
    channel = f"user:{user}"
    with servers[1].client() as client:
        pubsub = client.pubsub()
        pubsub.subscribe(shard.keys.notifications + channel)
        assert pubsub.get_message(timeout=5)["type"] == "subscribe"
        got = cursors(await shard.append_many([item(event(user, n)) for n in range(3)], ZERO))
        messages: list[dict[str, object]] = []

        def three() -> bool:
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                messages.append(message)
            return len(messages) == 3

        await wait_until(three)
        pubsub.close()
    notices = [
        decode_notification(m["channel"], m["data"], shard.keys.notifications)  # type: ignore[arg-type]
        for m in messages
    ]
    assert [n.channel for n in notices] == [channel] * 3
    assert [n.seq for n in notices] == [1, 2, 3]
    assert [n.record.cursor for n in notices] == got
    assert [n.record.message.data["n"] for n in notices] == [0, 1, 2]
    assert channel_of(notices[0].record.message) == channel


async def test_the_probe_moves_the_clock_so_later_cursors_are_above_it(
    shards: list[ShardLog], clock: FakeClock
) -> None:
    shard = shards[2]
    hint = int(clock.now * 1000) + 5_000
    watermark = await shard.probe(hint)
    assert watermark >= hint
    got = cursors(await shard.append_many([item(event("gina", 0))], ZERO))[0]
    assert got >= Cursor(watermark, 0)


async def test_a_shard_that_lost_its_data_starts_a_lifetime_after_every_cursor_it_knew(
    servers: list[RedisServer], clock: FakeClock
) -> None:
    with running_redis() as server:
        connections = RedisConnections(server.url)
        shard = ShardLog(connections, 0, keys=ShardKeys("lost"), clock=clock)
        before = cursors(await shard.append_many([item(event("hal", n)) for n in range(3)], ZERO))
        old_origin = shard.origin
        server.stop()
        server.wipe()
        server.start()
        # The node passes the newest cursor it saw: the new lifetime begins after it.
        answers: list[BatchResult] = []

        async def appended() -> bool:
            # The pool's first command after the restart may meet the old, dead connection.
            answers[:] = await shard.append_many([item(event("hal", 9))], before[-1])
            return isinstance(answers[0], AppendResult)

        await wait_until(appended)
        after = cursors(answers)
        assert shard.origin != old_origin
        assert after[0] > before[-1]
        replay = await shard.replay("user:hal", before[1])
        assert not replay.exact, "a cursor of the lost lifetime replays nothing as if whole"
        await connections.aclose()


async def test_a_shard_refuses_another_index(shards: list[ShardLog], servers: list[RedisServer]) -> None:
    """The shard list's order changed: channels would move, so the shard says so."""
    connections = RedisConnections(servers[0].url)
    wrong = ShardLog(connections, 2, keys=shards[0].keys)
    await shards[0].append_many([item(event("ivy", 0))], ZERO)
    with pytest.raises(ResponseError, match="HERALD_SHARD_INDEX"):
        await wrong.append_many([item(event("ivy", 1))], ZERO)
    await connections.aclose()
