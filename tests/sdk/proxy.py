"""A fault-injecting HTTP/1.1 proxy in front of a real gateway, on its own thread and loop.

Each request is handed to ``decide(request)``, which answers what to do with it:
``FORWARD`` (to the gateway, and its answer back), ``DROP_ANSWER`` (forward it,
so the gateway acts on it, then close the client's connection without an
answer: the failure a retry must not turn into a second event), or an
``Answer`` of the proxy's own (an older gateway's 404, say). Every request and
what became of it is recorded. Its own thread, so a blocking client (the sync
publisher) can go through it from a test's event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

FORWARD = "forward"
DROP_ANSWER = "drop-answer"


@dataclass
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    body: Any
    #: The status the client got, or ``"dropped"``.
    outcome: int | str = 0
    #: The gateway's answer, when the request was forwarded.
    upstream: Any = None


Decide = Callable[["Seen"], "str | Answer"]


class FaultProxy:
    def __init__(self, upstream: str, decide: Decide | None = None) -> None:
        self.upstream = upstream
        self.decide: Decide = decide or (lambda _: FORWARD)
        self.seen: list[Seen] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the proxy did not start")
        return self

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def paths(self) -> list[str]:
        return [seen.path for seen in self.seen]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.upstream, timeout=10)
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._client is not None:
            await self._client.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                seen = Seen(method, path, orjson.loads(raw) if raw else None)
                self.seen.append(seen)
                action = self.decide(seen)
                if isinstance(action, Answer):
                    status, body, extra = action.status, orjson.dumps(action.body), action.headers
                else:
                    assert self._client is not None
                    forwarded = {k: v for k, v in headers.items() if k in ("authorization", "content-type")}
                    response = await self._client.request(method, path, content=raw, headers=forwarded)
                    seen.upstream = response.json() if response.content else None
                    if action == DROP_ANSWER:
                        seen.outcome = "dropped"
                        return  # the gateway acted on it; the client never hears
                    status, body = response.status_code, response.content
                    extra = {k: v for k, v in response.headers.items() if k in ("retry-after",)}
                seen.outcome = status
                out = [
                    f"HTTP/1.1 {status} X",
                    "content-type: application/json",
                    f"content-length: {len(body)}",
                ]
                out += [f"{name}: {value}" for name, value in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
