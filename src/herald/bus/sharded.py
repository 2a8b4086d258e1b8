"""The sharded bus: channels over several Redis primaries, each node reading only the
channels its streams follow, in one cursor order (docs/architecture.md, D28).

Writing
    An event goes to its channel's shard (:func:`herald.cluster.placement.shard_of`);
    a batch is one script call per shard, all shards at once
    (:class:`herald.bus.shard_log.ShardLog`).

Reading
    One subscriber connection per shard, subscribed to the notifications of
    the channels this node's streams follow (:meth:`follow`, reference-counted).
    Each notification carries the channel's sequence: a gap (a lost notice) is
    filled from the channel's stream.

One order across shards
    With channels on one shard, notices arrive in cursor order on its
    connection and are delivered at once. With several, a record waits until
    every shard followed has passed its cursor: a shard has passed what its
    own notices have; one that has been quiet since is *probed* (its clock
    moved past the cursor, then a ``PING`` on the subscriber connection: all
    the shard published before has arrived), after 2 ms in which its own
    traffic may make the probe needless. Then what is pending goes out in
    cursor order. The probes also advance :attr:`head`
    while nothing flows, so an idle stream's position stays inside the
    window.

A shard that does not answer
    for ``shard_grace_seconds`` is left out of the merge: the streams that
    follow its channels are closed (``on_channels_lost``) and new ones are
    refused until its subscriber is back; the others go on. Meanwhile the
    other shards' records wait (at most the grace).

A shard that lost its data (a new lifetime) closes the streams that follow
its channels; they learn ``recovered: false`` on their return.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Collection, Generator, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from herald.bus.base import Append, AppendResult, BatchResult, BusRecord, Listener, Replay
from herald.bus.channels import GLOBAL_CHANNEL, channel_of
from herald.bus.group_commit import GroupCommit
from herald.bus.interest import ChannelInterest
from herald.bus.listeners import Listeners, Progress
from herald.bus.shard_log import ShardKeys, ShardLog, decode_notification
from herald.bus.tails import ChannelTails
from herald.cluster.backoff import reconnect_delay
from herald.cluster.placement import shard_of
from herald.cluster.redis_client import RedisConnections, is_unavailable
from herald.errors import BusUnavailable
from herald.events.message import SSEMessage
from herald.wire.cursor import Cursor, parse_cursor

log = structlog.get_logger("herald.bus.sharded")

LOG_REPLACED = "log_replaced"
_ZERO = Cursor(0, 0)


class _Subscriber:
    """One shard's subscriber connection: notifications in, subscribe confirmations, pongs."""

    def __init__(self, bus: ShardedBus, index: int, client: Redis) -> None:
        self.bus = bus
        self.index = index
        self.client = client
        self.pubsub: PubSub | None = None
        self.connected = asyncio.Event()
        #: Channels whose SUBSCRIBE the shard has confirmed, and those waiting for it.
        self.live: set[str] = set()
        self.waiting: dict[str, asyncio.Future[None]] = {}
        self._pongs: list[asyncio.Future[None]] = []
        self.task: asyncio.Task[None] | None = None
        #: (Un)subscriptions asked this loop turn, in order: sent together at its end.
        self._changes: list[tuple[bool, list[str]]] = []

    def name(self, channel: str) -> str:
        return self.bus.keys.notifications + channel

    async def run(self, attempt: int = 0) -> None:
        """``attempt``: above 0 when this replaces a connection that was lost (what its
        channels got meanwhile is taken from their streams once connected)."""
        prefix = self.bus.keys.notifications
        while not self.bus.stopping:
            pubsub = self.client.pubsub()
            try:
                # A channel of the shard's own keeps the connection in subscribed mode.
                await pubsub.subscribe(prefix + "~", *(self.name(c) for c in self.wanted()))
                if attempt:
                    # Back after an outage: whether the shard kept its data is known before
                    # any stream is let in on it.
                    await self.bus.check_lifetime(self.index)
                self.pubsub = pubsub
                self.connected.set()
                self.bus.shard_back(self.index)
                if attempt:
                    self.bus.refill(self.index)
                attempt = 0
                while not self.bus.stopping:
                    message: dict[str, Any] | None = await pubsub.get_message(timeout=self.bus.ping_seconds)
                    if message is None:
                        await pubsub.ping()
                        continue
                    self._on_message(message, prefix)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._gone()
                if self.bus.stopping:
                    return
                if attempt == 0:
                    log.warning("sharded_bus_subscriber_lost", shard=self.index, error=repr(exc))
                await asyncio.sleep(reconnect_delay(attempt))
                attempt += 1
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    def restart(self) -> None:
        """The connection looks alive but does not answer (a frozen Redis, a silent network):
        drop it and connect again."""
        if self.task is None or self.bus.stopping:
            return
        log.warning("sharded_bus_subscriber_unanswering", shard=self.index)
        self.task.cancel()
        self._gone()
        self.task = asyncio.create_task(self.run(attempt=1), name=f"herald-shard-{self.index}-subscriber")

    def _gone(self) -> None:
        """The connection is lost: no subscription stands, no pong will come."""
        self.connected.clear()
        self.pubsub = None
        self.live.clear()
        for pong in self._pongs:
            if not pong.done():
                pong.set_exception(BusUnavailable("a shard's subscriber is away", retry_after=1))
        self._pongs.clear()

    def wanted(self) -> list[str]:
        return list(self.bus.interest_on(self.index))

    def _on_message(self, message: dict[str, Any], prefix: str) -> None:
        kind = message["type"]
        if kind == "message":
            self.bus.on_notification(self.index, message["channel"], message["data"])
        elif kind == "subscribe":
            name = message["channel"].decode()
            channel = name[len(prefix) :]
            self.live.add(channel)
            self.bus.confirmed(self.index, channel, self.waiting.pop(channel, None))
        elif kind == "unsubscribe":
            self.live.discard(message["channel"].decode()[len(prefix) :])
        elif kind == "pong" and self._pongs:
            pong = self._pongs.pop(0)
            if not pong.done():
                pong.set_result(None)

    def subscribe(self, channels: list[str]) -> list[asyncio.Future[None]]:
        loop = asyncio.get_running_loop()
        waits = []
        for channel in channels:
            waiter = self.waiting.get(channel)
            if waiter is None:
                waiter = self.waiting[channel] = loop.create_future()
            waits.append(waiter)
        self._change(True, channels)
        return waits

    def unsubscribe(self, channels: list[str]) -> None:
        for channel in channels:
            self.waiting.pop(channel, None)
        self._change(False, channels)

    def _change(self, subscribe: bool, channels: list[str]) -> None:
        if self.pubsub is None:
            return  # the next connection subscribes to what is wanted then
        if not self._changes:
            asyncio.get_running_loop().call_soon(self._send_changes)
        if self._changes and self._changes[-1][0] == subscribe:
            self._changes[-1][1].extend(channels)
        else:
            self._changes.append((subscribe, list(channels)))

    def _send_changes(self) -> None:
        """One command per run of subscriptions (or of unsubscriptions), in the order asked:
        a thousand streams opening at once are one ``SUBSCRIBE``."""
        changes, self._changes = self._changes, []
        pubsub = self.pubsub
        if pubsub is None or not changes:
            return

        async def send() -> None:
            for subscribe, channels in changes:
                names = [self.name(c) for c in channels]
                await (pubsub.subscribe(*names) if subscribe else pubsub.unsubscribe(*names))

        self.bus.spawn(send())

    async def ping_through(self) -> None:
        """Return once everything the shard published before now has arrived here."""
        pubsub = self.pubsub
        if pubsub is None:
            raise BusUnavailable("a shard's subscriber is away", retry_after=1)
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Pongs come back in the order of the pings: one waiter per ping actually sent.
        self._pongs.append(pong)
        try:
            await pubsub.ping()
        except BaseException as exc:
            if pong in self._pongs:
                self._pongs.remove(pong)
            if isinstance(exc, Exception) and is_unavailable(exc):
                # The connection broke under the ping: the subscriber reconnects by itself.
                raise BusUnavailable("a shard's subscriber is away", retry_after=1) from exc
            raise
        await pong


