"""Baseline (b): the raw-asyncio ceiling, about the least Python can do per delivery.

An ``asyncio.Protocol`` on uvloop, requests parsed by httptools. A stream
``GET`` checks its JWT and turns the connection into a receiver: a list of
pending frames that one ``call_soon`` flush per loop turn joins and writes
to the transport. A publish encodes its frame once and appends the same
bytes to every receiver's list (all of them, the user's, or the followers of
the resource a stream names in ``?subscribe=``, unchecked). Heartbeat
comments every 15 s. No replay, no backpressure policy, no limits: it is the
bound, not a product. Same endpoints, tokens and frames as Herald.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import time
from typing import Any
from urllib.parse import parse_qs

import httptools
import jwt
import orjson
import uvloop

SECRET = os.environ.get("BENCH_SECRET", "")
STREAM = b"/api/v1/events/stream"
PUBLISH = b"/api/v1/events"
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nconnection: close\r\n\r\n"
)


def _response(status: int, body: dict[str, Any], keep_alive: bool) -> bytes:
    payload = orjson.dumps(body)
    return (
        b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: %s\r\n\r\n"
        % (status, len(payload), b"keep-alive" if keep_alive else b"close")
    ) + payload


class Hub:
    def __init__(self) -> None:
        self.everyone: set[Stream] = set()
        #: ``user:<id>`` and resource keys (``doc:r7``) → their streams.
        self.by_key: dict[str, set[Stream]] = {}
        self.dirty: list[Stream] = []
        self.scheduled = False
        self.loop = asyncio.get_running_loop()
        self.last = (0, 0)

    def next_id(self) -> bytes:
        now = int(time.time() * 1000)
        ms, seq = self.last
        self.last = (now, 0) if now > ms else (ms, seq + 1)
        return b"%d-%d" % self.last

    def add(self, s: Stream) -> None:
        self.everyone.add(s)
        for key in s.keys:
            self.by_key.setdefault(key, set()).add(s)

    def remove(self, s: Stream) -> None:
        self.everyone.discard(s)
        for key in s.keys:
            mine = self.by_key.get(key)
            if mine is not None:
                mine.discard(s)
                if not mine:
                    del self.by_key[key]

    def deliver(self, frame: bytes, receivers: set[Stream]) -> None:
        dirty = self.dirty
        for s in receivers:
            out = s.out
            if not out:
                dirty.append(s)
            out.append(frame)
        if dirty and not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        self.scheduled = False
        dirty, self.dirty = self.dirty, []
        for s in dirty:
            out = s.out
            if s.transport.is_closing():
                out.clear()
                continue
            s.transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    async def heartbeats(self) -> None:
        while True:
            await asyncio.sleep(15)
            self.deliver(b":\n\n", self.everyone)


class Stream:
    __slots__ = ("keys", "out", "transport", "user")

    def __init__(self, transport: asyncio.Transport, user: str, resources: list[str]) -> None:
        self.transport = transport
        self.user = user
        self.keys = (f"user:{user}", *resources)
        self.out: list[bytes] = []


class Http(asyncio.Protocol):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.stream: Stream | None = None
        self.url = b""
        self.auth = b""
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.hub.remove(self.stream)
            self.stream = None

    def data_received(self, data: bytes) -> None:
        if self.parser is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.write(_response(400, {"code": "BAD_REQUEST"}, False))
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.auth = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"authorization":
            self.auth = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.parser is not None
        assert self.transport is not None
        method = self.parser.get_method()
        keep_alive = self.parser.should_keep_alive()
        path, _, query = self.url.partition(b"?")
        claims = self._claims()
        if claims is None:
            self.transport.write(_response(401, {"code": "AUTH_INVALID"}, False))
            self.transport.close()
            return
        if method == b"GET" and path == STREAM:
            self.parser = None
            subscribe = parse_qs(query.decode("latin-1")).get("subscribe", [""])[0]
            resources = [k for k in subscribe.split(",") if k]
            self.stream = Stream(self.transport, str(claims["sub"]), resources)
            established = orjson.dumps({"user": self.stream.user, "_scope": "connection", "_version": "1.0"})
            ms, seq = self.hub.last
            self.transport.write(
                STREAM_HEAD
                + b"retry: 3000\n\nid: %d-%d\nevent: connection.established\ndata: %s\n\n"
                % (ms, seq, established)
            )
            self.hub.add(self.stream)
        elif method == b"POST" and path == PUBLISH:
            self.transport.write(self._publish(claims, keep_alive))
            if not keep_alive:
                self.transport.close()
        else:
            self.transport.write(_response(404, {"code": "NOT_FOUND"}, keep_alive))

    def _claims(self) -> dict[str, Any] | None:
        if not self.auth.startswith(b"Bearer "):
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                self.auth[7:], SECRET, algorithms=["HS256"], options={"require": ["exp", "sub"]}
            )
        except jwt.PyJWTError:
            return None
        return claims

    def _publish(self, claims: dict[str, Any], keep_alive: bool) -> bytes:
        if "publisher" not in claims.get("roles", []):
            return _response(403, {"code": "PERMISSION_DENIED"}, keep_alive)
        try:
            req = orjson.loads(b"".join(self.body))
            event = req["event"].encode()
            scope = req["scope"]
            data = orjson.dumps({**req["data"], "_scope": scope, "_version": "1.0"})
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return _response(422, {"code": "INVALID_EVENT"}, keep_alive)
        event_id = self.hub.next_id()
        frame = b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id, event, data)
        if scope == "global":
            self.hub.deliver(frame, self.hub.everyone)
        else:
            receivers = self.hub.by_key.get(f"{scope}:{req.get('key')}")
            if receivers:
                self.hub.deliver(frame, receivers)
        return _response(202, {"id": event_id.decode(), "duplicate": False}, keep_alive)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    hub = Hub()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = await loop.create_server(lambda: Http(hub), sock=sock, backlog=4096)
    bound = sock.getsockname()
    print(
        orjson.dumps({"event": "herald_listening", "host": bound[0], "port": bound[1]}).decode(), flush=True
    )
    heartbeats = loop.create_task(hub.heartbeats())
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        heartbeats.cancel()
        server.close()
        for s in list(hub.everyone):
            s.transport.abort()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
