"""Channels: the unit a sharded bus stores, places and subscribes to (docs/architecture.md, D28).

Every routing key is a channel: ``user:U``, ``session:S``, a resource key
``<type>:<id>`` as streams subscribe to it, and ``global``. A stream follows
the channels of its user, its session, its resources and ``global``; an event
goes to the one channel of its scope and key. Scope names are reserved
(a resource type is never ``user``, ``session`` or ``global``), so two routing
keys never name one channel.

A channel lives on one shard of ``HERALD_REDIS_SHARDS``, chosen by jump
consistent hashing (Lamping and Veach, 2014) of a 64-bit BLAKE2b digest of
its name: the same on every node and in every release (Python's ``hash`` is
salted per process), and adding a shard moves only the channels that go to
the new shard, about one in ``n + 1``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from herald.events.message import SSEMessage
from herald.types import GLOBAL, SESSION, USER

GLOBAL_CHANNEL = GLOBAL


def channel_of(message: SSEMessage) -> str:
    """The channel ``message`` is appended to."""
    if message.scope == GLOBAL:
        return GLOBAL_CHANNEL
    return f"{message.scope}:{message.key}"


def channels_followed(user_id: str, session_id: str | None, subscriptions: Iterable[str]) -> frozenset[str]:
    """The channels a stream of ``user_id`` (with ``session_id`` and these resource
    subscriptions) receives from."""
    channels = {GLOBAL_CHANNEL, f"{USER}:{user_id}", *subscriptions}
    if session_id is not None:
        channels.add(f"{SESSION}:{session_id}")
    return frozenset(channels)


def shard_of(channel: str, shards: int) -> int:
    """The index, in ``range(shards)``, of the shard holding ``channel``."""
    if shards < 1:
        raise ValueError("there must be at least one shard")
    digest = hashlib.blake2b(channel.encode(), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), shards)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``range(buckets)``."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket
