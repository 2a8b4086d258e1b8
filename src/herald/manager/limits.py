"""What keeps one greedy client from taking the node: connect-rate buckets and the
per-user connection limit. The arithmetic is pure; :class:`RateLimiter` only
keeps the buckets of the keys it has seen, and forgets the full ones.

Token bucket
    A key (a user, a client IP) holds up to ``burst`` tokens, refilled at
    ``rate`` per second; each connect takes one. An empty bucket refuses, and
    says how long until the next token: the ``Retry-After`` of the 429.

Per-user connection limit
    Leases (one per open stream, :mod:`herald.cluster.counting`) are named so
    that they sort by opening time. Over the limit, the newest ``limit``
    leases are the ones that stay: policy ``refuse`` turns the new stream away
    unless it is among them; ``evict_oldest`` closes the older ones instead.
    Two streams admitted at the same moment on two nodes see the same order,
    so they agree on whom to refuse or evict.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LimitPolicy = Literal["refuse", "evict_oldest"]


# --- token buckets


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    #: When ``tokens`` was last brought up to date (monotonic seconds).
    at: float


@dataclass(frozen=True, slots=True)
class Take:
    allowed: bool
    bucket: Bucket
    #: Seconds until a token is available again (0 when allowed).
    retry_after: float


def take_token(bucket: Bucket | None, now: float, *, rate: float, burst: float) -> Take:
    """Take one token from ``bucket`` (``None``: a key never seen, so full) at ``now``."""
    tokens = burst if bucket is None else min(burst, bucket.tokens + max(0.0, now - bucket.at) * rate)
    if tokens >= 1.0:
        return Take(True, Bucket(tokens - 1.0, now), 0.0)
    wait = (1.0 - tokens) / rate if rate > 0 else math.inf
    return Take(False, Bucket(tokens, now), wait)


def is_full(bucket: Bucket, now: float, *, rate: float, burst: float) -> bool:
    """Whether the bucket has refilled: forgetting it then changes nothing."""
    return bucket.tokens + max(0.0, now - bucket.at) * rate >= burst


class RateLimiter:
    """Token buckets by key. ``rate <= 0`` turns the limiter off.

    Memory is bounded by the keys seen within one refill time: every
    ``sweep_every`` takes, buckets that have refilled are forgotten.
    """

    def __init__(self, rate: float, burst: float, *, sweep_every: int = 1024) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._buckets: dict[str, Bucket] = {}
        self._sweep_every = sweep_every
        self._takes = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float) -> Take:
        if not self.enabled:
            return Take(True, Bucket(self.burst, now), 0.0)
        result = take_token(self._buckets.get(key), now, rate=self.rate, burst=self.burst)
        self._buckets[key] = result.bucket
        self._takes += 1
        if self._takes >= self._sweep_every:
            self.sweep(now)
        return result

    def sweep(self, now: float) -> None:
        self._takes = 0
        full = [k for k, b in self._buckets.items() if is_full(b, now, rate=self.rate, burst=self.burst)]
        for key in full:
            del self._buckets[key]


# --- the per-user connection limit


def new_lease_id(now: float) -> str:
    """A lease name that sorts by opening time (milliseconds, fixed width), then at random."""
    return f"{int(now * 1000):014d}-{secrets.token_urlsafe(9)}"


@dataclass(frozen=True, slots=True)
class LimitDecision:
    admit: bool
    #: Leases to close to bring the user back within the limit (``evict_oldest``).
    evict: tuple[str, ...] = ()


def connection_limit(
    leases: Sequence[str], new_lease: str, *, limit: int, policy: LimitPolicy
) -> LimitDecision:
    """Who stays when a user opens ``new_lease`` beside ``leases`` (their live leases,
    with or without the new one). ``limit <= 0``: no limit."""
    ordered = sorted(set(leases) | {new_lease})
    if limit <= 0 or len(ordered) <= limit:
        return LimitDecision(True)
    if policy == "refuse":
        return LimitDecision(new_lease in ordered[:limit])
    older = tuple(lease for lease in ordered[:-limit] if lease != new_lease)
    return LimitDecision(new_lease in ordered[-limit:], older)


# --- whose connect is it


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(items: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in items)


def client_address(peer: str | None, forwarded_for: str | None, trusted: Sequence[Network]) -> str | None:
    """The client's address for per-IP limits.

    The peer itself, unless it is a trusted proxy: then ``X-Forwarded-For`` is
    read from the right (each proxy appends whom it heard from), skipping
    trusted proxies; the first address that is not one is the client. Entries
    left of it were written by the client and are never believed.
    """
    if peer is None or not trusted or not forwarded_for or not _within(peer, trusted):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not _within(hop, trusted):
            return hop
    return hops[0] if hops else peer


def _within(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
