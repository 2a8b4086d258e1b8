"""Several gateway processes sharing one real Redis act as one gateway: one log, one
order, resume anywhere, shared stream-token leases, idempotency and per-user counts."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_counting import RedisConnectionCounter
from tests.support.api import Api, api_client, ids, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess
from tests.support.metrics import scrape
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import StreamRefused, open_stream


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def nodes(redis: RedisServer) -> Iterator[list[GatewayProcess]]:
    """Three nodes of one cluster (shared by the tests that do not stop a node).
    One user opens 60 streams here: no per-user limits (tests/integration/test_limits.py)."""
    env = cluster_env(redis, HERALD_MAX_CONNECTIONS_PER_USER="0", HERALD_CONNECT_RATE_PER_USER="0")
    with running_cluster(3, env) as cluster:
        yield cluster


@pytest.fixture
async def apis(nodes: list[GatewayProcess]) -> AsyncIterator[list[Api]]:
    async with api_client(nodes[0]) as a, api_client(nodes[1]) as b, api_client(nodes[2]) as c:
        yield [a, b, c]


async def test_clients_on_different_nodes_receive_the_same_events_in_the_same_order(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    user = unique("u")
    token = nodes[0].token(user)
    async with (
        open_stream(nodes[0].url, token=token) as s0,
        open_stream(nodes[1].url, token=token) as s1,
        open_stream(nodes[2].url, token=token) as s2,
    ):
        for stream in (s0, s1, s2):
            await stream.next()
        # Published through every node in turn, and concurrently from all three.
        published = [await apis[i % 3].publish("task.created", "user", user, {"n": i}) for i in range(12)]
        published += await asyncio.gather(
            *(apis[i % 3].publish("task.created", "user", user, {"n": i}) for i in range(12, 30))
        )
        published.append(await apis[1].publish("system.notification", "global", None, {"title": "t"}))
        marker = await apis[2].marker()
        expected = sorted(published, key=lambda c: tuple(map(int, c.split("-"))))
        for stream in (s0, s1, s2):
            received = ids(await until_marker(stream, marker))
            assert received == expected


async def test_a_client_resumes_on_another_node_without_gap_or_duplicate(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    user = unique("u")
    token = nodes[0].token(user)
    async with open_stream(nodes[0].url, token=token) as first:
        await first.next()
        seen = [await apis[0].publish("task.created", "user", user, {"n": i}) for i in range(3)]
        assert ids(await first.take(3)) == seen
        cursor = first.last_event_id
    missed = [await apis[(i % 2) + 1].publish("task.created", "user", user, {"n": i}) for i in range(3, 8)]
    await apis[2].publish("task.created", "user", unique("other"), {"n": -1})
    async with open_stream(nodes[1].url, token=token, last_event_id=cursor) as second:
        hello = (await second.next()).json()
        assert hello["recovered"] is True
        assert ids(await second.take(len(missed))) == missed
        live = await apis[2].publish("task.created", "user", user, {"n": 8})
        marker = await apis[0].marker()
        assert ids(await until_marker(second, marker)) == [live]


async def test_a_stream_token_minted_on_one_node_opens_one_stream_anywhere(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    user = unique("u")
    minted = await apis[0].stream_token(nodes[0].token(user))
    async with open_stream(nodes[1].url, stream_token=minted["token"]) as stream:
        assert (await stream.next()).json()["connection_id"]
        for node in (nodes[0], nodes[2]):
            with pytest.raises(StreamRefused) as refused:
                async with open_stream(node.url, stream_token=minted["token"]):
                    pass
            assert refused.value.status == 401
            assert refused.value.body["code"] == "STREAM_TOKEN_IN_USE"

    async def reopens_on_another_node() -> bool:
        try:
            async with open_stream(nodes[2].url, stream_token=minted["token"]) as again:
                await again.next()
                return True
        except StreamRefused:
            return False  # the first stream's lease is still being given back

    await wait_until(reopens_on_another_node, what="the lease given back when the stream closed")


async def test_concurrent_duplicate_publishes_on_several_nodes_append_one_event(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    user = unique("u")
    key = unique("idem")
    body = {"event": "task.created", "scope": "user", "key": user, "data": {"n": 1}, "idempotency_key": key}
    async with open_stream(nodes[2].url, token=nodes[2].token(user)) as stream:
        await stream.next()
        responses = await asyncio.gather(
            *(apis[i % 3].post_event(body, nodes[0].publisher_token) for i in range(30))
        )
        assert {r.status_code for r in responses} == {202}
        answers = [r.json() for r in responses]
        assert len({a["id"] for a in answers}) == 1
        assert sum(not a["duplicate"] for a in answers) == 1
        marker = await apis[1].marker()
        assert ids(await until_marker(stream, marker)) == [answers[0]["id"]]


async def test_health_reports_the_redis_bus(apis: list[Api]) -> None:
    for api in apis:
        health = await api.health()
        assert health["status"] == "ok"
        assert health["bus"] == {"backend": "redis", "healthy": True}


async def test_replays_on_a_node_that_follows_the_channels_come_from_its_tails(
    nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    """Streams coming back with one cursor to a node that follows their channels: the
    first replay reads each channel from Redis, the others are served from memory, and all
    get exactly what they missed."""
    user = unique("u")
    node, api = nodes[0], apis[0]

    async def reads() -> tuple[float, float]:
        samples = await scrape(api.client)

        def read(source: str) -> float:
            return samples.get(("herald_replay_channel_reads_total", (("source", source),)), 0.0)

        return read("tail"), read("redis")

    async with open_stream(node.url, token=node.token(user)) as live:
        await live.next()
        cursor = await api.publish("task.created", "user", user, {"n": 0})
        missed = [await api.publish("task.created", "user", user, {"n": n}) for n in range(1, 4)]
        await live.until(lambda e: e.id == missed[-1])
        tail_before, redis_before = await reads()
        for _ in range(5):
            async with open_stream(node.url, token=node.token(user), last_event_id=cursor) as again:
                assert (await again.next()).json()["recovered"] is True
                got = await again.until(lambda e: e.id == missed[-1])
                assert [e.id for e in got if e.event == "task.created"] == missed
        tail_after, redis_after = await reads()
    channels = redis_after - redis_before  # the first replay's: its user and the global channel
    assert 1 <= channels <= 3
    assert tail_after - tail_before == 4 * channels


async def test_a_killed_nodes_connections_stop_counting_and_closed_ones_count_once(
    redis: RedisServer,
) -> None:
    lease = 2.0
    env = cluster_env(redis, HERALD_CONNECTION_LEASE_SECONDS=str(lease))
    connections = RedisConnections(redis.url)
    counter = RedisConnectionCounter(connections, Keyspace(env["HERALD_REDIS_PREFIX"]), lease_seconds=lease)
    user = unique("u")
    try:
        with running_cluster(2, env) as (doomed, survivor):
            token = survivor.token(user)
            async with open_stream(survivor.url, token=token) as kept:
                await kept.next()
                # Two streams on the node that will die, held open by raw sockets the test drops.
                held = [await _open_raw_stream(doomed, token) for _ in range(2)]
                assert await counter.count(user) == 3
                doomed.stop(signal.SIGKILL)
                for writer in held:
                    writer.close()

                async def counts(n: int) -> bool:
                    return await counter.count(user) == n

                # Nobody renews the dead node's leases: they lapse within the lease time.
                await wait_until(
                    lambda: counts(1), timeout=3 * lease, what="the killed node's leases to lapse"
                )
                # The survivor renews its own: it keeps counting over several lease times.
                deadline = time.monotonic() + 2 * lease
                while time.monotonic() < deadline:
                    assert await counter.count(user) == 1
                    await asyncio.sleep(0.1)
            await wait_until(lambda: counts(0), what="the closed stream's lease given back")
    finally:
        await connections.aclose()


async def _open_raw_stream(node: GatewayProcess, token: str) -> asyncio.StreamWriter:
    """A stream opened over a bare socket and read up to its first event."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    writer.write(
        b"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer %s\r\n\r\n" % token.encode()
    )
    await asyncio.wait_for(reader.readuntil(b"event: connection.established"), 10)
    return writer