class _Readiness:
    """What :meth:`ShardedBus.follow` returns: the wait runs only if awaited, so a caller
    that does not need it leaves no coroutine unawaited (the subscriptions go out anyway)."""

    __slots__ = ("_bus", "_down", "_waits")

    def __init__(self, bus: ShardedBus, waits: list[asyncio.Future[None]], down: bool) -> None:
        self._bus, self._waits, self._down = bus, waits, down

    def __await__(self) -> Generator[Any, None, None]:
        return self._bus._ready(self._waits, self._down).__await__()


class ShardedBus:
    def __init__(
        self,
        shards: Sequence[RedisConnections],
        *,
        keys: ShardKeys | None = None,
        window_seconds: float = 300.0,
        max_events_per_channel: int = 10_000,
        idempotency_window_seconds: float = 600.0,
        clock: Callable[[], float] | None = None,
        catch_up_seconds: float = 5.0,
        ping_seconds: float = 5.0,
        tick_seconds: float = 1.0,
        shard_grace_seconds: float = 3.0,
        probe_delay_seconds: float = 0.002,
        owns_connections: bool = False,
        min_replicas_ack: int = 0,
        replica_ack_timeout_seconds: float = 1.0,
        retain_seconds: float = 86_400.0,
    ) -> None:
        """``owns_connections``: close the shards' connections on :meth:`stop`.
        ``min_replicas_ack``: see :class:`ShardLog` (``HERALD_REDIS_MIN_REPLICAS_ACK``)."""
        self.keys = keys or ShardKeys()
        self._owns_connections = owns_connections
        self._connections = list(shards)
        self._shards = [
            ShardLog(
                c,
                index,
                keys=self.keys,
                window_seconds=window_seconds,
                max_events_per_channel=max_events_per_channel,
                idempotency_window_seconds=idempotency_window_seconds,
                clock=clock,
                min_replicas_ack=min_replicas_ack,
                replica_ack_timeout_seconds=replica_ack_timeout_seconds,
                retain_seconds=retain_seconds,
            )
            for index, c in enumerate(shards)
        ]
        self._catch_up_seconds = catch_up_seconds
        self.ping_seconds = ping_seconds
        self._tick_seconds = tick_seconds
        self._listeners = Listeners()
        self._group = GroupCommit(self.append_many, "herald-sharded-bus-writer")
        self.interest = ChannelInterest()
        self._by_shard: list[set[str]] = [set() for _ in shards]
        #: How many shards this node follows channels on (one: no merge needed).
        self._shards_followed = 0
        self._subscribers: list[_Subscriber] = []
        #: Per channel followed: the sequence and cursor of the newest notice taken (-1: the
        #: sequence is not known yet).
        self._last: dict[str, tuple[int, Cursor]] = {}
        #: Channels being subscribed to, and the head when they were followed; the records
        #: of each taken meanwhile.
        self._followed_at: dict[str, Cursor] = {}
        self._catch_taken: dict[str, set[Cursor]] = {}
        #: Gaps being filled from a channel's stream (lost notices, a reconnect): from where.
        #: Like a catch-up, each holds the merge at its start.
        self._filling: dict[object, Cursor] = {}
        #: Per shard, the subscriptions it confirmed this loop turn, caught up together.
        self._confirmed: dict[int, list[tuple[str, asyncio.Future[None] | None]]] = {}
        self._pending: list[tuple[Cursor, int, BusRecord]] = []
        self._releasing: asyncio.Task[None] | None = None
        self._catching: asyncio.Future[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._head = Cursor(0, 0)
        #: The newest cursor this node's appends were given.
        self._appended = Cursor(0, 0)
        self._progress = Progress()
        self._origins: list[str] = ["" for _ in shards]
        #: The same, as cursors (a lifetime starts at its origin), and the newest of them.
        self._origin_cursors: list[Cursor | None] = [None for _ in shards]
        self._newest_origin = _ZERO
        self.on_discontinuity: list[Callable[[str], None]] = []
        #: Called with the channels of a shard left out of the merge: their streams must go.
        self.on_channels_lost: list[Callable[[frozenset[str]], None]] = []
        self._shard_grace_seconds = shard_grace_seconds
        self._failing_since: dict[int, float] = {}
        self._down: set[int] = set()
        #: Recent records of followed channels, and the reads of them from Redis in flight:
        #: a reconnect storm reads each channel once, and its streams share the records.
        self.tails = ChannelTails(
            window_seconds=window_seconds,
            max_events_per_channel=max_events_per_channel,
            clock=clock or time.time,
        )
        self._reads: dict[tuple[str, Cursor], asyncio.Future[Replay]] = {}
        #: Channel reads sent to Redis for replays.
        self.replay_reads = 0
        #: Per shard, the newest cursor its notices brought: it has passed everything before.
        self._seen: dict[int, Cursor] = {}
        #: Per shard, the newest cursor it is known to have issued in its lifetime (notices
        #: and appends): a clock found behind it means a restore from an older snapshot.
        self._known: dict[int, Cursor] = {}
        #: The channel of each of those: the shard is asked whether it still holds that entry
        #: (a failover to a replica that lagged loses the newest; see :meth:`_known_entry`).
        self._known_channel: dict[int, str] = {}
        self._probe_delay_seconds = probe_delay_seconds
        self.stopping = False

    # --- life cycle

    async def start(self) -> None:
        marks = await asyncio.gather(*(shard.probe(0) for shard in self._shards))
        for index, shard in enumerate(self._shards):
            self._set_origin(index, shard.origin)
        self._head = Cursor(min(marks), 0)
        for index, connections in enumerate(self._connections):
            subscriber = _Subscriber(self, index, connections.subscriber())
            subscriber.task = asyncio.create_task(subscriber.run(), name=f"herald-shard-{index}-subscriber")
            self._subscribers.append(subscriber)
        self._ticker = asyncio.create_task(self._tick(), name="herald-sharded-bus-ticker")
        # Streams may follow channels as soon as this returns: a shard whose subscriber is
        # not connected refuses them (it counts as away).
        connecting = [asyncio.ensure_future(s.connected.wait()) for s in self._subscribers]
        _, late = await asyncio.wait(connecting, timeout=self._catch_up_seconds)
        for waiting in late:
            waiting.cancel()
        if late:
            log.warning("sharded_bus_subscribers_not_connected", shards=len(late))
        log.info("sharded_bus_started", shards=len(self._shards), head=str(self._head))

    async def stop(self) -> None:
        await self._group.settle()
        self.stopping = True
        tasks = [s.task for s in self._subscribers if s.task is not None]
        tasks += [t for t in (self._ticker, self._releasing) if t is not None]
        tasks += list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for subscriber in self._subscribers:
            await subscriber.client.aclose()
        if self._owns_connections:
            for connections in self._connections:
                await connections.aclose()
        self._listeners.clear()
        self.tails.clear()

    def healthy(self) -> bool:
        """Every shard's subscriber connected, and no shard failing to answer its probes."""
        return (
            bool(self._subscribers)
            and all(s.connected.is_set() for s in self._subscribers)
            and not any(i in self._failing_since for i in self._probed())
        )

    def _probed(self) -> list[int]:
        """The shards the node probes: those it follows channels on, or all when none."""
        return self._followed_up() or [i for i in range(len(self._shards)) if i not in self._down]

    @property
    def head(self) -> Cursor:
        return self._head

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        return self._listeners.subscribe(listener)

    # --- interest

    def interest_on(self, index: int) -> set[str]:
        return self._by_shard[index]

    def follow(self, channels: Collection[str]) -> Awaitable[None]:
        fresh = self.interest.add(channels)
        count = len(self._shards)
        placed = {channel: shard_of(channel, count) for channel in channels}
        by_shard: dict[int, list[str]] = {}
        for channel in fresh:
            by_shard.setdefault(placed[channel], []).append(channel)
            self._followed_at[channel] = self._head
            self._catch_taken[channel] = set()
            # What the channel had up to the head is before this node followed it: a late
            # notice of it (a shard whose clock was behind) must not go out below the head.
            self._last[channel] = (-1, self._head)
        if fresh:
            asyncio.get_running_loop().call_later(
                2 * self._catch_up_seconds, self._give_up_catch_up, fresh, self._head
            )
        waits: list[asyncio.Future[None]] = []
        for index, names in by_shard.items():
            self._by_shard[index].update(names)
            if self._subscribers:
                waits += self._subscribers[index].subscribe(names)
        self._shards_followed = sum(1 for names in self._by_shard if names)
        if self._subscribers:
            for channel, index in placed.items():
                subscriber = self._subscribers[index]
                if channel not in subscriber.live:
                    waiter = subscriber.waiting.get(channel)
                    if waiter is not None and waiter not in waits:
                        waits.append(waiter)
        down = any(
            index in self._down or (self._subscribers and not self._subscribers[index].connected.is_set())
            for index in set(placed.values())
        )
        return _Readiness(self, waits, down)

    async def _ready(self, waits: list[asyncio.Future[None]], down: bool = False) -> None:
        if down:
            raise BusUnavailable("a shard of these channels is away", retry_after=2)
        if not waits:
            return
        done, _ = await asyncio.wait([asyncio.shield(w) for w in waits], timeout=self._catch_up_seconds)
        if len(done) < len(waits):
            raise BusUnavailable("a shard did not confirm the subscription in time", retry_after=1)
        # A node whose head has not moved for a while (nothing delivered, the ticker's probe
        # due) would start a stream at a stale position, and hand it what its channels got
        # since: bring the head to now first. A head that moved lately is near enough (the
        # catch-up gave the stream what came after it), and saves the probe per opening.
        if time.time() * 1000 - self._head.ms > 1000 * self._tick_seconds or self._head < self._newest_origin:
            await self._catch_head()
        elif self._pending:
            # What the catch-ups took goes out before the stream takes its position.
            await self._reached(max(self._pending)[0])

    async def _catch_head(self) -> None:
        """Move :attr:`head` to the shards' clocks (one probe in flight, shared by callers)."""
        if self._catching is None:
            self._catching = asyncio.ensure_future(self._probe_head())
        catching = self._catching
        try:
            await asyncio.shield(catching)
        finally:
            if catching.done() and self._catching is catching:
                self._catching = None

    async def _probe_head(self) -> None:
        try:
            mark = await self._watermark(0)
        except BusUnavailable:
            return
        target = Cursor(mark, 0)
        hold = self._hold()
        if hold is not None and hold < target:
            target = hold

        # Every record below the mark has arrived; once those still pending are out, the
        # node has delivered everything before it.
        def below_delivered() -> bool:
            return not self._pending or self._pending[0][0] >= target

        if not await self._progress.until(below_delivered, self._catch_up_seconds):
            return
        if target > self._head:
            self._head = target
            self._signal()

    def unfollow(self, channels: Collection[str]) -> None:
        gone = self.interest.remove(channels)
        count = len(self._shards)
        by_shard: dict[int, list[str]] = {}
        for channel in gone:
            by_shard.setdefault(shard_of(channel, count), []).append(channel)
            self._last.pop(channel, None)
            self._followed_at.pop(channel, None)
            self._catch_taken.pop(channel, None)
        self.tails.drop(gone)
        for index, names in by_shard.items():
            self._by_shard[index].difference_update(names)
            if self._subscribers:
                self._subscribers[index].unsubscribe(names)
        self._shards_followed = sum(1 for names in self._by_shard if names)

    # --- writing

    async def append(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        # Appends made while others are on their way go together (group commit, D27).
        return await self._group.append(Append(message, data_json, idempotency_key, superseded_keys))

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        count = len(self._shards)
        groups: dict[int, list[int]] = {}
        for position, item in enumerate(appends):
            groups.setdefault(shard_of(channel_of(item.message), count), []).append(position)
        # Above everything this node delivered or was given: one after another, a node's
        # appends get increasing cursors, whichever shards they go to.
        hint = max(self._head, self._appended)
        answers = await asyncio.gather(
            *(
                self._shards[index].append_many([appends[i] for i in places], hint, self._known_entry(index))
                for index, places in groups.items()
            )
        )
        results: list[BatchResult | None] = [None] * len(appends)
        for (index, places), answer in zip(groups.items(), answers, strict=True):
            self._check_origin(index)
            known = self._known.get(index, _ZERO)
            for place, result in zip(places, answer, strict=True):
                results[place] = result
                if isinstance(result, AppendResult):
                    if result.cursor > self._appended:
                        self._appended = result.cursor
                    if result.cursor > known and not result.duplicate:
                        known = self._known[index] = result.cursor
                        self._known_channel[index] = channel_of(appends[place].message)
        return [r for r in results if r is not None]

    # --- replay

    async def replay(self, after: Cursor, channels: Collection[str] | None = None) -> Replay:
        if after > self._head:
            # A cursor from a node ahead of this one (a heartbeat there carries its head):
            # catch up with the shards' clocks before judging it.
            await self._catch_head()
            await self._reached(after)
        followed = list(channels) if channels is not None else sorted(self.interest_all())
        replays = await asyncio.gather(*(self._replay_channel(channel, after) for channel in followed))
        if not all(r.exact for r in replays):
            floors = [r.floor for r in replays if not r.exact and r.floor is not None]
            return Replay(False, floor=max(floors) if floors else None)
        records = list(heapq.merge(*(r.records for r in replays), key=lambda r: r.cursor))
        if records and not await self._reached(records[-1].cursor):
            log.warning("sharded_bus_replay_ahead_of_delivery", head=str(self._head))
        head = self._head
        if after > head:
            return Replay(False)
        return Replay(True, [r for r in records if r.cursor <= head])

    async def retained(self, channels: Collection[str]) -> Sequence[BusRecord]:
        """The retained states of ``channels`` (D33), read from each channel's shard (one
        round trip per shard, all at once), in cursor order."""
        groups: dict[int, list[str]] = {}
        for channel in channels:
            groups.setdefault(shard_of(channel, len(self._shards)), []).append(channel)
        answers = await asyncio.gather(
            *(self._shards[index].retained(names) for index, names in groups.items())
        )
        return sorted((r for records in answers for r in records), key=lambda r: r.cursor)

    def cursor_at(self, ms: int) -> Cursor | None:
        """``ms``-0: no shard issues a cursor with sequence 0, so every record at or after
        ``ms`` is after it; the replay judges it per channel (D28)."""
        return Cursor(ms, 0)

    async def _replay_channel(self, channel: str, after: Cursor) -> Replay:
        """From the channel's tail when it holds everything after ``after``; else one read
        from Redis, shared by every replay asking the same meanwhile, whose records the tail
        keeps if the channel is followed."""
        cached = self.tails.read(channel, after)
        if cached is not None:
            return Replay(True, cached)
        key = (channel, after)
        read = self._reads.get(key)
        if read is None:
            if channel in self.interest:
                self.tails.collect(channel)  # before the read is sent: nothing falls between
            read = asyncio.ensure_future(
                self._shards[shard_of(channel, len(self._shards))].replay(channel, after)
            )
            self._reads[key] = read
            self.replay_reads += 1

            def done(finished: asyncio.Future[Replay]) -> None:
                self._reads.pop(key, None)
                if finished.cancelled() or finished.exception() is not None:
                    return
                replay = finished.result()
                if replay.exact and channel in self.interest:
                    self.tails.found(channel, after, replay.records)

            read.add_done_callback(done)
        return await asyncio.shield(read)

    def interest_all(self) -> set[str]:
        out: set[str] = set()
        for names in self._by_shard:
            out |= names
        return out or {GLOBAL_CHANNEL}

    async def _reached(self, cursor: Cursor) -> bool:
        return await self._progress.until(lambda: self._head >= cursor, self._catch_up_seconds)

    # --- receiving

    def on_notification(self, index: int, name: bytes, payload: bytes) -> None:
        try:
            notice = decode_notification(name, payload, self.keys.notifications)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            log.error("sharded_bus_notice_skipped", shard=index, error=repr(exc))
            return
        channel = notice.channel
        if notice.record.cursor > self._seen.get(index, _ZERO):
            self._seen[index] = notice.record.cursor  # the shard's notices arrive in cursor order
            if notice.record.cursor > self._known.get(index, _ZERO):
                self._known[index] = notice.record.cursor
                self._known_channel[index] = channel
        if channel not in self.interest:
            return
        last = self._last.get(channel)
        cursor = notice.record.cursor
        if last is not None:
            if cursor <= last[1]:
                return  # already taken (a fill got it first)
            if last[0] >= 0 and notice.seq > last[0] + 1:
                # Lost notices: take the channel's missed records from its stream first.
                self.spawn(self._fill(channel, last[1], notice.seq, notice.record))
                return
        self._take(index, channel, notice.seq, notice.record)

    def _take(self, index: int, channel: str, seq: int, record: BusRecord) -> None:
        last = self._last.get(channel)
        if last is None or record.cursor > last[1]:
            self._last[channel] = (seq, record.cursor)
        taken = self._catch_taken.get(channel)
        if taken is not None:
            taken.add(record.cursor)
        if not self._pending and not self._followed_at and not self._filling and self._shards_followed <= 1:
            # One shard, nothing waiting: its notices arrive in cursor order.
            self._deliver([record])
            return
        heapq.heappush(self._pending, (record.cursor, index, record))
        self._kick()

    def _kick(self) -> None:
        if self._pending and self._releasing is None:
            self._releasing = asyncio.create_task(self._release(), name="herald-sharded-bus-release")

    def _hold(self) -> Cursor | None:
        """While a channel is being caught up, or a gap of one filled, nothing after where
        it starts goes out: the missed records must take their place in the order first."""
        holds = [*self._followed_at.values(), *self._filling.values()]
        return min(holds) if holds else None

    async def _fill(self, channel: str, after: Cursor, seq: int, newest: BusRecord) -> None:
        index = shard_of(channel, len(self._shards))
        token = object()
        self._filling[token] = after
        try:
            try:
                replay = await self._shards[index].replay(channel, after)
            except BusUnavailable:
                replay = Replay(False)
            if not replay.exact:
                self._unfillable(channel, after)
                return
            if channel not in self.interest:
                return
            last = self._last.get(channel, (0, after))[1]
            for record in replay.records:
                if record.cursor > last and record.cursor < newest.cursor:
                    self._take(index, channel, seq - 1, record)
                    last = record.cursor
            if newest.cursor > last:
                self._take(index, channel, seq, newest)
        finally:
            del self._filling[token]
            self._kick()

    def _unfillable(self, channel: str, after: Cursor) -> None:
        """The channel's missed records are gone (trimmed, or the shard is away): only the
        streams that follow it can have missed them, and must be told."""
        log.error("sharded_bus_gap_unfillable", channel=channel, after=str(after))
        if channel in self.interest:
            self._channels_lost(frozenset({channel}))

    def confirmed(self, index: int, channel: str, waiter: asyncio.Future[None] | None) -> None:
        """The shard confirmed a subscription: its catch-up goes with the others confirmed
        this loop turn (one script call per shard)."""
        batch = self._confirmed.get(index)
        if batch is None:
            batch = self._confirmed[index] = []
            asyncio.get_running_loop().call_soon(self._catch_up_confirmed, index)
        batch.append((channel, waiter))

    def _catch_up_confirmed(self, index: int) -> None:
        batch = self._confirmed.pop(index, None)
        if batch:
            self.spawn(self.caught_up(index, batch))

    async def caught_up(self, index: int, batch: list[tuple[str, asyncio.Future[None] | None]]) -> None:
        """Take what each confirmed channel got between the moment it was followed and now
        (live notices begin only now), in its place in the order (the merge holds everything
        after that moment meanwhile), then say it is ready."""
        origin = self._origin_cursors[index]
        due: list[tuple[str, Cursor, Cursor]] = []  # channel, followed at, read from
        for channel, _ in batch:
            since = self._followed_at.get(channel)
            if since is not None and channel in self.interest:
                # A shard whose lifetime began after that point holds nothing from before it.
                due.append((channel, since, origin if origin is not None and origin > since else since))
        try:
            if due:
                # The shard's clock goes past the points followed from as the channels are
                # read: every record it gets later comes after them (the shard may have been
                # behind this node's head, followed by no stream here).
                advance = max(since for _, since, _ in due).ms + 1
                replays = await self._shards[index].catch_up([(c, start) for c, _, start in due], advance)
                replaced = self._check_origin(index)
                for (channel, since, _), replay in zip(due, replays, strict=True):
                    self._take_caught_up(index, channel, since, replay, replaced)
        except BusUnavailable:
            log.warning("sharded_bus_catch_up_unavailable", shard=index, channels=len(due))
        finally:
            for channel, waiter in batch:
                self._end_catch_up(channel)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    def _take_caught_up(
        self, index: int, channel: str, since: Cursor, replay: Replay, replaced: bool
    ) -> None:
        if channel not in self.interest:
            return
        if replay.exact:
            taken = self._catch_taken.get(channel, set())
            for record in replay.records:
                if record.cursor not in taken:
                    self._take(index, channel, -1, record)  # -1: the next notice sets the sequence
        elif not replaced:
            # Trimmed past the point followed from (or the shard lost its data): its
            # streams cannot be promised what it got meanwhile.
            log.warning("sharded_bus_catch_up_not_exact", channel=channel, since=str(since))
            self._channels_lost(frozenset({channel}))

    def _end_catch_up(self, channel: str) -> None:
        self._followed_at.pop(channel, None)
        self._catch_taken.pop(channel, None)
        self._kick()

    def _give_up_catch_up(self, channels: list[str], since: Cursor) -> None:
        """Subscriptions the shards never confirmed must not hold the node's merge forever."""
        for channel in channels:
            if self._followed_at.get(channel) == since:
                log.warning("sharded_bus_subscription_unconfirmed", channel=channel)
                self._end_catch_up(channel)

    def refill(self, index: int) -> None:
        """The shard's subscriber reconnected: take what its channels got meanwhile."""
        for channel in list(self._by_shard[index]):
            last = self._last.get(channel)
            if last is not None:
                self.spawn(self._refill_channel(index, channel, last[1]))

    async def _refill_channel(self, index: int, channel: str, after: Cursor) -> None:
        token = object()
        self._filling[token] = after
        try:
            try:
                replay = await self._shards[index].replay(channel, after)
            except BusUnavailable:
                return
            if not replay.exact:
                self._unfillable(channel, after)
                return
            for record in replay.records:
                last = self._last.get(channel)
                if channel in self.interest and (last is None or record.cursor > last[1]):
                    self._take(index, channel, -1, record)  # -1: the next notice sets the sequence
        finally:
            del self._filling[token]
            self._kick()

    async def _release(self) -> None:
        """Hand out pending records in cursor order once every followed shard has passed them.

        A shard has passed what its own notices have passed (they arrive in cursor order);
        only a shard that has been quiet since is probed, after a short wait in which its
        own traffic may make the probe needless."""
        attempt = 0
        try:
            while self._pending and not self.stopping:
                newest = max(self._pending)[0]
                lagging = [i for i in self._followed_up() if self._seen.get(i, _ZERO) < newest]
                if lagging and self._probe_delay_seconds:
                    await asyncio.sleep(self._probe_delay_seconds)
                    newest = max(self._pending)[0]
                    lagging = [i for i in self._followed_up() if self._seen.get(i, _ZERO) < newest]
                marks: dict[int, Cursor] = {}
                if lagging:
                    try:
                        probed = await self._probe_shards(lagging, newest.ms + 1)
                    except BusUnavailable:
                        await asyncio.sleep(reconnect_delay(attempt))
                        attempt += 1
                        continue
                    marks = {i: Cursor(mark, 0) for i, mark in probed.items()}
                attempt = 0
                followed = self._followed_up()
                bound = min(
                    (max(self._seen.get(i, _ZERO), marks.get(i, _ZERO)) for i in followed),
                    default=newest,
                )
                hold = self._hold()
                if hold is not None and hold < bound:
                    bound = hold
                ready = []
                while self._pending and self._pending[0][0] <= bound:
                    ready.append(heapq.heappop(self._pending)[2])
                self._deliver(ready)
                if not ready and hold is not None:
                    return  # the catch-up in progress kicks the merge when it is done
        finally:
            self._releasing = None

    def _followed_up(self) -> list[int]:
        """The shards this node follows channels on, less those left out."""
        return [i for i, names in enumerate(self._by_shard) if names and i not in self._down]

    async def _watermark(self, hint_ms: int) -> int:
        """The millisecond below which every followed shard's records have all arrived."""
        # The shards followed; with none, all (the head still moves with their clocks).
        marks = await self._probe_shards(self._probed(), hint_ms)
        return min(marks.values()) if marks else hint_ms

    async def _probe_shards(self, indexes: list[int], hint_ms: int) -> dict[int, int]:
        """Each shard's mark: below it, every record it issued has arrived here.

        A shard that does not answer for ``shard_grace_seconds`` is left out (its channels'
        streams are closed, :attr:`on_channels_lost`) until its subscriber is back: the
        other shards' records must not wait for it."""

        async def one(index: int) -> int:
            shard = self._shards[index]
            known = self._known.get(index)  # what it had issued before this probe ran
            mark = await shard.probe(hint_ms, self._known_entry(index))
            subscriber = self._subscribers[index]
            try:
                await asyncio.wait_for(subscriber.ping_through(), self._catch_up_seconds)
            except TimeoutError:
                subscriber.restart()  # the shard answers its scripts, not this connection
                raise
            await self._judge_lifetime(index, known)
            return mark

        answers = await asyncio.gather(*(one(i) for i in indexes), return_exceptions=True)
        now = asyncio.get_running_loop().time()
        marks: dict[int, int] = {}
        failed: BaseException | None = None
        for index, answer in zip(indexes, answers, strict=True):
            if isinstance(answer, int):
                self._failing_since.pop(index, None)
                marks[index] = answer
                continue
            if not isinstance(answer, BusUnavailable | TimeoutError):
                raise answer
            failed = answer
            self._failing_since.setdefault(index, now)
        # Only to let the others' records go on: with no followed shard answering (one shard,
        # or Redis away altogether), everything waits and the streams stay open (D12).
        if any(i not in self._failing_since for i in self._followed_up()):
            for index, since in list(self._failing_since.items()):
                if now - since >= self._shard_grace_seconds:
                    self._lose(index)
        if failed is not None and any(i not in self._down for i in indexes if i in self._failing_since):
            raise BusUnavailable("a shard does not answer", retry_after=1)
        return marks

    async def check_lifetime(self, index: int) -> None:
        """Probe the shard: has it lost its data, or come back from an older snapshot?"""
        known = self._known.get(index)
        await self._shards[index].probe(0, self._known_entry(index))
        await self._judge_lifetime(index, known)

    def _known_entry(self, index: int) -> tuple[str, Cursor] | None:
        """The newest entry this node saw shard ``index`` issue, and its channel. Each append
        and probe asks the shard whether it still holds it: one that lost it (a replica
        promoted before it received it) starts its next lifetime there and then, before
        an append of a node that never saw it moves the clock past it (after which the
        clock alone could not tell)."""
        known, channel = self._known.get(index), self._known_channel.get(index)
        return None if known is None or channel is None else (channel, known)

    async def _judge_lifetime(self, index: int, known: Cursor | None) -> None:
        """After a probe: a new lifetime closes its channels' streams; a clock behind what
        the shard was known (before the probe) to have issued means a rewind."""
        if not self._check_origin(index) and known is not None and self._shards[index].issued < known:
            await self._rewound(index, known)

    async def _rewound(self, index: int, known: Cursor) -> None:
        """The shard's clock is behind a cursor it issued: it came back from an older
        snapshot, and what it issued after the snapshot is gone. It starts a new lifetime
        (the first node to see this renews it for all), so every cursor of the old one is
        stale and the streams of its channels learn ``recovered: false``."""
        log.warning(
            "sharded_bus_shard_rewound", shard=index, known=str(known), clock=str(self._shards[index].issued)
        )
        await self._shards[index].rebirth(self._origins[index], known.ms)
        self._check_origin(index)

    def _lose(self, index: int) -> None:
        """Leave shard ``index`` out of the merge until it is back; close its channels' streams."""
        if index in self._down:
            return
        self._down.add(index)
        channels = frozenset(self._by_shard[index])
        log.warning("sharded_bus_shard_left_out", shard=index, channels=len(channels))
        self._channels_lost(channels)

    def _channels_lost(self, channels: frozenset[str]) -> None:
        """The streams following ``channels`` cannot be promised their records: they must go
        (and learn, on their return, whether anything was lost). Without anyone to tell, the
        whole node is told (``on_discontinuity``)."""
        self.tails.drop(channels)
        if not self.on_channels_lost:
            self._discontinuity(LOG_REPLACED)
            return
        for callback in tuple(self.on_channels_lost):
            try:
                callback(channels)
            except Exception:
                log.exception("bus_channels_lost_callback_failed")

    def shard_back(self, index: int) -> None:
        """The shard's subscriber is connected again: it takes part in the merge again."""
        self._failing_since.pop(index, None)
        self._seen.pop(index, None)  # notices were lost meanwhile: probe it until it speaks
        if index in self._down:
            self._down.discard(index)
            log.info("sharded_bus_shard_back", shard=index)

    async def _tick(self) -> None:
        """While nothing flows, move :attr:`head` with the shards' clocks (an idle stream's
        position must not fall out of the window)."""
        while not self.stopping:
            await asyncio.sleep(self._tick_seconds)
            if self._pending or self._releasing is not None:
                continue
            try:
                await self._catch_head()
            except Exception:
                # A ticker that died would leave idle streams' positions behind, silently.
                log.exception("sharded_bus_tick_failed")

    def _deliver(self, records: list[BusRecord]) -> None:
        tails = self.tails if self.tails.active else None
        for record in records:
            if record.cursor > self._head:
                self._head = record.cursor
            if tails is not None:
                tails.delivered(channel_of(record.message), record)
            self._listeners.deliver(record)
        if records:
            self._signal()

    def _signal(self) -> None:
        self._progress.moved()

    def _check_origin(self, index: int) -> bool:
        """Whether the shard started a new lifetime since last seen (its channels' streams
        are then closed)."""
        origin = self._shards[index].origin
        if self._origins[index] and origin and origin != self._origins[index]:
            log.warning("sharded_bus_shard_replaced", shard=index, old=self._origins[index], origin=origin)
            self._set_origin(index, origin)
            # The shard lost what it held: only the streams of its channels may have missed
            # records. Their next notices start the new lifetime's sequences.
            channels = frozenset(self._by_shard[index])
            self._seen.pop(index, None)
            self._known.pop(index, None)
            self._known_channel.pop(index, None)
            for channel in channels:
                self._last.pop(channel, None)
            self._channels_lost(channels)
            return True
        if origin:
            self._set_origin(index, origin)
        return False

    def _set_origin(self, index: int, origin: str) -> None:
        if origin == self._origins[index]:
            return
        self._origins[index] = origin
        self._origin_cursors[index] = parse_cursor(origin)
        # A head below the latest lifetime's start is from before it.
        self._newest_origin = max((c for c in self._origin_cursors if c is not None), default=_ZERO)

    def _discontinuity(self, reason: str) -> None:
        self.tails.clear()
        for callback in tuple(self.on_discontinuity):
            try:
                callback(reason)
            except Exception:
                log.exception("bus_discontinuity_callback_failed", reason=reason)

    def spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
