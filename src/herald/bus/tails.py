"""The recent records of the channels a node follows, shared by the replays of a
reconnect storm (docs/architecture.md, D28).

When a node restarts, or a network blip drops many streams at once, thousands of
clients come back with nearly the same ``Last-Event-ID``: each replay would read
its channels from Redis and decode the same records again, one copy per stream
(a broadcast missed by 2,000 streams is 2,000 reads of the global channel). A
*tail* keeps what one read found, plus every record the node delivers on that
channel afterwards, so the next replays of it are served from memory, and every
stream gets the same record objects (the same encoded frames).

A tail is complete from its ``complete_after`` on: it starts collecting the
channel's deliveries *before* the first read from Redis is sent, so a record is
either in what the read found (it was appended before the read) or delivered
after collection began. It is only kept while the node follows the channel, and
it mirrors the channel's bounds in Redis (the time window and the per-channel
count): what falls out moves ``complete_after`` up, so a tail never answers
"exact" where Redis would not.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from herald.bus.base import BusRecord
from herald.wire.cursor import Cursor


@dataclass
class _Tail:
    #: Every record of the channel after this cursor is in ``records`` (None: collecting,
    #: no read finished yet).
    complete_after: Cursor | None = None
    records: list[BusRecord] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)

    def add(self, record: BusRecord) -> bool:
        """Keep ``record``; False if it was already there."""
        cursor = record.cursor
        if not self.cursors or cursor > self.cursors[-1]:
            self.records.append(record)
            self.cursors.append(cursor)
            return True
        at = bisect.bisect_left(self.cursors, cursor)
        if at < len(self.cursors) and self.cursors[at] == cursor:
            return False
        self.records.insert(at, record)
        self.cursors.insert(at, cursor)
        return True

    def drop_through(self, count: int) -> int:
        """Forget the ``count`` oldest records: the tail is complete only after them now."""
        count = min(count, len(self.records))
        if count:
            last = self.cursors[count - 1]
            if self.complete_after is None or last > self.complete_after:
                self.complete_after = last
            del self.records[:count]
            del self.cursors[:count]
        return count


class ChannelTails:
    def __init__(
        self,
        *,
        window_seconds: float,
        max_events_per_channel: int,
        max_records: int = 10_000,
        clock: Callable[[], float],
    ) -> None:
        """``max_records``: over every channel; the tails read least lately go first."""
        self._window_ms = int(window_seconds * 1000)
        self._per_channel = max_events_per_channel
        self._max_records = max_records
        self._clock = clock
        self._tails: OrderedDict[str, _Tail] = OrderedDict()
        self._count = 0
        #: Replays served from a tail (those that read Redis: ``ShardedBus.replay_reads``).
        self.hits = 0

    def __len__(self) -> int:
        return self._count

    @property
    def active(self) -> bool:
        """Whether any channel has a tail (deliveries need not be looked at otherwise)."""
        return bool(self._tails)

    def collect(self, channel: str) -> None:
        """Begin keeping ``channel``'s deliveries (before a read of it is sent)."""
        if channel not in self._tails:
            self._tails[channel] = _Tail()

    def delivered(self, channel: str, record: BusRecord) -> None:
        tail = self._tails.get(channel)
        if tail is not None and tail.add(record):
            self._count += 1
            if len(tail.records) > self._per_channel:
                self._count -= tail.drop_through(len(tail.records) - self._per_channel)
            if self._count > self._max_records:
                self._evict()

    def found(self, channel: str, after: Cursor, records: Sequence[BusRecord]) -> None:
        """A read of ``channel`` after ``after``, sent while the tail collected, found
        ``records``: the tail is complete after ``after`` from now on."""
        tail = self._tails.get(channel)
        if tail is None:
            return  # dropped meanwhile (unfollowed, lost): what was collected is not whole
        for record in records:
            if tail.add(record):
                self._count += 1
        if tail.complete_after is None or after < tail.complete_after:
            tail.complete_after = after
        self._bound(tail)
        if self._count > self._max_records:
            self._evict()

    def read(self, channel: str, after: Cursor) -> list[BusRecord] | None:
        """``channel``'s records after ``after``, or None if this tail cannot say them all."""
        tail = self._tails.get(channel)
        if tail is None or tail.complete_after is None:
            return None
        self._bound(tail)
        if after < tail.complete_after:
            return None
        self._tails.move_to_end(channel)
        self.hits += 1
        return tail.records[bisect.bisect_right(tail.cursors, after) :]

    def drop(self, channels: Iterable[str]) -> None:
        for channel in channels:
            tail = self._tails.pop(channel, None)
            if tail is not None:
                self._count -= len(tail.records)

    def clear(self) -> None:
        self._tails.clear()
        self._count = 0

    def _bound(self, tail: _Tail) -> None:
        """The channel's bounds in Redis, mirrored: its window and its count."""
        old = bisect.bisect_left(tail.cursors, Cursor(int(self._clock() * 1000) - self._window_ms, 0))
        over = len(tail.records) - self._per_channel
        self._count -= tail.drop_through(max(old, over))

    def _evict(self) -> None:
        while self._count > self._max_records and self._tails:
            _, tail = self._tails.popitem(last=False)
            self._count -= len(tail.records)
