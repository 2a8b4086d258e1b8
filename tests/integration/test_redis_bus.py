"""What the Redis bus does beyond the shared contract: several nodes on one log,
Redis going away, and a log that Redis lost."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable

import pytest

from herald.bus.base import BusRecord
from herald.bus.redis import LOG_REPLACED, LOG_REWOUND, RedisBus
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.errors import BusUnavailable
from herald.events.message import build_message, encode_data
from herald.wire.cursor import Cursor
from tests.support.redis import RedisServer, running_redis
from tests.support.waiting import wait_until

Make = Callable[..., RedisBus]


@pytest.fixture
async def make_node() -> AsyncIterator[Callable[[RedisServer, Keyspace], RedisBus]]:
    """Buses on one key prefix: the nodes of one cluster."""
    opened: list[tuple[RedisBus, RedisConnections]] = []

    def make(server: RedisServer, keys: Keyspace, **options: float) -> RedisBus:
        connections = RedisConnections(server.url, timeout=1.0)
        bus = RedisBus(connections, keys=keys, **options)  # type: ignore[arg-type]
        opened.append((bus, connections))
        return bus

    yield make
    for bus, connections in opened:
        await bus.stop()
        await connections.aclose()


async def append(bus: RedisBus, n: int) -> Cursor:
    message = build_message(event="task.created", scope="user", key="u", data={"n": n})
    return (await bus.append(message, encode_data(message, 65536))).cursor


async def test_a_replay_holds_only_what_this_nodes_reader_passed_the_rest_comes_live(
    redis_server: RedisServer, make_node: Callable[..., RedisBus]
) -> None:
    """The seam on a networked bus: whatever the replay returned, the listener must not
    deliver again, and whatever it did not return, the listener must deliver."""
    keys = Keyspace(f"seam-{secrets.token_hex(4)}")
    writer, reader = make_node(redis_server, keys), make_node(redis_server, keys)
    await writer.start()
    await reader.start()
    start = await append(writer, -1)
    await wait_until(lambda: reader.head == start)
    live: list[tuple[bool, BusRecord]] = []
    replayed_yet = False
    reader.subscribe(lambda record: live.append((replayed_yet, record)))
    appended = await asyncio.gather(*(append(writer, n) for n in range(200)))
    replay = await reader.replay(start)
    replayed_yet = True
    assert replay.exact
    await wait_until(lambda: reader.head == max(appended))
    replayed = [r.cursor for r in replay.records]
    after_replay = [r.cursor for seen_after, r in live if seen_after]
    assert replayed + after_replay == sorted(appended), "no gap, no duplicate at the seam"


async def test_a_client_ahead_of_this_node_waits_for_the_reader(
    redis_server: RedisServer, make_node: Callable[..., RedisBus]
) -> None:
    keys = Keyspace(f"ahead-{secrets.token_hex(4)}")
    writer, lagging = make_node(redis_server, keys), make_node(redis_server, keys)
    await writer.start()
    await lagging.start()
    cursors = [await append(writer, n) for n in range(5)]
    # Straight away: the lagging node may not have read cursors[3] yet.
    replay = await lagging.replay(cursors[3])
    assert replay.exact
    assert [r.cursor for r in replay.records] == cursors[4:]
    assert lagging.head >= cursors[3]


async def test_a_log_redis_lost_is_replaced_reported_and_its_cursors_are_stale(
    redis_server: RedisServer, make_node: Callable[..., RedisBus]
) -> None:
    keys = Keyspace(f"lost-{secrets.token_hex(4)}")
    bus = make_node(redis_server, keys, check_seconds=0.2)
    reasons: list[str] = []
    bus.on_discontinuity.append(reasons.append)
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    await bus.start()
    old = [await append(bus, n) for n in range(3)]
    await wait_until(lambda: len(seen) == 3)
    old_origin = bus.origin
    with redis_server.client() as admin:
        admin.delete(keys.log, keys.meta)
    await wait_until(lambda: reasons == [LOG_REPLACED])
    assert bus.origin != old_origin
    assert Cursor(*map(int, bus.origin.split("-"))) > old[-1], "the new lifetime starts after the old"
    for cursor in old:
        assert not (await bus.replay(cursor)).exact
    new = await append(bus, 3)
    await wait_until(lambda: seen[-1].cursor == new)
    assert [r.cursor for r in seen] == [*old, new], "each record once, in order"


async def test_redis_away_and_back_with_its_data(make_node: Callable[..., RedisBus]) -> None:
    with running_redis() as server:
        bus = make_node(server, Keyspace("outage"))
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        await bus.start()
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
        assert (await bus.replay(before[0])).exact


async def test_a_log_restored_from_an_older_snapshot_is_reported(make_node: Callable[..., RedisBus]) -> None:
    with running_redis() as server:
        bus = make_node(server, Keyspace("rewind"))
        reasons: list[str] = []
        bus.on_discontinuity.append(reasons.append)
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
        await bus.start()
        kept = [await append(bus, n) for n in range(2)]
        with server.client() as admin:
            admin.save()  # the snapshot Redis will come back from
        lost = [await append(bus, n) for n in range(2, 4)]
        await wait_until(lambda: len(seen) == 4)
        server.kill()
        server.start()
        await wait_until(lambda: reasons == [LOG_REWOUND], timeout=10)
        assert (await bus.replay(kept[-1])).exact
        assert not (await bus.replay(lost[-1])).exact, "a cursor the log no longer holds is stale"
        after = await append(bus, 4)
        await wait_until(lambda: seen[-1].cursor == after)
        assert [r.cursor for r in seen] == [*kept, *lost, after]


async def test_a_replay_hands_out_the_records_the_reader_built(
    redis_server: RedisServer, make_node: Callable[..., RedisBus]
) -> None:
    """Encode once per node: a reconnect storm shares frames rather than decode copies."""
    bus = make_node(redis_server, Keyspace(f"recent-{secrets.token_hex(4)}"))
    seen: list[BusRecord] = []
    bus.subscribe(seen.append)
    await bus.start()
    cursors = [await append(bus, n) for n in range(5)]
    await wait_until(lambda: len(seen) == 5)
    first, second = await bus.replay(cursors[0]), await bus.replay(cursors[0])
    assert all(a is b is c for a, b, c in zip(first.records, second.records, seen[1:], strict=True))


async def test_appends_made_together_share_round_trips_and_each_gets_its_own_answer(
    make_node: Callable[..., RedisBus],
) -> None:
    """Group commit: 200 appends in flight at once reach Redis in far fewer script calls,
    in the order they were made, each answered with its own cursor (or duplicate)."""
    with running_redis() as server:
        bus = make_node(server, Keyspace(f"group-{secrets.token_hex(4)}"))
        await bus.start()
        seen: list[BusRecord] = []
        bus.subscribe(seen.append)
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
            calls = int(client.info("commandstats")["cmdstat_evalsha"]["calls"])
        assert calls < 20, f"{calls} script calls for 200 appends made together"
        firsts = results[:150]
        assert [r.duplicate for r in firsts] == [False] * 150
        cursors = [r.cursor for r in firsts]
        assert cursors == sorted(cursors), "appended in the order they were made"
        assert [(r.cursor, r.duplicate) for r in results[150:]] == [(c, True) for c in cursors[:50]]
        await wait_until(lambda: len(seen) == 150)
        assert [r.message.data["n"] for r in seen] == list(range(150))
