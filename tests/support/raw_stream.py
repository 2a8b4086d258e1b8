"""A stream read through a plain non-blocking socket, so a test decides when (and
whether) the client reads: with a small ``SO_RCVBUF`` the gateway soon sees a
client that does not keep up."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from tests.support.sse import Event, SSEParser


class RawStream:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.parser = SSEParser()
        self.head = b""
        self.events: list[Event] = []
        self.eof = False
        self._body = b""

    @classmethod
    async def open(cls, port: int, token: str, *, rcvbuf: int | None = None, query: str = "") -> RawStream:
        """Connect, send the request, and read up to ``connection.established``."""
        loop = asyncio.get_running_loop()
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        request = (
            f"GET /api/v1/events/stream{query} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            f"authorization: Bearer {token}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        stream = cls(sock)
        await stream.read_until(lambda e: e.event == "connection.established", timeout=10)
        return stream

    async def _read_once(self, timeout: float) -> None:
        chunk = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 1 << 20), timeout)
        if not chunk:
            self.eof = True
            return
        if not self.head:
            self._body += chunk
            head, sep, rest = self._body.partition(b"\r\n\r\n")
            if not sep:
                return
            self.head, self._body, chunk = head + sep, b"", rest
        for block in self.parser.feed(chunk.decode()):
            event = self.parser.to_event(block)
            if event is not None:
                self.events.append(event)

    async def read_until(self, predicate: Callable[[Event], bool], timeout: float = 10.0) -> list[Event]:
        """Read until an event satisfies ``predicate``; the events read by then."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for event in self.events[checked:]:
                checked += 1
                if predicate(event):
                    return self.events[:checked]
            if self.eof:
                raise EOFError("the stream ended")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no matching event after {timeout} s")
            await self._read_once(left)

    async def read_to_end(self, timeout: float = 10.0) -> list[Event]:
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the stream did not end within {timeout} s")
            await self._read_once(left)
        return self.events

    def close(self) -> None:
        self.sock.close()
