"""The stream endpoint for ASGI servers, used when Herald is mounted inside another app.

The standalone server does not come here: it writes to sockets directly
(:mod:`herald.server`). Through ASGI each write is an awaited ``send``, so a
sender task per stream drains the connection's buffer; the manager's
routing, replay and backpressure are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from herald.api.errors import error_response
from herald.api.stream_request import StreamRequest, log_stream_opened, stream_headers
from herald.errors import HeraldError
from herald.gateway import Gateway
from herald.manager.connection import CloseReason, Connection

#: Bytes waiting before the manager is told to hold events back, and to resume.
HIGH_WATER = 64 * 1024
LOW_WATER = 16 * 1024


class AsgiSink:
    """A :class:`herald.manager.sink.Sink` over an ASGI ``send``."""

    def __init__(self) -> None:
        self.owner: Connection | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._paused = False

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._wake.set()
        if not self._paused and self.backlog() > HIGH_WATER and self.owner is not None:
            self._paused = True
            self.owner.pause_writing()

    def writer(self) -> Callable[[bytes], None]:
        return self.write

    def backlog(self) -> int:
        return self._pending_bytes + self._in_flight

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def run(self, send: Send) -> None:
        """Send what is written until the sink is closed."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending:
                body = b"".join(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
                self._in_flight = len(body)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                self._in_flight = 0
                if self._paused and self.backlog() < LOW_WATER and self.owner is not None:
                    self._paused = False
                    self.owner.resume_writing()
            if self._closing and not self._pending:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


_NOT_GET = JSONResponse(
    {"code": "METHOD_NOT_ALLOWED", "message": "a stream is opened with GET"},
    status_code=405,
    headers={"allow": "GET"},
)


class _AsgiEndpoint:
    """A raw ASGI callable for a ``Route``: Starlette calls a plain function as
    ``endpoint(request)`` and expects a response back, so it must not be one."""

    __slots__ = ("_app",)

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def asgi_stream_endpoint(gateway: Gateway) -> object:
    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "GET":
            # Starlette routes HEAD here too; a stream that never ends is no answer to it.
            await _NOT_GET(scope, receive, send)
            return
        try:
            request = StreamRequest.from_asgi(scope)
            since_ms = request.since_ms()
            grant = await gateway.admit_stream(
                authorization=request.authorization,
                stream_token=request.token,
                subscribe=request.subscribe,
                client_ip=request.client_ip,
                forwarded_for=request.forwarded_for,
            )
        except HeraldError as exc:
            await error_response(exc)(scope, receive, send)
            return
        sink = AsgiSink()
        conn = gateway.register_stream(sink, grant, trace=request.trace)
        sink.owner = conn
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.encode(), v.encode()) for k, v in stream_headers()],
            }
        )
        log_stream_opened(conn, request, grant.client_ip)
        sender = asyncio.create_task(sink.run(send))
        watcher = asyncio.create_task(_until_disconnect(receive))
        try:
            await gateway.manager.start_stream(conn, request.last_event_id, since_ms)
            await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gateway.manager.close(conn, CloseReason.CLIENT_GONE)
            for task in (sender, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await task

    return _AsgiEndpoint(endpoint)
