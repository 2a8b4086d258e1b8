"""Which implementation of each shared role a node runs, chosen from the settings.

``bus = "memory"``: one process is the whole deployment; the log, the
stream-token leases and the connection counts live in its memory.
``bus = "redis"``: every node shares them through one Redis, so the nodes
behind a load balancer act as one gateway (docs/operations.md).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from herald.adapter import Adapter, load_mapping
from herald.auth.redis_revocations import RedisRevocations
from herald.auth.revocations import MemoryRevocations, Revocations
from herald.auth.stream_tokens import MemoryStreamTokenLeases, StreamTokenLeases
from herald.bus.base import EventBus
from herald.bus.memory import MemoryBus
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.counting import ConnectionCounter, MemoryConnectionCounter
from herald.cluster.keys import Keyspace
from herald.cluster.redis_client import RedisConnections
from herald.cluster.redis_counting import RedisConnectionCounter
from herald.cluster.redis_leases import RedisStreamTokenLeases
from herald.cluster.redis_rates import RedisConnectRates
from herald.config import Settings
from herald.lifecycle.kafka_relay import KafkaLifecycleRelay
from herald.lifecycle.redis_presence import RedisPresenceCounter
from herald.sources.incoming import Offer, OfferMany, Publish, Source, offer_from
from herald.sources.kafka import KafkaSource
from herald.sources.kafka_replay import KafkaDeepReplay
from herald.sources.outbox import OutboxSource
from herald.sources.redis_pubsub import RedisPubSubSource
from herald.sources.redis_streams import RedisStreamSource


def node_name() -> str:
    """This process among the cluster's nodes (Redis client names, consumer names, logs)."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass
class Backends:
    bus: EventBus
    stream_token_leases: StreamTokenLeases
    connection_counter: ConnectionCounter
    #: Revoked credentials: in this process, or in Redis for every node.
    revocations: Revocations = field(default_factory=MemoryRevocations)
    #: The Redis of node commands, if the node uses Redis.
    redis: RedisConnections | None = None
    #: The cluster's connect-rate buckets (the Redis bus).
    connect_rates: RedisConnectRates | None = None
    #: Every Redis client of this node (``redis``, the shards); closed last on stop.
    closing: list[RedisConnections] = field(default_factory=list)
    #: Where to register for "listeners may have missed records" (the Redis bus only).
    bus_discontinuity: list[Callable[[str], None]] | None = None
    #: Where to register for "these channels' streams must close" (the sharded bus only).
    channels_lost: list[Callable[[frozenset[str]], None]] | None = None


def build_backends(settings: Settings, node: str, bus: EventBus | None = None) -> Backends:
    """``bus``: a bus built by the caller (tests, embedding), used instead of the configured one."""
    if settings.bus == "memory":
        return Backends(
            bus=bus or build_memory_bus(settings),
            stream_token_leases=MemoryStreamTokenLeases(),
            connection_counter=build_presence_counter(settings, node, [])
            if settings.lifecycle_events != "off"
            else MemoryConnectionCounter(),
        )
    redis = RedisConnections(
        settings.redis_url, timeout=settings.redis_timeout_seconds, name=f"herald:{node}"
    )
    # The bus's channels and each user's state (token leases, counts, presence) share the
    # shards, placed alike: one Redis holds everything of one user (D28).
    shards = shard_connections(settings, node)
    keys = Keyspace(settings.redis_prefix)
    backends = Backends(
        bus=bus or build_redis_bus(settings, shards),
        stream_token_leases=RedisStreamTokenLeases(shards, keys),
        connection_counter=build_presence_counter(settings, node, shards)
        if settings.lifecycle_events != "off"
        else RedisConnectionCounter(shards, keys, lease_seconds=settings.connection_lease_seconds),
        revocations=RedisRevocations(redis, keys, ttl_seconds=settings.revocation_ttl_seconds),
        redis=redis,
        connect_rates=RedisConnectRates(shards, keys),
        closing=[*shards, redis],
    )
    if isinstance(backends.bus, ShardedBus):
        backends.bus_discontinuity = backends.bus.on_discontinuity
        backends.channels_lost = backends.bus.on_channels_lost
    return backends


def shard_connections(settings: Settings, node: str) -> list[RedisConnections]:
    """``redis_shards``, or ``redis_url`` alone as one shard."""
    return [
        RedisConnections(url, timeout=settings.redis_timeout_seconds, name=f"herald:{node}:shard{index}")
        for index, url in enumerate(settings.redis_shards or [settings.redis_url])
    ]


def build_presence_counter(
    settings: Settings, node: str, shards: list[RedisConnections]
) -> RedisPresenceCounter:
    """The per-user count with lifecycle events, where the nodes decide together: in
    ``lifecycle_redis_url`` when set, else over the bus's ``shards`` (with the memory bus,
    none: ``redis_url``)."""
    url = settings.lifecycle_redis_url or (None if shards else settings.redis_url)
    owned: list[RedisConnections] = []
    if url is not None:
        shards = owned = [
            RedisConnections(url, timeout=settings.redis_timeout_seconds, name=f"herald:{node}:lifecycle")
        ]
    keys = Keyspace(settings.redis_prefix)
    relays: list[KafkaLifecycleRelay] = []
    if settings.lifecycle_events == "kafka":
        bootstrap = settings.lifecycle_kafka_bootstrap or settings.kafka_bootstrap
        assert bootstrap is not None  # the settings refuse kafka without one
        stream = keys.lifecycle_outbox
        # One relay per shard (each the leader of its own outbox): a user's announcements
        # are all on one shard, so each user's stay in order in the topic.
        relays = [
            KafkaLifecycleRelay(
                shard,
                keys,
                bootstrap=bootstrap,
                topic=settings.lifecycle_kafka_topic,
                node=node,
                # A relay that dies is replaced when its lock lapses, as its leases do.
                lock_seconds=settings.connection_lease_seconds,
                shard=index if len(shards) > 1 else None,
            )
            for index, shard in enumerate(shards)
        ]
    else:
        stream = settings.lifecycle_stream or keys.lifecycle
    return RedisPresenceCounter(
        shards,
        keys,
        lease_seconds=settings.connection_lease_seconds,
        stream=stream,
        node=node,
        grace_seconds=settings.lifecycle_grace_seconds,
        sweep_seconds=settings.lifecycle_sweep_seconds,
        maxlen=settings.lifecycle_stream_maxlen,
        relays=relays,
        owned=owned,
    )


