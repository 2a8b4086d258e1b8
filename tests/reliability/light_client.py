"""A reconnecting SSE client light enough to run thousands in the test process.

:class:`tests.reliability.client.ResilientClient` reads through httpx and a full SSE
parser: right for a few hundred streams, too heavy for 5,000 (they did not all connect
within four minutes). This one is an ``asyncio.Protocol`` on the load generator's HTTP
framing (:class:`bench.loadgen.client.SSEClient`, chunked coding included, which nginx
uses towards the client) and reads only what the drain test asks: each event's ``id:``
(its cursor for the next connect), a ``retry:``, ``connection.established``'s
``recovered``, ``connection.closing``'s reason and the ``uid`` in a tick's data. It
behaves like the browser's client: after its stream ends it waits the server's ``retry``
and reconnects with ``Last-Event-ID``; a refusal waits its ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.loadgen.client import SSEClient, Stats

STREAM = "/api/v1/events/stream"


@dataclass(frozen=True, slots=True)
class LightConnect:
    at: float
    recovered: bool


@dataclass
class LightClient:
    name: str
    token: str
    host: str
    port: int
    cursor: bytes | None = None
    retry_ms: int = 1000
    received: Counter[str] = field(default_factory=Counter)
    connects: list[LightConnect] = field(default_factory=list)
    #: ``connection.closing`` reasons, in order.
    closings: list[str] = field(default_factory=list)
    refusals: list[int] = field(default_factory=list)
    failures: int = 0

    def has(self, uid: str) -> bool:
        return uid in self.received

    def request(self) -> bytes:
        head = [
            f"GET {STREAM} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"Authorization: Bearer {self.token}",
            "Accept: text/event-stream",
        ]
        if self.cursor is not None:
            head.append(f"Last-Event-ID: {self.cursor.decode()}")
        return ("\r\n".join(head) + "\r\n\r\n").encode()

    async def run(self, stats: Stats) -> None:
        """Forever (until cancelled): connect, read until the stream ends, wait, reconnect."""
        loop = asyncio.get_running_loop()
        failed_in_a_row = 0
        while True:
            ended: asyncio.Future[None] = loop.create_future()
            protocol = _Stream(self, stats, ended)
            try:
                await loop.create_connection(lambda p=protocol: p, self.host, self.port)
            except OSError:
                self.failures += 1
                failed_in_a_row += 1
                await asyncio.sleep(min(0.05 * 2**failed_in_a_row, 1.0))
                continue
            try:
                await ended
            finally:
                protocol.close()
            if protocol.refused_status is not None:
                failed_in_a_row += 1
                delay = max(protocol.retry_after, 0.05 * failed_in_a_row)
            else:
                failed_in_a_row = 0
                delay = self.retry_ms / 1000
            await asyncio.sleep(delay)


class _Stream(SSEClient):
    """One connection of a :class:`LightClient`."""

    def __init__(self, owner: LightClient, stats: Stats, ended: asyncio.Future[None]) -> None:
        super().__init__(stats, owner.request(), (owner.name, owner.token))
        self.owner = owner
        self.ended = ended
        self.refused_status: int | None = None
        self.retry_after = 0.0
        self._tail = b""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ended.done():
            self.ended.set_result(None)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # nginx keeps the client's connection alive after the upstream's stream ends: the end
        # of the response is its last chunk, not a closed socket. SSE lines end in a bare
        # "\n", so "\r\n0\r\n\r\n" is only ever that chunk (the tail spans reads).
        self._tail = (self._tail + data)[-7:]
        if self._chunked and self._tail == b"\r\n0\r\n\r\n":
            self.close()

    def _head(self, data: bytes) -> bytes:
        head = self._head_buf + data
        end = head.find(b"\r\n\r\n")
        if end >= 0 and head[9:12] != b"200":
            self.refused_status = int(head[9:12])
            self.owner.refusals.append(self.refused_status)
            retry_after = _int_after(head[:end].lower(), b"\r\nretry-after: ")
            self.retry_after = float(retry_after or 0)
        return super()._head(data)

    def _frames(self, data: bytes) -> None:
        if self._sse_buf:
            data = self._sse_buf + data
        end = data.rfind(b"\n\n")
        if end < 0:
            self._sse_buf = data
            return
        self._sse_buf = data[end + 2 :]
        owner = self.owner
        for frame in data[:end].split(b"\n\n"):
            self._frame(owner, frame)

    def _frame(self, owner: LightClient, frame: bytes) -> None:
        event = b"message"
        body = b""
        for line in frame.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name == b"id":
                owner.cursor = value
            elif name == b"event":
                event = value
            elif name == b"data":
                body = value
            elif name == b"retry":
                owner.retry_ms = int(value)
        if event == b"connection.established":
            owner.connects.append(LightConnect(time.monotonic(), b'"recovered":true' in body))
            self._finish(True, None)
        elif event == b"connection.closing":
            k = body.find(b'"reason":"')
            owner.closings.append(body[k + 10 : body.find(b'"', k + 10)].decode() if k >= 0 else "?")
            retry_ms = _int_after(body, b'"retry_ms":')
            if retry_ms is not None:
                owner.retry_ms = retry_ms
        else:
            k = body.find(b'"uid":"')
            if k >= 0:
                owner.received[body[k + 7 : body.find(b'"', k + 7)].decode()] += 1


def _int_after(text: bytes, key: bytes) -> int | None:
    k = text.find(key)
    if k < 0:
        return None
    k += len(key)
    end = k
    while end < len(text) and text[end : end + 1].isdigit():
        end += 1
    return int(text[k:end]) if end > k else None


@contextlib.asynccontextmanager
async def running_light_clients(clients: Sequence[LightClient]) -> Any:
    stats = Stats()
    tasks = [asyncio.create_task(c.run(stats), name=f"client-{c.name}") for c in clients]
    try:
        yield stats
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
