"""The gateway: one bus, one manager, the credentials that admit callers, and the
publish path. Everything a front end (the standalone server, or an ASGI app
embedding Herald) needs, with no web framework in sight."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from herald.auth.authorizers import ClaimsAuthorizer, HttpAuthorizer, ResourceAuthorizer
from herald.auth.grants import MAX_SUBSCRIPTIONS, check_resource_key, parse_subscriptions
from herald.auth.principal import Principal
from herald.auth.stream_tokens import StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier, bearer_token
from herald.backends import build_backends, build_deep_replay, build_sources, node_name
from herald.bus.base import AppendResult, EventBus
from herald.bus.throttle import Offered, Throttle
from herald.cluster.control import Answer, Command, NodeControl, SingleNodeControl
from herald.cluster.counting import Presence
from herald.cluster.keys import Keyspace
from herald.cluster.redis_control import RedisNodeControl
from herald.config import Settings
from herald.errors import (
    AuthError,
    BusUnavailable,
    ConnectionLimitExceeded,
    ConnectionNotFound,
    HeraldError,
    PermissionDenied,
    RateLimited,
    ServerOverload,
    SubscriptionInvalid,
)
from herald.events.message import SSEMessage, encode_data
from herald.events.names import ROUTING_KEY
from herald.lifecycle.events import ABANDONED
from herald.manager import frames
from herald.manager.connection import CloseReason, Connection
from herald.manager.limits import (
    RateLimiter,
    client_address,
    connection_limit,
    new_lease_id,
    trusted_networks,
)
from herald.manager.manager import ConnectionManager
from herald.manager.sink import Sink
from herald.obs.metrics import Readings

log = structlog.get_logger("herald.gateway")


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """An admitted stream request: who, and which resources it subscribes to."""

    principal: Principal
    subscriptions: frozenset[str]
    #: The connection's lease in the per-user count (``Gateway.connection_counts``).
    lease_id: str = ""
    #: The user's open streams cluster-wide, this one included; ``None`` when the
    #: count could not be had (Redis unavailable): the stream is admitted uncounted.
    user_connections: int | None = None
    #: Older streams of the user to close once this one is open (``evict_oldest``).
    evict: tuple[str, ...] = ()
    #: The client's address (a trusted proxy's ``X-Forwarded-For``, else the peer's).
    client_ip: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """What ``POST /api/v1/events/subscriptions`` did to a live stream."""

    connection_id: str
    subscriptions: list[str]
    added: list[str]
    removed: list[str]
    #: ``{"key", "code", "message"}`` for each key not applied.
    refused: list[dict[str, str]] = field(default_factory=list)
    #: The cursor after which the added resources' events reach the stream live.
    live_from: str = ""


#: Seconds a refused client is told to wait when the node is full: spread, so the
#: clients refused together do not come back together.
_OVERLOAD_RETRY_AFTER = (5, 15)
#: Bound on asking the other nodes about a connection this node does not hold.
_ASK_TIMEOUT = 2.0
#: Distinct ``source`` labels counted for ``herald_events_in``; more become ``other``.
_MAX_SOURCE_LABELS = 16


class Gateway:
    def __init__(
        self,
        settings: Settings,
        bus: EventBus | None = None,
        *,
        authorizer: ResourceAuthorizer | None = None,
    ) -> None:
        """``authorizer``: who may subscribe to which resource, when not the settings'
        (an application embedding Herald passes a ``CallableAuthorizer``)."""
        self.settings = settings
        #: This process among the cluster's nodes.
        self.node = node_name()
        backends = build_backends(settings, self.node, bus)
        self.bus = backends.bus
        self._redis = backends.redis
        self.connection_counts = backends.connection_counter
        self.manager = ConnectionManager(
            self.bus,
            heartbeat_seconds=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            retry_spread_ms=settings.shutdown_retry_spread_ms,
            slow_consumer_bytes=settings.slow_consumer_bytes,
        )
        self.verifier = TokenVerifier(settings)
        self.stream_tokens = StreamTokens(
            stream_key(settings.stream_token_secret, settings.jwt_secret),
            backends.stream_token_leases,
            ttl_seconds=settings.stream_token_ttl_seconds,
        )
        #: Events with a coalesce key pass here before the bus: at most one per key per interval.
        self.throttle = Throttle(self._append, settings.coalesce_interval_seconds)
        self.sources, self._source_redis = build_sources(settings, self.publish, self.node, self.offer)
        self.manager.deep_replay = build_deep_replay(settings, self.node)
        self.authorizer: ResourceAuthorizer = authorizer or build_authorizer(settings)
        self.control: NodeControl = (
            RedisNodeControl(backends.redis, Keyspace(settings.redis_prefix), self.node)
            if backends.redis is not None
            else SingleNodeControl()
        )
        self._user_rate = RateLimiter(settings.connect_rate_per_user, settings.connect_burst_per_user)
        self._ip_rate = RateLimiter(settings.connect_rate_per_ip, settings.connect_burst_per_ip)
        self._trusted_proxies = trusted_networks(settings.trusted_proxies)
        #: Stream requests between the start of admission and registration.
        self._admitting = 0
        #: Admission refusals by error code; events appended through this node by source.
        self.refused: dict[str, int] = {}
        self.events_in: dict[str, int] = {}
        self.subscriptions_refused = 0
        self._stream_token_of: dict[str, str] = {}
        self._lease_of: dict[str, tuple[str, str]] = {}
        self._conn_of_lease: dict[str, Connection] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.manager.on_close.append(self._release_stream_token)
        self.manager.on_close.append(self._release_connection_lease)
        if backends.bus_discontinuity is not None:
            backends.bus_discontinuity.append(self._on_bus_discontinuity)

    async def start(self) -> None:
        await self.bus.start()
        await self.connection_counts.start()
        await self.manager.start()
        await self.control.start(self._on_command)
        for source in self.sources:
            await source.start()

    async def stop(self) -> None:
        # Held events go to the bus first, so sources then commit past them.
        await self.flush_held()
        for source in self.sources:
            await source.stop()
        await self.manager.stop()
        await self.control.stop()
        await self.bus.stop()
        await self.authorizer.aclose()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.connection_counts.stop()
        for redis in (self._source_redis, self._redis):
            if redis is not None:
                await redis.aclose()

    # --- publishing

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        """Append ``message`` to the bus; every path in answers with a cursor or an error.

        An event the coalesce throttle holds is answered when it goes out (its
        cursor) or is superseded (the cursor carrying the newer content,
        ``coalesced=True``): within the interval, or :class:`BusUnavailable` if the
        bus does not take it in time (it stays held, and is appended when it can be)."""
        offered = await self.offer(message, idempotency_key=idempotency_key)
        if offered.result is not None:
            return offered.result
        try:
            async with asyncio.timeout(self._held_answer_seconds):
                return await offered.wait()
        except TimeoutError:
            raise BusUnavailable(
                "the event is held for its coalesce interval and the bus has not taken it yet",
                retry_after=1,
            ) from None

    async def offer(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        """Hand ``message`` to the publish path: returns once it is in the bus, or held by
        the coalesce throttle (``Offered.pending`` settles when it is appended or
        superseded). For sources that go on with their next record meanwhile."""
        data_json = encode_data(message, self.settings.max_event_bytes)
        return await self.throttle.offer(message, data_json, idempotency_key)

    async def flush_held(self) -> None:
        """Append every event the throttle holds now; later ones go straight through.
        Bounded: what the bus does not take within 5 s stays unappended (and its sources
        uncommitted)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.throttle.close()

    @property
    def _held_answer_seconds(self) -> float:
        return self.throttle.interval + max(2.0, 2 * self.settings.redis_timeout_seconds)

    async def _append(
        self, message: SSEMessage, data_json: bytes, idempotency_key: str | None, superseded: Sequence[str]
    ) -> AppendResult:
        result = await self.bus.append(
            message, data_json, idempotency_key=idempotency_key, superseded_keys=superseded
        )
        if not result.duplicate:
            kind = self._source_label(message.source)
            self.events_in[kind] = self.events_in.get(kind, 0) + 1
        return result

    def _source_label(self, source: str | None) -> str:
        """``http``, ``python`` (published in-process) or the source's kind: a bounded label."""
        if source is None:
            return "python"
        kind = source.partition(":")[0]
        if kind in self.events_in or len(self.events_in) < _MAX_SOURCE_LABELS:
            return kind
        return "other"

    # --- admitting callers

    async def authenticate(self, authorization: str | None) -> Principal:
        return await self.verifier.verify(bearer_token(authorization))

    async def authenticate_publisher(self, authorization: str | None) -> Principal:
        principal = await self.authenticate(authorization)
        if not principal.publisher:
            raise PermissionDenied("publishing needs a token with the 'publisher' role")
        return principal

    async def admit_stream(
        self,
        *,
        authorization: str | None,
        stream_token: str | None,
        subscribe: str | None,
        client_ip: str | None = None,
        forwarded_for: str | None = None,
    ) -> StreamGrant:
        """Check a stream request against the limits, its credentials and its
        subscriptions; raises a :class:`HeraldError` saying which refused it.

        Cheapest first: shutting down, the node's capacity, the client IP's
        connect rate (before any token is verified), credentials, the user's
        connect rate, the subscriptions' authorization, the stream token's
        lease, and the user's open streams across the cluster. A stream token's
        lease is taken here and given back when the stream closes (or at once,
        if opening fails after this).
        """
        try:
            if not self.manager.accepting:
                raise ServerOverload("the gateway is shutting down", retry_after=1, fallback="retry")
            self._check_capacity()
            now = time.monotonic()
            ip = client_address(client_ip, forwarded_for, self._trusted_proxies)
            if ip is not None:
                self._take_connect_token(self._ip_rate, ip, now, "ip")
            self._admitting += 1
            try:
                grant = await self._admit(authorization, stream_token, subscribe, now)
            finally:
                self._admitting -= 1
            return dataclasses.replace(grant, client_ip=ip)
        except HeraldError as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            raise

    async def _admit(
        self, authorization: str | None, stream_token: str | None, subscribe: str | None, now: float
    ) -> StreamGrant:
        if stream_token is not None and authorization is not None:
            raise AuthError("send either an Authorization header or ?token=, not both")
        if stream_token is not None:
            principal = self.stream_tokens.verify(stream_token)
        else:
            principal = await self.authenticate(authorization)
        self._take_connect_token(self._user_rate, principal.user_id, now, "user")
        subscriptions = await self._authorize(principal, parse_subscriptions(subscribe))
        if principal.stream_token_id is not None:
            await self.stream_tokens.acquire(principal)
        lease_id = new_lease_id(time.time())
        user = principal.user_id
        try:
            user_connections: int | None = await self.connection_counts.acquire(user, lease_id)
        except BusUnavailable as exc:
            # Counting serves the per-user limit; while Redis is away the stream is
            # admitted and the lease is counted when the renewal next reaches Redis.
            log.warning("connection_count_unavailable", user_id=user, reason=exc.message)
            user_connections = None
        limit = self.settings.max_connections_per_user
        evict: tuple[str, ...] = ()
        if user_connections is not None and 0 < limit < user_connections:
            try:
                leases = await self.connection_counts.leases(user)
            except BusUnavailable:
                leases = []  # cannot tell who is oldest: admit, as when uncounted
            decision = connection_limit(
                leases, lease_id, limit=limit, policy=self.settings.connection_limit_policy
            )
            evict = decision.evict if leases else ()
            if leases and not decision.admit:
                await self.abandon(StreamGrant(principal, subscriptions, lease_id))
                raise ConnectionLimitExceeded(
                    f"this user has {limit} open streams, the most allowed",
                    retry_after=5,
                    limit=limit,
                )
        return StreamGrant(principal, subscriptions, lease_id, user_connections, evict)

    def _check_capacity(self) -> None:
        max_clients = self.settings.max_clients
        if max_clients and len(self.manager) + self._admitting >= max_clients:
            raise ServerOverload(
                "this node holds as many streams as it may; retry later or poll",
                retry_after=random.randint(*_OVERLOAD_RETRY_AFTER),  # noqa: S311 - jitter
                fallback="polling",
            )

    @staticmethod
    def _take_connect_token(limiter: RateLimiter, key: str, now: float, what: str) -> None:
        take = limiter.take(key, now)
        if not take.allowed:
            raise RateLimited(
                f"too many streams opened for this {'client IP' if what == 'ip' else what}; slow down",
                retry_after=max(1, math.ceil(take.retry_after)),
                limit=what,
            )

    async def _authorize(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        """All of ``keys``, or :class:`PermissionDenied` naming those not granted."""
        if not keys:
            return frozenset()
        granted = await self.authorizer.granted(principal, keys)
        refused = [key for key in keys if key not in granted]
        if refused:
            raise PermissionDenied("these resources are not granted", refused=refused[:MAX_SUBSCRIPTIONS])
        return frozenset(keys)

    async def abandon(self, grant: StreamGrant) -> None:
        """Undo :meth:`admit_stream` for a stream that never opened."""
        if grant.principal.stream_token_id is not None:
            await self.stream_tokens.leases.release(grant.principal.stream_token_id)
        if grant.lease_id:
            await self.connection_counts.release(grant.principal.user_id, grant.lease_id, ABANDONED)

    def register_stream(self, sink: Sink, grant: StreamGrant) -> Connection:
        principal = grant.principal
        conn = self.manager.register(
            sink,
            user_id=principal.user_id,
            session_id=principal.session_id,
            subscriptions=grant.subscriptions,
            expires_at=principal.expires_at,
        )
        if principal.stream_token_id is not None:
            self._stream_token_of[conn.id] = principal.stream_token_id
        if grant.lease_id:
            self._lease_of[conn.id] = (principal.user_id, grant.lease_id)
            self._conn_of_lease[grant.lease_id] = conn
        if grant.evict:
            self._evict(principal.user_id, grant.evict)
        return conn

    # --- the per-user limit: eviction

    def _evict(self, user_id: str, leases: Sequence[str]) -> None:
        """Close the user's streams holding ``leases``: here, or through the node holding them."""
        remote = []
        for lease in leases:
            conn = self._conn_of_lease.get(lease)
            if conn is not None:
                self._close_evicted(conn)
            else:
                remote.append(lease)
        if remote:
            # Uncount them now, so the next admission does not see them; their node
            # closes them on the command (and releases again: idempotent).
            for lease in remote:
                self._in_background(self.connection_counts.release(user_id, lease, CloseReason.EVICTED))
            self._in_background(self.control.tell({"op": "evict", "user_id": user_id, "leases": remote}))

    def _close_evicted(self, conn: Connection) -> None:
        log.info("sse_connection_evicted", connection_id=conn.id, user_id=conn.user_id)
        self.manager.close(conn, CloseReason.EVICTED, frames.evicted(self.settings.max_connections_per_user))

    # --- subscriptions of a live stream

    async def change_subscriptions(
        self,
        *,
        authorization: str | None,
        connection_id: str,
        add: Sequence[str],
        remove: Sequence[str],
    ) -> SubscriptionChange:
        """Add and remove resource subscriptions on a live stream of the caller's.

        Keys are checked here (the node that got the request): malformed ones are
        refused ``SUBSCRIPTION_INVALID``, those the authorizer does not grant
        ``PERMISSION_DENIED``. The rest is applied by the node holding the stream,
        whichever it is. :class:`ConnectionNotFound` when no node holds a stream
        of this user with this id.
        """
        principal = await self.authenticate(authorization)
        refused: list[dict[str, str]] = []
        to_add = self._valid_keys(add, refused)
        to_remove = self._valid_keys(remove, refused)
        both = set(to_add) & set(to_remove)
        for key in sorted(both):
            refused.append(_refusal(key, SubscriptionInvalid("a key cannot be both added and removed")))
        to_add = [key for key in to_add if key not in both]
        to_remove = [key for key in to_remove if key not in both]
        if to_add:
            granted = await self.authorizer.granted(principal, to_add)
            for key in to_add:
                if key not in granted:
                    refused.append(_refusal(key, PermissionDenied("this resource is not granted")))
            to_add = [key for key in to_add if key in granted]
        command: Command = {
            "op": "subscriptions",
            "connection_id": connection_id,
            "user_id": principal.user_id,
            "add": to_add,
            "remove": to_remove,
        }
        answer = self._apply_subscriptions(command)
        if answer is None:
            answer = await self.control.ask(command, _ASK_TIMEOUT)
        if answer is None:
            raise ConnectionNotFound("no open stream of yours has this connection id")
        refused.extend(answer.get("refused", []))
        self.subscriptions_refused += len(refused)
        return SubscriptionChange(
            connection_id=connection_id,
            subscriptions=list(answer["subscriptions"]),
            added=list(answer["added"]),
            removed=list(answer["removed"]),
            refused=refused,
            live_from=str(answer["live_from"]),
        )

    @staticmethod
    def _valid_keys(keys: Sequence[str], refused: list[dict[str, str]]) -> list[str]:
        valid: list[str] = []
        for key in keys:
            try:
                check_resource_key(key)
            except SubscriptionInvalid as exc:
                refused.append(_refusal(key, exc))
                continue
            if key not in valid:
                valid.append(key)
        return valid

    def _apply_subscriptions(self, command: Command) -> Answer | None:
        """Apply a subscription change to a stream of this node; ``None`` if it has none such."""
        conn = self.manager.index.all.get(str(command["connection_id"]))
        if conn is None or conn.closed or conn.user_id != command["user_id"]:
            return None
        add = [str(key) for key in command["add"]]
        refused: list[dict[str, str]] = []
        room = MAX_SUBSCRIPTIONS - len(conn.subscriptions)
        fresh = [key for key in add if key not in conn.subscriptions]
        if len(fresh) > room:
            too_many = SubscriptionInvalid(f"at most {MAX_SUBSCRIPTIONS} subscriptions per stream")
            refused = [_refusal(key, too_many) for key in fresh[max(0, room) :]]
            add = [key for key in add if key not in set(fresh[max(0, room) :])]
        added, removed, position = self.manager.change_subscriptions(
            conn, add, [str(key) for key in command["remove"]]
        )
        log.info(
            "sse_subscriptions_changed",
            connection_id=conn.id,
            user_id=conn.user_id,
            added=added,
            removed=removed,
            refused=len(refused),
        )
        return {
            "subscriptions": sorted(conn.subscriptions),
            "added": added,
            "removed": removed,
            "live_from": str(position),
            "refused": refused,
        }

    async def _on_command(self, command: Command) -> Answer | None:
        """A command from another node (:mod:`herald.cluster.control`)."""
        op = command.get("op")
        if op == "evict":
            for lease in command.get("leases", []):
                conn = self._conn_of_lease.get(str(lease))
                if conn is not None and conn.user_id == command.get("user_id"):
                    self._close_evicted(conn)
            return None
        if op == "subscriptions":
            return self._apply_subscriptions(command)
        return None

    def _release_stream_token(self, conn: Connection) -> None:
        token_id = self._stream_token_of.pop(conn.id, None)
        if token_id is not None:
            self._in_background(self.stream_tokens.leases.release(token_id))

    def _release_connection_lease(self, conn: Connection) -> None:
        lease = self._lease_of.pop(conn.id, None)
        if lease is not None:
            self._conn_of_lease.pop(lease[1], None)
            reason = conn.close_reason or CloseReason.CLIENT_GONE
            self._in_background(self.connection_counts.release(*lease, reason))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _on_bus_discontinuity(self, reason: str) -> None:
        """The bus cannot promise this node's streams every record (Redis lost the log, or
        trimmed records this node never read): close them, with a spread ``retry``, so
        every client reconnects and learns ``recovered: false`` rather than miss events
        silently."""
        # Positions of the old log mean nothing in the new one: heartbeats and new
        # streams must hand out the bus's new position, or clients would reconnect
        # with a dead cursor and be told recovered:false a second time.
        self.manager.reset_position(self.bus.head)
        conns = list(self.manager.index.all.values())
        log.warning("bus_discontinuity_streams_closed", reason=reason, connections=len(conns))
        for conn in conns:
            self.manager.send_away(conn, CloseReason.BUS_RESET)

    # --- presence

    async def presence(self, user_id: str) -> Presence:
        """Whether ``user_id`` has a stream open anywhere in the cluster (and, with
        lifecycle events on, since when they are announced present)."""
        if not _possible_user_id(user_id):
            return Presence(user_id, 0)  # no stream can have it: nothing to ask Redis
        return await self.connection_counts.presence(user_id)

    # --- health

    def health(self) -> dict[str, Any]:
        healthy = self.bus.healthy()
        return {
            "status": "ok" if healthy else "degraded",
            "connections": len(self.manager),
            "users": self.manager.index.users(),
            "position": str(self.manager.position),
            "bus": {"backend": self.settings.bus, "healthy": healthy},
            "accepting": self.manager.accepting,
            "sources": {source.name: source.stats.as_dict() for source in self.sources},
            "throttle": {**self.throttle.stats.as_dict(), "holding": self.throttle.holding()},
        }

    def readiness(self) -> dict[str, Any]:
        """Whether this node should get new streams: accepting, and every configured
        backend answering. Liveness is only whether the process answers at all."""
        backends = self._backends_up()
        ready = self.manager.accepting and all(backends.values())
        return {"ready": ready, "accepting": self.manager.accepting, "backends": backends}

    def _backends_up(self) -> dict[str, bool]:
        backends = {f"bus:{self.settings.bus}": self.bus.healthy()}
        if self.settings.bus == "redis":
            backends["node_control"] = self.control.healthy()
        for source in self.sources:
            up = _source_up(source)
            if up is not None:
                backends[f"source:{source.name}"] = up
        return backends

    def readings(self) -> Readings:
        """This node's numbers for a metrics scrape."""
        manager = self.manager
        stats = manager.stats
        lag: dict[str, float] = {}
        for source in self.sources:
            behind = getattr(source.stats, "lag", None)
            if isinstance(behind, int | float):
                lag[source.name] = float(behind)
        return Readings(
            connections=len(manager),
            users=manager.index.users(),
            backlogged=stats.backlogged,
            opened=stats.opened,
            closed=dict(stats.closed),
            refused=dict(self.refused),
            events_in=dict(self.events_in),
            dispatched=stats.dispatched,
            delivered=manager.delivered(),
            dropped=list(stats.dropped_by_priority),
            coalesced=list(stats.coalesced_by_priority),
            replay_hits=stats.replay_hits,
            replay_misses=dict(stats.replay_miss_reasons),
            replay_sizes=stats.replay_sizes,
            write_latency=stats.write_latency,
            subscriptions_added=stats.subscriptions_added,
            subscriptions_removed=stats.subscriptions_removed,
            subscriptions_refused=self.subscriptions_refused,
            sources={source.name: source.stats.as_dict() for source in self.sources},
            source_lag=lag,
            backends=self._backends_up(),
            accepting=manager.accepting,
        )


def build_authorizer(settings: Settings) -> ResourceAuthorizer:
    if settings.authorizer == "http":
        assert settings.authorizer_url is not None  # the settings refuse http without a URL
        return HttpAuthorizer(
            settings.authorizer_url,
            token=settings.authorizer_token,
            cache_seconds=settings.authorizer_cache_seconds,
            timeout_seconds=settings.authorizer_timeout_seconds,
        )
    return ClaimsAuthorizer()


def _source_up(source: object) -> bool | None:
    """Whether a source is connected, as it reports it: ``healthy()``, or the event it sets
    while connected (``subscribed``, ``listening``, ``ready``); ``None`` if it does not say."""
    healthy = getattr(source, "healthy", None)
    if callable(healthy):
        return bool(healthy())
    for name in ("subscribed", "listening", "ready"):
        flag = getattr(source, name, None)
        if isinstance(flag, asyncio.Event):
            return flag.is_set()
    return None


def _possible_user_id(user_id: str) -> bool:
    """A routing key, in valid Unicode (a lone surrogate has no UTF-8 to send Redis)."""
    try:
        user_id.encode()
    except UnicodeEncodeError:
        return False
    return ROUTING_KEY.fullmatch(user_id) is not None


def _refusal(key: str, error: HeraldError) -> dict[str, str]:
    return {"key": key[:80], "code": error.code, "message": error.message}
