"""Helpers for tests over the sharded bus's placement (herald.cluster.placement)."""

from __future__ import annotations

import secrets

from herald.cluster.placement import user_shard


def user_on(shard: int, count: int = 3) -> str:
    """A fresh user whose channel lives on ``shard`` of ``count``."""
    while True:
        user = f"u{secrets.token_hex(4)}"
        if user_shard(user, count) == shard:
            return user
