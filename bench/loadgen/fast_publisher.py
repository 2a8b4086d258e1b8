"""Publish events on a schedule over keep-alive HTTP/1.1 connections, as cheaply as Python can.

:class:`bench.loadgen.publisher.Publisher` (asyncio streams, one process)
tops out at 2,000-4,000 publishes/s on two cores: below what Centrifugo
accepts, and not far above Herald. This one is an ``asyncio.Protocol`` per
connection on uvloop, with each request's bytes built by one ``%`` format and
each response read by httptools; several
processes (load-generator workers) share one schedule, each taking every
``stride``-th event, so the harness's own limit can be raised past the
servers'. Each process reports its CPU, so a run says what publishing cost
the harness.

Timestamps follow :mod:`bench.loadgen.publisher`: an event carries the time
it was *due* (no coordinated omission); a closed-loop run (``rate`` 0) sends
each as soon as a connection is free and stamps that time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httptools

from bench.common import EVENT_NAME, PUBLISH_PATH
from bench.loadgen.traffic import Traffic

#: About the size of a progress event of the default catalogue.
_PAD = b"drafting chapter 12: the harbour at night"
#: Herald's batch endpoint (issue 12); until it exists a batched run says so.
HERALD_BATCH_PATH = "/api/v1/events/batch"
CENTRIFUGO_API_KEY = "bench-api-key"


def _data(t_ns: int, seq: int) -> bytes:
    return b'{"t":%d,"s":%d,"task_id":"t-%d","progress":50,"message":"%s"}' % (t_ns, seq, seq, _PAD)


class HeraldPublishing:
    """``POST /api/v1/events`` (Herald and the Python baselines), bearer token; one event,
    or a batch of them as ``{"events": [...]}`` to the batch endpoint."""

    def __init__(self, host: str, port: int, token: str) -> None:
        auth = b"Host: %s:%d\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\n" % (
            host.encode(),
            port,
            token.encode(),
        )
        self.single_head = b"POST %s HTTP/1.1\r\n%s" % (PUBLISH_PATH.encode(), auth)
        self.batch_head = b"POST %s HTTP/1.1\r\n%s" % (HERALD_BATCH_PATH.encode(), auth)

    @staticmethod
    def event(scope: str, key: str | None, data: bytes) -> bytes:
        key_json = b"null" if key is None else b'"%s"' % key.encode()
        return b'{"event":"%s","scope":"%s","key":%s,"data":%s}' % (
            EVENT_NAME.encode(),
            scope.encode(),
            key_json,
            data,
        )

    def single(self, scope: str, key: str | None, data: bytes) -> bytes:
        body = self.event(scope, key, data)
        return self.single_head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def batch(self, events: list[tuple[str, str | None, bytes]]) -> bytes:
        body = b'{"events":[%s]}' % b",".join(self.event(*e) for e in events)
        return self.batch_head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    @staticmethod
    def accepted(status: int, body: bytes, items: int) -> int:
        if items == 1:
            return 1 if status == 202 else 0
        if status in (200, 207):
            return min(items, body.count(b'"id":'))
        return 0


class CentrifugoPublishing:
    """Centrifugo's HTTP API: ``POST /api/publish``, or ``POST /api/batch`` with a list of
    publish commands (``parallel``: run concurrently, which its documentation suggests for
    the Redis engine; by default they run one after another); it answers 200 and says in
    the body which failed."""

    def __init__(
        self, host: str, port: int, api_key: str = CENTRIFUGO_API_KEY, parallel: bool = False
    ) -> None:
        self.parallel = b',"parallel":true' if parallel else b""
        common = b"Host: %s:%d\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n" % (
            host.encode(),
            port,
            api_key.encode(),
        )
        self.single_head = b"POST /api/publish HTTP/1.1\r\n" + common
        self.batch_head = b"POST /api/batch HTTP/1.1\r\n" + common

    @staticmethod
    def channel(scope: str, key: str | None) -> bytes:
        if scope == "global":
            return b"global:all"
        return b"%s:%s" % (scope.encode(), (key or "").encode())

    def single(self, scope: str, key: str | None, data: bytes) -> bytes:
        body = b'{"channel":"%s","data":%s}' % (self.channel(scope, key), data)
        return self.single_head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def batch(self, events: list[tuple[str, str | None, bytes]]) -> bytes:
        commands = b",".join(
            b'{"publish":{"channel":"%s","data":%s}}' % (self.channel(scope, key), data)
            for scope, key, data in events
        )
        body = b'{"commands":[%s]%s}' % (commands, self.parallel)
        return self.batch_head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    @staticmethod
    def accepted(status: int, body: bytes, items: int) -> int:
        if status != 200:
            return 0
        return max(0, items - body.count(b'"error":'))


def publishing(
    dialect: str, host: str, port: int, token: str, parallel: bool = False
) -> HeraldPublishing | CentrifugoPublishing:
    if dialect == "centrifugo":
        return CentrifugoPublishing(host, port, token, parallel)
    return HeraldPublishing(host, port, token)


class _Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight; its answers are read by
    httptools (bodies with a length, or in chunks: Go chunks Centrifugo's batch replies)."""

    def __init__(self, owner: FastPublisher) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        #: The request in flight: (bytes, items, sent at ns, retried already).
        self.inflight: tuple[bytes, int, int, bool] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, request: bytes, items: int, retried: bool = False) -> None:
        assert self.transport is not None
        self.inflight = (request, items, time.monotonic_ns(), retried)
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    # httptools' callbacks
    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        self.body.clear()
        self.owner.answered(self, self.parser.get_status_code(), body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.dropped(self)


@dataclass
class PublishReport:
    sent: int = 0
    accepted: int = 0
    errors: int = 0
    requests: int = 0
    #: Events by where they went: ``global`` (every stream), and the receivers of the rest.
    global_events: int = 0
    other_receivers: int = 0
    max_lag_ms: float = 0.0
    post_p50_ms: float = 0.0
    post_max_ms: float = 0.0
    elapsed_s: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)
    first_error: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()


