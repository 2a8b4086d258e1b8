"""One shard of the sharded bus: its channels' logs on one Redis primary (D28).

What a node does with one shard: append events to their channels (one
script call per batch), replay a channel after a cursor, and probe the
shard's clock (the watermark a node needs to merge shards in cursor order).
Receiving the shard's notifications, and merging shards, are the bus's.
The scripts and the cursor scheme are in :mod:`herald.bus.channel_scripts`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from herald.bus import channel_scripts
from herald.bus.base import Append, AppendResult, BatchResult, BusRecord, Replay
from herald.bus.channels import channel_of
from herald.bus.redis_entry import entry_fields, pairs, record_from_entry
from herald.cluster.redis_client import (
    RedisConnections,
    is_unavailable,
    not_replicated,
    script_then_wait,
    unavailable,
)
from herald.wire.cursor import Cursor, parse_cursor


@dataclass(frozen=True, slots=True)
class ShardKeys:
    """Where one deployment's channels live on a shard. Each channel's keys share its
    name as hash tag."""

    prefix: str = "herald"

    @property
    def shard(self) -> str:
        return f"{self.prefix}:shard"

    def log(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}:log"

    def meta(self, channel: str) -> str:
        return f"{self.prefix}:{{{channel}}}:meta"

    def idempotency(self, channel: str, key: str) -> str:
        return f"{self.prefix}:{{{channel}}}:idem:{key}"

    def retained(self, channel: str) -> str:
        """The channel's retained states (D33): a hash, field = coalesce key."""
        return f"{self.prefix}:{{{channel}}}:retained"

    @property
    def notifications(self) -> str:
        """The pub/sub channel prefix; a channel's notifications go to prefix + its name."""
        return f"{self.prefix}:n:"


@dataclass(frozen=True, slots=True)
class Notification:
    """A new entry as its shard published it."""

    channel: str
    #: The channel's sequence: one more than the previous entry's (a gap means lost notices).
    seq: int
    record: BusRecord


