"""The in-process authorizers: token claims and a Python function (plain or async)."""

from __future__ import annotations

import pytest

from herald.auth.authorizers import CallableAuthorizer, ClaimsAuthorizer
from herald.auth.principal import Principal

ALICE = Principal(user_id="alice", resources=frozenset({"novel:1", "doc:*"}))


@pytest.mark.parametrize(
    ("keys", "granted"),
    [
        ([], set()),
        (["novel:1"], {"novel:1"}),
        (["novel:2"], set()),
        (["doc:7", "doc:8", "novel:1", "novel:2"], {"doc:7", "doc:8", "novel:1"}),
    ],
)
async def test_claims_grant_exact_keys_and_whole_types(keys: list[str], granted: set[str]) -> None:
    assert await ClaimsAuthorizer().granted(ALICE, keys) == granted


async def test_a_function_decides_plain_or_async() -> None:
    asked: list[tuple[str, str]] = []

    def plain(principal: Principal, key: str) -> bool:
        asked.append((principal.user_id, key))
        return key.endswith(":1")

    async def awaited(principal: Principal, key: str) -> bool:
        return key == "order:9"

    assert await CallableAuthorizer(plain).granted(ALICE, ["order:1", "order:2"]) == {"order:1"}
    assert asked == [("alice", "order:1"), ("alice", "order:2")]
    assert await CallableAuthorizer(awaited).granted(ALICE, ["order:9", "order:1"]) == {"order:9"}


async def test_only_true_grants() -> None:
    truthy = CallableAuthorizer(lambda _principal, _key: "yes")  # type: ignore[arg-type, return-value]
    assert await truthy.granted(ALICE, ["order:1"]) == frozenset()
