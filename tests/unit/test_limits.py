"""The limits' pure policy: token-bucket arithmetic, who stays over the per-user
limit, and whose address a request is."""

from __future__ import annotations

import math

import pytest

from herald.manager.limits import (
    Bucket,
    RateLimiter,
    client_address,
    connection_limit,
    new_lease_id,
    take_token,
    trusted_networks,
)

# --- token buckets


@pytest.mark.parametrize(
    ("bucket", "now", "rate", "burst", "allowed", "tokens_after", "retry_after"),
    [
        # a key never seen starts full
        (None, 100.0, 1.0, 3, True, 2.0, 0.0),
        # one token left, no time passed
        (Bucket(1.0, 100.0), 100.0, 1.0, 3, True, 0.0, 0.0),
        # empty: the next token comes in 1/rate seconds
        (Bucket(0.0, 100.0), 100.0, 2.0, 3, False, 0.0, 0.5),
        # half a token refilled over 0.25 s at 2/s: still refused, 0.25 s more to wait
        (Bucket(0.0, 100.0), 100.25, 2.0, 3, False, 0.5, 0.25),
        # refilled to one whole token: allowed
        (Bucket(0.0, 100.0), 100.5, 2.0, 3, True, 0.0, 0.0),
        # refill never exceeds the burst
        (Bucket(1.0, 0.0), 1000.0, 5.0, 4, True, 3.0, 0.0),
        # a clock that steps back refills nothing and takes nothing extra
        (Bucket(2.0, 100.0), 90.0, 1.0, 3, True, 1.0, 0.0),
        # no refill at all: refused for ever
        (Bucket(0.0, 100.0), 200.0, 0.0, 3, False, 0.0, math.inf),
    ],
)
def test_take_token(
    bucket: Bucket | None,
    now: float,
    rate: float,
    burst: float,
    allowed: bool,
    tokens_after: float,
    retry_after: float,
) -> None:
    take = take_token(bucket, now, rate=rate, burst=burst)
    assert take.allowed is allowed
    assert take.bucket.tokens == pytest.approx(tokens_after)
    assert take.bucket.at == now
    assert take.retry_after == pytest.approx(retry_after)


def test_a_burst_then_the_refill_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=5)
    assert [limiter.take("u", 0.0).allowed for _ in range(6)] == [True] * 5 + [False]
    assert limiter.take("u", 0.4).allowed is False
    assert limiter.take("u", 0.5).allowed is True
    assert limiter.take("u", 0.5).allowed is False
    # Keys are independent.
    assert limiter.take("v", 0.5).allowed is True


def test_a_limiter_forgets_refilled_buckets_and_keeps_the_others() -> None:
    limiter = RateLimiter(rate=1.0, burst=2, sweep_every=10_000)
    for key in ("a", "b", "c"):
        limiter.take(key, 0.0)
    limiter.take("c", 0.9)  # c is still owed tokens at t=1.5
    limiter.sweep(1.5)
    assert len(limiter) == 1
    assert limiter.take("c", 1.5).allowed is True  # its state was kept
    assert limiter.take("c", 1.5).allowed is False


def test_the_sweep_runs_by_itself_so_many_keys_do_not_pile_up() -> None:
    limiter = RateLimiter(rate=10.0, burst=1, sweep_every=100)
    for n in range(1000):
        limiter.take(f"ip-{n}", n * 1.0)  # every earlier bucket refills within 0.1 s
    assert len(limiter) < 100


def test_rate_zero_turns_the_limiter_off() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert all(limiter.take("u", 0.0).allowed for _ in range(100))
    assert len(limiter) == 0


# --- the per-user connection limit


def lease(ms: int) -> str:
    return f"{ms:014d}-x{ms}"


OLD, MID, NEW, NEWER = lease(1000), lease(2000), lease(3000), lease(4000)


