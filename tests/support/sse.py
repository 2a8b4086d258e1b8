"""A test-side SSE client over a real socket, written apart from Herald's encoder.

It follows the WHATWG parsing rules and also keeps comment lines, which
browsers hide, so tests can see heartbeats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Event:
    event: str
    data: str
    id: str | None
    retry: int | None = None

    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class Block:
    """One blank-line-terminated block: an event, a comment, or fields without data."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


class SSEParser:
    def __init__(self) -> None:
        self._buffer = ""
        self._block = Block()
        self.last_event_id: str | None = None
        self.retry: int | None = None

    def feed(self, text: str) -> list[Block]:
        self._buffer += text
        blocks: list[Block] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return blocks
            line, self._buffer = self._buffer[: cut[0]], self._buffer[cut[1] :]
            if line == "":
                if self._block.fields or self._block.comments:
                    blocks.append(self._block)
                self._block = Block()
            elif line.startswith(":"):
                self._block.comments.append(line[1:])
            else:
                name, sep, value = line.partition(":")
                if sep and value.startswith(" "):
                    value = value[1:]
                self._block.fields.append((name, value))

    def to_event(self, block: Block) -> Event | None:
        """Apply a block the way a browser does; the event it dispatches, if any."""
        data: list[str] = []
        name = "message"
        for key, value in block.fields:
            if key == "data":
                data.append(value)
            elif key == "event":
                name = value
            elif key == "id" and "\0" not in value:
                self.last_event_id = value
            elif key == "retry" and value.isdigit():
                self.retry = int(value)
        if not data:
            return None
        return Event(name, "\n".join(data), self.last_event_id, self.retry)


def _line_end(buffer: str) -> tuple[int, int] | None:
    for i, ch in enumerate(buffer):
        if ch == "\n":
            return i, i + 1
        if ch == "\r":
            if i + 1 == len(buffer):
                return None  # a CR at the end may be half of a CRLF
            return (i, i + 2) if buffer[i + 1] == "\n" else (i, i + 1)
    return None


class Stream:
    """An open stream: read events (and heartbeats) as they arrive."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SSEParser()
        self.events: list[Event] = []
        self.heartbeats = 0
        self._pending: asyncio.Queue[Event | None] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())
        self.closed = asyncio.Event()

    async def _read(self) -> None:
        try:
            async for chunk in self.response.aiter_text():
                for block in self.parser.feed(chunk):
                    if block.comments and not any(k == "data" for k, _ in block.fields):
                        self.heartbeats += 1
                    event = self.parser.to_event(block)
                    if event is not None:
                        self.events.append(event)
                        await self._pending.put(event)
        except (httpx.HTTPError, asyncio.CancelledError):
            pass
        finally:
            self.closed.set()
            await self._pending.put(None)

    @property
    def last_event_id(self) -> str | None:
        return self.parser.last_event_id

    async def next(self, timeout: float = 5.0) -> Event:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancellation that
        # lands as the queue hands over an item, so a reader task cancelled at teardown read
        # on (a protocol-abuse run hung for the rest of its 3,600 s wait).
        async with asyncio.timeout(timeout):
            event = await self._pending.get()
        if event is None:
            raise EOFError("the stream ended")
        return event

    async def take(self, n: int, timeout: float = 5.0) -> list[Event]:
        return [await self.next(timeout) for _ in range(n)]

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> list[Event]:
        """Events up to and including the first that satisfies ``predicate``."""
        seen: list[Event] = []
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next(timeout)
                seen.append(event)
                if predicate(event):
                    return seen

    async def wait_closed(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.closed.wait(), timeout)

    async def aclose(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.response.aclose()


@contextlib.asynccontextmanager
async def open_stream(
    base_url: str,
    *,
    token: str | None = None,
    stream_token: str | None = None,
    subscribe: str | None = None,
    last_event_id: str | None = None,
    query_last_event_id: str | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/api/v1/events/stream",
    params: dict[str, str] | None = None,
) -> AsyncIterator[Stream]:
    """An open stream that has received its ``connection.established`` event. ``params``:
    more query parameters (``{"trace": "1"}``)."""
    params = dict(params or {})
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    if stream_token is not None:
        params["token"] = stream_token
    if subscribe is not None:
        params["subscribe"] = subscribe
    if query_last_event_id is not None:
        params["last_event_id"] = query_last_event_id
    if last_event_id is not None:
        all_headers["last-event-id"] = last_event_id
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as client:
        request = client.build_request("GET", f"{base_url}{path}", params=params, headers=all_headers)
        # The response head must come promptly; only the body may stay quiet for long.
        response = await asyncio.wait_for(client.send(request, stream=True), 10.0)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise StreamRefused(response.status_code, response.json(), dict(response.headers))
        stream = Stream(response)
        try:
            yield stream
        finally:
            await stream.aclose()


class StreamRefused(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(f"{status} {body}")
        self.status = status
        self.body = body
        self.headers = headers
