"""One request handed to the ASGI app, and its response written back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog
from starlette.types import ASGIApp, Message

from herald.server import http11

if TYPE_CHECKING:
    from herald.server.protocol import HttpProtocol, Request

log = structlog.get_logger("herald.server")

_INTERNAL_ERROR = http11.json_response(500, {"code": "INTERNAL_ERROR", "message": "the request failed"})


class AsgiCycle:
    def __init__(self, protocol: HttpProtocol, request: Request) -> None:
        self.protocol = protocol
        self.request = request
        self.keep_alive = request.keep_alive
        self._body_sent = False
        self._started = False
        self._complete = False
        self._chunked = False
        self._head: bytes | None = None
        self._disconnected = False
        self._disconnect_waiter: Any = None
        ctx = protocol.ctx
        self.scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": request.http_version,
            "server": ctx.server_address,
            "client": protocol.client,
            "scheme": "http",
            "method": request.method.decode("ascii", "replace"),
            "root_path": "",
            "path": unquote(request.path.decode("latin-1")),
            "raw_path": request.path,
            "query_string": request.query,
            "headers": request.headers,
            "state": {},
        }

    def disconnected(self) -> None:
        self._disconnected = True
        if self._disconnect_waiter is not None and not self._disconnect_waiter.done():
            self._disconnect_waiter.set_result(None)

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            log.exception("asgi_app_failed", path=self.scope["path"], method=self.scope["method"])
        finally:
            if not self._started:
                self.keep_alive = False
                self._write(_INTERNAL_ERROR)
            elif not self._complete:
                self.keep_alive = False
            self.protocol.response_complete(self.keep_alive)

    async def receive(self) -> Message:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self.request.body, "more_body": False}
        if not self._disconnected and not self._complete:
            self._disconnect_waiter = self.protocol.ctx.loop.create_future()
            await self._disconnect_waiter
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.protocol.lost:
            raise OSError("client disconnected")
        kind = message["type"]
        if kind == "http.response.start":
            if self._started:
                raise RuntimeError("response already started")
            self._started = True
            self._write_head(message["status"], message.get("headers", []))
        elif kind == "http.response.body":
            if not self._started or self._complete:
                raise RuntimeError("body sent before start or after the end")
            body: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if self.request.method == b"HEAD":
                body = b""
            if self._chunked:
                chunk = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
                self._write(chunk if more else chunk + b"0\r\n\r\n")
            else:
                self._write(body)
            if not more:
                self._complete = True
                self.disconnected_if_waiting()
            elif self.protocol.write_paused:
                await self.protocol.drain()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")

    def disconnected_if_waiting(self) -> None:
        # A receive() waiting for disconnect returns once the response is done.
        if self._disconnect_waiter is not None and not self._disconnect_waiter.done():
            self._disconnect_waiter.set_result(None)

    def _write_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        out: list[tuple[bytes, bytes]] = []
        has_length = False
        for name, value in headers:
            lname = name.lower()
            if lname == b"content-length":
                has_length = True
            elif lname == b"connection":
                if value.lower() == b"close":
                    self.keep_alive = False
                continue
            out.append((lname, value))
        if not has_length and status not in (204, 304) and self.request.method != b"HEAD":
            if self.request.http_version == "1.1":
                self._chunked = True
                out.append((b"transfer-encoding", b"chunked"))
            else:
                self.keep_alive = False
        if not self.keep_alive:
            out.append((b"connection", b"close"))
        # Held until the first body message, so a whole response is one write.
        self._head = http11.head(status, out)

    def _write(self, data: bytes) -> None:
        if self._head is not None:
            data, self._head = self._head + data, None
        if not data:
            return
        transport = self.protocol.transport
        if transport is not None and not self.protocol.lost:
            transport.write(data)
