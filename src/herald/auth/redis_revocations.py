"""Revocations shared through Redis (:mod:`herald.auth.revocations`).

One Redis Stream (``{prefix}:revocations``, in the Redis of node commands) is
the store: each revocation is an entry, and entries older than
``REVOCATION_TTL_SECONDS`` are trimmed (``MINID``) as new ones arrive; the key
itself expires that long after the last one. Every node reads the stream whole
when it starts, then follows it with a blocking ``XREAD`` from the last entry
it has, so a node that lost Redis for a while reads what it missed when it is
back, in order, rather than losing it as pub/sub would. Checking a stream
request is then a lookup in memory: no round trip per stream.

Until the first read succeeds the node does not know what is revoked, and
refuses streams (503, ``BUS_UNAVAILABLE``) rather than admit a revoked token.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import structlog

from herald.auth.principal import Principal
from herald.auth.revocations import OnRevoked, Revocation, RevocationSet, not_loaded
from herald.cluster.backoff import reconnect_delay
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections, is_unavailable, stop_reader, unavailable

log = structlog.get_logger("herald.cluster.revocations")

#: Entries read per page when a node loads the stream at start.
_PAGE = 1000


class RedisRevocations:
    def __init__(
        self,
        redis: RedisConnections,
        keys: Keyspace,
        *,
        ttl_seconds: float,
        block_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._key = keys.revocations
        self._ttl_ms = int(ttl_seconds * 1000)
        self._block_seconds = block_seconds
        self._clock = clock
        self.known = RevocationSet(clock)
        self._last_id = b"0-0"
        self._loaded = False
        self._following = False
        self._on_revoked: OnRevoked | None = None
        self._client: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.loaded = asyncio.Event()

    async def start(self, on_revoked: OnRevoked) -> None:
        self._on_revoked = on_revoked
        self._client = self._redis.blocking(self._block_seconds)
        self._task = asyncio.create_task(self._run(), name="herald-revocations")
        # Streams are refused until the set is known: wait for it, bounded, so a node
        # whose Redis answers is ready with it; one whose Redis does not keeps trying.
        try:
            await asyncio.wait_for(self.loaded.wait(), self._redis.timeout * 2)
        except TimeoutError:
            log.warning("revocations_not_loaded_at_start")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None and self._client is not None:
            await stop_reader(self._task, self._client)
        self._task = None

    async def revoke(self, revocation: Revocation) -> None:
        now_ms = int(self._clock() * 1000)
        try:
            async with self._redis.commands.pipeline(transaction=True) as pipe:
                pipe.xadd(
                    self._key,
                    {"r": orjson.dumps(revocation.to_json())},
                    minid=str(max(0, now_ms - self._ttl_ms)),
                    approximate=True,
                )
                pipe.pexpire(self._key, self._ttl_ms)
                await pipe.execute()
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("keeping the revocation", exc) from exc
            raise
        # Here at once; the other nodes read it from the stream (and so will this one: twice
        # is harmless, every step of applying one is idempotent).
        self._learn(revocation)

    def check(self, principal: Principal, resources: Iterable[str] = ()) -> None:
        if not self._loaded:
            raise not_loaded()
        self.known.check(principal)
        self.known.check_grants(principal, resources)

    def grant_revoked(self, principal: Principal, resource: str) -> bool:
        return self.known.grant_revoked(principal, resource)

    def healthy(self) -> bool:
        """Loaded, and following the stream now (while Redis is away, what the node knows
        still holds; it is no longer told of new revocations)."""
        return self._loaded and self._following

    # --- following the stream

    async def _run(self) -> None:
        attempt = 0
        while not self._stopping:
            try:
                if not self._loaded:
                    await self._load()
                    self._loaded = True
                    self.loaded.set()
                self._following = True
                await self._follow()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._following = False
                if self._stopping:
                    return
                if attempt == 0:
                    level = log.warning if is_unavailable(exc) else log.error
                    level("revocations_unreadable", error=repr(exc))
                await asyncio.sleep(reconnect_delay(attempt))
                attempt += 1

    async def _load(self) -> None:
        start = "-"
        while True:
            page = await self._client.xrange(self._key, min=start, max="+", count=_PAGE)
            for entry_id, fields in page:
                self._take(entry_id, fields, announce=False)
            if len(page) < _PAGE:
                return
            start = "(" + page[-1][0].decode()

    async def _follow(self) -> None:
        answer = await self._client.xread(
            {self._key: self._last_id}, count=_PAGE, block=int(self._block_seconds * 1000)
        )
        for _, entries in answer or ():
            for entry_id, fields in entries:
                self._take(entry_id, fields, announce=True)

    def _take(self, entry_id: bytes, fields: dict[bytes, bytes], *, announce: bool) -> None:
        self._last_id = entry_id
        try:
            revocation = Revocation.from_json(orjson.loads(fields[b"r"]))
        except (KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            log.error("revocation_unreadable", entry_id=entry_id.decode(errors="replace"))
            return
        if announce:
            self._learn(revocation)
        else:
            self.known.add(revocation)

    def _learn(self, revocation: Revocation) -> None:
        self.known.add(revocation)
        if self._on_revoked is not None:
            try:
                self._on_revoked(revocation)
            except Exception:
                log.exception("revocation_not_applied", kind=revocation.kind)
