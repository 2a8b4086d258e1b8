"""Redis pub/sub source: apps ``PUBLISH`` JSON events to a channel, Herald delivers them.

Every node subscribes (one connection each, never one per browser
connection) and appends each message through the gateway's publish path
with an idempotency key: the message's ``id``, or else a digest of its bytes.
However many nodes receive a message, it becomes one event. (Without an id,
identical messages within the idempotency window are therefore one event:
give messages ids.) Each node handles messages one at a time, in the order
the channel delivered them, so the log keeps the producer's order.

A bad message (not JSON, not an event, too large) is logged with the
reason, counted and skipped; nothing a producer sends can stop the
subscriber. While Redis is away the subscriber reconnects with backoff.
Pub/sub itself keeps nothing for absent subscribers: messages published
while every node is disconnected are lost. Producers that need more use the
Redis Streams source (:mod:`herald.sources.redis_streams`).
"""

from __future__ import annotations

import asyncio
import hashlib

import orjson
import structlog
from redis.asyncio import Redis

from herald.bus.base import AppendResult
from herald.bus.throttle import Offered
from herald.cluster.backoff import reconnect_delay
from herald.cluster.redis_client import RedisConnections, stop_reader, subscribe_forever
from herald.errors import BusUnavailable, HeraldError
from herald.events.canary import Canary
from herald.events.message import SSEMessage
from herald.sources.incoming import Offer, SourceStats, parse_event_json

log = structlog.get_logger("herald.sources.redis_pubsub")

#: A quiet subscription is probed this often, so a dead connection is noticed.
_PING_SECONDS = 5.0
#: Attempts at appending one message while the bus is unavailable, before giving up on it.
_PUBLISH_ATTEMPTS = 5


class RedisPubSubSource:
    name = "redis-pubsub"

    def __init__(self, redis: RedisConnections, channel: str, offer: Offer) -> None:
        self.channel = channel
        self._connections = redis
        self._offer = offer
        self.stats = SourceStats()
        self.subscribed = asyncio.Event()
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        self._client = self._connections.subscriber()
        self._task = asyncio.create_task(self._run(self._client), name="herald-redis-pubsub-source")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None and self._client is not None:
            await stop_reader(self._task, self._client)
        self._task = None

    async def send_canary(self, canary: Canary) -> None:
        """Publish a canary (D32) to the channel; every node's subscriber appends it, once."""
        await self._connections.commands.publish(self.channel, orjson.dumps(canary.body()))

    async def _run(self, client: Redis) -> None:
        await subscribe_forever(
            client,
            [self.channel],
            lambda data, _channel: self.handle(data),
            subscribed=self.subscribed,
            stopping=lambda: self._stopping,
            ping_seconds=_PING_SECONDS,
            lost="redis_pubsub_disconnected",
            channel=self.channel,
        )

    async def handle(self, raw: bytes) -> None:
        """Validate one message and append its event; never raises for a bad message."""
        self.stats.received += 1
        try:
            incoming = parse_event_json(raw, source=f"redis-pubsub:{self.channel}", canaries=True)
            key = incoming.event_id or f"redis-pubsub:sha256:{hashlib.sha256(raw).hexdigest()}"
            offered = await self._append(incoming.message, key)
        except BusUnavailable as exc:
            self.stats.failed += 1
            log.error("redis_pubsub_message_lost", channel=self.channel, reason=exc.message, size=len(raw))
            return
        except HeraldError as exc:
            self.stats.rejected += 1
            log.warning(
                "redis_pubsub_message_rejected",
                channel=self.channel,
                reason=exc.message,
                field=exc.detail.get("field"),
                size=len(raw),
            )
            return
        # An event the coalesce throttle holds is counted when it settles; the reader goes
        # on meanwhile (a subscriber that stops reading is cut off by Redis).
        if offered.result is not None:
            self._count(offered.result)
        elif offered.pending is not None:
            offered.pending.add_done_callback(self._count_settled)

    def _count(self, result: AppendResult) -> None:
        if result.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.published += 1

    def _count_settled(self, pending: asyncio.Future[AppendResult]) -> None:
        if pending.cancelled() or pending.exception() is not None:
            self.stats.failed += 1
        else:
            self._count(pending.result())

    async def _append(self, message: SSEMessage, key: str) -> Offered:
        for attempt in range(_PUBLISH_ATTEMPTS):
            try:
                return await self._offer(message, idempotency_key=key)
            except BusUnavailable:
                if attempt + 1 == _PUBLISH_ATTEMPTS or self._stopping:
                    raise
                await asyncio.sleep(reconnect_delay(attempt, base=0.1))
        raise AssertionError("unreachable")
