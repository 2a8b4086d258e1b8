"""The cluster-wide per-user count (:mod:`herald.cluster.redis_counting`) with the
user's presence kept beside it, and each transition announced once.

Built on the count's leases: every stream holds a lease its node renews, so
the count is the cluster's truth, and a node that vanished stops counting
within ``lease_seconds``. Beside each user's leases, a hash holds their
announced presence (``since``; ``empty`` and ``reason`` once their last
stream closed), and a sorted set holds, per present user, when to look at
them next. Every transition is decided inside one Lua script, atomically,
by whichever node's call sees it, so two nodes never announce the same one:

- a stream opens and the user has no presence: ``connection.opened``;
  if they were in their grace (last stream closed moments ago), the grace
  is cancelled and nothing is announced (a reconnect is not a disconnect);
- the user's last live stream closes: their grace starts (``empty`` = now,
  ``reason``), and the sweeper looks again when it ends;
- the sweeper (every node, every ``sweep_seconds``) takes the users whose
  time has come: still connected (a renewal moved their leases on) → look
  again when those would lapse; no live lease and no ``empty`` → their
  node vanished: ``empty`` = when the leases lapsed, ``reason`` =
  ``node_lost``; grace over → ``connection.closed``, and the presence ends.

So a user of a node killed outright is announced gone within
:func:`herald.lifecycle.events.gone_within` of the node's last renewal.
Announcements are ``XADD``-ed, inside the same scripts, to ``stream``: the
application's lifecycle stream, or the outbox the Kafka relay drains.

Every key carries the deployment's hash tag, so each script's keys share
one Redis Cluster slot; the sweeper reads the due users first and then
names their keys to the script that settles them.

Given several Redis shards, a user's leases and presence live on the shard
of the user's channel (:func:`herald.cluster.placement.user_shard`), and
each shard has its own sorted set of due users and its own ``stream``
(the same key name on every shard): a user's transitions are all decided
on one shard, so they stay in order, and the sweeper settles each shard
apart. A consumer reads the stream of every shard (or the Kafka topic, to
which one relay per shard hands them on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Final, Protocol

import structlog

from herald.cluster.counting import Presence
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections, is_unavailable, shard_list, unavailable
from herald.cluster.redis_counting import LUA_NOW, RedisConnectionCounter
from herald.lifecycle.events import NODE_LOST

log = structlog.get_logger("herald.lifecycle")

#: KEYS: conns, presence, due, stream. ARGV: lease_ms, lease id, user, maxlen, node, presence ttl_ms.
#: Returns {live count, 1 if connection.opened was announced}.
_ACQUIRE: Final = (
    LUA_NOW
    + """
local lease = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], lease)
local count = redis.call('ZCARD', KEYS[1])
local opened = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HSET', KEYS[2], 'since', now)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'event', 'connection.opened',
    'user_id', ARGV[3], 'at_ms', now, 'connections', count, 'node', ARGV[5])
  opened = 1
else
  redis.call('HDEL', KEYS[2], 'empty', 'reason')
end
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('ZADD', KEYS[3], 'GT', now + lease, ARGV[3])
return {count, opened}
"""
)

#: KEYS: conns, presence, due. ARGV: lease id, user, grace_ms, reason, presence ttl_ms.
#: Returns 1 when this release started the user's grace.
_RELEASE: Final = (
    LUA_NOW
    + """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('HEXISTS', KEYS[2], 'empty') == 1 then
  return 0
end
if redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') > 0 then
  return 0
