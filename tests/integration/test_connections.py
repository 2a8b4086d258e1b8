"""Health, and connections that leave: a closed stream is forgotten at once."""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta

from tests.support.api import Api, unique
from tests.support.gateway import GatewayProcess
from tests.support.sse import Stream, open_stream

CURSOR = re.compile(r"\d+-\d+")


async def test_health_reports_status_counts_and_position(gateway: GatewayProcess, api: Api) -> None:
    response = await api.client.get("/api/v1/events/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    health = response.json()
    assert set(health) == {
        "status",
        "connections",
        "users",
        "position",
        "bus",
        "accepting",
        "sources",
        "throttle",
    }
    assert health["status"] == "ok"
    assert health["bus"] == {"backend": "memory", "healthy": True}
    assert health["accepting"] is True
    assert isinstance(health["connections"], int)
    assert isinstance(health["users"], int)
    assert CURSOR.fullmatch(health["position"])

    cursor = await api.publish("task.created", "user", unique("u"), {})
    assert (await api.health())["position"] == cursor


async def test_health_counts_connections_and_users(gateway: GatewayProcess, api: Api) -> None:
    await api.wait_connections(0)
    alice, bob = unique("alice"), unique("bob")
    async with AsyncExitStack() as stack:
        for user in (alice, alice, alice, bob):
            stream = await stack.enter_async_context(open_stream(gateway.url, token=gateway.token(user)))
            await stream.next()
        health = await api.health()
        assert (health["connections"], health["users"]) == (4, 2)
    await api.wait_connections(0)
    assert (await api.health())["users"] == 0


async def test_a_client_that_disconnects_is_removed_at_once(gateway: GatewayProcess, api: Api) -> None:
    await api.wait_connections(0)
    user = unique("u")
    async with open_stream(gateway.url, token=gateway.token(user)) as staying:
        await staying.next()
        async with AsyncExitStack() as stack:
            leaving: list[Stream] = []
            for _ in range(3):
                stream = await stack.enter_async_context(open_stream(gateway.url, token=gateway.token(user)))
                await stream.next()
                leaving.append(stream)
            assert await api.connections() == 4
        await api.wait_connections(1)
        # The one left still gets its user's events; nothing was sent to the others.
        cursor = await api.publish("task.created", "user", user, {})
        assert (await staying.next()).id == cursor
        assert all(len(stream.events) == 1 for stream in leaving)
    await api.wait_connections(0)


async def test_a_socket_cut_without_a_goodbye_is_removed(gateway: GatewayProcess, api: Api) -> None:
    await api.wait_connections(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    token = gateway.token(unique("u"))
    writer.write(
        f"GET /api/v1/events/stream HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n".encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"event: connection.established" in await reader.readuntil(b"event: connection.established")
    await api.wait_connections(1)
    writer.transport.abort()  # RST: no FIN, no request to stop
    await api.wait_connections(0)
    writer.close()
    await writer.wait_closed()


async def test_a_stream_opens_with_retry_then_connection_established(gateway: GatewayProcess) -> None:
    async with open_stream(gateway.url, token=gateway.token(unique("u"))) as stream:
        assert stream.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "no-cache" in stream.response.headers["cache-control"]
        hello = await stream.next()
        assert hello.event == "connection.established"
        assert hello.retry == 3000  # the retry: field came before the first event
        assert hello.id is not None
        assert CURSOR.fullmatch(hello.id)
        body = hello.json()
        assert set(body) == {
            "connection_id",
            "server_time",
            "server_version",
            "recovered",
            "replay_miss",
            "subscriptions",
            "deep_replay",
            "_scope",
            "_version",
        }
        assert body["connection_id"]
        assert body["deep_replay"] is None
        server_time = datetime.fromisoformat(body["server_time"])
        assert server_time.utcoffset() == timedelta(0)
        assert abs((datetime.now(UTC) - server_time).total_seconds()) < 60
        assert (body["_scope"], body["_version"]) == ("connection", "1.0")


async def test_every_connection_gets_its_own_id(gateway: GatewayProcess) -> None:
    token = gateway.token(unique("u"))
    seen = set()
    for _ in range(3):
        async with open_stream(gateway.url, token=token) as stream:
            seen.add((await stream.next()).json()["connection_id"])
    assert len(seen) == 3
