"""Settings: ``HERALD_*`` environment variables over an optional TOML file over defaults."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

#: In a list of Redis URLs, a comma followed by a scheme: where the next URL starts.
_NEXT_URL = re.compile(r",(?=\s*[A-Za-z][A-Za-z0-9+.-]*://)")

#: Algorithms Herald will ever accept; ``none`` and anything unlisted is refused.
SUPPORTED_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"}
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", extra="forbid", frozen=True)

    # --- listening
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: How long a client may take to send its request headers (slowloris bound).
    header_timeout_seconds: float = Field(10.0, gt=0)
    #: Idle time after which a keep-alive control-API connection is closed.
    keepalive_timeout_seconds: float = Field(5.0, gt=0)
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    #: Worker processes serving the same port (``herald serve --workers``); 0: one per core.
    #: With the memory bus and more than one worker, the log lives in a private
    #: ``redis-server`` that Herald starts (docs/operations.md, "Worker processes").
    workers: int = Field(0, ge=0, le=256)
    #: Each worker also listens alone on ``worker_port_base + id - 1`` (its own metrics,
    #: health and streams); 0: on a free port each, named in the logs. Unset: no such port.
    worker_port_base: int | None = Field(None, ge=0, le=65535)
    #: The ``redis-server`` binary started for the shared log of several workers on the memory bus.
    embedded_redis_server: str = "redis-server"

    # --- authentication
    jwt_secret: str | None = None
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    #: PEM text, or a path to a PEM file, of the key for RS*/PS*/ES*/EdDSA tokens.
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwks_cache_seconds: float = Field(300.0, gt=0)
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_leeway_seconds: float = Field(0.0, ge=0, le=300)
    jwt_require_exp: bool = True
    #: Key for stream tokens; derived from ``jwt_secret`` when unset. Share it across nodes.
    stream_token_secret: str | None = None
    stream_token_ttl_seconds: float = Field(60.0, gt=0, le=3600)
    #: How long a revocation is kept (``POST /api/v1/admin/revocations``): at least the
    #: lifetime of the longest-lived token you issue, or a revoked one works again after it.
    revocation_ttl_seconds: float = Field(86_400.0, gt=0, le=30 * 86_400)
    #: A stream gets ``auth.expiring`` this long before its token expires (0: never), so
    #: that its client fetches a new token and reconnects before it is cut off.
    auth_expiring_seconds: float = Field(60.0, ge=0, le=86_400)

    # --- the event log
    #: ``memory``: one process. ``redis``: several nodes share the log (and the
    #: stream-token leases and per-user connection counts) in ``redis_shards``, or
    #: ``redis_url`` as the one shard.
    bus: Literal["memory", "redis"] = "memory"
    replay_window_seconds: float = Field(300.0, gt=0)
    replay_max_events: int = Field(100_000, ge=1)
    idempotency_window_seconds: float = Field(600.0, gt=0)
    max_event_bytes: int = Field(64 * 1024, ge=256)
    #: Events with a ``coalesce`` key go out at most once per this many seconds per key
    #: (scope, key, coalesce): the first at once, the newest of the rest when the interval
    #: ends (docs/architecture.md, D23). 0: off.
    coalesce_interval_seconds: float = Field(1.0, ge=0, le=60)
    #: How long a retained state (an event published with ``retain: true``) is kept when
    #: the event does not say (``retain_seconds``); docs/architecture.md, D33.
    retain_seconds: int = Field(86_400, ge=1, le=30 * 86_400)
    #: The memory bus keeps at most this many retained states (the least lately updated
    #: go first); the Redis bus keeps them in Redis, a hash per channel.
    retained_max_keys: int = Field(100_000, ge=1)

    # --- Redis (the redis bus, and the Redis sources)
    #: The Redis of node commands (and of the bus, when ``redis_shards`` is empty); the
    #: first of ``redis_shards`` when those are given and this is not.
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: With the redis bus: standalone Redis primaries (``redis://a,redis://b,…``, at most 64)
    #: over which the bus spreads its channels, and each user's leases and presence with
    #: their channel (docs/architecture.md, D28); each node reads only the channels its
    #: streams follow. Empty: ``redis_url`` is the one shard.
    #: The order is part of the data: keep it when adding shards (append at the end).
    redis_shards: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Every key lives under ``{prefix}:``; deployments sharing one Redis choose different ones.
    redis_prefix: str = Field("herald", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    #: Bound on every Redis command (connect, wait for a pooled connection, reply):
    #: past it, publishing answers 503 rather than hang.
    redis_timeout_seconds: float = Field(2.0, gt=0, le=60)
    #: Durability of a publish: 0 (asynchronous replication) answers 202 once the primary
    #: has the event; n > 0 answers 202 only once n replicas acknowledged it (``WAIT``
    #: after each append round trip), else 503 ``BUS_UNAVAILABLE`` with reason
    #: ``not_replicated``, so a failover loses no acknowledged event (docs/operations.md,
    #: "Replicas and Sentinel"). Primaries are named by ``redis+sentinel://`` URLs or not.
    redis_min_replicas_ack: int = Field(0, ge=0, le=16)
    #: How long an append waits for those replicas (below ``redis_timeout_seconds``).
    redis_replica_ack_timeout_seconds: float = Field(1.0, gt=0, le=60)
    #: A node renews the leases of its connections' count every third of this; the
    #: connections of a node that died stop counting within it.
    connection_lease_seconds: float = Field(30.0, ge=1, le=3600)

    # --- sources
    #: Subscribe to ``redis_pubsub_channel`` and publish the JSON events apps send there.
    redis_pubsub_source: bool = False
    redis_pubsub_channel: str = Field("herald:publish", min_length=1)
    #: Consume ``redis_source_stream`` (entries apps ``XADD``) in the consumer group
    #: ``redis_source_group``; an entry is acknowledged once its event is in the bus.
    redis_stream_source: bool = False
    redis_source_stream: str = Field("herald:events", min_length=1)
    redis_source_group: str = Field("herald", min_length=1)
    #: Pending entries of a consumer idle this long (a crashed node) are claimed by another.
    redis_source_claim_idle_seconds: float = Field(30.0, gt=0)
    #: The Redis the sources read from, when it is not ``redis_url``.
    redis_source_url: str | None = None

    # --- the adapter (domain events -> browser events: docs/events.md)
    #: A mapping file (TOML) replacing or extending the built-in default catalogue.
    mapping_file: Path | None = None

    # --- Kafka source (docs/operations.md, "Kafka")
    #: Bootstrap servers (``host:port,host:port``); the Kafka source runs when set.
    kafka_bootstrap: str | None = None
    kafka_topics: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["domain-events"])
    #: The consumer group every node joins: partitions are spread over the nodes.
    kafka_group: str = Field("herald", min_length=1)
    #: Where poison records go; ``{topic}`` is the record's topic.
    kafka_dlq_topic: str = Field("{topic}.dlq", min_length=1)
    #: Where a group without committed offsets starts: ``latest`` delivers only new records.
    kafka_auto_offset_reset: Literal["earliest", "latest"] = "latest"
    #: Offsets are committed (after the append) at most this often; 0 commits every batch.
    kafka_commit_interval_seconds: float = Field(1.0, ge=0)
    #: Records fetched per batch.
    kafka_max_batch: int = Field(500, ge=1, le=100_000)
    #: A node that stops heartbeating for this long loses its partitions to the others.
    kafka_session_timeout_seconds: float = Field(10.0, ge=1, le=300)
    #: Deep replay (docs/architecture.md, D24): a stream whose cursor is older than the log's
    #: window gets the events Kafka still holds since then, read for at most this long; 0: off.
    kafka_deep_replay_seconds: float = Field(2.0, ge=0, le=30)
    #: At most this many events recovered per stream.
    kafka_deep_replay_max_events: int = Field(1000, ge=1, le=100_000)
    #: Cursors older than this get no deep replay (the read would be long, the gap stale).
    kafka_deep_replay_max_age_seconds: float = Field(24 * 3600.0, gt=0)

    # --- PostgreSQL outbox source (docs/operations.md, "Outbox")
    #: ``postgresql://user:pass@host:5432/db``; the outbox source runs when set.
    outbox_dsn: str | None = None
    outbox_table: str = Field("herald_outbox", pattern=r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$")
    #: Rows claimed per transaction.
    outbox_batch: int = Field(100, ge=1, le=10_000)
    #: The poller looks for rows this often even without a notification.
    outbox_poll_seconds: float = Field(1.0, gt=0)
    #: Processed rows are deleted this long after they were delivered.
    outbox_retention_seconds: float = Field(7 * 24 * 3600.0, gt=0)

    # --- canary events (docs/operations.md, "Canaries"; docs/architecture.md, D32)
    #: Every this many seconds the node writes a synthetic ``herald.canary`` event into each
    #: source it consumes (a Kafka record, an outbox row, a Redis message or entry); every
    #: node times its arrival on the bus (``herald_canary_*``). 0: off, the default: a canary
    #: is a write into the applications' own topic or table, with the write permission
    #: that needs, so the operator turns it on (10 s is a good value).
    canary_interval_seconds: float = Field(0.0, ge=0, le=3600)

    # --- lifecycle events (docs/events.md, "Lifecycle events"; docs/operations.md)
    #: Announce ``connection.opened`` / ``connection.closed`` per user: ``redis`` (to a
    #: Redis Stream), ``kafka`` (to a topic), or ``off``. Needs a Redis (``lifecycle_redis_url``),
    #: where the nodes decide each transition once, even with the memory bus.
    lifecycle_events: Literal["off", "redis", "kafka"] = "off"
    #: The one Redis of presence state and of the lifecycle stream; when unset, the bus's
    #: shards (each user's on the shard of their channel), or ``redis_url`` with the memory bus.
    lifecycle_redis_url: str | None = None
    #: The Redis Stream the events go to; ``{prefix}:lifecycle`` when unset (keep a
    #: ``{hash tag}`` shared with the prefix on a Redis Cluster).
    lifecycle_stream: str | None = Field(None, min_length=1)
    #: The stream is trimmed (approximately) to this many entries.
    lifecycle_stream_maxlen: int = Field(100_000, ge=100)
    lifecycle_kafka_topic: str = Field("herald.lifecycle", min_length=1)
    #: Kafka for the lifecycle topic; ``kafka_bootstrap`` when unset.
    lifecycle_kafka_bootstrap: str | None = None
    #: A user whose last stream closed is announced gone only if no stream of theirs
    #: opens within this (a reconnect, a rolling restart), so a blip is not a disconnect.
    lifecycle_grace_seconds: float = Field(15.0, ge=0, le=3600)
    #: How often each node looks for users whose grace ran out, or whose node vanished.
    lifecycle_sweep_seconds: float = Field(1.0, gt=0, le=60)

    # --- streams
    heartbeat_seconds: float = Field(15.0, gt=0)
    #: The ``retry:`` the stream opens with: how long a browser waits before reconnecting.
    retry_ms: int = Field(3000, ge=0)
    #: Bytes a connection may have waiting (ours + the socket's) before it counts as slow.
    slow_consumer_bytes: int = Field(256 * 1024, ge=4096)
    #: What the kernel may hold unsent per connection (``SO_SNDBUF``; Linux doubles the
    #: value for its bookkeeping). Unset: half of ``slow_consumer_bytes``, so a client that
    #: never reads holds no more than the budget in the kernel either. 0: the kernel's own
    #: autotuning (up to ``net.ipv4.tcp_wmem``, megabytes). ``herald serve`` only.
    socket_send_buffer_bytes: int | None = Field(None, ge=0)

    #: Grace period for streams to close on shutdown.
    shutdown_grace_seconds: float = Field(5.0, ge=0)
    #: A stream whose peer acknowledges nothing for this long is dropped (TCP_USER_TIMEOUT),
    #: so a vanished client is noticed in seconds, not after the kernel's ~15 minutes. 0: off.
    dead_peer_seconds: float = Field(30.0, ge=0)
    #: On shutdown each stream is told to come back after ``retry_ms`` plus a random
    #: share of this, so the clients of a restarted node do not all return at once.
    shutdown_retry_spread_ms: int = Field(10_000, ge=0)
    #: A drained node (``herald drain``, ``POST /api/v1/admin/drain``, SIGUSR1) moves its
    #: streams off over this long, in batches, so the other nodes see a bounded connect rate.
    drain_window_seconds: float = Field(30.0, gt=0, le=3600)

    # --- limits (docs/operations.md, "Limits")
    #: Open streams per user, counted across the cluster; 0: no limit.
    max_connections_per_user: int = Field(5, ge=0)
    #: Past that limit: ``refuse`` the new stream (429 SSE_CONNECTION_LIMIT), or
    #: ``evict_oldest`` (the user's oldest stream gets error.connection-evicted).
    connection_limit_policy: Literal["refuse", "evict_oldest"] = "refuse"
    #: Streams this node holds at most; past it, 503 SERVER_OVERLOAD with fallback polling. 0: no limit.
    max_clients: int = Field(10_000, ge=0)
    #: Stream opens per second (token bucket refill) and burst, per user and per client IP; rate 0: off.
    connect_rate_per_user: float = Field(2.0, ge=0)
    connect_burst_per_user: int = Field(20, ge=1)
    #: Per address: high enough that an office of 5,000 behind one NAT is back within the
    #: shutdown retry spread with no refusal (``bench.nat_storm``, docs/operations.md).
    connect_rate_per_ip: float = Field(500.0, ge=0)
    connect_burst_per_ip: int = Field(1000, ge=1)
    #: Addresses (or CIDR networks) of proxies whose ``X-Forwarded-For`` names the client.
    trusted_proxies: list[str] = Field(default_factory=list)

    # --- resource authorization (docs/operations.md, "Authorizing resources")
    #: ``claims``: the token's ``resources`` claim. ``http``: ask ``authorizer_url``.
    authorizer: Literal["claims", "http"] = "claims"
    authorizer_url: str | None = None
    #: Sent to the authorizer as ``Authorization: Bearer …``, so it knows Herald asks.
    authorizer_token: str | None = None
    authorizer_cache_seconds: float = Field(10.0, ge=0)
    #: Open streams' resources are asked about again this often (an HTTP or embedded
    #: authorizer; the token's claim cannot change): a withdrawn grant drops that
    #: subscription with ``connection.subscriptions-changed``. 0: only at open and change.
    authorizer_recheck_seconds: float = Field(60.0, ge=0)
    authorizer_timeout_seconds: float = Field(2.0, gt=0, le=30)

    # --- CORS (docs/operations.md, "CORS"): nothing but the gateway's own origin by default
    #: Origins (``https://app.example.com``) whose pages may call the API and open streams; ``*``: any.
    cors_allow_origins: list[str] = Field(default_factory=list)
    #: Whether those pages may send cookies / use ``withCredentials``.
    cors_allow_credentials: bool = False
    cors_max_age_seconds: int = Field(600, ge=0)

    # --- operation
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    demo: bool = False
    demo_page: bool = True

    @field_validator("jwt_algorithms")
    @classmethod
    def _known_algorithms(cls, value: list[str]) -> list[str]:
        unknown = [alg for alg in value if alg not in SUPPORTED_ALGORITHMS]
        if unknown:
            raise ValueError(
                f"unsupported JWT algorithms {unknown}; choose from {sorted(SUPPORTED_ALGORITHMS)}"
            )
        if not value:
            raise ValueError("jwt_algorithms must name at least one algorithm")
        return value

    @field_validator("kafka_topics", mode="before")
    @classmethod
    def _topic_list(cls, value: object) -> object:
        """``HERALD_KAFKA_TOPICS=a,b`` as well as a list."""
        if isinstance(value, str):
            return [topic.strip() for topic in value.split(",") if topic.strip()]
        return value

    @field_validator("redis_shards", mode="before")
    @classmethod
    def _shard_list(cls, value: object) -> object:
        # A comma starts the next URL only before a scheme: a redis+sentinel:// URL lists
        # its Sentinels with commas (redis+sentinel://a:26379,b:26379/name).
        if isinstance(value, str):
            return [url.strip(" ,") for url in _NEXT_URL.split(value) if url.strip(" ,")]
        return value

    @field_validator("redis_shards")
    @classmethod
    def _few_enough_shards(cls, value: list[str]) -> list[str]:
        if len(value) > 64:
            raise ValueError("redis_shards names at most 64 Redis primaries")
        if len(set(value)) != len(value):
            raise ValueError("redis_shards names a Redis twice")
        return value

    @field_validator("kafka_topics")
    @classmethod
    def _some_topics(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("kafka_topics must name at least one topic")
        return value

    @model_validator(mode="after")
    def _replica_ack_within_the_command_bound(self) -> Settings:
        if (
            self.redis_min_replicas_ack
            and self.redis_replica_ack_timeout_seconds >= self.redis_timeout_seconds
        ):
            raise ValueError("redis_replica_ack_timeout_seconds must be below redis_timeout_seconds")
        return self

    @model_validator(mode="after")
    def _commands_on_the_first_shard(self) -> Settings:
        if self.redis_shards and "redis_url" not in self.model_fields_set:
            object.__setattr__(self, "redis_url", self.redis_shards[0])  # frozen, still being built
        return self

    @model_validator(mode="after")
    def _lifecycle_kafka_needs_bootstrap(self) -> Settings:
        if self.lifecycle_events == "kafka" and not (self.lifecycle_kafka_bootstrap or self.kafka_bootstrap):
            raise ValueError("lifecycle_events 'kafka' needs lifecycle_kafka_bootstrap or kafka_bootstrap")
        return self

    @model_validator(mode="after")
    def _authorizer_needs_url(self) -> Settings:
        if self.authorizer == "http" and not self.authorizer_url:
            raise ValueError("authorizer 'http' needs authorizer_url")
        return self

    @field_validator("cors_allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            origin = origin.strip().rstrip("/").lower()
            if origin != "*" and not (origin.startswith(("http://", "https://")) and "/" not in origin[8:]):
                raise ValueError(f"CORS origin {origin!r} is not '*' or scheme://host[:port]")
            origins.append(origin)
        return origins

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad one
        return value

    @model_validator(mode="after")
    def _keys_for_algorithms(self) -> Settings:
        asymmetric = [alg for alg in self.jwt_algorithms if not alg.startswith("HS")]
        if asymmetric and not (self.jwt_public_key or self.jwks_url):
            raise ValueError(f"{asymmetric} need jwt_public_key or jwks_url")
        return self

    def send_buffer_bytes(self) -> int:
        """The ``SO_SNDBUF`` to set on stream sockets; 0: leave it to the kernel."""
        if self.socket_send_buffer_bytes is not None:
            return self.socket_send_buffer_bytes
        return self.slow_consumer_bytes // 2

    def public_key_pem(self) -> str | None:
        if self.jwt_public_key is None:
            return None
        if self.jwt_public_key.lstrip().startswith("-----BEGIN"):
            return self.jwt_public_key
        return Path(self.jwt_public_key).read_text()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = settings_cls.model_config.get("toml_file")
        sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
        if toml_file:
            sources += (TomlConfigSettingsSource(settings_cls),)
        return sources


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment, then ``config_file`` (TOML), then defaults.

    ``overrides`` (command-line flags) win over both.
    """
    if config_file is None:
        return Settings(**overrides)  # type: ignore[arg-type]
    if not config_file.is_file():
        raise FileNotFoundError(f"config file {config_file} does not exist")

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=config_file)

    return FileSettings(**overrides)  # type: ignore[arg-type]
