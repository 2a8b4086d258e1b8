"""The Redis bus: one ordered log for every gateway node of a cluster.

The log is a Redis Stream; its entry ids are the cursors (``{ms}-{seq}``, the
shape of :mod:`herald.wire.cursor`), so a cursor means the same on every node
and a client may resume on any of them. Each entry holds the routing envelope
and the encoded data JSON (:mod:`herald.bus.redis_entry`).

Writing
    Appends are one Lua script (:mod:`herald.bus.redis_scripts`): for each
    event, check the idempotency key, ``XADD``, remember the key for the
    idempotency window; then trim by time (``MINID``) and count, recording
    the floor. One round trip, atomic, so concurrent duplicates from several
    nodes append once. ``append_many`` sends a batch in one call; single
    appends made while one is on its way are queued and sent together next
    (group commit), so a busy node pays the client's per-call cost once per
    round trip rather than per event.

Reading
    Each node runs ONE reader task that tails the stream with a blocking
    ``XREAD`` and hands every record, in order, to this node's listeners
    (the manager), which fan out in memory. Connections never touch Redis:
    10,000 streams on a node are one Redis socket and one round trip per
    batch of events. ``head`` is the newest cursor the reader delivered.

Replay
    Read in pages by a script that first applies retention and then proves
    exactness as D5 defines it (the cursor is the floor or a held entry), and
    later pages check that trimming has not passed them meanwhile. A replay
    returns only records this node's reader has already passed: what lies
    beyond reaches the connection live, through the manager's seam, so
    nothing is sent twice. It waits (bounded) for the reader to pass the
    newest record it read, which also covers a client coming from a node
    that is ahead of this one.

Redis away, Redis back
    Publishing raises :class:`BusUnavailable` within the command timeout
    (the API answers 503 + ``Retry-After``); ``healthy()`` turns false; open
    streams stay open (the manager's heartbeats do not need Redis). The
    reader reconnects with jittered backoff and resumes after the last cursor
    it delivered: nothing Redis kept is lost or delivered twice. If the log
    came back as a different lifetime (Redis restarted empty), rewound (Redis
    restarted from an older snapshot) or trimmed records this node never
    read, listeners cannot be made whole:
    ``on_discontinuity`` callbacks are told, and the gateway closes its
    streams so that every client reconnects and learns ``recovered: false``.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import msgpack
import structlog
from redis.asyncio import Redis

from herald.bus import redis_scripts
from herald.bus.base import Append, AppendResult, BatchResult, BusRecord, Listener, Replay
from herald.bus.group_commit import GroupCommit
from herald.bus.interest import READY, ChannelInterest
from herald.bus.listeners import Listeners, Progress
from herald.bus.redis_entry import entry_fields, pairs, record_from_entry
from herald.cluster.backoff import reconnect_delay
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections, is_unavailable, stop_reader, unavailable
from herald.events.message import SSEMessage
from herald.wire.cursor import Cursor, parse_cursor

log = structlog.get_logger("herald.bus.redis")

#: Why listeners may have missed records: passed to ``on_discontinuity`` callbacks.
LOG_REPLACED = "log_replaced"
LOG_REWOUND = "log_rewound"
RECORDS_TRIMMED_UNREAD = "records_trimmed_unread"


def _cursor(raw: bytes | str) -> Cursor:
    cursor = parse_cursor(raw.decode() if isinstance(raw, bytes) else raw)
    if cursor is None:
        raise ValueError(f"not a stream id: {raw!r}")
    return cursor


def _packed(value: object) -> bytes:
    """``value`` for the scripts' ``cmsgpack.unpack``. Redis's cmsgpack predates msgpack's
    ``bin`` type: bytes travel as the old raw strings (Lua strings are bytes anyway)."""
    packed: bytes = msgpack.packb(value, use_bin_type=False)
    return packed


class RedisBus:
    def __init__(
        self,
        redis: RedisConnections,
        *,
        keys: Keyspace | None = None,
        window_seconds: float = 300.0,
        max_events: int = 100_000,
        idempotency_window_seconds: float = 600.0,
        clock: Callable[[], float] | None = None,
        block_seconds: float = 2.0,
        read_batch: int = 512,
        replay_page: int = 1000,
        catch_up_seconds: float = 5.0,
        recent_records: int = 10_000,
        check_seconds: float = 5.0,
    ) -> None:
        """``clock``: ``None`` (production) uses Redis's clock for cursors and retention."""
        self._redis = redis
        self._keys = keys or Keyspace()
        self._window_ms = int(window_seconds * 1000)
        self._max_events = max_events
        self._idempotency_ms = int(idempotency_window_seconds * 1000)
        self._clock = clock
        self._block_seconds = block_seconds
        self._read_batch = read_batch
        self._replay_page = replay_page
        self._catch_up_seconds = catch_up_seconds
        self._check_seconds = check_seconds
        #: The records the reader delivered lately, by cursor: a replay (a reconnect
        #: storm after a node restart replays the same recent records thousands of
        #: times) hands out these same objects, frames encoded once per node (D3).
        self._recent: OrderedDict[Cursor, BusRecord] = OrderedDict()
        self._recent_max = recent_records
        commands = redis.commands
        self._append_many_script = commands.register_script(redis_scripts.APPEND_MANY)
        self._open_script = commands.register_script(redis_scripts.OPEN)
        self._replay_script = commands.register_script(redis_scripts.REPLAY_PAGE)
        self._listeners = Listeners()
        #: The channels this node's streams follow.
        self.interest = ChannelInterest()
        self._group = GroupCommit(self.append_many, "herald-redis-bus-writer")
        #: Called (on the loop) when this node's listeners may have missed records.
        self.on_discontinuity: list[Callable[[str], None]] = []
        self._origin = ""
        self._head = Cursor(0, 0)
        self._read_from = Cursor(0, 0)
        self._healthy = False
        self._check_soon = False
        self._progress = Progress()
        self._reader: asyncio.Task[None] | None = None
        self._reader_client: Redis | None = None
        self._stopping = False

    # --- life cycle

    async def start(self) -> None:
        """Open (or create) the log and start tailing it from its newest entry.

        Raises :class:`BusUnavailable` when Redis cannot be reached: a node
        does not come up without its log.
        """
        try:
            origin, _floor, last = await self._open(self._redis.commands)
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("opening the event log", exc) from exc
            raise
        self._origin = origin
        self._head = self._read_from = last
        self._healthy = True
        self._reader_client = self._redis.blocking(self._block_seconds)
        self._reader = asyncio.create_task(self._run_reader(), name="herald-redis-bus-reader")
        log.info("redis_bus_started", origin=origin, head=str(last))

    async def stop(self) -> None:
        self._stopping = True
        await self._group.settle()
        if self._reader is not None and self._reader_client is not None:
            await stop_reader(self._reader, self._reader_client)
            self._reader = None
        if self._reader_client is not None:
            await self._reader_client.aclose()
            self._reader_client = None
        self._listeners.clear()
        self._healthy = False

    def healthy(self) -> bool:
        """The reader's last round trip to Redis succeeded, and no append has failed since."""
        return self._healthy

    @property
    def head(self) -> Cursor:
        return self._head

    @property
    def origin(self) -> str:
        """The lifetime of the log this node reads (its origin cursor)."""
        return self._origin

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    def follow(self, channels: Collection[str]) -> Awaitable[None]:
        """Counted only: this bus delivers every record of its log."""
        self.interest.add(channels)
        return READY

    def unfollow(self, channels: Collection[str]) -> None:
        self.interest.remove(channels)

    # --- writing

    async def append(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        """Appends made while another is on its way to Redis go together (group commit)."""
        return await self._group.append(Append(message, data_json, idempotency_key, superseded_keys))

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        """One script, one round trip: the batch is appended atomically, in order."""
        if not appends:
            return []
        keys_ = self._keys
        keys = [keys_.log, keys_.meta]
        args: list[Any] = [
            self._now_arg(),
            self._window_ms,
            self._max_events,
            self._idempotency_ms,
            self._head.ms,
        ]
        items = []
        for item in appends:
            if item.idempotency_key is not None:
                keys.append(keys_.idempotency(item.idempotency_key))
            keys.extend(keys_.idempotency(key) for key in item.superseded_keys)
            entry = entry_fields(item.message, item.data_json)
            items.append([1 if item.idempotency_key is not None else 0, len(item.superseded_keys), *entry])
        args.append(_packed(items))
        try:
            reply = await self._append_many_script(keys=keys, args=args)
        except Exception as exc:
            if is_unavailable(exc):
                self._healthy = False
                failure = unavailable("appending to the event log", exc)
                return [failure] * len(appends)
            raise
        if reply[0].decode() != self._origin:
            self._check_soon = True
        return [
            AppendResult(_cursor(cursor), duplicate=bool(duplicate))
            for cursor, duplicate in zip(reply[1::2], reply[2::2], strict=True)
        ]

    # --- replay

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        # One whole log: every channel's records, the manager keeps what each stream may see.
        records: list[BusRecord] = []
        page_after, origin = after, ""
        while True:
            page = await self._replay_page_at(page_after, origin)
            if page is None or isinstance(page, Cursor):
                return Replay(False, floor=page)
            origin, entries = page
            for entry_id, flat in entries:
                page_after = _cursor(entry_id)
                record = self._recent.get(page_after) or self._decode(entry_id, pairs(flat))
                if record is not None:
                    records.append(record)
            if len(entries) < self._replay_page:
                break
        # The replay may only hold what this node's reader has already passed: every
        # later record reaches the connection live, through the manager's seam, and
        # would otherwise arrive twice. The reader is normally a moment behind at
        # most; a client that saw ``after`` on a node ahead of this one waits for it.
        if not await self._reached(page_after):
            log.warning("redis_bus_replay_reader_behind", after=str(after), read=str(self._read_from))
        passed = self._read_from
        if after > passed:
            return Replay(False)
        if records and records[-1].cursor > passed:
            records = [record for record in records if record.cursor <= passed]
        return Replay(True, records)

    async def _replay_page_at(self, after: Cursor, origin: str) -> tuple[str, Sequence[Any]] | Cursor | None:
        """``(origin, entries)``; when not exact, the floor (first page) or ``None``."""
        args: list[str | int] = [
            self._now_arg(),
            self._window_ms,
            self._max_events,
            str(after),
            "+",
            self._replay_page,
            origin,
        ]
        try:
            reply = await self._replay_script(keys=[self._keys.log, self._keys.meta], args=args)
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("replaying the event log", exc) from exc
            raise
        if not reply[0]:
            return _cursor(reply[1]) if len(reply) > 1 and reply[1] else None
        return reply[1].decode(), reply[2]

    async def _reached(self, cursor: Cursor) -> bool:
        """Wait (bounded) until the reader has passed ``cursor``."""
        return await self._progress.until(lambda: self._read_from >= cursor, self._catch_up_seconds)

    # --- the reader

    async def _run_reader(self) -> None:
        client = self._reader_client
        assert client is not None
        attempt = 0
        must_check = False
        last_check = time.monotonic()
        while not self._stopping:
            try:
                if must_check or self._check_soon or time.monotonic() - last_check >= self._check_seconds:
                    self._check_soon = False
                    await self._check_log(client)
                    last_check = time.monotonic()
                    must_check = False
                    self._reached_redis(attempt)
                    attempt = 0
                reply: Any = await client.xread(
                    {self._keys.log: str(self._read_from)},
                    count=self._read_batch,
                    block=int(self._block_seconds * 1000),
                )
                self._reached_redis(attempt)
                attempt = 0
                if reply:
                    self._deliver(reply[0][1])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                if attempt == 0:
                    if is_unavailable(exc):
                        log.warning("redis_bus_reader_unavailable", error=repr(exc), head=str(self._head))
                    else:
                        log.exception("redis_bus_reader_failed", head=str(self._head))
                self._healthy = False
                must_check = True  # whatever Redis comes back with, look at it before reading
                await asyncio.sleep(reconnect_delay(attempt))
                attempt += 1

    def _reached_redis(self, failed_attempts: int) -> None:
        """A round trip succeeded: the node is ready again (before a quiet XREAD returns)."""
        if not self._healthy:
            log.info("redis_bus_reader_recovered", head=str(self._head), attempts=failed_attempts)
        self._healthy = True

    async def _check_log(self, client: Redis) -> None:
        """Is the log still the lifetime this node reads, whole, with nothing trimmed unread?"""
        origin, floor, last = await self._open(client)
        if origin != self._origin:
            log.warning(
                "redis_bus_log_replaced", old_origin=self._origin, origin=origin, head=str(self._head)
            )
            self._origin = origin
            # Every record of the new lifetime lies above its origin. (If this reader had
            # already read part of the new lifetime before noticing, it keeps its place.)
            self._read_from = max(self._read_from, _cursor(origin))
            # The new lifetime's origin is its floor: the one cursor of it that replays exactly.
            self._head = self._read_from
            self._discontinuity(LOG_REPLACED)
        elif last < self._read_from:
            # Redis came back from an older copy (a snapshot, a lagging replica): records
            # this node delivered are gone from the log, and other nodes may never have
            # read some of them. Read whatever is appended from here on.
            log.warning("redis_bus_log_rewound", read_from=str(self._read_from), last=str(last))
            self._read_from = self._head = last
            self._discontinuity(LOG_REWOUND)
        elif floor > self._read_from:
            log.error("redis_bus_records_trimmed_unread", read_from=str(self._read_from), floor=str(floor))
            self._read_from = self._head = floor
            self._discontinuity(RECORDS_TRIMMED_UNREAD)

    def _deliver(self, entries: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> None:
        for entry_id, fields in entries:
            self._read_from = _cursor(entry_id)
            record = self._decode(entry_id, fields)
            if record is None:
                continue
            self._head = record.cursor
            recent = self._recent
            recent[record.cursor] = record
            if len(recent) > self._recent_max:
                recent.popitem(last=False)
            self._listeners.deliver(record)
        self._progress.moved()

    def _decode(self, entry_id: bytes, fields: dict[bytes, bytes]) -> BusRecord | None:
        try:
            return record_from_entry(entry_id, fields)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            # Something other than a gateway wrote to the log; skip it, every node alike.
            log.error("redis_bus_entry_skipped", cursor=entry_id.decode(errors="replace"), error=repr(exc))
            return None

    def _discontinuity(self, reason: str) -> None:
        self._recent.clear()
        for callback in tuple(self.on_discontinuity):
            try:
                callback(reason)
            except Exception:
                log.exception("bus_discontinuity_callback_failed", reason=reason)

    # --- helpers

    async def _open(self, client: Redis) -> tuple[str, Cursor, Cursor]:
        origin, floor, last = await self._open_script(
            keys=[self._keys.log, self._keys.meta], args=[self._now_arg(), self._head.ms], client=client
        )
        return origin.decode(), _cursor(floor), _cursor(last)

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))
