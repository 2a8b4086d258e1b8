"""Admitting callers: their credentials, and whether a stream request may open.

A stream request passes every check here before the manager registers it,
cheapest first, so that a flood is refused before it costs a token verification
or a Redis round trip. What admission takes (a stream token's lease, a place in
the user's count across the cluster) is in the :class:`StreamGrant`, so that
:meth:`Admission.abandon` can give it back when the stream never opens. The
refusals are counted by error code (``herald_connections_refused``)."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from herald.auth.authorizers import ClaimsAuthorizer, HttpAuthorizer, ResourceAuthorizer
from herald.auth.grants import MAX_SUBSCRIPTIONS, parse_subscriptions
from herald.auth.principal import Principal
from herald.auth.revocations import MemoryRevocations, Revocations
from herald.auth.stream_tokens import StreamTokens
from herald.auth.tokens import TokenVerifier, bearer_token
from herald.cluster.counting import ConnectionCounter
from herald.config import Settings
from herald.errors import (
    AuthError,
    BusUnavailable,
    ConnectionLimitExceeded,
    HeraldError,
    PermissionDenied,
    RateLimited,
    ServerOverload,
)
from herald.lifecycle.events import ABANDONED
from herald.manager.limits import (
    RateLimiter,
    client_address,
    connection_limit,
    new_lease_id,
    trusted_networks,
)
from herald.manager.manager import ConnectionManager

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


#: Seconds a refused client is told to wait when the node is full: spread, so the
#: clients refused together do not come back together.
_OVERLOAD_RETRY_AFTER = (5, 15)


class ClusterRates(Protocol):
    """Connect-rate buckets shared by the cluster (:class:`herald.cluster.redis_rates.RedisConnectRates`)."""

    async def take(self, kind: str, key: str, *, rate: float, burst: float) -> float: ...


class Admission:
    def __init__(
        self,
        settings: Settings,
        manager: ConnectionManager,
        verifier: TokenVerifier,
        stream_tokens: StreamTokens,
        connection_counts: ConnectionCounter,
        authorizer: ResourceAuthorizer,
        cluster_rates: ClusterRates | None = None,
        revocations: Revocations | None = None,
    ) -> None:
        """``cluster_rates``: the cluster's connect-rate buckets (the Redis bus), asked when
        this node's own bucket allows a connect. ``revocations``: tokens and grants revoked."""
        self._cluster_rates = cluster_rates
        self._revocations: Revocations = revocations or MemoryRevocations()
        self._settings = settings
        self._manager = manager
        self._verifier = verifier
        self._stream_tokens = stream_tokens
        self._connection_counts = connection_counts
        self._authorizer = authorizer
        self._user_rate = RateLimiter(settings.connect_rate_per_user, settings.connect_burst_per_user)
        self._ip_rate = RateLimiter(settings.connect_rate_per_ip, settings.connect_burst_per_ip)
        self._trusted_proxies = trusted_networks(settings.trusted_proxies)
        #: Stream requests between the start of admission and registration.
        self._admitting = 0
        #: Admission refusals by error code.
        self.refused: dict[str, int] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal of a bearer JWT that is valid and not revoked."""
        principal = await self._verifier.verify(bearer_token(authorization))
        self._revocations.check(principal)
        return principal

    async def authenticate_publisher(self, authorization: str | None) -> Principal:
        principal = await self.authenticate(authorization)
        if not principal.publisher:
            raise PermissionDenied("publishing needs a token with the 'publisher' role")
        return principal

    async def authenticate_admin(self, authorization: str | None) -> Principal:
        principal = await self.authenticate(authorization)
        if not principal.admin:
            raise PermissionDenied("the admin API needs a token with the 'admin' role")
        return principal

    def revocations_healthy(self) -> bool:
        """Whether this node knows what is revoked (on the Redis bus: has read it)."""
        return self._revocations.healthy()

    def grant_revoked(self, principal: Principal, resource: str) -> bool:
        """Whether ``resource``'s grant was revoked for the token behind ``principal`` (its
        token itself was checked when it was authenticated)."""
        return self._revocations.grant_revoked(principal, resource)

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
            if not self._manager.accepting:
                why = "is being drained" if self._manager.draining_since is not None else "is shutting down"
                raise ServerOverload(
                    f"this node {why}; retry: another takes the stream", retry_after=1, fallback="retry"
                )
            self._check_capacity()
            now = time.monotonic()
            ip = client_address(client_ip, forwarded_for, self._trusted_proxies)
            if ip is not None:
                await self._take_connect_token(self._ip_rate, ip, now, "ip")
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
            principal = self._stream_tokens.verify(stream_token)
            self._revocations.check(principal)
        else:
            principal = await self.authenticate(authorization)
        await self._take_connect_token(self._user_rate, principal.user_id, now, "user")
        subscriptions = await self._authorize(principal, parse_subscriptions(subscribe))
        if principal.stream_token_id is not None:
            await self._stream_tokens.acquire(principal)
        lease_id = new_lease_id(time.time())
        user = principal.user_id
        try:
            user_connections: int | None = await self._connection_counts.acquire(user, lease_id)
        except BusUnavailable as exc:
            # Counting serves the per-user limit; while Redis is away the stream is
            # admitted and the lease is counted when the renewal next reaches Redis.
            log.warning("connection_count_unavailable", user_id=user, reason=exc.message)
            user_connections = None
        limit = self._settings.max_connections_per_user
        evict: tuple[str, ...] = ()
        if user_connections is not None and 0 < limit < user_connections:
            try:
                leases = await self._connection_counts.leases(user)
            except BusUnavailable:
                leases = []  # cannot tell who is oldest: admit, as when uncounted
            decision = connection_limit(
                leases, lease_id, limit=limit, policy=self._settings.connection_limit_policy
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
        max_clients = self._settings.max_clients
        if max_clients and len(self._manager) + self._admitting >= max_clients:
            raise ServerOverload(
                "this node holds as many streams as it may; retry later or poll",
                retry_after=random.randint(*_OVERLOAD_RETRY_AFTER),  # noqa: S311 - jitter
                fallback="polling",
            )

    async def _take_connect_token(self, limiter: RateLimiter, key: str, now: float, what: str) -> None:
        """This node's bucket first (a flood on one node is cut without a round trip), then
        the cluster's; while the cluster's cannot answer, this node's decides."""
        take = limiter.take(key, now)
        wait = take.retry_after
        if take.allowed and limiter.enabled and self._cluster_rates is not None:
            try:
                wait = await self._cluster_rates.take(what, key, rate=limiter.rate, burst=limiter.burst)
            except BusUnavailable:
                wait = 0.0
        if not take.allowed or wait > 0:
            raise RateLimited(
                f"too many streams opened for this {'client IP' if what == 'ip' else what}; slow down",
                retry_after=max(1, math.ceil(wait)),
                limit=what,
            )

    async def _authorize(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        """All of ``keys``, or :class:`PermissionDenied` naming those not granted."""
        if not keys:
            return frozenset()
        self._revocations.check(principal, keys)
        granted = await self._authorizer.granted(principal, keys)
        refused = [key for key in keys if key not in granted]
        if refused:
            raise PermissionDenied("these resources are not granted", refused=refused[:MAX_SUBSCRIPTIONS])
        return frozenset(keys)

    async def abandon(self, grant: StreamGrant) -> None:
        """Undo :meth:`admit_stream` for a stream that never opened."""
        if grant.principal.stream_token_id is not None:
            await self._stream_tokens.leases.release(grant.principal.user_id, grant.principal.stream_token_id)
        if grant.lease_id:
            await self._connection_counts.release(grant.principal.user_id, grant.lease_id, ABANDONED)


def build_authorizer(settings: Settings) -> ResourceAuthorizer:
    """The authorizer the settings name (D18): the token's own claims, or an HTTP callback.
    Admission asks it, and so do subscription changes (:mod:`herald.gateway.subscriptions`)."""
    if settings.authorizer == "http":
        assert settings.authorizer_url is not None  # the settings refuse http without a URL
        return HttpAuthorizer(
            settings.authorizer_url,
            token=settings.authorizer_token,
            cache_seconds=settings.authorizer_cache_seconds,
            timeout_seconds=settings.authorizer_timeout_seconds,
        )
    return ClaimsAuthorizer()
