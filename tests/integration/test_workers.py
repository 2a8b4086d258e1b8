"""``herald serve --workers N``: real worker processes on one port.

Each worker also listens on a port of its own (``HERALD_WORKER_PORT_BASE=0``),
so a test can say which worker a client reaches; the shared port is the one
the kernel spreads (SO_REUSEPORT).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from herald.bus.shard_log import ShardKeys
from tests.support.api import unique, wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import SECRET, GatewayProcess, running_gateway, start_gateway
from tests.support.redis import RedisServer
from tests.support.sse import Stream, open_stream

WORKERS = {"HERALD_WORKERS": "2", "HERALD_WORKER_PORT_BASE": "0", "HERALD_HEARTBEAT_SECONDS": "0.5"}


def worker_urls(gateway: GatewayProcess) -> dict[int, str]:
    return {w["worker"]: f"http://127.0.0.1:{w['private_port']}" for w in gateway.listening["workers"]}


def worker_pids(gateway: GatewayProcess) -> dict[int, int]:
    return {w["worker"]: w["pid"] for w in gateway.listening["workers"]}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running either.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def log_lines(gateway: GatewayProcess, event: str) -> list[dict[str, Any]]:
    return [line for line in gateway.logs() if line.get("event") == event]


def worker_of(gateway: GatewayProcess, connection_id: str) -> int | None:
    for line in log_lines(gateway, "sse_connection_established"):
        if line.get("connection_id") == connection_id:
            return int(line["worker"])
    return None


async def established(stream: Stream) -> dict[str, Any]:
    event = await stream.next()
    assert event.event == "connection.established"
    data: dict[str, Any] = event.json()
    return data


@pytest.fixture(scope="module")
def herald() -> Iterator[GatewayProcess]:
    """Two workers on the memory bus: their log is the embedded one."""
    with running_gateway(WORKERS) as gateway:
        yield gateway


def publish(gateway: GatewayProcess, user: str, n: int) -> str:
    return gateway.publish("task.created", "user", user, {"task_id": f"t{n}", "task_type": "x", "n": n})


async def test_connections_are_spread_over_the_workers(herald: GatewayProcess) -> None:
    holders: list[int] = []
    async with asyncio.TaskGroup() as group:
        for _ in range(16):
            group.create_task(_open_and_find_worker(herald, herald.token(unique("u")), holders))
    # 16 connections hashed over 2 sockets all land on one with probability 2^-15.
    assert set(holders) == {1, 2}, holders


async def _open_and_find_worker(gateway: GatewayProcess, token: str, holders: list[int]) -> None:
    async with open_stream(gateway.url, token=token) as stream:
        connection_id = (await established(stream))["connection_id"]
        await wait_until(lambda: worker_of(gateway, connection_id) is not None, what="the stream's log line")
        worker = worker_of(gateway, connection_id)
        assert worker is not None
        holders.append(worker)


async def test_every_log_line_of_a_worker_names_it(herald: GatewayProcess) -> None:
    lines = [line for line in herald.logs() if line.get("event") == "herald_listening"]
    workers = sorted(line["worker"] for line in lines if "worker" in line)
    assert workers == [1, 2]
    assert all("worker" in line or line.get("role") == "supervisor" for line in herald.logs())


async def test_a_client_resumes_exactly_on_another_worker(herald: GatewayProcess) -> None:
    user = unique("u")
    token = herald.token(user)
    urls = worker_urls(herald)
    async with open_stream(urls[1], token=token) as first:
        await established(first)
        cursors = [publish(herald, user, n) for n in range(3)]
        seen = await first.take(3)
        assert [e.id for e in seen] == cursors
    missed = [publish(herald, user, n) for n in range(3, 6)]
    async with open_stream(urls[2], token=token, last_event_id=cursors[-1]) as second:
        hello = await established(second)
        assert hello["recovered"] is True
        assert worker_of(herald, hello["connection_id"]) == 2
        replayed = await second.take(3)
        assert [e.id for e in replayed] == missed
        assert [e.json()["n"] for e in replayed] == [3, 4, 5]
        live = publish(herald, user, 6)
        assert (await second.next()).id == live


async def test_workers_answer_for_themselves_on_their_own_ports(herald: GatewayProcess) -> None:
    user = unique("u")
    urls = worker_urls(herald)
    async with open_stream(urls[2], token=herald.token(user)) as stream:
        await established(stream)
        async with httpx.AsyncClient() as client:
            one = (await client.get(f"{urls[1]}/api/v1/events/health")).json()
            two = (await client.get(f"{urls[2]}/api/v1/events/health")).json()
        # Both read the embedded shared log; the stream is held by worker 2 alone.
        assert one["bus"]["backend"] == two["bus"]["backend"] == "redis"
        assert two["connections"] - one["connections"] >= 1


async def test_sigterm_stops_every_worker_and_the_shared_log_gracefully() -> None:
    gateway = start_gateway(WORKERS)
    try:
        log_pid = log_lines(gateway, "herald_shared_log_started")[0]["pid"]
        pids = worker_pids(gateway)
        urls = worker_urls(gateway)
        token = gateway.token(unique("u"))
        async with open_stream(urls[1], token=token) as one, open_stream(urls[2], token=token) as two:
            await established(one)
            await established(two)
            gateway.process.send_signal(signal.SIGTERM)
            for stream in (one, two):
                closing = await stream.until(lambda e: e.event == "connection.closing", timeout=10)
                assert closing[-1].json()["reason"] == "shutdown"
                await stream.wait_closed(10)
        assert gateway.process.wait(30) == 0
        assert not any(alive(pid) for pid in [*pids.values(), log_pid])
        for worker in (1, 2):
            assert any(
                line.get("worker") == worker for line in log_lines(gateway, "herald_shutdown_complete")
            )
    finally:
        gateway.stop()


async def test_a_killed_worker_is_replaced_and_the_others_keep_their_streams() -> None:
    with running_gateway(WORKERS) as gateway:
        user = unique("u")
        token = gateway.token(user)
        urls = worker_urls(gateway)
        pids = worker_pids(gateway)
        async with open_stream(urls[2], token=token) as survivor:
            await established(survivor)
            os.kill(pids[1], signal.SIGKILL)

            def replaced() -> bool:
                return any(
                    line.get("worker") == 1 and line.get("pid") != pids[1]
                    for line in log_lines(gateway, "herald_worker_ready")
                )

            await wait_until(replaced, timeout=30, what="worker 1 replaced")
            exited = log_lines(gateway, "herald_worker_exited")
            assert [(e["worker"], e["signal"]) for e in exited] == [(1, "SIGKILL")]
            ready = [line for line in log_lines(gateway, "herald_worker_ready") if line.get("pid") != pids[1]]
            new_url = f"http://127.0.0.1:{ready[-1]['private_port']}"
            async with open_stream(new_url, token=token) as fresh:
                hello = await established(fresh)
                assert worker_of(gateway, hello["connection_id"]) == 1
                cursor = publish(gateway, user, 1)
                assert (await fresh.next()).id == cursor
                assert (await survivor.next()).id == cursor
            assert alive(pids[2])


async def test_a_killed_shared_log_is_started_again_and_its_streams_learn_what_was_lost() -> None:
    """The workers' private redis-server killed outright: the supervisor starts it again,
    publishing works within seconds, and the streams that relied on it are closed and told
    ``recovered: false`` when they come back (what it held is gone), never left hanging."""
    with running_gateway(WORKERS) as gateway:
        log_pid = log_lines(gateway, "herald_shared_log_started")[0]["pid"]
        user = unique("u")
        token = gateway.token(user)
        async with open_stream(gateway.url, token=token) as stream:
            await established(stream)
            cursor = publish(gateway, user, 1)
            assert (await stream.next()).id == cursor
            os.kill(log_pid, signal.SIGKILL)
            killed = time.monotonic()
            closing = await stream.until(lambda e: e.event == "connection.closing", timeout=20)
            assert closing[-1].json()["reason"] == "bus_reset"
            closed_after = time.monotonic() - killed

        async def publishes() -> bool:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(
                    f"{gateway.url}/api/v1/events",
                    json={"event": "task.created", "scope": "user", "key": user, "data": {"n": 2}},
                    headers={"authorization": f"Bearer {gateway.publisher_token}"},
                )
            return response.status_code == 202

        await wait_until(publishes, timeout=20, interval=0.2, what="publishing again")
        print(f"\nshared log killed: streams closed after {closed_after:.2f}s, publishing after "
              f"{time.monotonic() - killed:.2f}s")  # fmt: skip
        exited = log_lines(gateway, "herald_shared_log_exited")
        assert [(e["pid"], e["signal"]) for e in exited] == [(log_pid, "SIGKILL")]
        restarted = log_lines(gateway, "herald_shared_log_restarted")
        assert len(restarted) == 1
        assert restarted[0]["pid"] != log_pid
        # A worker that has not yet seen the new lifetime may still send a stream away (with
        # a retry), as a client reconnecting then would see; whoever admits it says the truth.
        told: list[bool] = []

        async def back() -> bool:
            async with open_stream(gateway.url, token=token, last_event_id=cursor) as again:
                first = await again.next()
                if first.event == "connection.established":
                    told.append(first.json()["recovered"])
                return bool(told)

        await wait_until(back, timeout=20, interval=0.2, what="the stream back")
        assert told == [False]


async def test_a_cursor_from_before_the_memory_log_restarted_is_not_replayed() -> None:
    """The embedded log lives as long as the supervisor: after a restart of the whole
    server (not of one worker) the old cursors are stale, and clients are told so."""
    user = unique("u")
    with running_gateway(WORKERS) as before:
        token = before.token(user)
        cursor = publish(before, user, 1)
    with running_gateway(WORKERS) as after:
        async with open_stream(after.url, token=token, last_event_id=cursor) as stream:
            hello = await established(stream)
            assert (hello["recovered"], hello["replay_miss"]) == (False, "stale")


async def test_workers_on_the_redis_bus_share_the_configured_redis(redis_server: RedisServer) -> None:
    env = {**cluster_env(redis_server), **WORKERS}
    with running_gateway(env) as gateway:
        assert log_lines(gateway, "herald_shared_log_started") == []
        user = unique("u")
        token = gateway.token(user)
        urls = worker_urls(gateway)
        async with open_stream(urls[1], token=token) as first:
            await established(first)
            cursor = publish(gateway, user, 1)
            assert (await first.next()).id == cursor
        missed = publish(gateway, user, 2)
        async with open_stream(urls[2], token=token, last_event_id=cursor) as second:
            assert (await established(second))["recovered"] is True
            assert (await second.next()).id == missed
        with redis_server.client() as client:
            assert client.xlen(ShardKeys(env["HERALD_REDIS_PREFIX"]).log(f"user:{user}")) == 2


def serve(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald", "serve", "--port", "0", *args],
        env={**os.environ, "HERALD_JWT_SECRET": SECRET, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_several_workers_on_the_memory_bus_without_redis_server_are_refused() -> None:
    done = serve("--workers", "3", env={"HERALD_EMBEDDED_REDIS_SERVER": "/nonexistent/redis-server"})
    assert done.returncode == 2
    assert "redis-server" in done.stderr


def test_the_default_falls_back_to_one_worker_without_redis_server_and_says_so() -> None:
    """The embedded default starts without a warning (issue 13): one process is a whole
    Herald; the log says, as information, why there is only one."""
    gateway = start_gateway(
        {"HERALD_WORKERS": "0", "HERALD_EMBEDDED_REDIS_SERVER": "/nonexistent/redis-server"}
    )
    try:
        reduced = log_lines(gateway, "herald_workers_reduced")
        assert len(reduced) == 1
        assert "redis-server" in reduced[0]["reason"]
        assert reduced[0]["level"] == "info"
        assert not [line for line in gateway.logs() if line.get("level") in ("warning", "error")]
        assert "workers" not in gateway.listening  # today's single process
    finally:
        gateway.stop()
