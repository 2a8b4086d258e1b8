"""The cluster-wide per-user connection count, kept in Redis with renewed leases.

Each user has a sorted set: one member per open connection (its lease id),
scored by the lease's expiry in Redis's clock. Counting drops expired
members first, so the connections of a node that died (SIGKILL, lost
network) stop counting within ``lease_seconds``: nobody renews them. The
node that owns a connection renews all its leases every third of
``lease_seconds`` in one script per 500 users, re-adding them if Redis lost
them (restarted empty), so the count heals by itself.

Renewal and release are serialised on this node: a release issued while a
renewal is in flight waits for it, so a renewal can never resurrect a
released lease.

Given several Redis shards, each user's set lives on the shard of the user's
own channel (:func:`herald.cluster.placement.user_shard`): the counts spread
over the shards as the events do, and a renewal is one script per shard per
500 users, the shards renewed together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Final

import structlog

from herald.cluster.counting import Presence
from herald.cluster.keys import Keyspace
from herald.cluster.placement import user_shard
from herald.cluster.redis_client import RedisConnections, is_unavailable, shard_list, unavailable

log = structlog.get_logger("herald.cluster.counting")

#: The prelude of every script that compares against lease deadlines: Redis's own clock in
#: milliseconds, so that nodes with skewed clocks agree on which leases have run out.
LUA_NOW: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
#: KEYS: the user's set. ARGV: lease_ms, lease id. Returns the live count.
_ACQUIRE: Final = (
    LUA_NOW
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease)
return redis.call('ZCARD', KEYS[1])
"""
)
#: KEYS: a user's set. Returns the live count.
_COUNT: Final = LUA_NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')\n"
#: KEYS: a user's set. Returns the live leases.
_LEASES: Final = LUA_NOW + "return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')\n"
#: KEYS: users' sets. ARGV: lease_ms, then per key: n, n lease ids.
_RENEW: Final = (
    LUA_NOW
    + """
local lease = tonumber(ARGV[1])
local i = 2
for _, key in ipairs(KEYS) do
  local n = tonumber(ARGV[i])
  local members = {}
  for j = 1, n do
    members[#members + 1] = now + lease
    members[#members + 1] = ARGV[i + j]
  end
  i = i + n + 1
  redis.call('ZADD', key, unpack(members))
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""
)
#: Users renewed per script call: bounded work for Redis per call.
_RENEW_BATCH: Final = 500


class RedisConnectionCounter:
    """:class:`herald.cluster.counting.ConnectionCounter` shared through Redis."""

    def __init__(
        self,
        redis: RedisConnections | Sequence[RedisConnections],
        keys: Keyspace,
        *,
        lease_seconds: float = 30.0,
    ) -> None:
        """``redis``: one Redis, or the shards the users are spread over (in the bus's order)."""
        self._shards = shard_list(redis)
        if not self._shards:
            raise ValueError("a connection counter needs at least one Redis")
        self._keys = keys
        self._lease_ms = int(lease_seconds * 1000)
        self._acquire = [shard.commands.register_script(_ACQUIRE) for shard in self._shards]
        self._count = [shard.commands.register_script(_COUNT) for shard in self._shards]
        self._live = [shard.commands.register_script(_LEASES) for shard in self._shards]
        self._renew = [shard.commands.register_script(_RENEW) for shard in self._shards]
        #: The leases this node holds (and renews), by user.
        self._leases: dict[str, set[str]] = {}
        self._lock = asyncio.Lock()
        self._renewer: asyncio.Task[None] | None = None
        self._stopping = False

    def _shard(self, user_id: str) -> int:
        return user_shard(user_id, len(self._shards))

    async def start(self) -> None:
        self._renewer = asyncio.create_task(self._run_renewer(), name="herald-connection-lease-renewer")

    async def stop(self) -> None:
        self._stopping = True
        if self._renewer is not None:
            # A cancellation redis-py swallows (see ``stop_reader``) still ends the
            # loop at its next turn, through ``_stopping``.
            self._renewer.cancel()
            await asyncio.wait({self._renewer}, timeout=5.0)
            self._renewer = None

    async def acquire(self, user_id: str, lease_id: str) -> int:
        self._leases.setdefault(user_id, set()).add(lease_id)
        try:
            count = await self._acquire[self._shard(user_id)](
                keys=[self._keys.connections(user_id)], args=[self._lease_ms, lease_id]
            )
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("counting the user's connections", exc) from exc
            raise
        return int(count)

    async def release(self, user_id: str, lease_id: str, reason: str = "client_gone") -> None:
        leases = self._leases.get(user_id)
        if leases is not None:
            leases.discard(lease_id)
            if not leases:
                del self._leases[user_id]
        async with self._lock:
            try:
                await self._release(user_id, lease_id, reason)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # Not renewed any more, the lease lapses within lease_seconds.
                log.warning("connection_lease_release_failed", user_id=user_id, error=repr(exc))

    async def _release(self, user_id: str, lease_id: str, reason: str) -> None:
        await self._shards[self._shard(user_id)].commands.zrem(self._keys.connections(user_id), lease_id)

    async def count(self, user_id: str) -> int:
        try:
            count = await self._count[self._shard(user_id)](keys=[self._keys.connections(user_id)])
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("counting the user's connections", exc) from exc
            raise
        return int(count)

    async def presence(self, user_id: str) -> Presence:
        return Presence(user_id, await self.count(user_id))

    async def leases(self, user_id: str) -> list[str]:
        try:
            leases = await self._live[self._shard(user_id)](keys=[self._keys.connections(user_id)])
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("listing the user's connections", exc) from exc
            raise
        return sorted(lease.decode() if isinstance(lease, bytes) else str(lease) for lease in leases)

    async def renew(self) -> None:
        """Extend every lease this node holds by ``lease_seconds`` from now."""
        async with self._lock:
            by_shard: dict[int, list[tuple[str, list[str]]]] = {}
            for user, leases in self._leases.items():
                by_shard.setdefault(self._shard(user), []).append((user, sorted(leases)))
            # Every shard's renewal ends before the lock is let go, failed or not: a release
            # must never run beside a renewal of its user.
            outcomes = await asyncio.gather(
                *(self._renew_shard(shard, users) for shard, users in by_shard.items()),
                return_exceptions=True,
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _renew_shard(self, shard: int, users: list[tuple[str, list[str]]]) -> None:
        for start in range(0, len(users), _RENEW_BATCH):
            await self._renew_batch(shard, users[start : start + _RENEW_BATCH])

    async def _renew_batch(self, shard: int, batch: list[tuple[str, list[str]]]) -> None:
        args: list[str | int] = [self._lease_ms]
        for _, leases in batch:
            args += [len(leases), *leases]
        await self._renew[shard](keys=[self._keys.connections(user) for user, _ in batch], args=args)

    async def _run_renewer(self) -> None:
        interval = self._lease_ms / 3000
        while not self._stopping:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                # Retried at the next interval; two misses in a row and leases lapse.
                log.warning("connection_lease_renewal_failed", error=repr(exc), users=len(self._leases))
