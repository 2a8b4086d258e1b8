"""One SSE client connection as an ``asyncio.Protocol``: HTTP/1.1 head, optional
chunked transfer coding, SSE frames, and the latency of every delivery.

The hot path is :meth:`SSEClient._frames`: it finds each ``data: {"t":`` in
the bytes received, reads the publish timestamp the publisher embedded
(``time.monotonic_ns()``; CLOCK_MONOTONIC is system-wide on Linux, so it is
comparable across processes) and adds ``now - t`` to a histogram. No event
object, no JSON decoding: the load generator must stay cheaper per delivery
than any server it drives.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

#: Histogram resolution and range: 100 µs buckets up to 10 s; later ones land in the last.
BUCKET_NS = 100_000
BUCKETS = 100_001
_CAP = BUCKETS - 1
_DATA_T = b'data: {"t":'
_DATA_T_LEN = len(_DATA_T)
_ESTABLISHED = b"connection.established"
_now_ns = time.monotonic_ns


class Stats:
    """Everything the clients of one worker process count."""

    __slots__ = ("closed_unexpectedly", "delivered", "errors", "hist", "last_ns", "max_ns", "open")

    def __init__(self) -> None:
        self.hist: list[int] = [0] * BUCKETS
        self.delivered = 0
        self.max_ns = 0
        self.last_ns = 0
        self.errors: dict[str, int] = {}
        self.closed_unexpectedly = 0
        self.open = 0

    def reset(self) -> None:
        self.hist = [0] * BUCKETS
        self.delivered = 0
        self.max_ns = 0
        self.last_ns = 0
        self.errors = {}
        self.closed_unexpectedly = 0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def snapshot(self, *, with_hist: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "delivered": self.delivered,
            "max_ns": self.max_ns,
            "last_ns": self.last_ns,
            "errors": dict(self.errors),
            "closed_unexpectedly": self.closed_unexpectedly,
            "open": self.open,
        }
        if with_hist:
            out["hist"] = {i: n for i, n in enumerate(self.hist) if n}
        return out


class SSEClient(asyncio.Protocol):
    __slots__ = (
        "_chunk_left",
        "_chunk_line",
        "_chunk_skip",
        "_chunked",
        "_head_buf",
        "_head_done",
        "_sse_buf",
        "done",
        "established",
        "established_ns",
        "last_id",
        "last_seq",
        "request",
        "seq_ns",
        "spec",
        "stats",
        "target_seq",
        "transport",
        "user",
        "wanted_close",
    )

    def __init__(self, stats: Stats, request: bytes, spec: tuple[str, str], target_seq: int = -1) -> None:
        self.stats = stats
        self.request = request
        #: (user id, JWT): what a reconnect needs.
        self.spec = spec
        self.user = spec[0]
        self.transport: asyncio.Transport | None = None
        self._head_done = False
        self._head_buf = b""
        self._sse_buf = b""
        self._chunk_line = b""
        self._chunked = False
        self._chunk_left = 0
        self._chunk_skip = 0
        self.established = False
        self.established_ns = 0
        self.last_id: bytes | None = None
        self.last_seq = -1
        #: The storm's replay target: when ``last_seq`` reaches it, ``seq_ns`` is stamped.
        self.target_seq = target_seq
        self.seq_ns = 0
        self.wanted_close = False
        #: Resolved with True once ``connection.established`` arrived, False on failure.
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.open += 1
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.open -= 1
        if not self.wanted_close:
            self.stats.closed_unexpectedly += 1
        self._finish(False, "closed_before_established")

    def data_received(self, data: bytes) -> None:
        if not self._head_done:
            data = self._head(data)
            if not data:
                return
        if self._chunked:
            data = self._dechunk(data)
            if not data:
                return
        self._frames(data)

    # --- parsing

    def _head(self, data: bytes) -> bytes:
        buf = self._head_buf + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._head_buf = buf
            return b""
        head = buf[:end]
        self._head_buf = b""
        self._head_done = True
        status = head[9:12]
        if status != b"200":
            self._finish(False, f"http_{status.decode(errors='replace')}")
            self.close()
            return b""
        self._chunked = b"transfer-encoding: chunked" in head.lower()
        return buf[end + 4 :]

    def _dechunk(self, data: bytes) -> bytes:
        """Strip HTTP/1.1 chunk framing (sse-starlette on uvicorn uses it)."""
        out: list[bytes] = []
        pos = 0
        n = len(data)
        if self._chunk_line:
            # A partial chunk-size line is waiting.
            data = self._chunk_line + data
            self._chunk_line = b""
            n = len(data)
        while pos < n:
            if self._chunk_skip:
                take = min(self._chunk_skip, n - pos)
                self._chunk_skip -= take
                pos += take
                continue
            if self._chunk_left:
                take = min(self._chunk_left, n - pos)
                out.append(data[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if not self._chunk_left:
                    self._chunk_skip = 2
                continue
            eol = data.find(b"\r\n", pos)
            if eol < 0:
                self._chunk_line = data[pos:]
                break
            size = int(data[pos:eol].split(b";", 1)[0], 16)
            pos = eol + 2
            if size == 0:
                break
            self._chunk_left = size
        return out[0] if len(out) == 1 else b"".join(out)

    def _frames(self, data: bytes) -> None:
        if self._sse_buf:
            data = self._sse_buf + data
        end = data.rfind(b"\n\n")
        if end < 0:
            self._sse_buf = data
            return
        self._sse_buf = data[end + 2 :]
        now = _now_ns()
        stats = self.stats
        hist = stats.hist
        pos = 0
        count = 0
        top = stats.max_ns
        find = data.find
        while True:
            i = find(_DATA_T, pos, end)
            if i < 0:
                break
            i += _DATA_T_LEN
            j = find(b",", i)
            latency = now - int(data[i:j])
            b = latency // BUCKET_NS
            if b > _CAP:
                b = _CAP
            elif b < 0:
                b = 0
            hist[b] += 1
            if latency > top:
                top = latency
            count += 1
            pos = j
        if count:
            stats.delivered += count
            stats.max_ns = top
            stats.last_ns = now
            k = find(b'"s":', pos, end)
            if k >= 0:
                k += 4
                self.last_seq = int(data[k : find(b",", k)])
                if self.target_seq >= 0 and not self.seq_ns and self.last_seq >= self.target_seq:
                    self.seq_ns = now
        k = data.rfind(b"\nid: ", 0, end)
        if k < 0 and data.startswith(b"id: "):
            self.last_id = data[4 : data.find(b"\n", 4)]
        elif k >= 0:
            k += 5
            self.last_id = data[k : data.find(b"\n", k)]
        if not self.established and data.find(_ESTABLISHED, 0, end) >= 0:
            self.established = True
            self.established_ns = now
            self._finish(True, None)

    # --- control

    def _finish(self, ok: bool, error: str | None) -> None:
        if not self.done.done():
            if error is not None:
                self.stats.error(error)
            self.done.set_result(ok)

    def close(self) -> None:
        self.wanted_close = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.wanted_close = True
        if self.transport is not None:
            self.transport.abort()


def stream_request(host: str, port: int, path: str, token: str, last_event_id: bytes | None) -> bytes:
    lines = [
        b"GET %s HTTP/1.1" % path.encode(),
        b"Host: %s:%d" % (host.encode(), port),
        b"Accept: text/event-stream",
        b"Cache-Control: no-cache",
        b"Authorization: Bearer %s" % token.encode(),
    ]
    if last_event_id is not None:
        lines.append(b"Last-Event-ID: %s" % last_event_id)
    return b"\r\n".join(lines) + b"\r\n\r\n"