def build_memory_bus(settings: Settings) -> MemoryBus:
    return MemoryBus(
        window_seconds=settings.replay_window_seconds,
        max_events=settings.replay_max_events,
        idempotency_window_seconds=settings.idempotency_window_seconds,
        retain_seconds=settings.retain_seconds,
        max_retained=settings.retained_max_keys,
    )


def build_redis_bus(settings: Settings, shards: list[RedisConnections]) -> ShardedBus:
    """The bus over ``shards`` (:func:`shard_connections`): one shard is the same bus (D28).
    The caller closes the connections."""
    return ShardedBus(
        shards,
        keys=ShardKeys(settings.redis_prefix),
        window_seconds=settings.replay_window_seconds,
        max_events_per_channel=settings.replay_max_events,
        idempotency_window_seconds=settings.idempotency_window_seconds,
        min_replicas_ack=settings.redis_min_replicas_ack,
        replica_ack_timeout_seconds=settings.redis_replica_ack_timeout_seconds,
        retain_seconds=settings.retain_seconds,
    )


def build_sources(
    settings: Settings,
    publish: Publish,
    node: str,
    offer: Offer | None = None,
    offer_many: OfferMany | None = None,
) -> tuple[list[Source], RedisConnections | None]:
    """The sources the settings ask for, and the Redis clients they read through.

    ``offer``: the publish path that does not wait out the coalesce throttle (sources go on
    with their next record while an event is held); ``publish`` wrapped when not given.
    ``offer_many``: its batch form, for the sources that fetch records in batches (Kafka,
    the outbox); ``offer`` one at a time when not given.

    Raises :class:`herald.adapter.MappingInvalid` when a source that maps domain
    events (Kafka, outbox) is configured and ``mapping_file`` cannot be used.
    """
    sources: list[Source] = []
    offering = offer or offer_from(publish)
    redis: RedisConnections | None = None
    if settings.redis_pubsub_source or settings.redis_stream_source:
        redis = RedisConnections(
            settings.redis_source_url or settings.redis_url,
            timeout=settings.redis_timeout_seconds,
            name=f"herald:{node}:sources",
        )
    if settings.redis_pubsub_source:
        assert redis is not None
        sources.append(RedisPubSubSource(redis, settings.redis_pubsub_channel, offering))
    if settings.redis_stream_source:
        assert redis is not None
        sources.append(
            RedisStreamSource(
                redis,
                offering,
                stream=settings.redis_source_stream,
                group=settings.redis_source_group,
                consumer=node,
                claim_idle_seconds=settings.redis_source_claim_idle_seconds,
            )
        )
    if settings.kafka_bootstrap or settings.outbox_dsn:
        adapter = Adapter(load_mapping(settings.mapping_file))
        if settings.kafka_bootstrap:
            sources.append(build_kafka_source(settings, offering, adapter, node, offer_many))
        if settings.outbox_dsn:
            sources.append(
                OutboxSource(
                    offering,
                    adapter,
                    dsn=settings.outbox_dsn,
                    table=settings.outbox_table,
                    batch=settings.outbox_batch,
                    poll_seconds=settings.outbox_poll_seconds,
                    retention_seconds=settings.outbox_retention_seconds,
                    offer_many=offer_many,
                )
            )
    return sources, redis


def build_deep_replay(settings: Settings, node: str) -> KafkaDeepReplay | None:
    """The manager's deep replay from the Kafka source's topics, when Kafka is configured."""
    if not settings.kafka_bootstrap or settings.kafka_deep_replay_seconds <= 0:
        return None
    return KafkaDeepReplay(
        Adapter(load_mapping(settings.mapping_file)),
        bootstrap=settings.kafka_bootstrap,
        topics=settings.kafka_topics,
        group=settings.kafka_group,
        client_id=f"herald-{node}-deep-replay",
        seconds=settings.kafka_deep_replay_seconds,
        max_events=settings.kafka_deep_replay_max_events,
        max_age_seconds=settings.kafka_deep_replay_max_age_seconds,
    )


def build_kafka_source(
    settings: Settings, offer: Offer, adapter: Adapter, node: str, offer_many: OfferMany | None = None
) -> KafkaSource:
    assert settings.kafka_bootstrap is not None
    return KafkaSource(
        offer,
        adapter,
        bootstrap=settings.kafka_bootstrap,
        topics=settings.kafka_topics,
        group=settings.kafka_group,
        client_id=f"herald-{node}",
        dlq_topic=settings.kafka_dlq_topic,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        commit_interval_seconds=settings.kafka_commit_interval_seconds,
        max_batch=settings.kafka_max_batch,
        session_timeout_seconds=settings.kafka_session_timeout_seconds,
        offer_many=offer_many,
    )
