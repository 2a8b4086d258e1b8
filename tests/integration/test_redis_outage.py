"""Redis goes away under live traffic and comes back: with its data (a 10 s outage of a
real server, stopped and restarted on the same port), and empty (data lost)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.support.api import MARKER, Api, api_client, ids, unique, until_marker, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.redis import running_redis
from tests.support.sse import Stream, open_stream

OUTAGE_SECONDS = 10.0
#: A publish during the outage must answer within the command timeout, plus slack.
REDIS_TIMEOUT = "1"
ANSWER_BOUND = 3.0


def cursor_key(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms), int(seq)


async def healthy(api: Api) -> bool:
    return (await api.client.get("/api/v1/events/health")).status_code == 200


async def not_ready(api: Api) -> bool:
    response = await api.client.get("/api/v1/events/health")
    return response.status_code == 503 and response.json()["bus"]["healthy"] is False


class Publisher:
    """Publishes with idempotency keys; on 503 keeps the key to retry, as a client should."""

    def __init__(self, apis: list[Api], user: str) -> None:
        self.apis = apis
        self.user = user
        self.accepted: dict[str, str] = {}
        self.refused: list[str] = []
        self.sent = 0

    async def publish_one(self) -> httpx.Response:
        key = f"{self.user}-{self.sent}"
        api = self.apis[self.sent % len(self.apis)]
        self.sent += 1
        return await self.send(api, key)

    async def send(self, api: Api, key: str) -> httpx.Response:
        body = {"event": "task.created", "scope": "user", "key": self.user, "data": {"k": key}}
        started = time.monotonic()
        response = await api.post_event({**body, "idempotency_key": key}, api.gateway.publisher_token)
        elapsed = time.monotonic() - started
        assert elapsed < ANSWER_BOUND, f"publish took {elapsed:.2f}s"
        if response.status_code == 202:
            self.accepted[key] = response.json()["id"]
        else:
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "BUS_UNAVAILABLE"
            assert int(response.headers["retry-after"]) >= 1
            self.refused.append(key)
        return response

    async def retry_refused(self) -> None:
        refused, self.refused = self.refused, []
        for i, key in enumerate(refused):
            response = await self.send(self.apis[i % len(self.apis)], key)
            assert response.status_code == 202, response.text

    def expected(self) -> list[str]:
        return sorted(set(self.accepted.values()), key=cursor_key)


async def test_a_ten_second_outage_under_live_traffic_loses_and_duplicates_nothing() -> None:
    with (
        running_redis() as redis,
        running_cluster(2, cluster_env(redis, HERALD_REDIS_TIMEOUT_SECONDS=REDIS_TIMEOUT)) as nodes,
    ):
        user = unique("u")
        token = nodes[0].token(user)
        async with (
            api_client(nodes[0]) as a,
            api_client(nodes[1]) as b,
            open_stream(nodes[0].url, token=token) as on_a,
            open_stream(nodes[1].url, token=token) as on_b,
        ):
            for stream in (on_a, on_b):
                await stream.next()
            publisher = Publisher([a, b], user)
            for _ in range(10):
                assert (await publisher.publish_one()).status_code == 202

            # Redis goes away, its data saved; traffic goes on against the nodes.
            redis.stop(save=True)
            outage_started = time.monotonic()
            heartbeats = (on_a.heartbeats, on_b.heartbeats)
            await wait_until(lambda: not_ready(a), what="node A to report not ready")
            await wait_until(lambda: not_ready(b), what="node B to report not ready")
            refused_before = len(publisher.refused)
            while time.monotonic() - outage_started < OUTAGE_SECONDS:
                await publisher.publish_one()
                await asyncio.sleep(0.05)
            assert len(publisher.refused) > refused_before + 20, "publishing was refused throughout"
            assert on_a.heartbeats > heartbeats[0] + 5, "open streams keep their heartbeats"
            assert on_b.heartbeats > heartbeats[1] + 5
            assert not on_a.closed.is_set()
            assert not on_b.closed.is_set()

            # Redis comes back with its data: readers resume where they were.
            redis.start()
            restarted = time.monotonic()
            await wait_until(lambda: healthy(a), timeout=10, what="node A ready again")
            await wait_until(lambda: healthy(b), timeout=10, what="node B ready again")
            recovery = time.monotonic() - restarted
            await publisher.retry_refused()
            for _ in range(10):
                assert (await publisher.publish_one()).status_code == 202
            marker = await a.marker()
            expected = publisher.expected()
            assert len(expected) == publisher.sent
            for stream in (on_a, on_b):
                received = await until_marker(stream, marker, timeout=10)
                assert ids(received) == expected
                assert _established_count(stream) == 1, "the stream stayed open"
            # Measured figure, shown with ``pytest -s``.
            print(
                f"\noutage recovery: ready {recovery:.3f}s after restart; {len(expected)} events, none lost"
            )


async def test_a_stalled_redis_gets_answers_within_the_timeout_and_loses_nothing() -> None:
    """Redis frozen (SIGSTOP): sockets stay open and nothing answers. Publishing still
    answers 503 within the command timeout, never hangs; after the stall, retried
    publishes (same idempotency keys) are one event each, even those Redis ran late."""
    with (
        running_redis() as redis,
        running_cluster(1, cluster_env(redis, HERALD_REDIS_TIMEOUT_SECONDS=REDIS_TIMEOUT)) as (node,),
    ):
        user = unique("u")
        async with api_client(node) as api, open_stream(node.url, token=node.token(user)) as stream:
            await stream.next()
            publisher = Publisher([api], user)
            assert (await publisher.publish_one()).status_code == 202
            redis.pause()
            try:
                stalled = time.monotonic()
                while not publisher.refused or time.monotonic() - stalled < 3:
                    await publisher.publish_one()
                await wait_until(lambda: not_ready(api), what="not ready while Redis is frozen")
            finally:
                redis.resume()
            await wait_until(lambda: healthy(api), timeout=10, what="ready after the stall")
            await publisher.retry_refused()
            marker = await api.marker()
            assert ids(await until_marker(stream, marker, timeout=10)) == publisher.expected()


def _established_count(stream: Stream) -> int:
    return sum(event.event == "connection.established" for event in stream.events)


async def test_redis_restarted_empty_tells_every_client_recovered_false() -> None:
    with running_redis() as redis, running_cluster(2, cluster_env(redis)) as nodes:
        user = unique("u")
        token = nodes[0].token(user)
        async with api_client(nodes[0]) as a, api_client(nodes[1]) as b:
            async with open_stream(nodes[0].url, token=token) as stream:
                await stream.next()
                before = [await a.publish("task.created", "user", user, {"n": i}) for i in range(3)]
                assert ids(await stream.take(3)) == before
                cursor = stream.last_event_id

                redis.stop(save=False)
                redis.start()
                # The node notices the lost log and closes its streams, with a retry.
                closing = await stream.until(lambda e: e.event == "connection.closing", timeout=15)
                assert closing[-1].json()["reason"] == "bus_reset"
                await asyncio.wait_for(stream.closed.wait(), 5)

            await wait_until(lambda: healthy(b), timeout=10, what="node B ready again")
            resume_from: list[str | None] = []
            published_after: list[str] = []
            for node in nodes:
                async with open_stream(node.url, token=token, last_event_id=cursor) as again:
                    established = await again.next()
                    hello: dict[str, Any] = established.json()
                    assert hello["recovered"] is False
                    assert hello["replay_miss"] == "stale"
                    resume_from.append(established.id)
                    after = await b.publish("task.created", "user", user, {"n": 3})
                    published_after.append(after)
                    marker = await a.marker()
                    assert ids(await until_marker(again, marker)) == [after]

            # The position a stream of the new log hands out is one of the new log's: a
            # client resuming from it is told recovered:true and misses nothing.
            async with open_stream(nodes[0].url, token=token, last_event_id=resume_from[0]) as resumed:
                hello = (await resumed.next()).json()
                assert hello["recovered"] is True, hello
                marker = await a.marker()
                replayed = [e for e in await until_marker(resumed, marker) if e.event != MARKER]
                assert ids(replayed) == published_after


async def test_a_replay_while_redis_is_down_tells_the_client_when_to_come_back() -> None:
    """The 200 is sent before the replay is read: a replay that cannot be read ends the
    stream with a retry and connection.closing, not a bare close; back up, it resumes."""
    with (
        running_redis() as redis,
        running_cluster(1, {**cluster_env(redis), "HERALD_RETRY_MS": "500"}) as nodes,
    ):
        user = unique("u")
        token = nodes[0].token(user)
        async with api_client(nodes[0]) as api:
            cursor = await api.publish("task.created", "user", user, {"n": 0})
            redis.stop(save=True)
            try:
                async with open_stream(nodes[0].url, token=token, last_event_id=cursor) as stream:
                    closing = await stream.until(lambda e: e.event == "connection.closing", timeout=10)
                    assert closing[-1].json()["reason"] == "replay_unavailable"
                    assert 500 <= (stream.parser.retry or 0) <= 500 + 10_000
                    await stream.wait_closed()
            finally:
                redis.start()
            await wait_until(lambda: healthy(api), timeout=10, what="ready again")
            after = await api.publish("task.created", "user", user, {"n": 1})
            async with open_stream(nodes[0].url, token=token, last_event_id=cursor) as again:
                assert (await again.next()).json()["recovered"] is True
                assert (await again.next()).id == after
