"""One SSE client connection as an ``asyncio.Protocol``: HTTP/1.1 head, optional
chunked transfer coding, SSE frames, and the latency of every delivery.

The hot path is :meth:`SSEClient._frames`: it finds each ``{"t":`` in
the bytes received (the event's data: at the start of a ``data:`` line for
Herald and the baselines, inside the publication for Centrifugo), reads the
publish timestamp the publisher embedded
(``time.monotonic_ns()``; CLOCK_MONOTONIC is system-wide on Linux, so it is
comparable across processes) and adds ``now - t`` to a histogram. No event
object, no JSON decoding: the load generator must stay cheaper per delivery
than any server it drives.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, ClassVar

#: Histogram resolution and range: 100 µs buckets up to 10 s; later ones land in the last.
BUCKET_NS = 100_000
BUCKETS = 100_001
_CAP = BUCKETS - 1
_DATA_T = b'{"t":'
_DATA_T_LEN = len(_DATA_T)
_SEQ = b'"s":'
_now_ns = time.monotonic_ns


def _int_at(data: bytes, k: int) -> int:
    """The JSON integer at ``data[k:]``, followed by a comma or the object's end."""
    j = data.find(b",", k)
    e = data.find(b"}", k)
    if j < 0 or 0 <= e < j:
        j = e
    return int(data[k:j])


class Audit:
    """What one client received of the events ``lo..hi`` (sequence numbers) after a
    reconnect: a count and a sum of their numbers (each event exactly once gives
    ``hi - lo + 1`` and the arithmetic series), and how many older ones came again."""

    __slots__ = ("before", "count", "hi", "lo", "total")

    def __init__(self, lo: int, hi: int) -> None:
        self.lo = lo
        self.hi = hi
        self.count = 0
        self.total = 0
        self.before = 0

    def add(self, seq: int) -> None:
        if seq < self.lo:
            self.before += 1
        elif seq <= self.hi:
            self.count += 1
            self.total += seq

    @property
    def shortfall(self) -> int:
        """The expected sum less the received one: the missing event's number when one is."""
        n = self.hi - self.lo + 1
        return n * (self.lo + self.hi) // 2 - self.total

    @property
    def exact(self) -> bool:
        n = self.hi - self.lo + 1
        return self.before == 0 and self.count == n and self.total == n * (self.lo + self.hi) // 2


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
    """A client of Herald's wire format (the Python baselines speak it too)."""

    #: What the server's first event contains once the stream is open.
    ESTABLISHED: ClassVar[bytes] = b"connection.established"

    __slots__ = (
        "_chunk_left",
        "_chunk_line",
        "_chunk_skip",
        "_chunked",
        "_head_buf",
        "_head_done",
        "_sse_buf",
        "audit",
        "done",
        "established",
        "established_ns",
        "last_id",
        "last_seq",
        "lost",
        "request",
        "seq_ns",
        "spec",
        "stats",
        "target_seq",
        "told_recovered",
        "transport",
        "user",
        "wanted_close",
    )

    def __init__(
        self,
        stats: Stats,
        request: bytes,
        spec: tuple[str, ...],
        target_seq: int = -1,
        audit: Audit | None = None,
    ) -> None:
        self.stats = stats
        self.request = request
        #: (user id, JWT[, resource]): what a reconnect needs.
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
        #: The connection ended (whoever closed it).
        self.lost = False
        self.audit = audit
        #: What the server's first event said of the replay (None: it does not say).
        self.told_recovered: bool | None = None
        #: Resolved with True once ``connection.established`` arrived, False on failure.
        self.done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.open += 1
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
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
            if self.audit is not None:
                self._audit(data, end)
            k = find(_SEQ, pos, end)
            if k >= 0:
                k += 4
                seq = _int_at(data, k)
                if seq > self.last_seq:
                    self.last_seq = seq
                if self.target_seq >= 0 and not self.seq_ns and self.last_seq >= self.target_seq:
                    self.seq_ns = now
        if not self.established:
            i = data.find(self.ESTABLISHED, 0, end)
            if i >= 0:
                self._established(data, i, end, now)
            else:
                self._refused(data, end)
        self._positions(data, end)

    def _audit(self, data: bytes, end: int) -> None:
        """Every delivery's sequence number (not only the last's): audited reconnects only."""
        assert self.audit is not None
        find = data.find
        pos = find(_DATA_T, 0, end)
        while pos >= 0:
            k = find(_SEQ, pos, end)
            if k < 0:
                break
            k += 4
            self.audit.add(_int_at(data, k))
            pos = find(_DATA_T, k, end)

    def _positions(self, data: bytes, end: int) -> None:
        """Remember where the stream stands, for a reconnect: the last ``id:``."""
        k = data.rfind(b"\nid: ", 0, end)
        if k < 0 and data.startswith(b"id: "):
            self.last_id = data[4 : data.find(b"\n", 4)]
        elif k >= 0:
            k += 5
            self.last_id = data[k : data.find(b"\n", k)]

    def _established(self, data: bytes, at: int, end: int, now: int) -> None:
        k = data.find(b'"recovered":', at, end)
        if k >= 0:
            self.told_recovered = data[k + 12 : k + 13] == b"t"
        self.established = True
        self.established_ns = now
        self._finish(True, None)

    def _refused(self, data: bytes, end: int) -> None:
        """A stream the server sends away before it is open (Herald: ``connection.closing``
        with its reason, e.g. a replay it cannot read now): counted by that reason."""
        i = data.find(b"event: connection.closing", 0, end)
        if i < 0:
            return
        k = data.find(b'"reason":"', i, end)
        reason = data[k + 10 : data.find(b'"', k + 10)].decode(errors="replace") if k >= 0 else "?"
        self._finish(False, f"closing_{reason}")

    def resume(self) -> Any:
        """What a reconnect sends to resume where this stream stopped."""
        return self.last_id

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


