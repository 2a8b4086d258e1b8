"""SIGTERM during traffic (docs/architecture.md, D10): every stream of the stopping
node is told when to come back, jittered; each client resumes from its cursor,
half on the other node and half on the restarted one, and receives every event
meant for it exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from tests.support.api import api_client, unique, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.redis import RedisServer
from tests.support.sse import StreamRefused, open_stream

CLIENTS = 16
FINAL = "test.final-published"


class Follower:
    """A client that reconnects the way a browser does: after the ``retry`` it was
    given, with its Last-Event-ID, to the URL it is pointed at."""

    def __init__(self, user: str, token: str) -> None:
        self.user = user
        self.token = token
        self.received: list[str] = []
        self.connects: list[tuple[str, bool | None]] = []
        self.closing_retries: list[int] = []
        self.url: str = ""
        self.cursor: str | None = None

    async def run(self) -> None:
        retry_ms = 100
        while True:
            try:
                async with open_stream(self.url, token=self.token, last_event_id=self.cursor) as stream:
                    hello = await stream.next(timeout=10)
                    self.connects.append((self.url, hello.json()["recovered"]))
                    while True:
                        try:
                            event = await stream.next(timeout=30)
                        except EOFError:
                            break
                        if event.event == "connection.closing":
                            retry_ms = event.json()["retry_ms"]
                            self.closing_retries.append(retry_ms)
                            continue
                        self.received.append(event.id or "")
                        if event.event == FINAL:
                            return
                    self.cursor = stream.last_event_id
            except (StreamRefused, httpx.HTTPError):
                retry_ms = 100  # the node is not there (yet): try again shortly
            await asyncio.sleep(retry_ms / 1000)


async def test_sigterm_during_traffic_loses_nothing_for_any_client(redis_server: RedisServer) -> None:
    env = cluster_env(
        redis_server,
        HERALD_HEARTBEAT_SECONDS="0.5",
        HERALD_RETRY_MS="200",
        HERALD_SHUTDOWN_RETRY_SPREAD_MS="800",
        HERALD_SHUTDOWN_GRACE_SECONDS="3",
    )
    restarted: GatewayProcess | None = None
    with running_cluster(2, env) as (stopping, staying):
        followers = [
            Follower(user, stopping.token(user)) for user in (unique(f"c{i}") for i in range(CLIENTS))
        ]
        for follower in followers:
            follower.url = stopping.url
        tasks = [asyncio.create_task(f.run()) for f in followers]
        published: list[tuple[str, str | None]] = []  # (cursor, user or None for global)
        try:
            async with api_client(staying) as api:
                await api.wait_connections(0)

                async with api_client(stopping) as direct:
                    await direct.wait_connections(CLIENTS, timeout=20)

                stop_traffic = asyncio.Event()

                async def traffic() -> None:
                    n = 0
                    while not stop_traffic.is_set():
                        if n % 5 == 4:
                            cursor = await api.publish("system.notification", "global", None, {"n": n})
                            published.append((cursor, None))
                        else:
                            user = followers[n % CLIENTS].user
                            cursor = await api.publish("task.created", "user", user, {"n": n})
                            published.append((cursor, user))
                        n += 1
                        await asyncio.sleep(0.005)

                publisher = asyncio.create_task(traffic())
                await wait_until(lambda: len(published) >= 50, what="traffic before the signal")
                # Half of the clients will come back to the other node, half to the restarted one.
                for i, follower in enumerate(followers):
                    follower.url = staying.url if i % 2 else stopping.url
                port = stopping.port
                assert await asyncio.get_running_loop().run_in_executor(None, stopping.stop) == 0
                restarted = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: start_gateway(env, port=port)
                )
                count = len(published)
                await wait_until(lambda: len(published) >= count + 50, what="traffic after the restart")
                stop_traffic.set()
                await publisher
                final = await api.publish(FINAL, "global", None, {})
                published.append((final, None))
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
            if restarted is not None:
                restarted.stop()

    for i, follower in enumerate(followers):
        expected = [cursor for cursor, user in published if user in (None, follower.user)]
        assert follower.received == expected, f"client {i} lost or repeated events"
        # It was told to come back, and it came back recovered, where it was sent.
        assert len(follower.closing_retries) == 1
        assert 200 <= follower.closing_retries[0] <= 1000
        first, *again = follower.connects
        assert first == (stopping.url, False)
        assert again, "it reconnected"
        assert again[-1] == (staying.url if i % 2 else stopping.url, True)
    retries = {f.closing_retries[0] for f in followers}
    assert len(retries) > CLIENTS // 2, "reconnects are spread, not a stampede"
