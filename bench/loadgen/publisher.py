"""Publish events at a fixed rate over a few keep-alive HTTP/1.1 connections.

Each event's data begins with ``"t"``: the ``time.monotonic_ns()`` at which
the schedule says it is published (the receivers subtract it from their own
clock reading; a publish the server is slow to accept counts against its
latency), then ``"s"``: a sequence number the reconnect storm uses to
tell that a replay arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from bench.common import EVENT_NAME, PUBLISH_PATH

#: About the size of a progress event of the default catalogue.
_PAD = b"drafting chapter 12: the harbour at night"


@dataclass
class PublishResult:
    sent: int
    accepted: int
    errors: int
    wanted: int
    elapsed: float
    #: How far behind its schedule the publisher fell at worst (no free connection).
    max_lag_ms: float
    post_p50_ms: float
    post_max_ms: float


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def post(self, head: bytes, body: bytes) -> int:
        self.writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        lower = raw.lower()
        i = lower.find(b"content-length:")
        if i >= 0:
            n = int(lower[i + 15 : lower.find(b"\r\n", i)])
            await self.reader.readexactly(n)
        elif b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Publisher:
    def __init__(self, host: str, port: int, token: str, connections: int = 8) -> None:
        self.host = host
        self.port = port
        self.head = (
            b"POST %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\n"
            % (PUBLISH_PATH.encode(), host.encode(), port, token.encode())
        )
        self.size = connections
        self.free: asyncio.Queue[_Conn] = asyncio.Queue()
        self.conns: list[_Conn] = []
        self.seq = 0

    async def start(self) -> None:
        for _ in range(self.size):
            reader, writer = await asyncio.open_connection(self.host, self.port)
            conn = _Conn(reader, writer)
            self.conns.append(conn)
            self.free.put_nowait(conn)

    async def _fresh(self) -> _Conn:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        conn = _Conn(reader, writer)
        self.conns.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns = []

    def body(self, scope: str, key: str | None, t_ns: int) -> bytes:
        self.seq += 1
        key_json = b"null" if key is None else b'"%s"' % key.encode()
        return (
            b'{"event":"%s","scope":"%s","key":%s,"data":{"t":%d,"s":%d,"task_id":"t-%d","progress":50,'
            b'"message":"%s"}}'
            % (EVENT_NAME.encode(), scope.encode(), key_json, t_ns, self.seq, self.seq, _PAD)
        )

    async def run(
        self, rate: float, duration: float, scope: str, key_of: Callable[[int], str | None]
    ) -> PublishResult:
        """Publish ``rate`` events a second for ``duration`` seconds."""
        loop = asyncio.get_running_loop()
        wanted = max(1, round(rate * duration))
        start = loop.time()
        accepted = errors = sent = 0
        max_lag = 0.0
        posts: list[float] = []
        pending: set[asyncio.Task[None]] = set()

        async def one(conn: _Conn, body: bytes) -> None:
            nonlocal accepted, errors
            t = time.monotonic()
            for attempt in range(2):
                try:
                    status = await asyncio.wait_for(conn.post(self.head, body), 30)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                    # A keep-alive connection the server closed while idle: one retry on a
                    # fresh connection (the event keeps its first timestamp).
                    conn.close()
                    try:
                        conn = await self._fresh()
                    except OSError:
                        errors += 1
                        return
                    if attempt:
                        errors += 1
                        self.free.put_nowait(conn)
                        return
                    continue
                if status == 202:
                    accepted += 1
                else:
                    errors += 1
                posts.append(time.monotonic() - t)
                self.free.put_nowait(conn)
                return

        start_ns = time.monotonic_ns()
        interval_ns = 1e9 / rate
        for i in range(wanted):
            due_ns = start_ns + int(i * interval_ns)
            delay = (due_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                conn = await asyncio.wait_for(self.free.get(), timeout=max(1.0, duration))
            except TimeoutError:
                break
            max_lag = max(max_lag, (time.monotonic_ns() - due_ns) / 1e9)
            # The event's timestamp is when it was due, not when a connection was free:
            # a server that is slow to take publishes pays for it in latency
            # (no coordinated omission).
            task = loop.create_task(one(conn, self.body(scope, key_of(i), due_ns)))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        if pending:
            await asyncio.wait(pending, timeout=30)
        posts.sort()
        return PublishResult(
            sent=sent,
            accepted=accepted,
            errors=errors,
            wanted=wanted,
            elapsed=loop.time() - start,
            max_lag_ms=max_lag * 1000,
            post_p50_ms=posts[len(posts) // 2] * 1000 if posts else 0.0,
            post_max_ms=posts[-1] * 1000 if posts else 0.0,
        )
