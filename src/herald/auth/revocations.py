"""Revoked credentials (``POST /api/v1/admin/revocations``, issue 13).

Three kinds, each remembered until ``until`` (by then the tokens it names have
expired anyway, so forgetting it changes nothing):

``user``
    Every token of a user issued before ``issued_before`` (their ``iat``). A
    token without ``iat`` cannot show it was issued later, so it is revoked too.
``token``
    One token, by its ``jti`` (and every stream token minted from it).
``grant``
    One resource of a user, for their tokens issued before ``issued_before``:
    open streams lose that subscription, and it is refused to those tokens.

Every node holds the whole set in memory (:class:`RevocationSet`), so checking
a stream request costs no round trip. With one process that set is the store
(:class:`MemoryRevocations`); on the Redis bus a Redis Stream is, and every
node reads it whole at start and follows it
(:mod:`herald.auth.redis_revocations`). A node learns of each revocation
as it is added, wherever it was made, and ends the matching streams it holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from herald.auth.principal import Principal
from herald.errors import AuthRevoked, BusUnavailable, GrantRevoked

Kind = Literal["user", "token", "grant"]

#: Called with each revocation a node learns of (its own too), to end what it matches.
OnRevoked = Callable[["Revocation"], None]


@dataclass(frozen=True, slots=True)
class Revocation:
    kind: Kind
    #: Unix seconds after which the revocation is forgotten.
    until: float
    user: str | None = None
    jti: str | None = None
    resource: str | None = None
    #: Unix seconds: tokens issued before this are revoked (``user`` and ``grant``).
    issued_before: float | None = None

    def revokes(self, user_id: str, issued_at: float | None, token_id: str | None) -> bool:
        """Whether a token of ``user_id`` issued at ``issued_at`` with id ``token_id`` is
        revoked outright (``user``, ``token``)."""
        if self.kind == "token":
            return self.jti is not None and token_id == self.jti
        if self.kind == "user":
            return user_id == self.user and _issued_before(issued_at, self.issued_before)
        return False

    def revokes_grant(self, user_id: str, issued_at: float | None, resource: str) -> bool:
        return (
            self.kind == "grant"
            and self.user == user_id
            and self.resource == resource
            and _issued_before(issued_at, self.issued_before)
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "until": self.until}
        for name in ("user", "jti", "resource", "issued_before"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Revocation:
        kind = data["kind"]
        if kind not in ("user", "token", "grant"):
            raise ValueError(f"unknown revocation kind {kind!r}")
        before = data.get("issued_before")
        return cls(
            kind=kind,
            until=float(data["until"]),
            user=_text(data.get("user")),
            jti=_text(data.get("jti")),
            resource=_text(data.get("resource")),
            issued_before=float(before) if before is not None else None,
        )


def _text(value: Any) -> str | None:
    return str(value) if value is not None else None


def _issued_before(issued_at: float | None, before: float | None) -> bool:
    if before is None:
        return True
    return issued_at is None or issued_at < before


class RevocationSet:
    """Every revocation still in force, indexed by what a stream request presents."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: user -> (issued_before, until): the latest cut-off wins (it revokes more).
        self._users: dict[str, tuple[float | None, float]] = {}
        self._tokens: dict[str, float] = {}
        self._grants: dict[tuple[str, str], tuple[float | None, float]] = {}
        self._added = 0

    def __len__(self) -> int:
        return len(self._users) + len(self._tokens) + len(self._grants)

    def add(self, revocation: Revocation) -> None:
        if revocation.until <= self._clock():
            return
        if revocation.kind == "token" and revocation.jti is not None:
            self._tokens[revocation.jti] = max(revocation.until, self._tokens.get(revocation.jti, 0.0))
        elif revocation.kind == "user" and revocation.user is not None:
            self._users[revocation.user] = _merged(self._users.get(revocation.user), revocation)
        elif revocation.kind == "grant" and revocation.user is not None and revocation.resource is not None:
            key = (revocation.user, revocation.resource)
            self._grants[key] = _merged(self._grants.get(key), revocation)
        self._added += 1
        if self._added % 1024 == 0:
            self.forget_expired()

    def forget_expired(self) -> None:
        now = self._clock()
        self._tokens = {jti: until for jti, until in self._tokens.items() if until > now}
        self._users = {user: entry for user, entry in self._users.items() if entry[1] > now}
        self._grants = {key: entry for key, entry in self._grants.items() if entry[1] > now}

    def check(self, principal: Principal) -> None:
        """:class:`AuthRevoked` if the token behind ``principal`` is revoked."""
        now = self._clock()
        if principal.token_id is not None and self._tokens.get(principal.token_id, 0.0) > now:
            raise AuthRevoked("this token was revoked")
        entry = self._users.get(principal.user_id)
        if entry is not None and entry[1] > now and _issued_before(principal.issued_at, entry[0]):
            raise AuthRevoked("this user's tokens issued before a revocation were revoked; sign in again")

    def check_grants(self, principal: Principal, resources: Iterable[str]) -> None:
        """:class:`GrantRevoked` naming the resources whose grant was revoked for this token."""
        if not self._grants:
            return
        revoked = [key for key in resources if self.grant_revoked(principal, key)]
        if revoked:
            raise GrantRevoked("the grant of these resources was revoked", revoked=revoked)

    def grant_revoked(self, principal: Principal, resource: str) -> bool:
        entry = self._grants.get((principal.user_id, resource))
        if entry is None or entry[1] <= self._clock():
            return False
        return _issued_before(principal.issued_at, entry[0])


def _merged(entry: tuple[float | None, float] | None, revocation: Revocation) -> tuple[float | None, float]:
    before, until = revocation.issued_before, revocation.until
    if entry is None:
        return before, until
    old_before, old_until = entry
    merged_before = None if old_before is None or before is None else max(old_before, before)
    return merged_before, max(old_until, until)


class Revocations(Protocol):
    """Where revocations are kept, shared by every node of a deployment."""

    async def start(self, on_revoked: OnRevoked) -> None: ...

    async def stop(self) -> None: ...

    async def revoke(self, revocation: Revocation) -> None:
        """Keep ``revocation`` and tell every node (this one too, before returning)."""
        ...

    def check(self, principal: Principal, resources: Iterable[str] = ()) -> None:
        """Raise :class:`AuthRevoked` or :class:`GrantRevoked`, or
        :class:`BusUnavailable` while the revocations are not known yet."""
        ...

    def grant_revoked(self, principal: Principal, resource: str) -> bool:
        """Whether ``resource``'s grant was revoked for the token behind ``principal``."""
        ...

    def healthy(self) -> bool: ...


class MemoryRevocations:
    """One process is the deployment: the set is the store."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.known = RevocationSet(clock)
        self._on_revoked: OnRevoked | None = None

    async def start(self, on_revoked: OnRevoked) -> None:
        self._on_revoked = on_revoked

    async def stop(self) -> None:
        return None

    async def revoke(self, revocation: Revocation) -> None:
        self.known.add(revocation)
        if self._on_revoked is not None:
            self._on_revoked(revocation)

    def check(self, principal: Principal, resources: Iterable[str] = ()) -> None:
        self.known.check(principal)
        self.known.check_grants(principal, resources)

    def grant_revoked(self, principal: Principal, resource: str) -> bool:
        return self.known.grant_revoked(principal, resource)

    def healthy(self) -> bool:
        return True


def not_loaded() -> BusUnavailable:
    return BusUnavailable("revocations are not loaded yet; retry shortly", retry_after=1)
