"""``ConnectionManager``: this node's live streams, fed in cursor order by the bus.

The manager knows only this node's connections. It subscribes to the bus
once, routes each record through :class:`RoutingIndex` and hands the
record's shared frame to each receiver; receivers are flushed together at
the end of the loop turn, one socket write per connection however many
events arrived.

The replay seam
    A connection is indexed *before* its replay is read, in state
    ``REPLAYING``: live records routed to it meanwhile are held, not written.
    The replay is then read from the bus and written, and the held records
    follow, minus those whose cursor the replay already covered. One cursor,
    compared on both sides: no gap, no duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import secrets
import time
from collections.abc import Callable, Collection, Iterable, Sequence

import structlog

from herald.bus.base import BusRecord, EventBus
from herald.bus.channels import channels_followed
from herald.errors import HeraldError
from herald.manager import frames
from herald.manager.connection import CloseReason, Connection, State, TracedConnection
from herald.manager.deep_replay import DeepOutcome, DeepReplaySource, recover_deep
from herald.manager.routing import RoutingIndex, visible_to
from herald.manager.sink import Sink
from herald.manager.stats import ManagerStats
from herald.manager.traffic import ChannelTraffic
from herald.obs.tracing import Span, Tracing
from herald.wire.cursor import Cursor, parse_cursor

log = structlog.get_logger("herald.manager")

#: Records written per step of a replay before the manager checks the socket.
_REPLAY_CHUNK = 256
#: Seconds between a drain's batches.
_DRAIN_STEP = 0.25


class ConnectionManager:
    def __init__(
        self,
        bus: EventBus,
        *,
        heartbeat_seconds: float = 15.0,
        retry_ms: int = 3000,
        retry_spread_ms: int = 10_000,
        slow_consumer_bytes: int = 256 * 1024,
        expiring_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``expiring_seconds``: a stream gets ``auth.expiring`` this long before its token
        expires (0: never)."""
        self._bus = bus
        self.heartbeat_seconds = heartbeat_seconds
        self.retry_ms = retry_ms
        self.retry_spread_ms = retry_spread_ms
        self.slow_consumer_bytes = slow_consumer_bytes
        self._clock = clock
        self.index = RoutingIndex()
        self.stats = ManagerStats()
        #: Events and deliveries per channel over the last minute (the admin console's busiest).
        self.traffic = ChannelTraffic(clock=time.monotonic)
        self._position = bus.head
        self._dirty: list[Connection] = []
        #: This turn's run: consecutive records routed to the same receivers, handed to
        #: them in one pass when the run ends (:meth:`settle`).
        self._run_to: Collection[Connection] | None = None
        self._run: list[BusRecord] = []
        #: Indexed streams that are not ``direct`` (replaying, paused, traced): they take
        #: each record as it is dispatched, through :meth:`Connection.push`.
        self.indirect: set[Connection] = set()
        #: Cursor milliseconds of this turn's records that reached a stream, for the
        #: publish-to-write latency observed once the turn's writes are done.
        self._written_ms: list[int] = []
        self._doomed: list[tuple[Connection, str, bytes]] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        # Heartbeats are spread over ``_tick`` buckets so that each connection
        # gets one per interval without a burst of every socket at once.
        self._tick = min(1.0, heartbeat_seconds)
        self._buckets: list[set[Connection]] = [
            set() for _ in range(max(1, round(heartbeat_seconds / self._tick)))
        ]
        self._next_bucket = 0
        self._tick_index = 0
        self._expiries: list[tuple[float, str]] = []
        self.expiring_seconds = expiring_seconds
        #: (when to warn, connection id) of streams whose token expires.
        self._warnings: list[tuple[float, str]] = []
        self.accepting = True
        #: Since when (Unix seconds) this node is being drained, if it is.
        self.draining_since: float | None = None
        self._drain: asyncio.Task[None] | None = None
        self._id_prefix = secrets.token_hex(4)
        self._connections_made = 0
        #: Called with each connection as it closes, once.
        self.on_close: list[Callable[[Connection], None]] = []
        #: Asked for what a stale cursor missed beyond the log's window (Kafka), if set.
        self.deep_replay: DeepReplaySource | None = None
        #: This node's tracer when tracing is on (D30); ``None``: no span is made.
        self.tracing: Tracing | None = None
        #: ``herald.fanout`` spans of this turn's records, ended once the turn's writes are done.
        self._fanouts: list[Span] = []
        #: Streams holding live records while the retained states of resources added to them
        #: are read (D33): how many such reads each waits for.
        self._holding: dict[str, int] = {}

    # --- life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._position = self._bus.head
        self._unsubscribe = self._bus.subscribe(self.dispatch)
        self._ticker = asyncio.create_task(self._run_ticker(), name="herald-heartbeat")

    async def stop(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        fanouts, self._fanouts = self._fanouts, []
        for span in fanouts:
            span.end()

    def __len__(self) -> int:
        return len(self.index)

    @property
    def position(self) -> Cursor:
        """Where this node stands: every record up to here has been routed. The newest
        record routed, or the bus's head when it moved on without records (a sharded
        bus moves it with its shards' clocks, so an idle stream stays in the window)."""
        head = self._bus.head
        return head if head > self._position else self._position

    def _next_connection_id(self) -> str:
        # Unique per process lifetime and hard to confuse across nodes; not a
        # secret (whoever uses one is checked to be its user), so a counter will do.
        self._connections_made += 1
        return f"{self._id_prefix}{self._connections_made:x}"

    def reset_position(self, cursor: Cursor) -> None:
        """The bus started a new log (its old one was lost): continue from its position."""
        self._position = cursor

    # --- opening a stream

    def register(
        self,
        sink: Sink,
        *,
        user_id: str,
        session_id: str | None,
        subscriptions: frozenset[str],
        expires_at: float | None,
        trace: bool = False,
    ) -> Connection:
        """Index a new connection; it holds live records until :meth:`start_stream`.
        ``trace``: the stream gets each event's trace id in its data (D30)."""
        conn = (TracedConnection if trace else Connection)(
            self,
            sink,
            connection_id=self._next_connection_id(),
            user_id=user_id,
            session_id=session_id,
            subscriptions=subscriptions,
            expires_at=expires_at,
            opened_at=self._clock(),
            joined_at=self.position,
        )
        self.index.add(conn)
        # Replaying until it goes live; a run open now passes it by (go_live settles it first).
        self.indirect.add(conn)
        bucket = self._next_bucket = (self._next_bucket + 1) % len(self._buckets)
        conn.bucket = bucket
        self._buckets[bucket].add(conn)
        if expires_at is not None:
            # One heap entry per stream at a time: its warning, which hands it on to the
            # expiry heap once sent (idle memory per stream is what a node holds most of).
            if self.expiring_seconds > 0:
                heapq.heappush(self._warnings, (expires_at - self.expiring_seconds, conn.id))
            else:
                heapq.heappush(self._expiries, (expires_at, conn.id))
        self.stats.opened += 1
        return conn

    async def start_stream(
        self, conn: Connection, last_event_id: str | None, since_ms: int | None = None
    ) -> bool:
        """Write the preamble and the replay, then turn ``conn`` live.

        Returns whether the stream continues exactly after ``last_event_id`` (or, without
        one, from ``since_ms``: Unix milliseconds, ``?since=``). A stream that does not
        continue exactly first gets the retained states it may see (D33).
        """
        position = conn.joined_at
        if last_event_id is not None and not last_event_id.strip():
            last_event_id = None  # an empty Last-Event-ID is no cursor, not a bad one
        after = parse_cursor(last_event_id)
        by_time = last_event_id is None and since_ms is not None
        if by_time:
            assert since_ms is not None
            after = self._bus.cursor_at(since_ms)  # None: the log lost records since then
        kept: Sequence[BusRecord] = ()
        try:
            # The bus delivers this stream's channels from here on; only then is the
            # replay read, so the live records begin where it ends (D4).
            conn.following = channels_followed(conn.user_id, conn.session_id, conn.subscriptions)
            await self._bus.follow(conn.following)
            # A stream that does not resume exactly starts where the node stands once its
            # channels flow (a bus reading by channel may have caught up records from before).
            position = conn.joined_at = self.position
            replay = await self._bus.replay(after, conn.following) if after is not None else None
            if replay is None or not replay.exact:
                kept = await self._retained_of(conn.following)
        except HeraldError as exc:
            # The bus cannot be read now (e.g. Redis is down): the 200 is already
            # sent, so the stream says when to come back rather than just ending.
            log.warning("stream_replay_unavailable", connection_id=conn.id, code=exc.code)
            self.send_away(conn, CloseReason.REPLAY_UNAVAILABLE)
            return False
        if conn.closed:
            return False
        recovered = replay is not None and replay.exact
        #: Where the log's exact replay starts: the client's cursor, or after a deep replay the floor.
        exact_from = after if recovered else None
        deep: DeepOutcome | None = None
        if recovered:
            miss = None
            self.stats.replay_hits += 1
        else:
            miss = "none" if last_event_id is None else ("malformed" if after is None else "stale")
            if by_time:
                miss = "stale"
            if last_event_id is not None or by_time:
                self.stats.count_miss(miss)
            if after is not None and replay is not None and self.deep_replay is not None:
                deep = await recover_deep(self._bus, self.deep_replay, conn, after, replay.floor)
                if conn.closed:
                    return False
                if deep is not None:
                    replay, exact_from = deep.log, deep.floor
        conn.write_now(
            frames.established(
                retry_ms=self.retry_ms,
                position=exact_from if exact_from is not None else position,
                connection_id=conn.id,
                recovered=recovered,
                replay_miss=miss,
                subscriptions=sorted(conn.subscriptions),
                deep_replay=deep.report if deep is not None else None,
            )
        )
        if deep is not None:
            for frame in deep.frames:
                conn.write_now(frame)
            # Retained states up to the floor: the log's replay carries the newer ones.
            self._write_retained(conn, kept, deep.floor)
            conn.write_now(frames.heartbeat(deep.floor))  # the cursor the log's replay continues from
            conn.events_sent += len(deep.frames)
        elif not recovered:
            # Up to where the stream goes live; newer ones reach it live (D33).
            self._write_retained(conn, kept, position)
        # Without a replay the stream begins at its established position: records at or
        # before it (a sharded bus catching up a channel it just subscribed to) are not its.
        seam: Cursor | None = position
        if exact_from is not None:
            assert replay is not None
            seam = exact_from
            records = replay.records
            replayed = 0
            for start in range(0, len(records), _REPLAY_CHUNK):
                chunk = records[start : start + _REPLAY_CHUNK]
                replayed += self._write_replay(conn, chunk)
                seam = chunk[-1].cursor
                if conn.closed:
                    break
                if start + _REPLAY_CHUNK < len(records):
                    # Give the socket (and every other connection) a turn.
                    conn.flush()
                    if conn.over_budget():
                        # A replay into a socket that does not drain would buffer all
                        # of it: the client resumes from what it did read.
                        self.close(conn, CloseReason.SLOW_CONSUMER, frames.slow_consumer())
                        break
                    await asyncio.sleep(0)
            self.stats.replayed_events += replayed
            self.stats.replay_sizes.observe(replayed)
            if conn.closed:
                return recovered
        if not conn.closed:
            conn.go_live(seam)
        return recovered

    async def _retained_of(self, channels: Collection[str]) -> Sequence[BusRecord]:
        """The bus's retained states of ``channels`` (none from a bus that keeps none)."""
        reader = getattr(self._bus, "retained", None)
        if reader is None or not channels:
            return ()
        kept: Sequence[BusRecord] = await reader(channels)
        return kept

    def _write_retained(self, conn: Connection, kept: Sequence[BusRecord], upto: Cursor) -> None:
        """Write the retained states in ``kept`` with a cursor at or before ``upto`` that
        ``conn`` may see: marked, and without ``id`` (D33)."""
        sent = 0
        for record in kept:
            if record.cursor <= upto and visible_to(conn, record.message):
                conn.write_now(frames.retained(record.frame))
                sent += 1
        conn.events_sent += sent
        self.stats.retained_sent += sent

    def _write_replay(self, conn: Connection, records: Sequence[BusRecord]) -> int:
        sent = 0
        for record in records:
            if visible_to(conn, record.message):
                conn.write_now(conn.frame_of(record))
                conn.last_cursor = record.cursor
                sent += 1
        conn.events_sent += sent
        return sent

    # --- routing (hot path)

    def dispatch(self, record: BusRecord) -> None:
        """The bus listener: route one record to its receivers on this node.

        Records that arrive in one loop turn for the same receivers (a broadcast's every
        stream, one user's streams) make a run, handed to them in one pass when it ends:
        several publishes in a turn cost one pass over the receivers, not one each, and
        each stream gets the run's frames joined once for all of them (issue 16). A run
        ends at the turn's flush, at a record for other receivers, and before anything
        that changes who receives what or how (:meth:`settle`), so every record still
        reaches exactly the streams it would have reached when it was dispatched.

        Streams that are not ``direct`` take each record at once, as before runs: what
        they do with it (hold it for the replay seam, queue and coalesce it behind a slow
        socket) does not wait for the run to end."""
        self._position = record.cursor
        self.stats.dispatched += 1
        message = record.message
        receivers = self.index.receivers(message)
        if receivers:
            indirect = self.indirect
            if indirect:
                if len(receivers) <= len(indirect):
                    for conn in receivers:
                        if not conn.direct:
                            conn.push(record)
                else:
                    for conn in indirect:  # push changes no stream's routing
                        if visible_to(conn, message):
                            conn.push(record)
            if receivers is not self._run_to:
                if self._run_to is not None:
                    self.settle()
                self._run_to = receivers
                if not self._flush_scheduled:
                    self._flush_scheduled = True
                    assert self._loop is not None
                    self._loop.call_soon(self._flush)
            self._run.append(record)
            self.traffic.count(message, len(receivers))
        if self.tracing is not None:
            self._trace_fanout(self.tracing, record, len(receivers))

    def settle(self) -> None:
        """Hand the open run to its receivers now. Called before the routing index, a
        stream's state or the order of its frames changes: what was routed before the
        change goes to the streams, and in the way, it was routed to."""
        receivers = self._run_to
        if receivers is None:
            return
        run, self._run, self._run_to = self._run, [], None
        last = run[-1]
        cursor = last.cursor
        count = len(run)
        # Connection.push inlined for the streams it would append to (``direct``): a
        # broadcast to 10,000 streams makes 10,000 of these turns, and a method call each
        # was most of what the node spent per delivery beyond the socket write (issue 16,
        # ``python -m bench.fanout``).
        data = last.frame if count == 1 else b"".join([record.frame for record in run])
        dirty = self._dirty
        for conn in receivers:
            if conn.direct:
                pending = conn.pending
                if not pending:
                    dirty.append(conn)
                pending.append(data)
                conn.events_sent += count
                conn.last_cursor = cursor
            # A stream that is not direct took the run's records as they were dispatched.
        if dirty:
            # Observed once the turn's writes are done (a run only held or queued is not).
            self._written_ms.extend([record.cursor.ms for record in run])

    def _trace_fanout(self, tracing: Tracing, record: BusRecord, receivers: int) -> None:
        """One ``herald.fanout`` span for ``record`` on this node, whatever its receivers;
        ended after the turn's writes, with the slowest of them (:meth:`_flush_traced`)."""
        span = tracing.start_fanout(
            record.message.traceparent,
            {
                "herald.event": record.message.event,
                "herald.cursor": str(record.cursor),
                "herald.receivers": receivers,
                "herald.bytes": len(record.frame) * receivers,
            },
        )
        if receivers and self._flush_scheduled and span.is_recording():
            self._fanouts.append(span)
        else:
            span.end()  # nothing waits on this turn's writes, or the span is sampled out

    def mark_dirty(self, conn: Connection) -> None:
        self._dirty.append(conn)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.settle()
        self._flush_scheduled = False
        dirty, self._dirty = self._dirty, []
        if self._fanouts:
            self._flush_traced(dirty)
        else:
            closed = State.CLOSED
            for conn in dirty:
                # Connection.flush inlined: one call fewer per stream and turn (issue 16).
                pending = conn.pending
                if not pending:
                    continue
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                if conn.state is not closed:
                    try:
                        conn.send(data)
                    except Exception:  # one broken socket must not keep the rest of the turn's writes
                        log.exception("flush_failed", connection_id=conn.id)
                        self.close(conn, CloseReason.CLIENT_GONE)
        if self._written_ms:
            now_ms = time.time() * 1000.0
            latency = self.stats.write_latency
            for ms in self._written_ms:
                latency.observe((now_ms - ms) / 1000.0)
            self._written_ms.clear()
        if self._doomed:
            doomed, self._doomed = self._doomed, []
            for conn, reason, final in doomed:
                self.close(conn, reason, final)

    def _flush_traced(self, dirty: list[Connection]) -> None:
        """The turn's writes, timed, then the turn's ``herald.fanout`` spans ended with the
        slowest write (a turn's events share their writes: one per connection)."""
        slowest = 0
        clock = time.perf_counter_ns
        before = clock()
        for conn in dirty:
            try:
                conn.flush()
            except Exception:
                log.exception("flush_failed", connection_id=conn.id)
                self.close(conn, CloseReason.CLIENT_GONE)
            after = clock()
            if after - before > slowest:
                slowest = after - before
            before = after
        spans, self._fanouts = self._fanouts, []
        for span in spans:
            span.set_attribute("herald.writes", len(dirty))
            span.set_attribute("herald.slowest_write_us", round(slowest / 1000, 1))
            span.end()

    def doom(self, conn: Connection, reason: str, final: bytes) -> None:
        """Close ``conn`` at the end of this loop turn (not while routing over the indexes)."""
        self._doomed.append((conn, reason, final))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    # --- closing

    def close(self, conn: Connection, reason: str, final: bytes | None = None) -> None:
        """Remove ``conn`` everywhere and end its stream with ``final``. Idempotent."""
        if conn.state is State.CLOSED:
            return
        self.settle()
        conn.close_reason = reason
        conn.discard()
        if conn.following:
            self._bus.unfollow(conn.following)
            conn.following = frozenset()
        self.stats.delivered_by_closed += conn.events_sent
        self.index.remove(conn)
        self._buckets[conn.bucket].discard(conn)
        self.stats.count_close(reason)
        for callback in self.on_close:
            try:
                callback(conn)
            except Exception:
                log.exception("close_callback_failed", connection_id=conn.id)
        if reason == CloseReason.CLIENT_GONE:
            conn.close_sink(None)
        else:
            conn.close_sink(final)
        log.info(
            "sse_connection_closed",
            connection_id=conn.id,
            user_id=conn.user_id,
            reason=reason,
            duration_s=round(self._clock() - conn.opened_at, 3),
            events_sent=conn.events_sent,
        )

    def delivered(self) -> int:
        """Events written to this node's streams so far (a scrape reads it: O(connections))."""
        return self.stats.delivered_by_closed + sum(c.events_sent for c in self.index.all.values())

    # --- subscriptions of a live stream

    async def change_subscriptions(
        self, conn: Connection, add: Iterable[str], remove: Iterable[str], *, reason: str | None = None
    ) -> tuple[list[str], list[str], Cursor]:
        """Add and remove resource keys on an open stream; what changed, and the cursor
        after which added resources' events are live.

        The stream gets ``connection.subscriptions-changed``. Live and with nothing
        waiting, every record up to this node's position is already ahead of the
        notice, so it carries that position as its ``id`` (as a heartbeat does, D6):
        a reconnect with the new subscription list then replays from the change.

        Returns once the added channels flow (a bus that reads by channel has subscribed
        to them): what is published after the answer is after ``live_from`` (D28). A
        stream whose added channels cannot be followed now is sent away to come back.
        """
        current = conn.subscriptions
        added = sorted({key for key in add if key not in current})
        removed = sorted({key for key in remove if key in current} - set(added))
        position = self.position
        ready = None
        if added or removed:
            self.settle()
            self.index.subscribe(conn, added)
            self.index.unsubscribe(conn, removed)
            if conn.following:
                # Resource keys are their channels' names (herald.bus.channels). The added
                # channels are live from the bus's position (D17); a bus that reads by
                # channel delivers what is appended to them meanwhile (D28).
                ready = self._bus.follow(added)
                self._bus.unfollow(removed)
                conn.following = (conn.following | frozenset(added)) - frozenset(removed)
            conn.subscriptions = (current | frozenset(added)) - frozenset(removed)
            self.stats.subscriptions_added += len(added)
            self.stats.subscriptions_removed += len(removed)
        conn.write_now(
            frames.subscriptions_changed(
                position,
                exact=conn.idle_and_current,
                subscriptions=sorted(conn.subscriptions),
                added=added,
                removed=removed,
                reason=reason,
            )
        )
        if ready is not None:
            try:
                await ready
            except HeraldError as exc:
                log.warning("stream_subscription_unavailable", connection_id=conn.id, code=exc.code)
                self.send_away(conn, CloseReason.REPLAY_UNAVAILABLE)
        if added and not conn.closed:
            await self._send_retained_added(conn, added, position)
        return added, removed, position

    async def _send_retained_added(self, conn: Connection, added: list[str], live_from: Cursor) -> None:
        """The retained states of resources added to a live stream, up to ``live_from``
        (D33). Live records are held meanwhile, so none of the added resources' newer events
        goes out before them; one that went out before the hold is newer than the read's
        answer for its key, which is then skipped. A stream still in its own replay gets
        none: its replay carries the added resources' events from its cursor (D17)."""
        held_by_other = conn.id not in self._holding and conn.state is not State.LIVE
        if held_by_other:
            return
        self._holding[conn.id] = self._holding.get(conn.id, 0) + 1
        conn.hold()
        try:
            kept = await self._retained_of(added)
        except HeraldError as exc:
            log.warning("stream_retained_unavailable", connection_id=conn.id, code=exc.code)
            kept = ()
        finally:
            left = self._holding[conn.id] - 1
            if left:
                self._holding[conn.id] = left
            else:
                del self._holding[conn.id]
        if conn.closed:
            return
        self._write_retained(conn, kept, live_from)
        if not left:
            conn.release()

    def send_away(self, conn: Connection, reason: str, spread_ms: int | None = None) -> None:
        """Close ``conn`` with a ``retry:`` jittered over ``spread_ms`` and ``connection.closing``.

        For closes that are not the client's fault (shutdown, a bus that lost
        its log or cannot be read): the client comes back with its cursor,
        and many clients do not come back at the same moment.
        """
        spread = self.retry_spread_ms if spread_ms is None else spread_ms
        retry = self.retry_ms + random.randint(0, max(0, spread))  # noqa: S311 - jitter, not a secret
        self.close(conn, reason, frames.closing(retry, reason=reason))

    def drain(self, window_seconds: float) -> int:
        """Admit no new stream and move every open one off over ``window_seconds``: in
        batches every quarter second, each stream told to come back (through the load
        balancer, to another node) after ``retry_ms`` and a jitter within its batch. The
        other nodes then see about (streams ÷ window) new streams a second. Returns the
        streams to move; a second call changes nothing (the first window holds)."""
        if self.draining_since is not None:
            return len(self.index)
        self.accepting = False
        self.draining_since = self._clock()
        assert self._loop is not None
        self._drain = self._loop.create_task(self._run_drain(window_seconds), name="herald-drain")
        log.info("sse_drain_started", connections=len(self.index), window_s=window_seconds)
        return len(self.index)

    async def _run_drain(self, window_seconds: float) -> None:
        conns = list(self.index.all.values())
        random.shuffle(conns)  # a user's streams, or one region's, do not all go at once
        batches = max(1, round(window_seconds / _DRAIN_STEP))
        step_ms = int(_DRAIN_STEP * 1000)
        started = time.monotonic()
        for batch in range(batches):
            for conn in conns[batch::batches]:
                if not conn.closed:
                    self.send_away(conn, CloseReason.DRAIN, spread_ms=step_ms)
            await asyncio.sleep(max(0.0, started + (batch + 1) * _DRAIN_STEP - time.monotonic()))
        # Streams admitted just before the node stopped accepting.
        for conn in list(self.index.all.values()):
            self.send_away(conn, CloseReason.DRAIN, spread_ms=step_ms)
        log.info("sse_drain_done", duration_s=round(time.monotonic() - started, 3))

    async def shutdown(self, grace_seconds: float, spread_ms: int | None = None) -> None:
        """Tell every stream when to come back, jittered so reconnects spread out, and close."""
        self.accepting = False
        conns = list(self.index.all.values())
        for conn in conns:
            self.send_away(conn, CloseReason.SHUTDOWN, spread_ms)
        log.info("sse_shutdown_streams_closed", connections=len(conns), grace_s=grace_seconds)

    # --- heartbeats and expiry

    async def _run_ticker(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            try:
                self._heartbeat_bucket()
                self._expire()
                self.traffic.rotate()
            except Exception:  # the ticker must outlive any one bad connection
                log.exception("heartbeat_tick_failed")

    def _heartbeat_bucket(self) -> None:
        bucket = self._buckets[self._next_tick_bucket()]
        if not bucket:
            return
        self.settle()  # a heartbeat's id is the node's position: the frames before it go first
        tracked = frames.heartbeat(self.position)
        bare = frames.heartbeat(None)
        for conn in bucket:
            conn.write_now(tracked if conn.idle_and_current else bare)

    def _next_tick_bucket(self) -> int:
        self._tick_index = (self._tick_index + 1) % len(self._buckets)
        return self._tick_index

    def _expire(self) -> None:
        now = self._clock()
        self._warn_expiring(now)
        expiries = self._expiries
        if len(expiries) > 2 * len(self.index.all) + 1024:
            # Streams that closed before their token expired leave entries behind;
            # under churn (reconnect storms, hour-long tokens) they would pile up.
            live = self.index.all
            self._expiries = expiries = [entry for entry in expiries if entry[1] in live]
            heapq.heapify(expiries)
        while expiries and expiries[0][0] <= now:
            _, conn_id = heapq.heappop(expiries)
            conn = self.index.all.get(conn_id)
            if conn is not None and conn.expires_at is not None and conn.expires_at <= now:
                self.close(conn, CloseReason.AUTH_EXPIRED, frames.auth_expired())

    def _warn_expiring(self, now: float) -> None:
        """``auth.expiring`` to the streams whose token expires within ``expiring_seconds``."""
        warnings = self._warnings
        if len(warnings) > 2 * len(self.index.all) + 1024:
            live = self.index.all
            self._warnings = warnings = [entry for entry in warnings if entry[1] in live]
            heapq.heapify(warnings)
        later = []
        while warnings and warnings[0][0] <= now:
            entry = heapq.heappop(warnings)
            conn = self.index.all.get(entry[1])
            if conn is None or conn.closed or conn.expires_at is None:
                continue
            if conn.expires_at > now:
                if conn.state is State.REPLAYING:
                    later.append(entry)  # after connection.established, never before it
                    continue
                conn.write_now(frames.auth_expiring(conn.expires_at, conn.expires_at - now))
            heapq.heappush(self._expiries, (conn.expires_at, conn.id))
        for entry in later:
            heapq.heappush(warnings, entry)
