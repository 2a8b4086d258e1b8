"""The Redis bus over one Redis (one shard of D28, the plain deployment) beyond the shared
contract: several nodes on it, Redis going away and back, a Redis that lost its data or came
back from an older snapshot, and appends made together."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest

from herald.bus.base import BusRecord
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from herald.errors import BusUnavailable
from herald.events.message import build_message, encode_data
from herald.wire.cursor import Cursor, parse_cursor
from tests.support.redis import RedisServer, running_redis
from tests.support.waiting import wait_until

CHANNEL = "user:u"
Make = Callable[..., ShardedBus]


@pytest.fixture
async def make_node() -> AsyncIterator[Make]:
    """Buses on one key prefix and one Redis: the nodes of one deployment."""
    opened: list[ShardedBus] = []

    def make(server: RedisServer, keys: ShardKeys, **options: float) -> ShardedBus:
        bus = ShardedBus(
            [RedisConnections(server.url, timeout=1.0)],
            keys=keys,
            owns_connections=True,
            tick_seconds=0.1,
            **options,  # type: ignore[arg-type]
        )
        opened.append(bus)
        return bus

    yield make
    for bus in opened:
        await bus.stop()


async def append(bus: ShardedBus, n: int) -> Cursor:
    message = build_message(event="task.created", scope="user", key="u", data={"n": n})
    return (await bus.append(message, encode_data(message, 65536))).cursor


async def test_a_replay_holds_only_what_this_node_delivered_the_rest_comes_live(
    redis_server: RedisServer, make_node: Make
) -> None:
    """The seam on a networked bus: whatever the replay returned, the listener must not
    deliver again, and whatever it did not return, the listener must deliver."""
    keys = ShardKeys(f"seam-{secrets.token_hex(4)}")
    writer, reader = make_node(redis_server, keys), make_node(redis_server, keys)
    await writer.start()
    await reader.start()
    await reader.follow([CHANNEL])
    start = await append(writer, -1)
    await wait_until(lambda: reader.head >= start)
    live: list[tuple[bool, BusRecord]] = []
    replayed_yet = False
    reader.subscribe(lambda record: live.append((replayed_yet, record)))
    appended = await asyncio.gather(*(append(writer, n) for n in range(200)))
    replay = await reader.replay(start, [CHANNEL])
    replayed_yet = True
    assert replay.exact
    await wait_until(lambda: reader.head >= max(appended))
    replayed = [r.cursor for r in replay.records]
    after_replay = [r.cursor for seen_after, r in live if seen_after]
    assert replayed + after_replay == sorted(appended), "no gap, no duplicate at the seam"


async def test_a_client_ahead_of_this_node_waits_for_it(redis_server: RedisServer, make_node: Make) -> None:
    keys = ShardKeys(f"ahead-{secrets.token_hex(4)}")
    writer, lagging = make_node(redis_server, keys), make_node(redis_server, keys)
    await writer.start()
    await lagging.start()
    await lagging.follow([CHANNEL])
    cursors = [await append(writer, n) for n in range(5)]
    # Straight away: the lagging node may not have delivered cursors[3] yet.
    replay = await lagging.replay(cursors[3], [CHANNEL])
    assert replay.exact
    assert [r.cursor for r in replay.records] == cursors[4:]
    assert lagging.head >= cursors[3]


async def test_a_redis_that_lost_its_data_starts_a_new_lifetime_and_its_cursors_are_stale(
    redis_server: RedisServer, make_node: Make
) -> None:
    keys = ShardKeys(f"lost-{secrets.token_hex(4)}")
    bus = make_node(redis_server, keys)
    lost: list[frozenset[str]] = []
    bus.on_channels_lost.append(lost.append)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    await bus.start()
    await bus.follow([CHANNEL])
    old = [await append(bus, n) for n in range(3)]
    await wait_until(lambda: len(seen) == 3)
    with redis_server.client() as admin:
        admin.delete(keys.shard, keys.log(CHANNEL), keys.meta(CHANNEL))
    await wait_until(lambda: lost == [frozenset({CHANNEL})])
    for cursor in old:
        assert not (await bus.replay(cursor, [CHANNEL])).exact
    new = await append(bus, 3)
    await wait_until(lambda: seen[-1].cursor == new)
    assert new > old[-1], "the new lifetime starts after the old"
    assert [r.cursor for r in seen] == [*old, new], "each record once, in order"


async def test_redis_away_and_back_with_its_data(make_node: Make) -> None:
    with running_redis() as server:
        bus = make_node(server, ShardKeys("outage"))
        lost: list[frozenset[str]] = []
        bus.on_channels_lost.append(lost.append)
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        await bus.start()
        await bus.follow([CHANNEL])
        before = [await append(bus, n) for n in range(3)]
        await wait_until(lambda: len(seen) == 3)
        server.stop(save=True)
        started = time.monotonic()
        with pytest.raises(BusUnavailable) as refused:
            await append(bus, 99)
        assert time.monotonic() - started < 2.0, "a publish never hangs"
        assert refused.value.retry_after is not None
        await wait_until(lambda: not bus.healthy())
        server.start()
        await wait_until(bus.healthy, timeout=10)
        after = [await append(bus, n) for n in range(3, 6)]
        await wait_until(lambda: len(seen) >= 6)
        assert [r.cursor for r in seen] == [*before, *after]
        assert lost == [], "with its data back, nothing was lost: no stream is closed"
        assert (await bus.replay(before[0], [CHANNEL])).exact


async def test_a_redis_restored_from_an_older_snapshot_starts_a_new_lifetime(make_node: Make) -> None:
    """What Redis issued after the snapshot is gone: cursors of it may be held by clients,
    so the shard starts a new lifetime and the streams of its channels are told."""
    with running_redis() as server:
        bus = make_node(server, ShardKeys("rewind"))
        lost: list[frozenset[str]] = []
        bus.on_channels_lost.append(lost.append)
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        await bus.start()
        await bus.follow([CHANNEL])
        kept = [await append(bus, n) for n in range(2)]
        with server.client() as admin:
            admin.save()  # the snapshot Redis will come back from
            origin = admin.hget(bus.keys.shard, "origin")
        gone = [await append(bus, n) for n in range(2, 4)]
        await wait_until(lambda: len(seen) == 4)
        server.kill()
        server.start()
        await wait_until(lambda: lost == [frozenset({CHANNEL})], timeout=10)
        with server.client() as admin:
            renewed = admin.hget(bus.keys.shard, "origin")
        assert renewed != origin
        new_origin = parse_cursor(renewed.decode() if isinstance(renewed, bytes) else str(renewed))
        assert new_origin is not None
        assert new_origin > gone[-1], "the new lifetime starts after the old"
        assert not (await bus.replay(gone[-1], [CHANNEL])).exact, (
            "a cursor the shard no longer holds is stale"
        )
        await bus.follow([CHANNEL])  # the stream that was closed comes back
        after = await append(bus, 4)
        await wait_until(lambda: seen[-1].cursor == after)
        assert [r.cursor for r in seen] == [*kept, *gone, after]


async def test_appends_made_together_share_round_trips_and_each_gets_its_own_answer(make_node: Make) -> None:
    """Group commit: 200 appends in flight at once reach Redis in far fewer script calls,
    in the order they were made, each answered with its own cursor (or duplicate)."""
    with running_redis() as server:
        bus = make_node(server, ShardKeys(f"group-{secrets.token_hex(4)}"))
        await bus.start()
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        await bus.follow([CHANNEL])
        with server.client() as client:
            client.config_resetstat()
        messages = [
            build_message(event="task.created", scope="user", key="u", data={"n": n}) for n in range(200)
        ]
        results = await asyncio.gather(
            *(
                bus.append(m, encode_data(m, 65536), idempotency_key=f"k{n % 150}")
                for n, m in enumerate(messages)
            )
        )
        with server.client() as client:
            stats = client.info("commandstats")
        calls = int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) + int(
            stats.get("cmdstat_eval", {}).get("calls", 0)
        )
        assert calls < 40, f"{calls} script calls for 200 appends made together"
        firsts = results[:150]
        assert [r.duplicate for r in firsts] == [False] * 150
        cursors = [r.cursor for r in firsts]
        assert cursors == sorted(cursors), "appended in the order they were made"
        assert [(r.cursor, r.duplicate) for r in results[150:]] == [(c, True) for c in cursors[:50]]
        await wait_until(lambda: len(seen) == 150)
        assert [r.message.data["n"] for r in seen] == list(range(150))


async def test_channels_followed_together_are_subscribed_and_caught_up_together(make_node: Make) -> None:
    """Streams opening at once (a reconnect storm): their channels reach Redis in a few
    SUBSCRIBE commands and catch-up calls, not one each, and each is caught up."""
    with running_redis() as server:
        keys = ShardKeys(f"storm-{secrets.token_hex(4)}")
        writer, bus = make_node(server, keys), make_node(server, keys)
        await writer.start()
        await bus.start()
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        users = [f"s{n}" for n in range(200)]
        with server.client() as client:
            client.config_resetstat()
        readiness = [bus.follow([f"user:{user}"]) for user in users]
        await asyncio.gather(*readiness)
        with server.client() as client:
            stats = client.info("commandstats")
        assert int(stats["cmdstat_subscribe"]["calls"]) <= 5
        assert int(stats.get("cmdstat_evalsha", {}).get("calls", 0)) <= 20
        published = []
        for user in users[:20]:
            message = build_message(event="task.created", scope="user", key=user, data={})
            published.append((await writer.append(message, encode_data(message, 65536))).cursor)
        await wait_until(lambda: len(seen) == 20)
        assert [r.cursor for r in seen] == published
