"""Connect-rate buckets shared by every node through Redis (issue 13).

Each node keeps its own token buckets (:mod:`herald.manager.limits`), which
alone let a client behind a balancer over *n* nodes open *n* times the rate.
This is the cluster's bucket for the same key: one script per connect, on the
key's shard (a user's on the shard of their channel, with the rest of their
state), the generic cell rate algorithm (one timestamp per key: when the
bucket is full again) in Redis's clock. A node asks it only when its own bucket
allowed the connect, so a flood on one node is cut there without a round trip;
while Redis cannot answer, the node's own bucket decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from herald.cluster.keys import Keyspace
from herald.cluster.placement import shard_of, user_shard
from herald.cluster.redis_client import RedisConnections, is_unavailable, shard_list, unavailable
from herald.cluster.redis_counting import LUA_NOW

#: KEYS: the key's bucket. ARGV: ms per token, burst. Returns ms to wait, 0 when allowed.
#: The bucket stores its "theoretical arrival time": full again at ``tat``.
_TAKE: Final = (
    LUA_NOW
    + """
local interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or now), now)
local after = tat + interval
local wait = after - now - burst * interval
if wait > 0 then return math.ceil(wait) end
redis.call('SET', KEYS[1], string.format('%.0f', after), 'PX', math.ceil(after - now) + 1000)
return 0
"""
)


class RedisConnectRates:
    def __init__(self, redis: RedisConnections | Sequence[RedisConnections], keys: Keyspace) -> None:
        self._shards = shard_list(redis)
        self._keys = keys
        self._take = [shard.commands.register_script(_TAKE) for shard in self._shards]

    async def take(self, kind: str, key: str, *, rate: float, burst: float) -> float:
        """Take a connect of ``key`` (a ``user`` or an ``ip``) from the cluster's bucket:
        seconds to wait, 0 when allowed. :class:`BusUnavailable` when Redis cannot say."""
        count = len(self._shards)
        shard = user_shard(key, count) if kind == "user" else shard_of(f"{kind}:{key}", count)
        try:
            wait_ms = await self._take[shard](
                keys=[self._keys.connect_rate(kind, key)], args=[1000.0 / rate, burst]
            )
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("checking the connect rate", exc) from exc
            raise
        return int(wait_ms) / 1000.0
