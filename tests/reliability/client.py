"""A Python SSE client that behaves like a browser's: it reconnects after the ``retry``
the server gave it, sends ``Last-Event-ID``, goes to another node when its stream
breaks, gives up on a silent stream after a watchdog time, and records everything it
was told: each connect (``recovered``, ``replay_miss``) and each event with its cursor
and arrival time."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.support.sse import SSEParser

STREAM = "/api/v1/events/stream"


@dataclass(frozen=True, slots=True)
class Delivery:
    uid: str
    cursor: str
    event: str
    at: float
    #: Index of the connect that delivered it (``ResilientClient.connects``).
    connect: int


@dataclass(frozen=True, slots=True)
class Connect:
    url: str
    at: float
    sent_cursor: str | None
    recovered: bool
    replay_miss: str | None
    position: str | None


@dataclass
class ResilientClient:
    name: str
    user: str
    token: str
    urls: Sequence[str]
    node: int
    subscribe: Sequence[str] = ()
    #: Seconds of silence (no byte, heartbeats included) before it reconnects.
    watchdog: float = 10.0
    cursor: str | None = None
    retry_ms: int = 1000
    deliveries: list[Delivery] = field(default_factory=list)
    connects: list[Connect] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notices: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    uids: set[str] = field(default_factory=set)

    def has(self, uid: str) -> bool:
        return uid in self.uids

    async def run(self) -> None:
        """Forever (until cancelled): connect, read, reconnect."""
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=None)) as http:
            failed_in_a_row = 0
            while True:
                url = self.urls[self.node]
                try:
                    await self._session(http, url)
                    failed_in_a_row = 0
                    delay = self.retry_ms / 1000
                except _Refused as refused:
                    failed_in_a_row += 1
                    delay = max(refused.retry_after, 0.05 * failed_in_a_row)
                except (httpx.HTTPError, OSError, TimeoutError) as exc:
                    failed_in_a_row += 1
                    self.failures.append(type(exc).__name__)
                    delay = min(0.05 * 2**failed_in_a_row, 1.0)
                # Like a browser behind a balancer: the next attempt may land anywhere.
                self.node = (self.node + 1) % len(self.urls)
                await asyncio.sleep(delay)

    async def _session(self, http: httpx.AsyncClient, url: str) -> None:
        headers = {"authorization": f"Bearer {self.token}", "accept": "text/event-stream"}
        sent = self.cursor
        if sent is not None:
            headers["last-event-id"] = sent
        params = {"subscribe": ",".join(self.subscribe)} if self.subscribe else {}
        request = http.build_request("GET", url + STREAM, headers=headers, params=params)
        response = await asyncio.wait_for(http.send(request, stream=True), 5.0)
        try:
            if response.status_code != 200:
                body = await response.aread()
                self.refusals.append((response.status_code, body.decode(errors="replace")[:200]))
                raise _Refused(float(response.headers.get("retry-after", "0") or 0))
            await self._read(response, url, sent)
        finally:
            await response.aclose()

    async def _read(self, response: httpx.Response, url: str, sent: str | None) -> None:
        parser = SSEParser()
        parser.last_event_id = self.cursor
        decoder = codecs.getincrementaldecoder("utf-8")()
        chunks = response.aiter_raw().__aiter__()
        connect = -1
        while True:
            try:
                async with asyncio.timeout(self.watchdog):  # not wait_for: see tests.support.sse
                    raw = await chunks.__anext__()
            except StopAsyncIteration:
                return
            for block in parser.feed(decoder.decode(raw)):
                event = parser.to_event(block)
                self.cursor = parser.last_event_id
                if parser.retry is not None:
                    self.retry_ms = parser.retry
                if event is None:
                    continue
                data = orjson.loads(event.data)
                if event.event == "connection.established":
                    self.connects.append(
                        Connect(
                            url, time.monotonic(), sent, data["recovered"], data.get("replay_miss"), event.id
                        )
                    )
                    connect = len(self.connects) - 1
                elif event.event == "connection.closing":
                    self.retry_ms = int(data.get("retry_ms", self.retry_ms))
                    self.notices.append((event.event, data))
                elif event.event.startswith(("error.", "connection.")):
                    self.notices.append((event.event, data))
                else:
                    uid = event_uid(data)
                    self.uids.add(uid)
                    self.deliveries.append(
                        Delivery(uid, event.id or "", event.event, time.monotonic(), connect)
                    )


def event_uid(data: dict[str, Any]) -> str:
    """The harness's own id of an event, whatever path it took (HTTP body, Kafka record,
    outbox row)."""
    for key in ("uid", "task_id", "message"):
        value = data.get(key)
        if isinstance(value, str):
            return value
    return "?"


class _Refused(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


@contextlib.asynccontextmanager
async def running_clients(clients: Sequence[ResilientClient]) -> Any:
    tasks = [asyncio.create_task(c.run(), name=f"client-{c.name}") for c in clients]
    try:
        yield tasks
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
