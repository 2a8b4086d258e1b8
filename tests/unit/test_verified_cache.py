from __future__ import annotations

import pytest

from herald.auth.principal import Principal
from herald.auth.verified_cache import VerifiedTokens
from herald.errors import AuthExpired


def make(now: list[float], **kw: float) -> VerifiedTokens:
    return VerifiedTokens(clock=lambda: now[0], **kw)  # type: ignore[arg-type]


def test_a_verified_token_is_known_until_it_expires() -> None:
    now = [1000.0]
    cache = make(now)
    alice = Principal("alice", expires_at=1010.0)
    assert cache.get("t") is None
    cache.put("t", alice)
    assert cache.get("t") is alice
    now[0] = 1010.0
    with pytest.raises(AuthExpired):
        cache.get("t")
    assert cache.get("t") is None, "an expired entry is dropped"


def test_leeway_applies_as_at_verification() -> None:
    now = [1011.0]
    cache = make(now, leeway=5)
    cache.put("t", Principal("alice", expires_at=1010.0))
    assert cache.get("t") is not None
    now[0] = 1015.0
    with pytest.raises(AuthExpired):
        cache.get("t")


def test_entries_age_out_so_withdrawn_keys_stop_working() -> None:
    now = [0.0]
    cache = make(now, max_age=60)
    cache.put("t", Principal("alice"))
    now[0] = 61.0
    assert cache.get("t") is None


def test_the_table_is_bounded_and_drops_the_oldest() -> None:
    now = [0.0]
    cache = make(now, max_entries=3)
    for n in range(5):
        cache.put(f"t{n}", Principal(f"u{n}"))
    assert len(cache) == 3
    assert cache.get("t0") is None
    assert cache.get("t1") is None
    assert cache.get("t4") is not None
