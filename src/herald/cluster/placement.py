"""Where a name lives among several Redis shards (docs/architecture.md, D28).

Jump consistent hashing (Lamping and Veach, 2014) of a 64-bit BLAKE2b digest
of the name: the same on every node and in every release (Python's ``hash`` is
salted per process), and adding a shard moves only the names that go to the
new shard, about one in ``n + 1``. The bus places its channels this way, and
the per-user state (connection leases, presence) goes where the user's own
channel is, so one Redis holds everything of one user.
"""

from __future__ import annotations

import hashlib

from herald.types import USER


def shard_of(name: str, shards: int) -> int:
    """The index, in ``range(shards)``, of the shard holding ``name``."""
    if shards < 1:
        raise ValueError("there must be at least one shard")
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), shards)


def user_shard(user_id: str, shards: int) -> int:
    """The shard of ``user_id``'s channel, where their leases and presence live too."""
    return shard_of(f"{USER}:{user_id}", shards)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of a 64-bit ``key`` into ``range(buckets)``."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return bucket