async def test_streams_cost_redis_no_connection_and_no_round_trip_each(
    redis: RedisServer, nodes: list[GatewayProcess], apis: list[Api]
) -> None:
    """LESSONS, "One broker connection per browser connection": a node gets each event
    once and fans out in memory, however many streams it holds."""
    user = unique("u")
    with redis.client() as admin:

        def herald_clients() -> int:
            return sum(str(c.get("name", "")).startswith("herald:") for c in admin.client_list())

        before = herald_clients()
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                await stack.enter_async_context(open_stream(node.url, token=node.token(user)))
                for node in nodes
                for _ in range(20)
            ]
            for stream in streams:
                await stream.next()
            assert herald_clients() <= before + len(nodes), "no Redis connection per stream"
            admin.config_resetstat()
            started = time.monotonic()
            published = [await apis[i % 3].publish("task.created", "user", user, {"n": i}) for i in range(20)]
            for stream in streams:
                assert ids(await stream.take(20)) == published
            calls = {name: stat["calls"] for name, stat in admin.info("commandstats").items()}
            seconds = time.monotonic() - started
        # One append and one notice per event, whatever the streams and nodes (D28); per node
        # a probe of the shard's clock a second and maybe a lease renewal: nothing per stream.
        assert calls["cmdstat_xadd"] == 20
        assert calls["cmdstat_publish"] == 20
        assert calls["cmdstat_evalsha"] <= 20 + len(nodes) * (2 * (int(seconds) + 2))
        assert "cmdstat_xread" not in calls, "no node reads the whole log"