class ShardLog:
    def __init__(
        self,
        redis: RedisConnections,
        index: int,
        *,
        keys: ShardKeys | None = None,
        window_seconds: float = 300.0,
        max_events_per_channel: int = 10_000,
        idempotency_window_seconds: float = 600.0,
        replay_page: int = 1000,
        clock: Callable[[], float] | None = None,
        min_replicas_ack: int = 0,
        replica_ack_timeout_seconds: float = 1.0,
        retain_seconds: float = 86_400.0,
    ) -> None:
        """``clock``: ``None`` (production) uses Redis's clock. ``min_replicas_ack``: above
        0, an append counts only once that many replicas acknowledged it (``WAIT``)."""
        if not 0 <= index < channel_scripts.MAX_SHARDS:
            raise ValueError(f"a shard's index is below {channel_scripts.MAX_SHARDS}")
        self.index = index
        self.keys = keys or ShardKeys()
        self._redis = redis
        self._window_ms = int(window_seconds * 1000)
        self._max_events = max_events_per_channel
        self._idempotency_ms = int(idempotency_window_seconds * 1000)
        self._replay_page = replay_page
        self._clock = clock
        self._min_replicas_ack = min_replicas_ack
        self._replica_ack_ms = max(1, int(replica_ack_timeout_seconds * 1000))
        self._retain_ms = int(retain_seconds * 1000)
        commands = redis.commands
        self._append = commands.register_script(channel_scripts.APPEND)
        self._replay = commands.register_script(channel_scripts.REPLAY_PAGE)
        self._probe = commands.register_script(channel_scripts.PROBE)
        self._rebirth = commands.register_script(channel_scripts.REBIRTH)
        self._catch_up = commands.register_script(channel_scripts.CATCH_UP)
        self._retained = commands.register_script(channel_scripts.RETAINED)
        #: The lifetime the last answer came from (a change: the shard lost its data).
        self.origin = ""
        #: The newest cursor the shard had issued, by its clock as the last probe found it.
        self.issued = Cursor(0, 0)

    async def append_many(
        self, appends: Sequence[Append], hint: Cursor, known: tuple[str, Cursor] | None = None
    ) -> list[BatchResult]:
        """Each of ``appends`` on its channel, in order, in one round trip. ``hint``: the
        newest cursor the caller has seen or was given; every cursor issued is above it.
        ``known``: the newest entry (channel, cursor) the caller saw this shard issue: a
        shard that no longer holds it starts its next lifetime first."""
        if not appends:
            return []
        k = self.keys
        keys = [k.shard]
        items = []
        for item in appends:
            channel = channel_of(item.message)
            keys += [k.log(channel), k.meta(channel)]
            if item.idempotency_key is not None:
                keys.append(k.idempotency(channel, item.idempotency_key))
            keys.extend(k.idempotency(channel, key) for key in item.superseded_keys)
            fields = entry_fields(item.message, item.data_json)
            has_key = 1 if item.idempotency_key is not None else 0
            retain, coalesce = item.message.retain, item.message.coalesce
            retain_ms = 0
            if retain is not None and coalesce is not None:
                retain_ms = retain * 1000 if retain else self._retain_ms
                keys.append(k.retained(channel))
            items.append([channel, has_key, len(item.superseded_keys), retain_ms, coalesce or "", *fields])
        args: list[Any] = [
            self._now_arg(),
            self._window_ms,
            self._max_events,
            self._idempotency_ms,
            hint.ms,
            self.index,
            k.notifications,
            msgpack.packb(items, use_bin_type=False),
            hint.seq,
            self._known_arg(keys, known),
        ]
        acknowledged = 0
        try:
            if self._min_replicas_ack:
                reply, acknowledged = await self._append_replicated(keys, args)
            else:
                reply = await self._append(keys=keys, args=args)
        except Exception as exc:
            if is_unavailable(exc):
                return [unavailable("appending to a shard", exc)] * len(appends)
            raise
        self.origin = reply[0].decode()
        if acknowledged < self._min_replicas_ack:
            # On the primary, not (yet) on enough replicas: a failover now could lose them,
            # so they are not acknowledged. Sent again, the idempotency key finds them.
            return [not_replicated(acknowledged, self._min_replicas_ack)] * len(appends)
        return [
            AppendResult(_cursor(cursor), duplicate=bool(duplicate))
            for cursor, duplicate in zip(reply[1::2], reply[2::2], strict=True)
        ]

    async def _append_replicated(self, keys: list[Any], args: list[Any]) -> tuple[Any, int]:
        """The append script, then ``WAIT`` on the same connection, in one round trip: the
        script's reply and how many replicas acknowledged it in time."""
        return await script_then_wait(
            self._redis.commands, self._append, keys, args, self._min_replicas_ack, self._replica_ack_ms
        )

    async def replay(self, channel: str, after: Cursor) -> Replay:
        """The channel's records after ``after``, if nothing after it was lost (D5, per
        channel); else not exact, with the floor from which a replay would be."""
        k = self.keys
        keys = [k.shard, k.log(channel), k.meta(channel)]
        records: list[BusRecord] = []
        page_after, origin = after, ""
        while True:
            args: list[Any] = [
                self._now_arg(),
                self._window_ms,
                self._max_events,
                str(page_after),
                self._replay_page,
                origin,
                self.index,
            ]
            reply = await self._run(self._replay, keys, args, "replaying a channel")
            if not reply[0]:
                if len(reply) > 2:
                    self.origin = reply[2].decode()
                floor = _cursor(reply[1]) if len(reply) > 1 and reply[1] else None
                return Replay(False, floor=floor)
            origin, entries = reply[1].decode(), reply[2]
            self.origin = origin
            for entry_id, flat in entries:
                page_after = _cursor(entry_id)
                records.append(record_from_entry(entry_id, pairs(flat)))
            if len(entries) < self._replay_page:
                return Replay(True, records)

    async def retained(self, channels: Sequence[str]) -> list[BusRecord]:
        """The live retained states (D33) of ``channels`` (all on this shard), in one round trip."""
        if not channels:
            return []
        keys = [self.keys.retained(channel) for channel in channels]
        reply = await self._run(self._retained, keys, [self._now_arg()], "reading retained states")
        records = []
        for values in reply:
            for raw in values:
                value = msgpack.unpackb(raw, raw=True)
                records.append(record_from_entry(value[1], pairs(value[2:])))
        return records

    async def catch_up(self, channels: Sequence[tuple[str, Cursor]], advance_ms: int) -> list[Replay]:
        """Each channel's records after its cursor, as :meth:`replay` gives them, for many
        channels in one round trip (their first pages; a longer one is read on), with the
        shard's clock moved to at least ``advance_ms`` in the same step."""
        k = self.keys
        keys = [k.shard]
        args: list[Any] = [
            self._now_arg(),
            self._window_ms,
            self._max_events,
            self._replay_page,
            self.index,
            advance_ms,
        ]
        for channel, after in channels:
            keys += [k.log(channel), k.meta(channel)]
            args.append(str(after))
        reply = await self._run(self._catch_up, keys, args, "catching up channels")
        self.origin = reply[0].decode()
        replays = []
        for (channel, _), answer in zip(channels, reply[1:], strict=True):
            if not answer[0]:
                replays.append(Replay(False, floor=_cursor(answer[1])))
                continue
            records = [record_from_entry(entry_id, pairs(flat)) for entry_id, flat in answer[1]]
            if len(records) >= self._replay_page:
                rest = await self.replay(channel, records[-1].cursor)
                if not rest.exact:
                    replays.append(rest)
                    continue
                records += rest.records
            replays.append(Replay(True, records))
        return replays

    async def probe(self, hint_ms: int, known: tuple[str, Cursor] | None = None) -> int:
        """Move the shard's clock to at least ``hint_ms``; the millisecond below which the
        shard has issued every cursor it ever will (for a watermark). ``known``: as
        :meth:`append_many`'s."""
        keys: list[Any] = [self.keys.shard]
        args = [self._now_arg(), hint_ms, self.index, self._known_arg(keys, known)]
        origin, ms, found_ms, found_n = await self._run(self._probe, keys, args, "probing a shard")
        self.origin = origin.decode()
        n = int(found_n)
        self.issued = Cursor(int(found_ms), n * channel_scripts.MAX_SHARDS + self.index + 1 if n >= 0 else 0)
        return int(ms)

    async def rebirth(self, known_origin: str, hint_ms: int) -> str:
        """Start a new lifetime (the shard was restored from an older snapshot: some of
        what it issued is gone), unless another node already did; the shard's origin."""
        args = [self._now_arg(), hint_ms, self.index, known_origin]
        origin = await self._run(self._rebirth, [self.keys.shard], args, "renewing a shard's lifetime")
        self.origin = origin.decode()
        return self.origin

    @staticmethod
    async def _run(script: Any, keys: list[Any], args: list[Any], what: str) -> Any:
        """One script call; :class:`BusUnavailable` when the shard cannot be reached."""
        try:
            return await script(keys=keys, args=args)
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable(what, exc) from exc
            raise

    def _known_arg(self, keys: list[Any], known: tuple[str, Cursor] | None) -> str:
        """The script argument for ``known``; its channel's log and meta go last in ``keys``."""
        if known is None:
            return ""
        channel, cursor = known
        keys += [self.keys.log(channel), self.keys.meta(channel)]
        return str(cursor)

    def _now_arg(self) -> str:
        return "" if self._clock is None else str(int(self._clock() * 1000))


def decode_notification(channel_name: bytes, payload: bytes, prefix: str) -> Notification:
    """A shard's notification as received on ``channel_name``; ``ValueError`` if it is not one."""
    name = channel_name.decode()
    if not name.startswith(prefix):
        raise ValueError(f"not a notification channel: {name!r}")
    values = msgpack.unpackb(payload, raw=True)
    if not isinstance(values, list) or len(values) < 4 or len(values) % 2:
        raise ValueError("a notification is [cursor, seq, field, value, ...]")
    cursor, seq, fields = values[0], values[1], values[2:]
    return Notification(name[len(prefix) :], int(seq), record_from_entry(cursor, pairs(fields)))


def _cursor(raw: bytes | str) -> Cursor:
    cursor = parse_cursor(raw.decode() if isinstance(raw, bytes) else raw)
    if cursor is None:
        raise ValueError(f"not a cursor: {raw!r}")
    return cursor
