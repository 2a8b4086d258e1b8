"""``HttpProtocol``: one client socket, parsed by httptools (llhttp).

A connection is one of two things. Most requests are handed to the ASGI app
(:mod:`herald.server.asgi_cycle`), one at a time, with keep-alive. A ``GET``
of the stream path turns the connection into a stream: the protocol object
itself becomes the manager's :class:`~herald.manager.sink.Sink`, writing
frames to the transport, and its parser is dropped.

Bounds: headers within ``header_timeout_seconds`` and ``max_header_bytes``
(431), bodies within ``max_body_bytes`` (413), idle keep-alive closed after
``keepalive_timeout_seconds``, and a closing stream that the peer does not
drain is aborted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import httptools
import structlog

from herald.api import paths
from herald.api.cors import stream_cors_headers
from herald.api.stream_request import StreamRequest, log_stream_opened
from herald.errors import HeraldError, ServerOverload
from herald.server import http11, native_publish
from herald.server.context import ServerContext
from herald.server.eager import start_eagerly

if TYPE_CHECKING:
    from herald.manager.connection import Connection
    from herald.server.asgi_cycle import AsgiCycle

log = structlog.get_logger("herald.server")

_MAX_HEADERS = 100
#: Requests parsed ahead of the one being answered before reading pauses.
_MAX_PIPELINED = 8
#: Seconds a closing connection may take to drain before it is aborted.
_CLOSE_TIMEOUT = 5.0
_STREAM_PATH = paths.STREAM.encode()


class _StreamTakesOver(Exception):
    """Raised from a parser callback once a stream request is dispatched: llhttp stops, and
    whatever the client pipelined behind it is never parsed (a stream reads no requests)."""


class _Reject(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class Request:
    __slots__ = ("body", "headers", "http_version", "keep_alive", "method", "path", "query", "raw_path")

    def __init__(
        self,
        method: bytes,
        raw_path: bytes,
        path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        http_version: str,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.http_version = http_version
        self.keep_alive = keep_alive


class HttpProtocol(asyncio.Protocol):
    # Slots: one of these lives as long as each stream, and memory per idle
    # stream is a headline figure (docs/benchmarks.md).
    __slots__ = (
        "_body",
        "_body_bytes",
        "_closing",
        "_drained",
        "_header_bytes",
        "_headers",
        "_queue",
        "_refusal",
        "_timer",
        "_url",
        "client",
        "ctx",
        "cycle",
        "lost",
        "parser",
        "stream",
        "transport",
        "write_paused",
    )

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.client: tuple[str, int] | None = None
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.stream: Connection | None = None
        #: The request being answered (by the ASGI app, or a native publish).
        self.cycle: AsgiCycle | native_publish.NativePublish | None = None
        self.write_paused = False
        self.lost = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._queue: list[Request] = []
        self._timer: asyncio.TimerHandle | None = None
        self._drained: asyncio.Event | None = None
        self._closing = False
        self._refusal: bytes | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        self.ctx.protocols.add(self)
        self._arm_timer(self.ctx.settings.header_timeout_seconds)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.ctx.protocols.discard(self)
        if not self.ctx.protocols:
            self.ctx.idle.set()
        self._cancel_timer()
        if self._drained is not None:
            self._drained.set()
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.connection_lost()
        if self.cycle is not None:
            self.cycle.disconnected()
        self.parser = None

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        if parser is None:
            # A stream's client has nothing more to say; what it sends is ignored.
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "UPGRADE_UNSUPPORTED", "protocol upgrades are not supported")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StreamTakesOver):
                return
            if isinstance(cause, _Reject):
                self._reject(cause.status, cause.code, str(cause))
            else:
                log.exception("http_parser_callback_failed")
                self._reject(500, "INTERNAL_ERROR", "the request could not be handled")
        except httptools.HttpParserError as exc:
            self._reject(400, "BAD_REQUEST", f"malformed HTTP request: {str(exc)[:100]}")

    def pause_writing(self) -> None:
        self.write_paused = True
        if self.stream is not None:
            self.stream.pause_writing()

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.stream is not None:
            self.stream.resume_writing()
        if self._drained is not None:
            self._drained.set()

    # --- httptools callbacks

    def on_message_begin(self) -> None:
        self._arm_timer(self.ctx.settings.header_timeout_seconds)
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._body = []
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header_bytes(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header_bytes(len(name) + len(value))
        if len(self._headers) >= _MAX_HEADERS:
            raise _Reject(431, "HEADERS_TOO_LARGE", f"more than {_MAX_HEADERS} headers")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        # The body gets as long again as the headers had: a client trickling a body
        # (slowloris) would otherwise hold the connection forever. Cancelled when the
        # message is complete.
        self._arm_timer(self.ctx.settings.header_timeout_seconds)
        assert self.parser is not None
        if self.parser.get_method() == b"GET":
            return
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.ctx.settings.max_body_bytes:
            raise _Reject(
                413, "BODY_TOO_LARGE", f"bodies are limited to {self.ctx.settings.max_body_bytes} bytes"
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._cancel_timer()
        parser = self.parser
        assert parser is not None
        try:
            url = httptools.parse_url(self._url)
        except httptools.HttpParserInvalidURLError:
            raise _Reject(400, "BAD_REQUEST", "the request target is not a valid URL") from None
        request = Request(
            method=parser.get_method(),
            raw_path=self._url,
            path=url.path or b"/",
            query=url.query or b"",
            headers=self._headers,
            body=b"".join(self._body),
            http_version=parser.get_http_version(),
            keep_alive=parser.should_keep_alive(),
        )
        self._body = []
        self._queue.append(request)
        if len(self._queue) > _MAX_PIPELINED and self.transport is not None:
            self.transport.pause_reading()
        if self.cycle is None and self.stream is None:
            self._next_request()
            if self.parser is None:
                raise _StreamTakesOver

    # --- dispatch

    def _next_request(self) -> None:
        if not self._queue or self._closing or self.lost:
            return
        request = self._queue.pop(0)
        if request.method == b"GET" and request.path == _STREAM_PATH:
            # From here on this connection only writes: drop what parsing needed.
            self.parser = None
            self._queue.clear()
            self._headers = []
            self._body = []
            self._closing = True
            self.ctx.loop.create_task(self._open_stream(request))
            return
        if native_publish.serves(request):
            publish = native_publish.NativePublish(self, request)
            self.cycle = publish
            # Routed now, not a loop turn later: a busy node's turn is every stream's write.
            start_eagerly(self.ctx.loop, publish.run())
            return
        from herald.server.asgi_cycle import AsgiCycle

        cycle = AsgiCycle(self, request)
        self.cycle = cycle
        self.ctx.loop.create_task(cycle.run(self.ctx.app))

    def response_complete(self, keep_alive: bool) -> None:
        """Called by the request's cycle when its response is written."""
        self.cycle = None
        if self.lost:
            return
        if not keep_alive or self._closing:
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                self._write_and_close(refusal)
            self.close_transport()
            return
        if self.transport is not None:
            self.transport.resume_reading()
        if self._queue:
            self._next_request()
        else:
            self._arm_timer(self.ctx.settings.keepalive_timeout_seconds)

    async def drain(self) -> None:
        """Wait until the transport takes more writes (ASGI ``send`` flow control)."""
        while self.write_paused and not self.lost:
            if self._drained is None:
                self._drained = asyncio.Event()
            self._drained.clear()
            await self._drained.wait()

    # --- streams

    async def _open_stream(self, request: Request) -> None:
        gateway = self.ctx.gateway
        stream_request: StreamRequest | None = None
        try:
            stream_request = StreamRequest.parse(
                request.query, request.headers, self.client[0] if self.client else None
            )
            since_ms = stream_request.since_ms()
            if not gateway.manager.accepting:
                raise ServerOverload("the gateway is shutting down", retry_after=1, fallback="retry")
            grant = await gateway.admit_stream(
                authorization=stream_request.authorization,
                stream_token=stream_request.token,
                subscribe=stream_request.subscribe,
                client_ip=stream_request.client_ip,
                forwarded_for=stream_request.forwarded_for,
            )
        except HeraldError as exc:
            # A page of an allowed origin must be able to read why (and Retry-After).
            origin = stream_request.origin if stream_request is not None else None
            cors = stream_cors_headers(origin, self.ctx.settings)
            self._write_and_close(http11.error_response(exc, cors))
            return
        except Exception:
            # Without an answer the client would wait forever on a request never refused.
            log.exception("stream_admission_failed")
            failed: dict[str, object] = {"code": "INTERNAL_ERROR", "message": "the stream failed to open"}
            self._write_and_close(http11.json_response(500, failed))
            return
        if self.lost or self.transport is None:
            await gateway.abandon(grant)
            return
        conn = gateway.register_stream(self, grant, trace=stream_request.trace)
        self.stream = conn
        # Past the high-water mark the transport pauses and the manager queues references to
        # frames shared by every receiver, instead of the transport copying each into this
        # socket's own buffer: a stream that stops reading costs references, not copies.
        self.transport.set_write_buffer_limits(*self.ctx.stream_write_limits)
        # The head goes out in the same write as the preamble (and any replay).
        cors = stream_cors_headers(stream_request.origin, self.ctx.settings)
        conn.write_now(http11.stream_head(cors) if cors else http11.STREAM_HEAD)
        if self.ctx.gc_policy is not None:
            self.ctx.gc_policy.tick()
        if self.write_paused:
            conn.pause_writing()
        log_stream_opened(conn, stream_request, grant.client_ip)
        try:
            await gateway.manager.start_stream(conn, stream_request.last_event_id, since_ms)
        except Exception:
            gateway.manager.close(conn, "replay_failed", None)
            log.exception("stream_start_failed", connection_id=conn.id)

    # --- Sink (used by the manager once this connection is a stream)

    def write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not self.lost:
            transport.write(data)

    def writer(self) -> Callable[[bytes], None]:
        # The transport's own write, with no Python frame in between: the
        # manager only calls it for connections it has not closed, and it
        # closes a connection as soon as connection_lost reports it gone.
        assert self.transport is not None
        return self.transport.write

    def backlog(self) -> int:
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def close(self) -> None:
        self.close_transport()

    # --- closing

    def shutdown(self) -> None:
        """The server is stopping: an idle keep-alive connection closes now, a busy one
        after its response. A browser that reused an idle socket for its EventSource
        reconnect would get a 503 from the stopping node, and a non-200 answer ends
        EventSource's reconnecting for good; a closed socket makes it retry elsewhere."""
        if self._closing or self.lost:
            return
        self._closing = True
        if self.cycle is None and self.stream is None and not self._queue:
            self.close_transport()

    def close_transport(self) -> None:
        transport = self.transport
        if transport is None or self.lost or transport.is_closing():
            return
        transport.close()
        # A peer that never reads would keep a closing transport (and its
        # buffer) forever: give it a bounded time.
        self._arm_timer(_CLOSE_TIMEOUT, abort=True)

    def _write_and_close(self, data: bytes) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(data)
        self.close_transport()

    def _reject(self, status: int, code: str, message: str) -> None:
        self.parser = None
        self._queue.clear()
        self._closing = True
        refusal = http11.json_response(status, {"code": code, "message": message})
        if self.cycle is None and self.stream is None:
            self._write_and_close(refusal)
        elif self.stream is None:
            # The request before it is being answered: that answer goes out, then this.
            self._refusal = refusal
        else:
            self.close_transport()

    def _count_header_bytes(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.ctx.settings.max_header_bytes:
            raise _Reject(
                431,
                "HEADERS_TOO_LARGE",
                f"request headers are limited to {self.ctx.settings.max_header_bytes} bytes",
            )

    def _arm_timer(self, seconds: float, *, abort: bool = False) -> None:
        self._cancel_timer()
        self._timer = self.ctx.loop.call_later(seconds, self._on_timeout, abort)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timeout(self, abort: bool) -> None:
        self._timer = None
        transport = self.transport
        if transport is None or self.lost:
            return
        if abort:
            transport.abort()
        elif self.cycle is None and self.stream is None:
            # Header timeout or keep-alive idle: nothing in flight, just close.
            self._closing = True
            transport.close()
