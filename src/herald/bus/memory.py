"""The embedded default: the log in this process's memory.

A single gateway process needs nothing else. Records are kept for the
replay window and up to a count, whichever is smaller; the origin cursor is
the process's start time, so a cursor from an earlier run is never mistaken
for one of this run.

Retained states (D33) are kept per channel and coalesce key, bounded by
``max_retained`` (the least lately updated go first), expired on read.
``cursor_at`` finds a time's place in the log by bisection: a cursor's
milliseconds are its append time, so the log is its own time index.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Sequence
from operator import attrgetter

from herald.bus.base import Append, AppendResult, BatchResult, BusRecord, Listener, Replay
from herald.bus.channels import channel_of
from herald.bus.interest import READY, ChannelInterest
from herald.bus.listeners import Listeners
from herald.events.message import SSEMessage
from herald.wire.cursor import Cursor, next_cursor
from herald.wire.encoder import event_frame

_CURSOR_OF = attrgetter("cursor")
#: Trimmed records are removed from the front of the list in chunks of at least this.
_COMPACT_AFTER = 1024


class MemoryBus:
    def __init__(
        self,
        *,
        window_seconds: float = 300.0,
        max_events: int = 100_000,
        idempotency_window_seconds: float = 600.0,
        max_idempotency_keys: int = 200_000,
        clock: Callable[[], float] = time.time,
        retain_seconds: float = 86_400.0,
        max_retained: int = 100_000,
    ) -> None:
        self._window_ms = int(window_seconds * 1000)
        self._max_events = max_events
        self._idem_window_ms = int(idempotency_window_seconds * 1000)
        self._max_idem = max_idempotency_keys
        self._clock = clock
        origin = Cursor(self._now_ms(), 0)
        self._records: list[BusRecord] = []
        self._start = 0
        self._floor = origin
        self._last = origin
        self._idempotency: dict[str, Cursor] = {}
        self._idempotency_expiry: deque[tuple[int, str]] = deque()
        self._listeners = Listeners()
        self._retain_ms = int(retain_seconds * 1000)
        self._max_retained = max_retained
        #: Per channel, per coalesce key: the newest retained record and when it expires (ms).
        self._retained: dict[str, dict[str, tuple[BusRecord, int]]] = {}
        #: Every (channel, coalesce key) retained, least lately updated first.
        self._retained_order: dict[tuple[str, str], None] = {}
        #: The channels this node's streams follow.
        self.interest = ChannelInterest()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._listeners.clear()

    def healthy(self) -> bool:
        return True

    @property
    def head(self) -> Cursor:
        return self._last

    @property
    def floor(self) -> Cursor:
        return self._floor

    def __len__(self) -> int:
        return len(self._records) - self._start

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def follow(self, channels: Collection[str]) -> Awaitable[None]:
        """Counted only: this bus delivers every record of its log."""
        self.interest.add(channels)
        return READY

    def unfollow(self, channels: Collection[str]) -> None:
        self.interest.remove(channels)

    async def append(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        return self.append_now(
            message, data_json, idempotency_key=idempotency_key, superseded_keys=superseded_keys
        )

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        return [
            self.append_now(
                item.message,
                item.data_json,
                idempotency_key=item.idempotency_key,
                superseded_keys=item.superseded_keys,
            )
            for item in appends
        ]

    def append_now(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        """``append`` without the coroutine, for callers already on the loop."""
        now_ms = self._now_ms()
        if idempotency_key is not None or superseded_keys:
            self._expire_idempotency(now_ms)
        if idempotency_key is not None:
            first = self._idempotency.get(idempotency_key)
            if first is not None:
                return AppendResult(first, duplicate=True)
        cursor = next_cursor(self._last, now_ms)
        cursor_text = str(cursor)
        record = BusRecord(cursor, message, event_frame(cursor_text, message.event, data_json))
        self._records.append(record)
        self._last = cursor
        if idempotency_key is not None:
            self._remember(idempotency_key, cursor, now_ms)
        for key in superseded_keys:
            if key not in self._idempotency:
                self._remember(key, cursor, now_ms)
        if message.retain is not None and message.coalesce is not None:
            self._retain(record, message.retain, now_ms)
        self._trim(now_ms)
        self._listeners.deliver(record)
        return AppendResult(cursor)

    def _retain(self, record: BusRecord, retain_seconds: int, now_ms: int) -> None:
        coalesce = record.message.coalesce
        assert coalesce is not None
        channel = channel_of(record.message)
        keep_ms = retain_seconds * 1000 if retain_seconds else self._retain_ms
        self._retained.setdefault(channel, {})[coalesce] = (record, now_ms + keep_ms)
        order = self._retained_order
        order.pop((channel, coalesce), None)
        order[(channel, coalesce)] = None
        while len(order) > self._max_retained:
            old_channel, old_key = next(iter(order))
            del order[(old_channel, old_key)]
            self._forget_retained(old_channel, old_key)

    def _forget_retained(self, channel: str, coalesce: str) -> None:
        kept = self._retained.get(channel)
        if kept is not None:
            kept.pop(coalesce, None)
            if not kept:
                del self._retained[channel]

    async def retained(self, channels: Collection[str]) -> Sequence[BusRecord]:
        return self.retained_now(channels)

    def retained_now(self, channels: Collection[str]) -> list[BusRecord]:
        """The retained states of ``channels`` not yet expired, in cursor order."""
        now_ms = self._now_ms()
        found: list[BusRecord] = []
        for channel in channels:
            kept = self._retained.get(channel)
            if not kept:
                continue
            for coalesce, (record, expires_ms) in list(kept.items()):
                if expires_ms <= now_ms:
                    self._retained_order.pop((channel, coalesce), None)
                    self._forget_retained(channel, coalesce)
                else:
                    found.append(record)
        found.sort(key=_CURSOR_OF)
        return found

    def cursor_at(self, ms: int) -> Cursor | None:
        """The cursor just before the first record at or after ``ms``: a held record's, or
        the floor when every record held is at or after ``ms`` and nothing at or after it
        was trimmed; ``None`` when something at or after ``ms`` was trimmed."""
        self._trim(self._now_ms())
        start = Cursor(ms, 0)
        if self._floor >= start:
            return None
        index = bisect.bisect_left(self._records, start, lo=self._start, key=_CURSOR_OF)
        if index == self._start:
            return self._floor
        return self._records[index - 1].cursor

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        # One whole log: every channel's records, the manager keeps what each stream may see.
        return self.replay_now(after)

    def replay_now(self, after: Cursor) -> Replay:
        self._trim(self._now_ms())
        if after == self._floor:
            return Replay(True, self._records[self._start :])
        index = bisect.bisect_left(self._records, after, lo=self._start, key=_CURSOR_OF)
        if index == len(self._records) or self._records[index].cursor != after:
            return Replay(False, floor=self._floor)
        return Replay(True, self._records[index + 1 :])

    def records(self) -> Sequence[BusRecord]:
        return self._records[self._start :]

    def _trim(self, now_ms: int) -> None:
        records, start = self._records, self._start
        oldest_kept_ms = now_ms - self._window_ms
        excess = len(records) - start - self._max_events
        while start < len(records) and (excess > 0 or records[start].cursor.ms < oldest_kept_ms):
            self._floor = records[start].cursor
            start += 1
            excess -= 1
        if start >= _COMPACT_AFTER and start * 2 >= len(records):
            del records[:start]
            start = 0
        self._start = start

    def _remember(self, key: str, cursor: Cursor, now_ms: int) -> None:
        self._idempotency[key] = cursor
        self._idempotency_expiry.append((now_ms + self._idem_window_ms, key))

    def _expire_idempotency(self, now_ms: int) -> None:
        expiry = self._idempotency_expiry
        while expiry and (expiry[0][0] <= now_ms or len(expiry) > self._max_idem):
            _, key = expiry.popleft()
            self._idempotency.pop(key, None)
