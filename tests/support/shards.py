"""Helpers for tests over the sharded bus's placement (herald.bus.channels)."""

from __future__ import annotations

import secrets

from herald.bus.channels import shard_of


def user_on(shard: int, count: int = 3) -> str:
    """A fresh user whose channel lives on ``shard`` of ``count``."""
    while True:
        user = f"u{secrets.token_hex(4)}"
        if shard_of(f"user:{user}", count) == shard:
            return user
