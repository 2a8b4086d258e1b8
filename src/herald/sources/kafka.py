"""Kafka source: domain events from Kafka topics, mapped by the adapter, into the bus.

Every node joins one consumer group (``HERALD_KAFKA_GROUP``), so the
partitions of the topics are spread over the nodes and each record is
handled by one node at a time.

At least once into the bus, effectively once out of it
    A record's event is appended with the idempotency key
    ``kafka:{topic}:{partition}:{offset}``; offsets are committed only after
    the append (at most every ``commit_interval_seconds``, and when partitions
    are revoked or the source stops). A node that dies between append and
    commit leaves the records to be read again, by itself or another node,
    and their second append is a duplicate the bus answers with the first
    cursor: no event twice, none lost (within the bus's idempotency window).

Poison records never stop a partition
    A record that is not JSON, names no type, or matches a rule but lacks the
    routing key or breaks the payload (or that the gateway refuses for good,
    e.g. too large) goes to the dead-letter topic (``{topic}.dlq``) unchanged,
    with headers ``herald-error``, ``herald-source`` and ``herald-event-type``,
    and is counted; the partition moves on. A record whose type has no rule
    is counted (``ignored``) and skipped.

Held events do not hold the partition
    An event the coalesce throttle holds (:mod:`herald.bus.throttle`) is
    settled within its interval: appended, or superseded by a newer one that
    is. The source goes on with the next records meanwhile, and the offset it
    commits stops at the oldest record not settled yet: a crash during the
    interval re-reads it, so the latest value of a key is never lost.

Transient failures stop, never skip
    While the bus is unavailable (or the dead-letter topic cannot be
    written) the record is retried with capped exponential backoff; nothing
    after it is handled or committed until it is through.

Order: within a partition, records enter the bus in offset order.

Lag: ``stats.lag`` is, over the partitions this node holds, the records
between what it handled and the partition's high watermark at the last fetch.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, KafkaError

from herald.adapter import Adapter, PoisonRecord
from herald.bus.base import AppendResult
from herald.bus.throttle import Offered
from herald.cluster.backoff import reconnect_delay
from herald.errors import HeraldError
from herald.events.canary import Canary
from herald.events.message import SSEMessage, with_traceparent
from herald.sources.incoming import Offer, OfferMany, SourceStats, offer_many_from

log = structlog.get_logger("herald.sources.kafka")

#: Seconds a revocation waits for the record in hand before committing without it.
_REVOKE_WAIT_SECONDS = 5.0
_FETCH_TIMEOUT_MS = 500
T = TypeVar("T")
#: While a record is held, the partitions' end offsets are asked for at most this often (lag).
_ENDS_REFRESH_SECONDS = 2.0


@dataclass(slots=True)
class KafkaSourceStats(SourceStats):
    """:class:`SourceStats` plus what Kafka adds. ``rejected`` counts poison records."""

    #: Records whose type has no rule.
    ignored: int = 0
    #: Poison records written to the dead-letter topic.
    dead_lettered: int = 0
    #: Appends (or dead-letter writes) tried again after a transient failure.
    retries: int = 0
    commits: int = 0
    #: Partitions this node holds now.
    partitions: int = 0
    #: Records behind the high watermark, over this node's partitions.
    lag: int = 0
    #: Records whose event the coalesce throttle held (then appended, or superseded).
    held: int = 0
    #: Held records superseded by a newer event with the same coalesce key.
    coalesced: int = 0


class _Stopping(Exception):
    """The source is stopping while a record is still unhandled: do not commit past it."""


class _BrokerStalled(Exception):
    """A request to the group coordinator got no answer in time: the client is rebuilt."""


async def stop_client(client: AIOKafkaConsumer | AIOKafkaProducer, seconds: float) -> None:
    """``client.stop()`` within ``seconds``. Stopping is a request (a consumer leaves its
    group), and one that aiokafka (0.14) does not give up even when cancelled once its
    coordinator stalled. Then its connections are closed under it (a private attribute: no
    public call ends that wait), so that nothing of the old client outlives it."""
    stopping = asyncio.ensure_future(client.stop())
    done, _ = await asyncio.wait({stopping}, timeout=seconds)
    if not done:
        log.warning("kafka_client_stop_stalled", client=type(client).__name__)
        with contextlib.suppress(Exception):
            await client._client.close()
        done, _ = await asyncio.wait({stopping}, timeout=seconds)
    if not done:
        stopping.cancel()
    elif not stopping.cancelled() and stopping.exception() is not None:
        log.info("kafka_client_stop_failed", error=repr(stopping.exception()))


def idempotency_key(topic: str, partition: int, offset: int) -> str:
    return f"kafka:{topic}:{partition}:{offset}"


def dead_letter_topic(template: str, topic: str) -> str:
    return template.replace("{topic}", topic)


class KafkaSource:
    name = "kafka"

    def __init__(
        self,
        offer: Offer,
        adapter: Adapter,
        *,
        bootstrap: str,
        topics: Iterable[str],
        group: str,
        client_id: str = "herald",
        dlq_topic: str = "{topic}.dlq",
        auto_offset_reset: str = "latest",
        commit_interval_seconds: float = 1.0,
        max_batch: int = 500,
        session_timeout_seconds: float = 10.0,
        offer_many: OfferMany | None = None,
    ) -> None:
        """``offer_many``: the publish path's batch append (``Gateway.offer_many``); without
        it, each fetched batch is offered one record at a time."""
        self.topics = list(topics)
        self.group = group
        self.bootstrap = bootstrap
        self._offer_many = offer_many or offer_many_from(offer)
        self._adapter = adapter
        self._client_id = client_id
        self._dlq_template = dlq_topic
        self._auto_offset_reset = auto_offset_reset
        self._commit_interval = commit_interval_seconds
        self._max_batch = max_batch
        self._session_timeout_ms = int(session_timeout_seconds * 1000)
        self.stats = KafkaSourceStats()
        #: Set once the consumer holds its first assignment (tests, readiness).
        self.assigned = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Next offset per partition after the records handled: every record before it
        #: is in the bus, or held by the throttle (``_held``).
        self._processed: dict[TopicPartition, int] = {}
        #: Per partition, the records whose event the throttle holds, oldest first.
        self._held: dict[TopicPartition, deque[tuple[int, Offered]]] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._revoked: set[TopicPartition] = set()
        self._unpinned: set[TopicPartition] = set()
        self._in_hand = asyncio.Lock()
        self._last_commit = 0.0
        self._ends: dict[TopicPartition, int] = {}
        self._ends_at = 0.0

    # --- life cycle

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-kafka-source")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            await _finish(self._task)
            self._task = None
        consumer, producer = self._consumer, self._producer
        if consumer is not None:
            with contextlib.suppress(KafkaError, asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self._commit(force=True), 5)
            with contextlib.suppress(KafkaError):
                await consumer.stop()
        if producer is not None:
            with contextlib.suppress(KafkaError):
                await producer.stop()

    async def send_canary(self, canary: Canary) -> None:
        """Produce a canary record (D32) to the source's topics, each canary to the next of
        their partitions in turn, so that over time every partition's consumer is proven."""
        producer = self._producer
        if producer is None:
            raise ConnectionError("the Kafka source is not connected")
        topic = self.topics[canary.seq % len(self.topics)]
        partitions = sorted(await producer.partitions_for(topic) or ())
        partition = partitions[(canary.seq // len(self.topics)) % len(partitions)] if partitions else None
        await producer.send_and_wait(topic, orjson.dumps(canary.record()), partition=partition)

    def partition_lag(self) -> dict[str, int]:
        """``{"topic:partition": records behind the high watermark}`` for this node's partitions."""
        consumer = self._consumer
        if consumer is None:
            return {}
        out = {}
        for tp in consumer.assignment():
            lag = self._lag_of(consumer, tp)
            if lag is not None:
                out[f"{tp.topic}:{tp.partition}"] = lag
        return out

    # --- the loop

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                await self._connect()
                attempt = 0
                await self._consume()
            except asyncio.CancelledError:
                raise
            except _Stopping:
                return
            except Exception as exc:  # a broken client is rebuilt; the committed offsets are kept
                if self._stopping:
                    return
                log.warning("kafka_source_restarting", error=repr(exc), attempt=attempt)
                await self._disconnect()
                await asyncio.sleep(reconnect_delay(attempt, base=0.2, cap=5.0))
                attempt += 1

    async def _connect(self) -> None:
        if self._consumer is not None:
            return
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            client_id=f"{self._client_id}-dlq",
            acks="all",
            enable_idempotence=True,
        )
        await producer.start()
        self._producer = producer
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self._auto_offset_reset,
            isolation_level="read_committed",
            session_timeout_ms=self._session_timeout_ms,
            heartbeat_interval_ms=max(500, self._session_timeout_ms // 3),
        )
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        await consumer.start()
        self._consumer = consumer
        log.info("kafka_source_started", topics=self.topics, group=self.group, bootstrap=self.bootstrap)

    async def _disconnect(self) -> None:
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        self._processed.clear()
        self._held.clear()
        self._committed.clear()
        self.assigned.clear()
        for client in (consumer, producer):
            if client is not None:
                await stop_client(client, self._session_timeout_ms / 1000)

    async def _consume(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stopping:
            if self._unpinned:
                await self._pin_start_positions(consumer)
            batch = await consumer.getmany(timeout_ms=_FETCH_TIMEOUT_MS, max_records=self._max_batch)
            for tp, records in batch.items():
                if tp in self._revoked or tp not in consumer.assignment():
                    continue
                async with self._in_hand:
                    await self._handle(tp, records)
                    self._processed[tp] = records[-1].offset + 1
            self._update_lag(consumer)
            await self._commit()

    async def _pin_start_positions(self, consumer: AIOKafkaConsumer) -> None:
        """A partition the group never committed starts where ``auto_offset_reset`` puts it;
        commit that position at once, so a node that dies before its first commit does not
        let the next owner start later (``latest``) and skip records."""
        pending, self._unpinned = self._unpinned, set()
        for tp in pending:
            if tp not in consumer.assignment():
                continue
            if await self._bounded(consumer.committed(tp), "committed") is None:
                position = await self._bounded(consumer.position(tp), "position")
                self._processed.setdefault(tp, position)
                await self._commit(force=True)

    # --- one record

    async def _handle(self, tp: TopicPartition, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Map one partition's fetched records and offer their events together, in offset
        order; poison records to the dead-letter topic. Returns once every event is in the
        bus or held by the throttle (``_held``); retries what the bus refused, in order."""
        todo: list[tuple[ConsumerRecord[Any, Any], str, SSEMessage]] = []
        for record in records:
            source = idempotency_key(tp.topic, tp.partition, record.offset)
            self.stats.received += 1
            try:
                message = self._adapter.map_raw(record.value, source=source)
            except PoisonRecord as exc:
                await self._dead_letter(record, source, exc.message, exc.event_type)
                continue
            if message is None:
                self.stats.ignored += 1
                continue
            if record.headers:
                message = with_traceparent(message, _traceparent_header(record.headers))
            todo.append((record, source, message))
        attempt = 0
        while todo:
            results = await self._offer_many([(message, source) for _, source, message in todo])
            refused: list[tuple[ConsumerRecord[Any, Any], str, SSEMessage]] = []
            for item, result in zip(todo, results, strict=True):
                record, source, message = item
                if isinstance(result, HeraldError):
                    if result.retriable:
                        refused.append(item)
                    else:
                        await self._dead_letter(
                            record, source, f"{result.code}: {result.message}", message.event
                        )
                    continue
                self._note(tp, record.offset, result)
            if refused:
                first = refused[0][1]
                await self._pause(attempt, "kafka_append_retry", source=first, records=len(refused))
                attempt += 1
            todo = refused

    def _note(self, tp: TopicPartition, offset: int, offered: Offered) -> None:
        if offered.result is not None:
            self._count(offered.result)
            return
        assert offered.pending is not None
        self.stats.held += 1
        offered.pending.add_done_callback(self._count_settled)
        if not offered.settled:
            self._held.setdefault(tp, deque()).append((offset, offered))

    def _count(self, result: AppendResult) -> None:
        if result.coalesced:
            self.stats.coalesced += 1
        elif result.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.published += 1

    def _count_settled(self, pending: asyncio.Future[AppendResult]) -> None:
        if not pending.cancelled() and pending.exception() is None:
            self._count(pending.result())

    def _committable(self, tp: TopicPartition) -> int | None:
        """The offset to commit for ``tp``: past every record handled, but not past the
        oldest one whose held event is not in the bus (nor superseded by one that is)."""
        held = self._held.get(tp)
        while held and _in_bus(held[0][1]):
            held.popleft()
        if held:
            return held[0][0]
        return self._processed.get(tp)

    async def _dead_letter(
        self, record: ConsumerRecord[Any, Any], source: str, error: str, event_type: str | None
    ) -> None:
        self.stats.rejected += 1
        topic = dead_letter_topic(self._dlq_template, record.topic)
        headers = [
            *(record.headers or ()),
            ("herald-error", error.encode()),
            ("herald-source", source.encode()),
            ("herald-event-type", (event_type or "").encode()),
        ]
        log.warning("kafka_record_dead_lettered", source=source, dlq=topic, reason=error)
        attempt = 0
        while True:
            producer = self._producer
            assert producer is not None
            try:
                await producer.send_and_wait(
                    topic, value=record.value, key=record.key, headers=headers, timestamp_ms=record.timestamp
                )
            except KafkaError as exc:
                await self._pause(attempt, "kafka_dead_letter_retry", source=source, error=repr(exc))
                attempt += 1
                continue
            self.stats.dead_lettered += 1
            return

    async def _pause(self, attempt: int, what: str, **context: Any) -> None:
        if self._stopping:
            raise _Stopping
        self.stats.retries += 1
        if self._consumer is not None:
            await self._refresh_ends(self._consumer)  # lag grows while a record is held
        if attempt == 0 or attempt % 20 == 0:
            log.warning(what, attempt=attempt, **context)
        await asyncio.sleep(reconnect_delay(attempt, base=0.05, cap=2.0))
        if self._stopping:
            raise _Stopping

    # --- offsets

    async def _commit(self, *, force: bool = False, only: Iterable[TopicPartition] | None = None) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self._commit_interval:
            return
        wanted = set(only) if only is not None else set(self._processed)
        offsets = {}
        for tp in wanted:
            offset = self._committable(tp)
            if offset is not None and self._committed.get(tp) != offset:
                offsets[tp] = offset
        self._last_commit = now
        if not offsets:
            return
        try:
            await self._bounded(consumer.commit(offsets), "commit")
        except CommitFailedError as exc:
            # The group moved on (rebalanced): the new owner re-reads from the last commit
            # and the idempotent append makes that harmless.
            log.info("kafka_commit_skipped", reason=str(exc))
            return
        self._committed.update(offsets)
        self.stats.commits += 1

    async def _bounded(self, request: Awaitable[T], what: str) -> T:
        """``request`` within the session timeout. aiokafka (0.14) can wait for ever on a
        commit whose coordinator died mid-request, even after the broker is back: the source
        then stopped reading without a word. Rebuilding the client gets a fresh coordinator;
        the committed offsets are kept and the idempotent append absorbs what is read again."""
        try:
            async with asyncio.timeout(self._session_timeout_ms / 1000):
                return await request
        except TimeoutError:
            raise _BrokerStalled(f"no answer to {what} within the session timeout") from None

    async def _refresh_ends(self, consumer: AIOKafkaConsumer) -> None:
        """While a record is held no fetch reports the high watermarks: ask for them."""
        now = time.monotonic()
        if now - self._ends_at < _ENDS_REFRESH_SECONDS:
            return
        self._ends_at = now
        try:
            self._ends = await self._bounded(consumer.end_offsets(list(consumer.assignment())), "end_offsets")
        except (KafkaError, _BrokerStalled):
            return
        self._update_lag(consumer)

    def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        total = 0
        for tp in consumer.assignment():
            total += self._lag_of(consumer, tp) or 0
        self.stats.lag = total

    def _lag_of(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
        fetched: int | None = consumer.highwater(tp)
        asked: int | None = self._ends.get(tp)
        known = [end for end in (fetched, asked) if end is not None]
        done = self._processed.get(tp, self._committed.get(tp))
        if not known or done is None:
            return None
        highwater = max(known)
        return max(0, highwater - done)

    # --- rebalancing

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._revoked |= revoked
        # Let the record in hand finish (bounded: a bus that is away must not stall the group).
        # Then for the records the throttle holds: settled within its interval.
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(_REVOKE_WAIT_SECONDS):
                await self._in_hand.acquire()
                self._in_hand.release()
                held = [o.pending for tp in revoked for _, o in self._held.get(tp, ()) if o.pending]
                if held:
                    await asyncio.wait(held)
        with contextlib.suppress(KafkaError):
            await self._commit(force=True, only=revoked)
        for tp in revoked:
            self._processed.pop(tp, None)
            self._held.pop(tp, None)
            self._committed.pop(tp, None)
        self._revoked -= revoked

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._unpinned |= assigned
        self.stats.partitions = len(assigned)
        log.info(
            "kafka_partitions_assigned", partitions=sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)
        )
        self.assigned.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._source._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._source._on_assigned(set(assigned))


def _in_bus(offered: Offered) -> bool:
    pending = offered.pending
    if pending is None:
        return True
    return pending.done() and not pending.cancelled() and pending.exception() is None


async def _finish(task: asyncio.Task[None], grace_seconds: float = 5.0) -> None:
    """Let the loop end at its next check (the batch in hand is completed), else cancel it."""
    done, _ = await asyncio.wait({task}, timeout=grace_seconds)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _traceparent_header(headers: Iterable[tuple[str, bytes]]) -> bytes | None:
    """The record's ``traceparent`` header (W3C Trace Context over Kafka), if it has one."""
    for name, value in headers:
        if name == "traceparent":
            return value
    return None