class FastPublisher:
    def __init__(
        self,
        host: str,
        port: int,
        dialect: HeraldPublishing | CentrifugoPublishing,
        connections: int,
        traffic: Traffic,
    ) -> None:
        self.host = host
        self.port = port
        self.dialect = dialect
        self.connections = connections
        self.traffic = traffic
        self.free: list[_Conn] = []
        self.all: set[_Conn] = set()
        self.waiter: asyncio.Future[None] | None = None
        self.report = PublishReport()
        self.posts: list[int] = []
        self.pending = 0
        self.idle: asyncio.Event = asyncio.Event()
        self.idle.set()
        #: Receivers of the events of each request in flight, counted once it is accepted.
        self.meta: dict[int, tuple[int, int]] = {}
        self.closing = False

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        self.all.add(conn)
        return conn

    async def start(self) -> None:
        for _ in range(self.connections):
            self._release(await self._open())

    def close(self) -> None:
        self.closing = True
        for conn in list(self.all):
            if conn.transport is not None:
                conn.transport.close()
        self.all.clear()
        self.free.clear()

    def _release(self, conn: _Conn) -> None:
        self.free.append(conn)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def _acquire(self) -> _Conn:
        while not self.free:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.free.pop()

    def _done_one(self) -> None:
        self.pending -= 1
        if not self.pending:
            self.idle.set()

    def answered(self, conn: _Conn, status: int, body: bytes) -> None:
        assert conn.inflight is not None
        _, items, sent_ns, _ = conn.inflight
        conn.inflight = None
        self.posts.append(time.monotonic_ns() - sent_ns)
        key = str(status)
        self.report.statuses[key] = self.report.statuses.get(key, 0) + 1
        ok = self.dialect.accepted(status, body, items)
        meta = self.meta.pop(id(conn), (0, 0))
        self.report.accepted += ok
        self.report.errors += items - ok
        if ok == items:
            self.report.global_events += meta[0]
            self.report.other_receivers += meta[1]
        elif not self.report.first_error:
            self.report.first_error = f"{status} {body[:200].decode(errors='replace')}"
        self._release(conn)
        self._done_one()

    def dropped(self, conn: _Conn) -> None:
        """The server closed a connection (an idle keep-alive timing out, or worse): a request
        that was in flight goes once more on a fresh connection, keeping its timestamps."""
        self.all.discard(conn)
        if self.closing:
            return
        if conn in self.free:
            self.free.remove(conn)
        inflight = conn.inflight
        meta = self.meta.pop(id(conn), (0, 0))
        asyncio.get_running_loop().create_task(self._replace(inflight, meta))

    async def _replace(self, inflight: tuple[bytes, int, int, bool] | None, meta: tuple[int, int]) -> None:
        try:
            fresh = await self._open()
        except OSError as exc:
            if inflight is not None:
                self.report.errors += inflight[1]
                self.report.first_error = self.report.first_error or f"reconnect: {exc}"
                self._done_one()
            return
        if inflight is None:
            self._release(fresh)
        elif inflight[3]:
            self.report.errors += inflight[1]
            self.report.first_error = self.report.first_error or "connection closed twice during a request"
            self._release(fresh)
            self._done_one()
        else:
            self.meta[id(fresh)] = meta
            fresh.send(inflight[0], inflight[1], retried=True)

    async def run(
        self,
        *,
        rate: float,
        total: int,
        index: int,
        stride: int,
        start_ns: int,
        seq_base: int,
        batch: int = 1,
        drain_s: float = 30.0,
    ) -> PublishReport:
        """Publish this process's share (indices ``index, index + stride, …`` below ``total``)
        of a schedule of ``rate`` events/s that starts at ``start_ns``; ``rate`` 0: as fast as
        the connections allow. Events are sent ``batch`` at a time."""
        report = self.report
        interval = 1e9 / rate if rate else 0.0
        target = self.traffic.target
        receivers = self.traffic.receivers
        make_single = self.dialect.single
        make_batch = self.dialect.batch
        now_ns = time.monotonic_ns
        t_start = now_ns()
        i = index
        while i < total:
            due = start_ns + int(i * interval) if rate else 0
            wait = due - now_ns()
            if wait > 200_000:
                await asyncio.sleep(wait / 1e9)
            conn = await self._acquire()
            now = now_ns()
            if rate:
                lag = (now - due) / 1e6
                if lag > report.max_lag_ms:
                    report.max_lag_ms = lag
            events: list[tuple[str, str | None, bytes]] = []
            global_events = other = 0
            for _ in range(batch):
                if i >= total:
                    break
                scope, key = target(i)
                if scope == "global":
                    global_events += 1
                else:
                    other += receivers(scope, key, 0)
                events.append((scope, key, _data(due if rate else now, seq_base + i + 1)))
                i += stride
                if rate:
                    due = start_ns + int(i * interval)
            request = make_single(*events[0]) if batch == 1 else make_batch(events)
            self.meta[id(conn)] = (global_events, other)
            self.pending += 1
            self.idle.clear()
            report.sent += len(events)
            report.requests += 1
            conn.send(request, len(events))
        try:
            await asyncio.wait_for(self.idle.wait(), drain_s)
        except TimeoutError:
            report.errors += self.pending
            unanswered = f"{self.pending} requests unanswered after {drain_s:.0f} s"
            report.first_error = report.first_error or unanswered
        report.elapsed_s = (now_ns() - t_start) / 1e9
        posts = sorted(self.posts)
        if posts:
            report.post_p50_ms = posts[len(posts) // 2] / 1e6
            report.post_max_ms = posts[-1] / 1e6
        return report


async def publish_share(
    *,
    host: str,
    port: int,
    dialect: str,
    token: str,
    traffic: dict[str, Any],
    connections: int,
    rate: float,
    total: int,
    index: int,
    stride: int,
    start_ns: int,
    seq_base: int,
    batch: int = 1,
    parallel: bool = False,
) -> dict[str, Any]:
    """One process's part of a publishing run (a load-generator worker's ``publish`` command)."""
    publisher = FastPublisher(
        host, port, publishing(dialect, host, port, token, parallel), connections, Traffic.from_json(traffic)
    )
    try:
        await publisher.start()
        report = await publisher.run(
            rate=rate,
            total=total,
            index=index,
            stride=stride,
            start_ns=start_ns,
            seq_base=seq_base,
            batch=batch,
        )
    finally:
        publisher.close()
    return report.to_json()
