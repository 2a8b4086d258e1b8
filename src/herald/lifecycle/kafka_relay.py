"""Lifecycle events to a Kafka topic: the relay from their Redis outbox.

Transitions are decided inside Redis (:mod:`herald.lifecycle.redis_presence`),
where Kafka cannot be written, so the scripts append each announcement to
an outbox stream and this relay hands them to Kafka:

- One node relays at a time: it holds a lock (``SET NX PX``) that it
  renews, and the others try to take it when it lapses, so the topic gets
  the announcements in the order they were decided (a user's ``opened`` is
  never overtaken by their earlier ``closed``).
- It reads the outbox after the cursor of the last relayed entry, sends a
  batch (key: the user id; value: the JSON of :func:`kafka_record`; header
  ``herald-event-id``), waits for Kafka's acknowledgements (``acks=all``,
  idempotent producer), then — still holding the lock — moves the cursor
  and trims what it relayed, in one script.
- At least once: a relay that dies after Kafka acknowledged and before the
  cursor moved leaves its batch to the next relay, which sends it again.
  The duplicates carry the same ``id``, which consumers use to drop them.

While Kafka is away the outbox grows, up to the stream's ``maxlen`` (the
oldest announcements go first past it); the relay retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaProducer

from herald.cluster.backoff import reconnect_delay
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.lifecycle.events import kafka_record

log = structlog.get_logger("herald.lifecycle.kafka")

#: KEYS: lock. ARGV: node, lock_ms. Take the lock, or keep it if it is ours. 1 when held.
_HOLD: Final = """
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

#: KEYS: lock, cursor, outbox. ARGV: node, last relayed id, its successor id.
#: Move the cursor and trim the relayed entries, if the lock is still ours. 1 when done.
_COMMIT: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
return 1
"""


def _after(entry_id: str) -> str:
    """The smallest stream id above ``entry_id`` (``XTRIM MINID`` keeps ids at or above it)."""
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq) + 1}"


class KafkaLifecycleRelay:
    def __init__(
        self,
        redis: RedisConnections,
        keys: Keyspace,
        *,
        bootstrap: str,
        topic: str,
        node: str,
        lock_seconds: float = 10.0,
        block_seconds: float = 1.0,
        batch: int = 500,
        shard: int | None = None,
    ) -> None:
        """``shard``: which shard's outbox this relays, when there are several (each has one
        relay; the records' ids then name the shard, entry ids being unique per shard only)."""
        self._shard = shard
        self._connections = redis
        self._commands = redis.commands
        self._keys = keys
        self.bootstrap = bootstrap
        self.topic = topic
        self._node = node
        self._lock_ms = int(lock_seconds * 1000)
        self._block_seconds = block_seconds
        self._batch = batch
        self._hold = self._commands.register_script(_HOLD)
        self._commit = self._commands.register_script(_COMMIT)
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Whether this node relays now, and what it relayed.
        self.leader = False
        self.relayed = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-lifecycle-kafka-relay")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)
            self._task = None
        await self._close_producer()
        if self.leader:
            # Let another node take over at once rather than when the lock lapses.
            with contextlib.suppress(Exception):
                await self._commands.eval(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
                    1,
                    self._keys.lifecycle_relay,
                    self._node,
                )
            self.leader = False

    async def _run(self) -> None:
        reader = self._connections.blocking(self._block_seconds)
        attempt = 0
        held_at = 0.0
        try:
            while not self._stopping:
                try:
                    now = time.monotonic()
                    if not self.leader or now - held_at >= self._lock_ms / 3000:
                        self.leader = bool(
                            await self._hold(
                                keys=[self._keys.lifecycle_relay], args=[self._node, self._lock_ms]
                            )
                        )
                        held_at = now
                        if not self.leader:
                            await asyncio.sleep(self._lock_ms / 3000)
                            continue
                    await self._relay_batch(reader)
                    attempt = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if self._stopping:
                        return
                    if attempt == 0:
                        log.warning("lifecycle_relay_failed", error=repr(exc))
                    await self._close_producer()
                    await asyncio.sleep(reconnect_delay(attempt, base=0.2, cap=5.0))
                    attempt += 1
        finally:
            with contextlib.suppress(Exception):
                await reader.aclose()

    async def _relay_batch(self, reader: Any) -> None:
        """Send what follows the cursor (waiting up to ``block_seconds`` for it) and commit."""
        cursor_raw = await self._commands.get(self._keys.lifecycle_relayed)
        cursor = (cursor_raw.decode() if isinstance(cursor_raw, bytes) else cursor_raw) or "0-0"
        reply = await reader.xread(
            {self._keys.lifecycle_outbox: cursor},
            count=self._batch,
            block=int(self._block_seconds * 1000),
        )
        if not reply:
            return
        entries = reply[0][1]
        producer = await self._producer_started()
        sent = []
        for entry_id, fields in entries:
            key, value, event_id = kafka_record(entry_id, fields, self._shard)
            sent.append(
                await producer.send(
                    self.topic, value, key=key, headers=[("herald-event-id", event_id.encode())]
                )
            )
        await asyncio.gather(*sent)
        last_id = entries[-1][0]
        last = last_id.decode() if isinstance(last_id, bytes) else str(last_id)
        committed = await self._commit(
            keys=[self._keys.lifecycle_relay, self._keys.lifecycle_relayed, self._keys.lifecycle_outbox],
            args=[self._node, last, _after(last)],
        )
        self.relayed += len(entries)
        if not committed:
            # The lock lapsed meanwhile: another node may send this batch again (same ids).
            self.leader = False
            log.warning("lifecycle_relay_lost_lock", relayed_uncommitted=len(entries))

    async def _producer_started(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                client_id=f"herald-{self._node}-lifecycle",
                acks="all",
                enable_idempotence=True,
            )
            await producer.start()
            self._producer = producer
            log.info("lifecycle_relay_started", topic=self.topic, bootstrap=self.bootstrap)
        return self._producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()
