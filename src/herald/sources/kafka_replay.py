"""Deep replay from Kafka: the events of a stale cursor's gap that Kafka's topics still hold.

:class:`KafkaDeepReplay` is the manager's :class:`herald.manager.deep_replay.DeepReplaySource`
for the Kafka source's topics. Asked for what a stream missed since ``since_ms``, it opens
a consumer of its own (no group membership: partitions assigned by hand), and for every
partition of the topics reads from ``offsets_for_times(since_ms)`` up to the offset the
gateways' consumer group has committed — every record before it is in the log, or was
superseded by a newer one that is — maps each record with the same mapping as the source,
and keeps the events the stream may see whose record is not in the log's replay from the
floor (``in_log``: those reach the stream from the log, with their cursors).

Order: per partition, offset order; partitions merged by record timestamp.

Bounds: ``seconds`` for the whole recovery (connecting included), ``max_events`` kept,
``max_records`` read, cursors at most ``max_age_seconds`` old, and ``concurrency``
recoveries at once (a reconnect storm of stale clients does not become a storm of
consumers: past it a stream gets the plain ``recovered: false``). A recovery cut short
by a bound answers ``complete: false`` with what it found.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Collection, Iterable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from herald.adapter import Adapter, PoisonRecord
from herald.events.message import SSEMessage
from herald.sources.kafka import idempotency_key, stop_client

log = structlog.get_logger("herald.sources.kafka_replay")

#: How long closing the replay's consumer may take (it joins no group: quick unless stalled).
_STOP_SECONDS = 2.0
_FETCH_TIMEOUT_MS = 200
_FETCH_RECORDS = 2000

#: Per partition, ``(timestamp ms, message)`` in offset order.
_Found = dict[TopicPartition, list[tuple[int, SSEMessage]]]


class KafkaDeepReplay:
    name = "kafka"

    def __init__(
        self,
        adapter: Adapter,
        *,
        bootstrap: str,
        topics: Iterable[str],
        group: str,
        client_id: str = "herald-deep-replay",
        seconds: float = 2.0,
        max_events: int = 1000,
        max_records: int = 100_000,
        max_age_seconds: float = 24 * 3600.0,
        concurrency: int = 2,
    ) -> None:
        self.topics = list(topics)
        self.group = group
        self._adapter = adapter
        self._bootstrap = bootstrap
        self._client_id = client_id
        self._seconds = seconds
        self._max_events = max_events
        self._max_records = max_records
        self._max_age_ms = int(max_age_seconds * 1000)
        self._concurrency = concurrency
        self._running = 0
        #: Recoveries tried, and those refused (busy, too old).
        self.recoveries = 0
        self.refused = 0

    async def recover(
        self, since_ms: int, keep: Callable[[SSEMessage], bool], in_log: Collection[str]
    ) -> tuple[list[SSEMessage], bool] | None:
        if time.time() * 1000 - since_ms > self._max_age_ms or self._running >= self._concurrency:
            self.refused += 1
            return None
        self._running += 1
        self.recoveries += 1
        found: _Found = {}
        complete = False
        try:
            async with asyncio.timeout(self._seconds):
                complete = await self._read(since_ms, keep, in_log, found)
        except TimeoutError:
            log.info("kafka_deep_replay_cut_short", reason="time", seconds=self._seconds)
        except KafkaError as exc:
            log.warning("kafka_deep_replay_failed", error=repr(exc))
        finally:
            self._running -= 1
        merged = heapq.merge(*found.values(), key=lambda item: item[0])
        return [message for _, message in merged], complete

    async def _read(
        self, since_ms: int, keep: Callable[[SSEMessage], bool], in_log: Collection[str], found: _Found
    ) -> bool:
        """Fill ``found``; whether everything up to the committed offsets was read."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self.group,  # only to read the group's committed offsets: never joins it
            client_id=self._client_id,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            ends = await self._plan(consumer, since_ms)
            kept = scanned = 0
            while ends:
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    timeout_ms=_FETCH_TIMEOUT_MS, max_records=_FETCH_RECORDS
                )
                for tp, records in batch.items():
                    end = ends.get(tp)
                    if end is None:
                        continue
                    for record in records:
                        if record.offset >= end:
                            break
                        scanned += 1
                        message = self._mapped(tp, record, keep, in_log)
                        if message is not None:
                            found.setdefault(tp, []).append((record.timestamp, message))
                            kept += 1
                            if kept >= self._max_events:
                                return False
                if scanned >= self._max_records:
                    return False
                for tp in list(ends):
                    if await consumer.position(tp) >= ends[tp]:
                        del ends[tp]
                        consumer.pause(tp)
            return True
        finally:
            await stop_client(consumer, _STOP_SECONDS)

    async def _plan(self, consumer: AIOKafkaConsumer, since_ms: int) -> dict[TopicPartition, int]:
        """Assign every partition of the topics, seek each to ``since_ms``; the offset each
        must be read up to (the group's commit), for those with anything to read."""
        # The consumer's own metadata covers only what it is assigned: ask for the cluster's
        # (what ``consumer.topics()`` does, keeping the partitions).
        cluster = await consumer._client.fetch_all_metadata()
        partitions = [
            TopicPartition(topic, partition)
            for topic in self.topics
            for partition in sorted(cluster.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            return {}
        consumer.assign(partitions)
        starts = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends: dict[TopicPartition, int] = {}
        for tp in partitions:
            start = starts.get(tp)
            committed = await consumer.committed(tp)
            if start is None or committed is None or start.offset >= committed:
                continue
            consumer.seek(tp, start.offset)
            ends[tp] = committed
        idle = [tp for tp in partitions if tp not in ends]
        if idle:
            consumer.pause(*idle)
        return ends

    def _mapped(
        self, tp: TopicPartition, record: Any, keep: Callable[[SSEMessage], bool], in_log: Collection[str]
    ) -> SSEMessage | None:
        source = idempotency_key(tp.topic, tp.partition, record.offset)
        if source in in_log:
            return None  # the log's replay carries it, with its cursor
        try:
            message = self._adapter.map_raw(record.value, source=source)
        except PoisonRecord:
            return None
        if message is None or not keep(message):
            return None
        return message
