"""Channels: the unit a sharded bus stores, places and subscribes to (docs/architecture.md, D28).

Every routing key is a channel: ``user:U``, ``session:S``, a resource key
``<type>:<id>`` as streams subscribe to it, and ``global``. A stream follows
the channels of its user, its session, its resources and ``global``; an event
goes to the one channel of its scope and key. Scope names are reserved
(a resource type is never ``user``, ``session`` or ``global``), so two routing
keys never name one channel.

A channel lives on one shard of ``HERALD_REDIS_SHARDS``, chosen by
:func:`herald.cluster.placement.shard_of` of its name.
"""

from __future__ import annotations

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