@pytest.mark.parametrize(
    ("leases", "new", "limit", "policy", "admit", "evict"),
    [
        # within the limit: nothing to decide
        ([OLD, MID], NEW, 3, "refuse", True, ()),
        ([OLD, MID, NEW], NEW, 3, "evict_oldest", True, ()),
        # limit 0: no limit
        ([OLD, MID, NEW], NEWER, 0, "refuse", True, ()),
        # one over: refuse the newcomer, or evict the oldest
        ([OLD, MID, NEW], NEW, 2, "refuse", False, ()),
        ([OLD, MID, NEW], NEW, 2, "evict_oldest", True, (OLD,)),
        # the counter's answer may not list the new lease yet: same decision
        ([OLD, MID], NEW, 2, "refuse", False, ()),
        ([OLD, MID], NEW, 2, "evict_oldest", True, (OLD,)),
        # two over (a lease that counted late): evict both older ones
        ([OLD, MID, NEW, NEWER], NEWER, 2, "evict_oldest", True, (OLD, MID)),
        # two admitted at once, limit 3 with two open: the older newcomer stays...
        ([OLD, MID, NEW, NEWER], NEW, 3, "refuse", True, ()),
        # ...and the newer is refused: the user ends at the limit, not over
        ([OLD, MID, NEW, NEWER], NEWER, 3, "refuse", False, ()),
        # evicting: both newcomers see the same order and evict the same one
        ([OLD, MID, NEW, NEWER], NEW, 3, "evict_oldest", True, (OLD,)),
        ([OLD, MID, NEW, NEWER], NEWER, 3, "evict_oldest", True, (OLD,)),
        # more newer streams than the limit arrived meanwhile: the newcomer is not kept
        ([OLD, NEW, NEWER], MID, 1, "evict_oldest", False, (OLD, NEW)),
    ],
)
def test_who_stays_over_the_limit(
    leases: list[str], new: str, limit: int, policy: str, admit: bool, evict: tuple[str, ...]
) -> None:
    decision = connection_limit(leases, new, limit=limit, policy=policy)  # type: ignore[arg-type]
    assert decision.admit is admit
    assert decision.evict == evict


def test_lease_ids_sort_by_opening_time() -> None:
    ids = [new_lease_id(t) for t in (9.999, 10.0, 10.5, 100.0, 1_767_225_600.123)]
    assert sorted(ids) == ids
    assert len({new_lease_id(5.0) for _ in range(100)}) == 100


# --- the client's address


TRUSTED = trusted_networks(["127.0.0.1", "10.0.0.0/8"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        # no proxy configured: the peer, whatever the header claims
        ("203.0.113.9", "198.51.100.1", (), "203.0.113.9"),
        # an untrusted peer's header is ignored
        ("203.0.113.9", "198.51.100.1", TRUSTED, "203.0.113.9"),
        # a trusted proxy names the client
        ("127.0.0.1", "198.51.100.1", TRUSTED, "198.51.100.1"),
        # a chain of trusted proxies: the first untrusted from the right
        ("127.0.0.1", "198.51.100.1, 10.1.2.3", TRUSTED, "198.51.100.1"),
        # what the client wrote itself (left of its real address) is not believed
        ("127.0.0.1", "1.1.1.1, 198.51.100.1, 10.1.2.3", TRUSTED, "198.51.100.1"),
        # every hop trusted: the leftmost
        ("127.0.0.1", "10.0.0.5, 10.0.0.6", TRUSTED, "10.0.0.5"),
        # a trusted peer without the header: the peer
        ("127.0.0.1", None, TRUSTED, "127.0.0.1"),
        ("127.0.0.1", " , ", TRUSTED, "127.0.0.1"),
        # IPv6
        ("127.0.0.1", "2001:db8::1", TRUSTED, "2001:db8::1"),
        (None, "198.51.100.1", TRUSTED, None),
    ],
)
def test_client_address(
    peer: str | None, forwarded: str | None, trusted: tuple[object, ...], expected: str | None
) -> None:
    assert client_address(peer, forwarded, trusted) == expected  # type: ignore[arg-type]
