"""What a revocation matches (herald.auth.revocations): pure logic over a fake clock."""

from __future__ import annotations

import pytest

from herald.auth.principal import Principal
from herald.auth.revocations import MemoryRevocations, Revocation, RevocationSet
from herald.errors import AuthRevoked, GrantRevoked


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def alice(issued_at: float | None = 900.0, token_id: str | None = None) -> Principal:
    return Principal("alice", issued_at=issued_at, token_id=token_id)


def test_a_user_revocation_takes_tokens_issued_before_the_cut_off_and_those_without_iat() -> None:
    clock = Clock()
    known = RevocationSet(clock)
    known.add(Revocation("user", until=2_000, user="alice", issued_before=950))
    with pytest.raises(AuthRevoked):
        known.check(alice(issued_at=949))
    with pytest.raises(AuthRevoked):
        known.check(alice(issued_at=None))  # cannot show it came later
    known.check(alice(issued_at=950))  # issued at the cut-off: not before it
    known.check(Principal("bob", issued_at=1))


def test_the_latest_cut_off_wins_and_an_expired_revocation_is_forgotten() -> None:
    clock = Clock()
    known = RevocationSet(clock)
    known.add(Revocation("user", until=1_500, user="alice", issued_before=960))
    known.add(Revocation("user", until=1_200, user="alice", issued_before=900))
    with pytest.raises(AuthRevoked):
        known.check(alice(issued_at=950))
    clock.now = 1_501
    known.check(alice(issued_at=950))
    known.forget_expired()
    assert len(known) == 0
    # One already past its TTL is not even kept.
    known.add(Revocation("token", until=1_400, jti="t"))
    assert len(known) == 0


def test_a_token_revocation_matches_its_jti_only() -> None:
    known = RevocationSet(Clock())
    known.add(Revocation("token", until=2_000, jti="j1"))
    with pytest.raises(AuthRevoked):
        known.check(alice(token_id="j1"))
    known.check(alice(token_id="j2"))
    known.check(alice(token_id=None))


def test_a_grant_revocation_names_the_revoked_resources() -> None:
    known = RevocationSet(Clock())
    known.add(Revocation("grant", until=2_000, user="alice", resource="novel:1", issued_before=950))
    with pytest.raises(GrantRevoked) as caught:
        known.check_grants(alice(), ["novel:1", "novel:2"])
    assert caught.value.detail == {"revoked": ["novel:1"]}
    assert caught.value.code == "AUTH_REVOKED"
    assert caught.value.status == 403
    known.check_grants(alice(issued_at=951), ["novel:1"])
    known.check_grants(Principal("bob", issued_at=1), ["novel:1"])
    known.check(alice())  # the token itself stays valid


def test_revocations_survive_their_json_form() -> None:
    for revocation in (
        Revocation("user", until=2_000.5, user="alice", issued_before=950.25),
        Revocation("token", until=2_000, jti="abc"),
        Revocation("grant", until=2_000, user="alice", resource="novel:1", issued_before=1),
    ):
        assert Revocation.from_json(revocation.to_json()) == revocation
    with pytest.raises(ValueError, match="unknown revocation kind"):
        Revocation.from_json({"kind": "everything", "until": 1})


async def test_the_memory_store_tells_its_node_at_once() -> None:
    seen: list[Revocation] = []
    store = MemoryRevocations(Clock())
    await store.start(seen.append)
    revocation = Revocation("token", until=2_000, jti="j")
    await store.revoke(revocation)
    assert seen == [revocation]
    with pytest.raises(AuthRevoked):
        store.check(alice(token_id="j"))
