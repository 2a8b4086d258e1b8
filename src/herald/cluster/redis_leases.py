"""Stream-token leases in Redis: a token holds one open stream in the whole cluster.

A lease is a key set with ``NX`` that lives as long as the token could be
presented again, so a token minted on node A opens a stream on node B, and
cannot hold streams on A and B at once. A node that dies without releasing
leaves a lease that expires with the token: by then the token opens nothing.
Given several Redis shards, each lease lives on its user's shard
(:func:`herald.cluster.placement.user_shard`), with the rest of the user's
state: a shard that is away refuses only its own users' streams.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import structlog

from herald.cluster.keys import Keyspace
from herald.cluster.placement import user_shard
from herald.cluster.redis_client import RedisConnections, is_unavailable, shard_list, unavailable

log = structlog.get_logger("herald.cluster.leases")


class RedisStreamTokenLeases:
    """:class:`herald.auth.stream_tokens.StreamTokenLeases` shared through Redis."""

    def __init__(
        self,
        redis: RedisConnections | Sequence[RedisConnections],
        keys: Keyspace,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._shards = shard_list(redis)
        self._keys = keys
        self._clock = clock

    def _shard(self, user_id: str) -> RedisConnections:
        return self._shards[user_shard(user_id, len(self._shards))]

    async def acquire(self, user_id: str, token_id: str, token_expires_at: float) -> bool:
        """Raises :class:`BusUnavailable` when Redis cannot say (the stream is refused: 503)."""
        ttl_ms = max(1, int((token_expires_at - self._clock()) * 1000))
        try:
            taken = await self._shard(user_id).commands.set(
                self._keys.stream_token(token_id), b"1", nx=True, px=ttl_ms
            )
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable("checking the stream token's lease", exc) from exc
            raise
        return bool(taken)

    async def release(self, user_id: str, token_id: str) -> None:
        try:
            await self._shard(user_id).commands.delete(self._keys.stream_token(token_id))
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            # The lease lapses with the token; until then a reconnect with it is refused.
            log.warning("stream_token_release_failed", error=repr(exc))
