"""The control API over a real socket, and waiting for conditions with a deadline.

Integration tests wait for what they can observe (a health count, a cursor,
the clock), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from tests.support.gateway import GatewayProcess
from tests.support.sse import Event, Stream

PUBLISH = "/api/v1/events"
HEALTH = "/api/v1/events/health"
STREAM_TOKEN = "/api/v1/auth/sse-token"
MARKER = "test.marker-published"


def unique(prefix: str) -> str:
    """An id no other test uses, so tests sharing a gateway never see each other's events."""
    return f"{prefix}-{secrets.token_hex(4)}"


async def wait_until(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    *,
    timeout: float = 5.0,
    interval: float = 0.02,
    what: str = "condition",
) -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class Api:
    """The gateway's HTTP control API through one keep-alive client."""

    def __init__(self, gateway: GatewayProcess, client: httpx.AsyncClient) -> None:
        self.gateway = gateway
        self.client = client

    async def post_event(self, body: Mapping[str, Any], token: str | None) -> httpx.Response:
        headers = {"authorization": f"Bearer {token}"} if token is not None else {}
        return await self.client.post(PUBLISH, json=dict(body), headers=headers)

    async def publish(
        self, event: str, scope: str, key: str | None, data: Mapping[str, Any], **extra: Any
    ) -> str:
        """Publish with a publisher token; the event's cursor."""
        body = {"event": event, "scope": scope, "key": key, "data": dict(data), **extra}
        response = await self.post_event(body, self.gateway.publisher_token)
        assert response.status_code == 202, response.text
        cursor: str = response.json()["id"]
        return cursor

    async def marker(self) -> str:
        """A global event every open stream receives: proof that nothing else was on the way."""
        return await self.publish(MARKER, "global", None, {"marker": True})

    async def health(self) -> dict[str, Any]:
        response = await self.client.get(HEALTH)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def connections(self) -> int:
        count: int = (await self.health())["connections"]
        return count

    async def wait_connections(self, expected: int, *, timeout: float = 5.0) -> None:
        async def holds() -> bool:
            return await self.connections() == expected

        await wait_until(holds, timeout=timeout, what=f"{expected} open connections")

    async def stream_token_response(self, authorization: str | None) -> httpx.Response:
        headers = {"authorization": authorization} if authorization is not None else {}
        return await self.client.post(STREAM_TOKEN, headers=headers)

    async def stream_token(self, jwt: str) -> dict[str, Any]:
        response = await self.stream_token_response(f"Bearer {jwt}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@asynccontextmanager
async def api_client(gateway: GatewayProcess) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10.0) as client:
        yield Api(gateway, client)


async def until_marker(stream: Stream, marker: str, timeout: float = 5.0) -> list[Event]:
    """The events ``stream`` received before the marker event with cursor ``marker``."""
    seen = await stream.until(lambda event: event.id == marker, timeout)
    assert seen[-1].event == MARKER
    return seen[:-1]


def ids(events: Sequence[Event]) -> list[str | None]:
    return [event.id for event in events]


async def publish_pipelined(gateway: GatewayProcess, bodies: Sequence[Mapping[str, Any]]) -> list[str]:
    """Publish many events fast: HTTP/1.1 requests pipelined on one raw socket.

    The ids come back in request order, which is also append order.
    """
    token = gateway.publisher_token.encode()
    requests = []
    for body in bodies:
        payload = orjson.dumps(dict(body))
        requests.append(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer %s\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (PUBLISH.encode(), token, len(payload), payload)
        )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"".join(requests))
        cursors = []
        for _ in bodies:
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            assert status.split(b" ")[1] == b"202", status + answer
            cursors.append(str(orjson.loads(answer)["id"]))
        return cursors
    finally:
        writer.close()
        await writer.wait_closed()