end
redis.call('HSET', KEYS[2], 'empty', now, 'reason', ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
return 1
"""
)

#: KEYS: due, stream, then per user: conns, presence.
#: ARGV: lease_ms, maxlen, node, presence ttl_ms, then per user: user, n, n lease ids.
_RENEW: Final = (
    LUA_NOW
    + """
local lease = tonumber(ARGV[1])
local i = 5
for k = 3, #KEYS, 2 do
  local conns, presence = KEYS[k], KEYS[k + 1]
  local user = ARGV[i]
  local n = tonumber(ARGV[i + 1])
  local members = {}
  for j = 1, n do
    members[#members + 1] = now + lease
    members[#members + 1] = ARGV[i + 1 + j]
  end
  i = i + n + 2
  redis.call('ZADD', conns, unpack(members))
  redis.call('PEXPIRE', conns, lease)
  if redis.call('EXISTS', presence) == 0 then
    -- Redis lost the presence of a user this node still serves: present again.
    redis.call('HSET', presence, 'since', now)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'connection.opened',
      'user_id', user, 'at_ms', now, 'connections', redis.call('ZCARD', conns), 'node', ARGV[3],
      'restored', 1)
  else
    -- Leases counted again after a sweep found them lapsed (a renewal came late): still here.
    redis.call('HDEL', presence, 'empty', 'reason')
  end
  redis.call('PEXPIRE', presence, ARGV[4])
  redis.call('ZADD', KEYS[1], 'GT', now + lease, user)
end
return #KEYS
"""
)

#: KEYS: due. ARGV: limit. The users whose time has come (Redis's clock).
_DUE: Final = LUA_NOW + "return redis.call('ZRANGE', KEYS[1], '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[1])\n"

#: KEYS: due, stream, then per user: conns, presence. ARGV: grace_ms, maxlen, node, then the users.
#: Returns the number of connection.closed announced.
_SETTLE: Final = (
    LUA_NOW
    + """
local grace = tonumber(ARGV[1])
local closed = 0
for k = 3, #KEYS, 2 do
  local conns, presence = KEYS[k], KEYS[k + 1]
  local user = ARGV[4 + (k - 3) / 2]
  local due = redis.call('ZSCORE', KEYS[1], user)
  if due and tonumber(due) <= now then
    if redis.call('EXISTS', presence) == 0 then
      redis.call('ZREM', KEYS[1], user)
    else
      redis.call('ZREMRANGEBYSCORE', conns, '-inf', now)
      local newest = redis.call('ZRANGE', conns, -1, -1, 'WITHSCORES')
      if #newest > 0 then
        redis.call('HDEL', presence, 'empty', 'reason')
        redis.call('ZADD', KEYS[1], newest[2], user)
      else
        local empty = redis.call('HGET', presence, 'empty')
        if not empty then
          -- Nobody released these leases: their node vanished. Gone since they lapsed.
          empty = due
          redis.call('HSET', presence, 'empty', empty, 'reason', '"""
    + NODE_LOST
    + """')
        end
        empty = tonumber(empty)
        if now >= empty + grace then
          local since = tonumber(redis.call('HGET', presence, 'since')) or empty
          redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'event', 'connection.closed',
            'user_id', user, 'at_ms', string.format('%.0f', empty),
            'reason', redis.call('HGET', presence, 'reason'),
            'opened_at_ms', string.format('%.0f', since),
            'duration_ms', string.format('%.0f', math.max(0, empty - since)), 'node', ARGV[3])
          redis.call('DEL', presence)
          redis.call('ZREM', KEYS[1], user)
          closed = closed + 1
        else
          redis.call('ZADD', KEYS[1], empty + grace, user)
        end
      end
    end
  end
end
return closed
"""
)

#: KEYS: conns, presence. Returns {live count, since or false, empty or false}.
_PRESENCE: Final = (
    LUA_NOW
    + """
local count = redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
local state = redis.call('HMGET', KEYS[2], 'since', 'empty')
return {count, state[1], state[2]}
"""
)

#: Users settled per sweeper call, and renewed per renewal call: bounded work per script.
_SWEEP_BATCH: Final = 200


class Relay(Protocol):
    """Moves announcements on from ``stream`` (the Kafka relay); started and stopped with
    the counter."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class RedisPresenceCounter(RedisConnectionCounter):
    """:class:`herald.cluster.counting.ConnectionCounter` that also announces lifecycle events."""

    def __init__(
        self,
        redis: RedisConnections | Sequence[RedisConnections],
        keys: Keyspace,
        *,
        lease_seconds: float = 30.0,
        stream: str,
        node: str,
        grace_seconds: float = 15.0,
        sweep_seconds: float = 1.0,
        maxlen: int = 100_000,
        relays: Sequence[Relay] = (),
        owned: RedisConnections | Sequence[RedisConnections] = (),
    ) -> None:
        """``redis``: one Redis, or the shards the users are spread over. ``stream``: where
        announcements go, on each shard. ``relays``: started and stopped with the counter.
        ``owned``: Redis connections this counter closes when it stops."""
        super().__init__(redis, keys, lease_seconds=lease_seconds)
        self._stream = stream
        self._node = node
        self._grace_ms = int(grace_seconds * 1000)
        self.grace_seconds = grace_seconds
        self._sweep_seconds = sweep_seconds
        self._maxlen = maxlen
        # A presence outlives its user's leases and grace by far, and is refreshed by
        # every renewal: it only expires when no node serves the user and nobody swept
        # (lifecycle events turned off meanwhile).
        self._presence_ttl_ms = 3 * (self._lease_ms + self._grace_ms) + 60_000
        commands = [shard.commands for shard in self._shards]
        self._p_acquire = [c.register_script(_ACQUIRE) for c in commands]
        self._p_release = [c.register_script(_RELEASE) for c in commands]
        self._p_renew = [c.register_script(_RENEW) for c in commands]
        self._p_due = [c.register_script(_DUE) for c in commands]
        self._p_settle = [c.register_script(_SETTLE) for c in commands]
        self._p_presence = [c.register_script(_PRESENCE) for c in commands]
        self._relays = list(relays)
        self._owned = shard_list(owned)
        self._sweeper: asyncio.Task[None] | None = None
        #: Announcements this node made.
        self.opened_announced = 0
        self.closed_announced = 0

    async def start(self) -> None:
        await super().start()
        self._sweeper = asyncio.create_task(self._run_sweeper(), name="herald-lifecycle-sweeper")
        for relay in self._relays:
            await relay.start()

    async def stop(self) -> None:
        await super().stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.wait({self._sweeper}, timeout=5.0)
            self._sweeper = None
        for relay in self._relays:
            await relay.stop()
        for redis in self._owned:
            await redis.aclose()

    # --- the count, with presence

    async def acquire(self, user_id: str, lease_id: str) -> int:
        self._leases.setdefault(user_id, set()).add(lease_id)
        keys = self._keys
        try:
            count, opened = await self._p_acquire[self._shard(user_id)](
                keys=[keys.connections(user_id), keys.presence(user_id), keys.presence_due, self._stream],
                args=[self._lease_ms, lease_id, user_id, self._maxlen, self._node, self._presence_ttl_ms],
            )
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("counting the user's connections", exc) from exc
            raise
        self.opened_announced += int(opened)
        return int(count)

    async def _release(self, user_id: str, lease_id: str, reason: str) -> None:
        keys = self._keys
        await self._p_release[self._shard(user_id)](
            keys=[keys.connections(user_id), keys.presence(user_id), keys.presence_due],
            args=[lease_id, user_id, self._grace_ms, reason, self._presence_ttl_ms],
        )

    async def _renew_batch(self, shard: int, batch: list[tuple[str, list[str]]]) -> None:
        keys: list[str] = [self._keys.presence_due, self._stream]
        args: list[str | int] = [self._lease_ms, self._maxlen, self._node, self._presence_ttl_ms]
        for user, leases in batch:
            keys += [self._keys.connections(user), self._keys.presence(user)]
            args += [user, len(leases), *leases]
        await self._p_renew[shard](keys=keys, args=args)

    async def presence(self, user_id: str) -> Presence:
        try:
            count, since, empty = await self._p_presence[self._shard(user_id)](
                keys=[self._keys.connections(user_id), self._keys.presence(user_id)]
            )
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("reading the user's presence", exc) from exc
            raise
        return Presence(
            user_id,
            int(count),
            online_since=_seconds(since),
            grace_until=None if empty is None else _seconds(int(empty) + self._grace_ms),
        )

    # --- the sweeper

    async def sweep(self) -> int:
        """Settle every user whose time has come, on every shard; the ``connection.closed``
        announced. A shard that fails is left to the next sweep, after the others."""
        outcomes = await asyncio.gather(
            *(self._sweep_shard(shard) for shard in range(len(self._shards))), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return sum(outcome for outcome in outcomes if isinstance(outcome, int))

    async def _sweep_shard(self, shard: int) -> int:
        closed = 0
        while True:
            due: list[Any] = await self._p_due[shard](keys=[self._keys.presence_due], args=[_SWEEP_BATCH])
            if not due:
                return closed
            users = [user.decode() if isinstance(user, bytes) else str(user) for user in due]
            keys: list[str] = [self._keys.presence_due, self._stream]
            for user in users:
                keys += [self._keys.connections(user), self._keys.presence(user)]
            announced = int(
                await self._p_settle[shard](
                    keys=keys, args=[self._grace_ms, self._maxlen, self._node, *users]
                )
            )
            closed += announced
            self.closed_announced += announced
            if len(users) < _SWEEP_BATCH:
                return closed

    async def _run_sweeper(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._sweep_seconds)
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._stopping:
                    return
                # The next sweep takes over; announcements are late, never lost or doubled.
                log.warning("lifecycle_sweep_failed", error=repr(exc))


def _seconds(ms: bytes | str | int | None) -> float | None:
    if ms is None:
        return None
    return int(ms) / 1000.0
