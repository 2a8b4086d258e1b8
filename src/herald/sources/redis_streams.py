"""Redis Streams source: apps ``XADD`` events to a stream of their own, Herald delivers them.

Every node is a consumer in one consumer group, so each entry is handled by
one node. An entry is acknowledged (``XACK``) only once its event is in
the bus; if the bus refuses it, it stays pending and this node tries it
again before anything newer. Entries left pending by a node that crashed
are claimed (``XAUTOCLAIM``) by another once idle for ``claim_idle_seconds``.
The append is idempotent on the entry's coordinates (or the event's own
``id``), so an entry handled twice — claimed after a slow node did append
it, say — is still one event.

An entry is either one field ``json`` holding the body that ``POST
/api/v1/events`` takes, or that body's fields as entry fields (``data`` as
JSON text)::

    XADD app:events * event task.created scope user key u1 data '{"task_id":"t1"}'

A bad entry is logged with the reason, counted, acknowledged and skipped.

Order: within one node, entries are appended in stream order; entries that
different nodes handle at the same moment may enter the log in either
order (the nature of a consumer group).

The group is created at the end of the stream if it does not exist: entries
added before it existed are not read (create it yourself, ``XGROUP CREATE
<stream> <group> 0``, to include them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import structlog
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from herald.bus.base import AppendResult
from herald.cluster.backoff import reconnect_delay
from herald.cluster.redis_client import RedisConnections, stop_reader
from herald.errors import BusUnavailable, HeraldError, InvalidEvent
from herald.events.canary import Canary
from herald.sources.incoming import IncomingEvent, Offer, SourceStats, parse_event_body, parse_event_json

log = structlog.get_logger("herald.sources.redis_streams")

Entry = tuple[bytes, Mapping[bytes, bytes] | None]


def parse_entry(fields: Mapping[bytes, bytes], *, source: str) -> IncomingEvent:
    """The event of one stream entry; :class:`InvalidEvent` naming what is wrong."""
    if b"json" in fields:
        if len(fields) != 1:
            raise InvalidEvent("an entry with a 'json' field has no other fields", field="json")
        return parse_event_json(fields[b"json"], source=source, canaries=True)
    try:
        body: dict[str, Any] = {name.decode(): value.decode() for name, value in fields.items()}
    except UnicodeDecodeError:
        raise InvalidEvent("entry fields must be UTF-8 text") from None
    if "data" in body:
        try:
            body["data"] = orjson.loads(body["data"])
        except orjson.JSONDecodeError:
            raise InvalidEvent("data must be a JSON object, as text", field="data") from None
    return parse_event_body(body, source=source, canaries=True)


class RedisStreamSource:
    name = "redis-stream"

    def __init__(
        self,
        redis: RedisConnections,
        offer: Offer,
        *,
        stream: str,
        group: str,
        consumer: str,
        claim_idle_seconds: float = 30.0,
        block_seconds: float = 2.0,
        batch: int = 100,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._connections = redis
        self._offer = offer
        #: Acknowledgements of entries whose held event settled after the reader moved on.
        self._acks: set[asyncio.Task[None]] = set()
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._block_seconds = block_seconds
        self._batch = batch
        self.stats = SourceStats()
        #: Entries taken over from other consumers.
        self.claimed = 0
        self.ready = asyncio.Event()
        self._client: Redis | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set when an entry could not be appended: our pending entries come first.
        self._retry_pending = True

    async def start(self) -> None:
        self._client = self._connections.blocking(self._block_seconds)
        self._task = asyncio.create_task(self._run(self._client), name="herald-redis-stream-source")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None and self._client is not None:
            await stop_reader(self._task, self._client)
        self._task = None
        await self._leave_group()

    async def send_canary(self, canary: Canary) -> None:
        """Add a canary entry (D32) to the stream."""
        await self._connections.commands.xadd(self.stream, {"json": orjson.dumps(canary.body())})

    # --- the loop

    async def _run(self, client: Redis) -> None:
        attempt = 0
        next_claim = 0.0
        while not self._stopping:
            try:
                if not self.ready.is_set():
                    await self._ensure_group(client)
                    self.ready.set()
                if self._retry_pending:
                    self._retry_pending = False
                    await self._retry_own_pending(client)
                if time.monotonic() >= next_claim:
                    await self._claim_abandoned(client)
                    next_claim = time.monotonic() + self._claim_idle_ms / 2000
                await self._handle_all(client, await self._read(client, ">", block=True))
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                if attempt == 0:
                    log.warning("redis_stream_source_unavailable", stream=self.stream, error=repr(exc))
                if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
                    # The Redis came back without the stream or its group (restarted with no
                    # persistence): create them again, or no entry is ever read (the canaries
                    # of D32 showed it).
                    self.ready.clear()
                self._retry_pending = True
                await asyncio.sleep(reconnect_delay(attempt))
                attempt += 1

    async def _ensure_group(self, client: Redis) -> None:
        try:
            await client.xgroup_create(self.stream, self.group, id="$", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, client: Redis, start: str, *, block: bool) -> Sequence[Entry]:
        reply: Any = await client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self._batch,
            block=int(self._block_seconds * 1000) if block else None,
        )
        return reply[0][1] if reply else ()

    async def _retry_own_pending(self, client: Redis) -> None:
        """Our own pending entries (refused by the bus earlier, or claimed), oldest first."""
        after = "0"
        while not self._stopping:
            entries = await self._read(client, after, block=False)
            if not entries:
                return
            await self._handle_all(client, entries)
            after = entries[-1][0].decode()

    async def _claim_abandoned(self, client: Redis) -> None:
        """Take over entries another consumer read and never acknowledged (it crashed)."""
        start = "0-0"
        while not self._stopping:
            reply: Any = await client.xautoclaim(
                self.stream, self.group, self.consumer, self._claim_idle_ms, start_id=start, count=self._batch
            )
            start, entries = reply[0], reply[1]
            if entries:
                self.claimed += len(entries)
                log.info("redis_stream_entries_claimed", stream=self.stream, count=len(entries))
                await self._handle_all(client, entries)
            if start in (b"0-0", "0-0"):
                return

    # --- one entry

    async def _handle_all(self, client: Redis, entries: Sequence[Entry]) -> None:
        for entry_id, fields in entries:
            if not await self._handle(client, entry_id, fields):
                # The bus refused it: stop here, keep order, and come back to our pending entries.
                self._retry_pending = True
                raise BusUnavailable("the bus refused an entry; retrying", retry_after=1)

    async def _handle(self, client: Redis, entry_id: bytes, fields: Mapping[bytes, bytes] | None) -> bool:
        """Append one entry's event and acknowledge it; ``False`` if the bus refused it."""
        if fields is None:  # trimmed from the stream while pending: nothing to deliver
            await client.xack(self.stream, self.group, entry_id)
            return True
        coordinates = f"redis-stream:{self.stream}:{entry_id.decode()}"
        try:
            incoming = parse_entry(fields, source=coordinates[:256])
            offered = await self._offer(incoming.message, idempotency_key=incoming.event_id or coordinates)
        except BusUnavailable:
            return False
        except HeraldError as exc:
            self.stats.rejected += 1
            log.warning(
                "redis_stream_entry_rejected",
                stream=self.stream,
                entry_id=entry_id.decode(),
                reason=exc.message,
                field=exc.detail.get("field"),
            )
        else:
            if offered.pending is not None and not offered.settled:
                # Held by the coalesce throttle: acknowledged once it is in the bus (or
                # superseded by an event that is); the reader goes on meanwhile.
                self.stats.received += 1
                offered.pending.add_done_callback(lambda pending: self._settled(entry_id, pending))
                return True
            self._count(await offered.wait())
        self.stats.received += 1
        await client.xack(self.stream, self.group, entry_id)
        return True

    def _count(self, result: AppendResult) -> None:
        if result.duplicate:
            self.stats.duplicates += 1
        else:
            self.stats.published += 1

    def _settled(self, entry_id: bytes, pending: asyncio.Future[AppendResult]) -> None:
        if pending.cancelled() or pending.exception() is not None:
            return  # left pending: read again at the next start, or claimed by another node
        self._count(pending.result())
        task = asyncio.get_running_loop().create_task(self._ack(entry_id))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _ack(self, entry_id: bytes) -> None:
        try:
            await self._connections.commands.xack(self.stream, self.group, entry_id)
        except Exception as exc:  # unacknowledged: read again later, a duplicate the bus absorbs
            log.info("redis_stream_ack_failed", entry_id=entry_id.decode(), error=repr(exc))

    async def _leave_group(self) -> None:
        """Remove this node's consumer from the group, unless it still has entries pending."""
        client = self._connections.commands
        try:
            pending: Any = await client.xpending(self.stream, self.group)
            mine = {
                (c["name"].decode() if isinstance(c["name"], bytes) else c["name"]): c["pending"]
                for c in pending.get("consumers", [])
            }
            if mine.get(self.consumer, 0) == 0:
                await client.xgroup_delconsumer(self.stream, self.group, self.consumer)
        except Exception as exc:  # best effort: an idle consumer with nothing pending is harmless
            log.info("redis_stream_consumer_not_removed", error=repr(exc))
