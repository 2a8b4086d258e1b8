"""The gateway: one bus, one manager, the credentials that admit callers, and the
publish path. Everything a front end (the standalone server, or an ASGI app
embedding Herald) needs, with no web framework in sight.

:class:`Gateway` builds this node's parts from the settings, starts and stops
them in order, and wires them together; the work itself is done by the parts
(the package's other modules), and its methods hand each call to the one that
owns it, so that the front ends need to know only the gateway."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import structlog

from herald.auth.authorizers import ClaimsAuthorizer, ResourceAuthorizer
from herald.auth.principal import Principal
from herald.auth.revocations import Revocation
from herald.auth.stream_tokens import StreamTokens, stream_key
from herald.auth.tokens import TokenVerifier
from herald.backends import build_backends, build_deep_replay, build_sources, node_name
from herald.bus.base import AppendResult, EventBus
from herald.bus.throttle import Offered, Throttle
from herald.cluster.control import Answer, Command, NodeControl, SingleNodeControl
from herald.cluster.counting import Presence
from herald.cluster.keys import Keyspace
from herald.cluster.redis_control import RedisNodeControl
from herald.config import Settings
from herald.errors import HeraldError
from herald.events.message import SSEMessage
from herald.gateway.admission import Admission, StreamGrant, build_authorizer
from herald.gateway.canary import CanarySender, CanaryWatcher, carriers_of
from herald.gateway.console import AdminConsole
from herald.gateway.grants import GrantRecheck
from herald.gateway.health import NodeHealth
from herald.gateway.publishing import Publishing
from herald.gateway.revocation import RevocationEnforcer, revocation_from_request
from herald.gateway.streams import OpenStreams
from herald.gateway.subscriptions import LiveSubscriptions, SubscriptionChange
from herald.manager.connection import Connection
from herald.manager.manager import ConnectionManager
from herald.manager.sink import Sink
from herald.obs.metrics import Readings
from herald.obs.tracing import Tracing, from_environment
from herald.sources.incoming import OfferItem

log = structlog.get_logger("herald.gateway")


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
        self._redis = backends.closing
        self.connection_counts = backends.connection_counter
        self.manager = ConnectionManager(
            self.bus,
            heartbeat_seconds=settings.heartbeat_seconds,
            retry_ms=settings.retry_ms,
            retry_spread_ms=settings.shutdown_retry_spread_ms,
            slow_consumer_bytes=settings.slow_consumer_bytes,
            expiring_seconds=settings.auth_expiring_seconds,
        )
        self.verifier = TokenVerifier(settings)
        self.stream_tokens = StreamTokens(
            stream_key(settings.stream_token_secret, settings.jwt_secret),
            backends.stream_token_leases,
            ttl_seconds=settings.stream_token_ttl_seconds,
        )
        self.publishing = Publishing(settings, self.bus)
        self.sources, self._source_redis = build_sources(
            settings, self.publishing.publish, self.node, self.publishing.offer, self.publishing.offer_many
        )
        self.manager.deep_replay = build_deep_replay(settings, self.node)
        self.authorizer: ResourceAuthorizer = authorizer or build_authorizer(settings)
        self.control: NodeControl = (
            RedisNodeControl(backends.redis, Keyspace(settings.redis_prefix), self.node)
            if backends.redis is not None
            else SingleNodeControl()
        )
        self.admission = Admission(
            settings,
            self.manager,
            self.verifier,
            self.stream_tokens,
            self.connection_counts,
            self.authorizer,
            cluster_rates=backends.connect_rates,
            revocations=backends.revocations,
        )
        self.revocation = RevocationEnforcer(self.manager, backends.revocations)
        self.open_streams = OpenStreams(
            settings, self.bus, self.manager, self.stream_tokens, self.connection_counts, self.control
        )
        self.live_subscriptions = LiveSubscriptions(
            self.manager,
            self.authorizer,
            self.control,
            self.admission.authenticate,
            self.admission.grant_revoked,
        )
        #: Canaries (D32): this node's writes into its sources, and their arrivals on its bus.
        self.canary_watcher: CanaryWatcher | None = None
        self.canary_sender: CanarySender | None = None
        if settings.canary_interval_seconds > 0:
            self.canary_watcher = CanaryWatcher(self.bus)
            self.canary_sender = CanarySender(
                carriers_of(self.sources),
                self.canary_watcher,
                node=self.node,
                interval=settings.canary_interval_seconds,
            )
        self.node_health = NodeHealth(
            settings,
            self.bus,
            self.manager,
            self.control,
            self.sources,
            self.publishing,
            self.admission,
            self.live_subscriptions,
            self.canary_watcher,
        )
        self._drain_window = settings.drain_window_seconds
        #: Spans over OTLP when an OTEL_ endpoint is set (D30); made at start.
        self.tracing: Tracing | None = None
        #: The admin console's view of the cluster and its actions (D31).
        self.console = AdminConsole(
            node=self.node,
            bus=self.bus,
            manager=self.manager,
            control=self.control,
            publishing=self.publishing,
            health=self.node_health,
            drain=self.drain_now,
        )
        #: Grants asked again on open streams, where the authorizer can change its mind.
        self.grants: GrantRecheck | None = None
        if settings.authorizer_recheck_seconds > 0 and not isinstance(self.authorizer, ClaimsAuthorizer):
            self.grants = GrantRecheck(self.manager, self.authorizer, settings.authorizer_recheck_seconds)
            self.manager.on_close.append(self.grants.forget)
        self.manager.on_close.append(self.open_streams.release_stream_token)
        self.manager.on_close.append(self.open_streams.release_connection_lease)
        if backends.bus_discontinuity is not None:
            backends.bus_discontinuity.append(self.open_streams.on_bus_discontinuity)
        if backends.channels_lost is not None:
            backends.channels_lost.append(self.open_streams.on_channels_lost)

    async def start(self) -> None:
        # Made here, in the process that serves (a worker makes its own): its export thread.
        self.tracing = from_environment(self.node)
        self.publishing.tracing = self.manager.tracing = self.tracing
        await self.bus.start()
        await self.connection_counts.start()
        await self.manager.start()
        await self.control.start(self._on_command)
        await self.console.start()
        await self.revocation.start()
        if self.grants is not None:
            self.grants.start()
        if self.canary_watcher is not None:
            await self.canary_watcher.start()
        for source in self.sources:
            await source.start()
        if self.canary_sender is not None:
            await self.canary_sender.start()

    async def stop(self) -> None:
        if self.canary_sender is not None:
            await self.canary_sender.stop()
        # Held events go to the bus first, so sources then commit past them.
        await self.flush_held()
        for source in self.sources:
            await source.stop()
        if self.grants is not None:
            await self.grants.stop()
        if self.canary_watcher is not None:
            await self.canary_watcher.stop()
        await self.manager.stop()
        await self.console.stop()
        await self.revocation.stop()
        await self.control.stop()
        await self.bus.stop()
        await self.authorizer.aclose()
        await self.open_streams.settle()
        await self.connection_counts.stop()
        if self._source_redis is not None:
            await self._source_redis.aclose()
        for redis in self._redis:
            await redis.aclose()
        if self.tracing is not None:
            tracing, self.tracing = self.tracing, None
            self.publishing.tracing = self.manager.tracing = None
            await asyncio.to_thread(tracing.shutdown)  # exports what is buffered

    # --- publishing (publishing.py)

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        """:meth:`Publishing.publish`: append ``message``; a cursor, or an error."""
        return await self.publishing.publish(message, idempotency_key=idempotency_key)

    async def offer(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        """:meth:`Publishing.offer`: returns once ``message`` is in the bus, or held."""
        return await self.publishing.offer(message, idempotency_key=idempotency_key)

    async def publish_batch(self, items: Sequence[OfferItem]) -> list[AppendResult | HeraldError]:
        """:meth:`Publishing.publish_batch`: several events in order, one answer each."""
        return await self.publishing.publish_batch(items)

    async def offer_many(self, items: Sequence[OfferItem]) -> list[Offered | HeraldError]:
        """:meth:`Publishing.offer_many`: several events in order, each in the bus or held."""
        return await self.publishing.offer_many(items)

    async def flush_held(self) -> None:
        """:meth:`Publishing.flush_held`: append every event the throttle holds now."""
        await self.publishing.flush_held()

    @property
    def throttle(self) -> Throttle:
        """Events with a coalesce key pass here before the bus: at most one per key per interval."""
        return self.publishing.throttle

    @property
    def events_in(self) -> dict[str, int]:
        """Events appended through this node, by source label."""
        return self.publishing.events_in

    # --- admitting callers (admission.py)

    async def authenticate(self, authorization: str | None) -> Principal:
        return await self.admission.authenticate(authorization)

    async def authenticate_publisher(self, authorization: str | None) -> Principal:
        return await self.admission.authenticate_publisher(authorization)

    async def admit_stream(
        self,
        *,
        authorization: str | None,
        stream_token: str | None,
        subscribe: str | None,
        client_ip: str | None = None,
        forwarded_for: str | None = None,
    ) -> StreamGrant:
        """:meth:`Admission.admit_stream`: the limits, credentials and subscriptions of a
        stream request; raises a :class:`HeraldError` saying which refused it."""
        return await self.admission.admit_stream(
            authorization=authorization,
            stream_token=stream_token,
            subscribe=subscribe,
            client_ip=client_ip,
            forwarded_for=forwarded_for,
        )

    async def abandon(self, grant: StreamGrant) -> None:
        """Undo :meth:`admit_stream` for a stream that never opened."""
        await self.admission.abandon(grant)

    @property
    def refused(self) -> dict[str, int]:
        """Admission refusals by error code."""
        return self.admission.refused

    # --- open streams (streams.py)

    def register_stream(self, sink: Sink, grant: StreamGrant, *, trace: bool = False) -> Connection:
        """``trace``: the stream asked for each event's trace id in its data (``?trace=1``)."""
        conn = self.open_streams.register(sink, grant, trace=trace)
        self.revocation.remember(conn, grant.principal)
        if self.grants is not None:
            self.grants.remember(conn, grant.principal)
        return conn

    async def presence(self, user_id: str) -> Presence:
        """Whether ``user_id`` has a stream open anywhere in the cluster (:meth:`OpenStreams.presence`)."""
        return await self.open_streams.presence(user_id)

    # --- revocations (revocation.py)

    async def authenticate_admin(self, authorization: str | None) -> Principal:
        return await self.admission.authenticate_admin(authorization)

    async def revoke(
        self,
        *,
        authorization: str | None,
        user: str | None = None,
        jti: str | None = None,
        resource: str | None = None,
        issued_before: datetime | None = None,
    ) -> Revocation:
        """Revoke tokens or a grant (:mod:`herald.gateway.revocation`) for an admin caller;
        the matching streams on every node end."""
        admin = await self.authenticate_admin(authorization)
        revocation = revocation_from_request(
            user=user,
            jti=jti,
            resource=resource,
            issued_before=issued_before,
            ttl_seconds=self.settings.revocation_ttl_seconds,
            now=time.time(),
        )
        await self.revocation.revoke(revocation, by=admin.user_id)
        return revocation

    # --- draining (ConnectionManager.drain)

    async def drain(self, *, authorization: str | None, window_seconds: float | None = None) -> float:
        """For an admin caller: turn unready and move this node's streams off (see
        :meth:`drain_now`); the window it runs with."""
        admin = await self.authenticate_admin(authorization)
        window = self.drain_now(window_seconds)
        log.warning("drain_requested", by=admin.user_id, window_s=window)
        return window

    def drain_now(self, window_seconds: float | None = None) -> float:
        """Admit no new stream and move the open ones to the other nodes over the window
        (``DRAIN_WINDOW_SECONDS`` by default); SIGUSR1 does this too."""
        window = window_seconds or self.settings.drain_window_seconds
        if self.manager.draining_since is None:
            self._drain_window = window
        self.manager.drain(self._drain_window)
        return self._drain_window

    # --- subscriptions of a live stream (subscriptions.py)

    async def change_subscriptions(
        self,
        *,
        authorization: str | None,
        connection_id: str,
        add: Sequence[str],
        remove: Sequence[str],
    ) -> SubscriptionChange:
        """:meth:`LiveSubscriptions.change`: add and remove resource subscriptions on a
        live stream of the caller's, on whichever node holds it."""
        return await self.live_subscriptions.change(
            authorization=authorization, connection_id=connection_id, add=add, remove=remove
        )

    @property
    def subscriptions_refused(self) -> int:
        return self.live_subscriptions.refused

    # --- health (health.py)

    def health(self) -> dict[str, Any]:
        return self.node_health.health()

    def readiness(self) -> dict[str, Any]:
        """Whether this node should get new streams (:meth:`NodeHealth.readiness`)."""
        return self.node_health.readiness()

    def readings(self) -> Readings:
        """This node's numbers for a metrics scrape."""
        return self.node_health.readings()

    # --- what the other nodes tell this one

    async def _on_command(self, command: Command) -> Answer | None:
        """A command from another node (:mod:`herald.cluster.control`)."""
        op = command.get("op")
        if op == "evict":
            self.open_streams.on_evict(command)
            return None
        if op == "subscriptions":
            return await self.live_subscriptions.apply(command)
        if isinstance(op, str) and op.startswith("admin."):
            return await self.console.on_command(command)
        return None