class CentrifugoClient(SSEClient):
    """A client of Centrifugo's unidirectional SSE (``uni_sse``): each ``data:`` line is a
    push; the first is ``{"connect": ...}`` with the server-side subscriptions' stream
    positions (and, on a reconnect, the publications recovered); publications are
    ``{"channel": ..., "pub": {"data": ..., "offset": n}}``.

    Resuming takes each channel's epoch and offset, which only a parse of every push
    gives: that is done while ``tracking`` (the reconnect scenarios), never on the
    delivery-rate stages, where it would make this client the bottleneck.
    """

    ESTABLISHED: ClassVar[bytes] = b'{"connect":'

    __slots__ = ("positions", "tracking")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: channel → [epoch, offset] of the newest publication seen.
        self.positions: dict[str, list[Any]] = {}
        self.tracking = False

    def _positions(self, data: bytes, end: int) -> None:
        if not self.tracking:
            return
        for push in _pushes(data, end):
            if push.startswith(b'{"channel":'):
                msg = json.loads(push)
                pub = msg.get("pub")
                here = self.positions.get(msg["channel"])
                if pub is not None and here is not None and pub.get("offset", 0) > here[1]:
                    here[1] = pub["offset"]

    def _established(self, data: bytes, at: int, end: int, now: int) -> None:
        line_end = data.find(b"\n", at)
        connect = json.loads(data[at : line_end if line_end >= 0 else end])["connect"]
        recovering = []
        for channel, sub in connect.get("subs", {}).items():
            offset = max([sub.get("offset", 0), *(p.get("offset", 0) for p in sub.get("publications", ()))])
            self.positions[channel] = [sub.get("epoch", ""), offset]
            if sub.get("was_recovering"):
                recovering.append(bool(sub.get("recovered")))
        # Recovered only if every channel it asked to recover was.
        self.told_recovered = all(recovering) if recovering else None
        self.established = True
        self.established_ns = now
        self._finish(True, None)

    def _frames(self, data: bytes) -> None:
        if not self.established and b'{"disconnect":' in data:
            # Refused (a bad token, a bad recovery request): Centrifugo says so in a push.
            i = data.find(b'"code":')
            code = data[i + 7 : data.find(b",", i)].decode(errors="replace") if i >= 0 else "?"
            self._finish(False, f"disconnect_{code}")
            self.close()
            return
        super()._frames(data)

    def resume(self) -> Any:
        return {channel: list(position) for channel, position in self.positions.items()}


def _pushes(data: bytes, end: int) -> list[bytes]:
    """The JSON of each ``data:`` line in ``data[:end]``."""
    out = []
    pos = data.find(b"data: ", 0, end)
    while pos >= 0:
        line_end = data.find(b"\n", pos)
        out.append(data[pos + 6 : line_end])
        pos = data.find(b"data: ", line_end, end)
    return out


def stream_request(host: str, port: int, path: str, token: str | None, last_event_id: bytes | None) -> bytes:
    lines = [
        b"GET %s HTTP/1.1" % path.encode(),
        b"Host: %s:%d" % (host.encode(), port),
        b"Accept: text/event-stream",
        b"Cache-Control: no-cache",
    ]
    if token is not None:
        lines.append(b"Authorization: Bearer %s" % token.encode())
    if last_event_id is not None:
        lines.append(b"Last-Event-ID: %s" % last_event_id)
    return b"\r\n".join(lines) + b"\r\n\r\n"
