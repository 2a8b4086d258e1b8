"""Where each piece of shared state lives in Redis.

Every key of one deployment carries the same hash tag (``{herald}``), so the
scripts that touch several keys at once stay valid on a Redis Cluster (they
all land on one shard), and two deployments can share one Redis by choosing
different prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = "herald"

    def _key(self, *parts: str) -> str:
        return ":".join((f"{{{self.prefix}}}", *parts))

    @property
    def log(self) -> str:
        """The event log: a Redis Stream whose entry ids are the cursors."""
        return self._key("log")

    @property
    def meta(self) -> str:
        """A hash with the log's ``origin`` (which lifetime of the log this is) and ``floor``."""
        return self._key("log", "meta")

    def idempotency(self, key: str) -> str:
        return self._key("idem", key)

    def stream_token(self, token_id: str) -> str:
        return self._key("stream-token", token_id)

    def connect_rate(self, kind: str, key: str) -> str:
        """The cluster's connect-rate bucket of a ``user`` or an ``ip``: when it is full again."""
        return self._key("rate", kind, key)

    def connections(self, user_id: str) -> str:
        """A sorted set of the user's connection leases, scored by expiry."""
        return self._key("conns", user_id)

    def presence(self, user_id: str) -> str:
        """A hash of the user's announced presence: ``since``, and ``empty``/``reason`` once
        their last stream closed (lifecycle events, :mod:`herald.lifecycle`)."""
        return self._key("presence", user_id)

    @property
    def presence_due(self) -> str:
        """A sorted set of users, scored by when the sweeper must look at them next."""
        return self._key("presence", "due")

    @property
    def lifecycle(self) -> str:
        """The default Redis Stream of lifecycle events."""
        return self._key("lifecycle")

    @property
    def lifecycle_outbox(self) -> str:
        """Lifecycle events waiting for the relay to Kafka."""
        return self._key("lifecycle", "outbox")

    @property
    def lifecycle_relay(self) -> str:
        """The lock held by the one node relaying lifecycle events to Kafka."""
        return self._key("lifecycle", "relay")

    @property
    def lifecycle_relayed(self) -> str:
        """The id of the last lifecycle event the relay handed to Kafka."""
        return self._key("lifecycle", "relayed")

    @property
    def revocations(self) -> str:
        """A Redis Stream of revocations in force (:mod:`herald.auth.redis_revocations`)."""
        return self._key("revocations")

    @property
    def control(self) -> str:
        """The pub/sub channel of commands between nodes (:mod:`herald.cluster.control`)."""
        return self._key("control")

    def control_node(self, node: str) -> str:
        """The channel where ``node`` receives answers to what it asked."""
        return f"{self.control}:{node}"
