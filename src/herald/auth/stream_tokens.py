"""Stream tokens: what ``?token=`` carries, because native EventSource cannot send headers.

A stream token is minted from a verified JWT by ``POST /api/v1/auth/sse-token``.
It is valid for opening a stream for a short time (60 s by default) and
holds at most one open stream at a time, so a token copied from a URL into
a log cannot open a second stream beside the real one. Reopening after the
stream closed is allowed while the token is valid, which is exactly what
EventSource's automatic reconnect does. The stream it opens lasts until the
original JWT's expiry (claim ``sexp``), not the stream token's.

Stream tokens are HS256 JWTs with ``typ`` ``herald-stream`` under a key of
their own, so one is never accepted as a bearer token, nor the reverse.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from herald.auth.principal import Principal
from herald.auth.tokens import MAX_TOKEN_CHARS, principal_from_claims
from herald.errors import AuthError, AuthExpired, AuthMissing, StreamTokenInUse

TOKEN_TYPE = "herald-stream"  # noqa: S105 - a type tag, not a secret
_ALGORITHM = "HS256"


def stream_key(stream_token_secret: str | None, jwt_secret: str | None) -> bytes:
    """The configured stream-token key; else one derived from the JWT secret (same on
    every node that shares it); else a random key, valid for this process only."""
    if stream_token_secret:
        return stream_token_secret.encode()
    if jwt_secret:
        return hmac.new(jwt_secret.encode(), b"herald stream token v1", hashlib.sha256).digest()
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class StreamToken:
    token: str
    expires_at: float


class StreamTokenLeases(Protocol):
    """Which stream tokens hold an open stream. Shared by every node in a cluster."""

    async def acquire(self, user_id: str, token_id: str, token_expires_at: float) -> bool:
        """Claim the one stream of ``user_id``'s token; ``False`` when it already holds one.
        (The user places the lease where the user's other state is.)"""
        ...

    async def release(self, user_id: str, token_id: str) -> None:
        """Give the stream back (idempotent)."""
        ...


class MemoryStreamTokenLeases:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._held: dict[str, float] = {}
        self._expiry: list[tuple[float, str]] = []
        self._clock = clock

    async def acquire(self, user_id: str, token_id: str, token_expires_at: float) -> bool:
        # A lease outliving its token cannot be contended (the token no longer
        # verifies), so expired entries go; the table stays bounded by the
        # tokens minted in one lifetime.
        now = self._clock()
        expiry = self._expiry
        while expiry and expiry[0][0] < now:
            _, expired = heapq.heappop(expiry)
            if self._held.get(expired, now) < now:
                del self._held[expired]
        if token_id in self._held:
            return False
        self._held[token_id] = token_expires_at
        heapq.heappush(expiry, (token_expires_at, token_id))
        return True

    async def release(self, user_id: str, token_id: str) -> None:
        self._held.pop(token_id, None)

    def __len__(self) -> int:
        return len(self._held)


class StreamTokens:
    def __init__(
        self,
        key: bytes,
        leases: StreamTokenLeases,
        *,
        ttl_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key
        self.leases = leases
        self._ttl = ttl_seconds
        self._clock = clock

    def mint(self, principal: Principal) -> StreamToken:
        now = self._clock()
        expires_at = now + self._ttl
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        claims: dict[str, Any] = {
            "typ": TOKEN_TYPE,
            "sub": principal.user_id,
            "resources": sorted(principal.resources),
            "iat": int(now),
            "exp": int(expires_at),
            "jti": secrets.token_urlsafe(16),
        }
        if principal.session_id is not None:
            claims["sid"] = principal.session_id
        if principal.expires_at is not None:
            claims["sexp"] = principal.expires_at
        # The JWT's own issue time and id, so that revoking it revokes what it minted.
        if principal.issued_at is not None:
            claims["siat"] = principal.issued_at
        if principal.token_id is not None:
            claims["sjti"] = principal.token_id
        return StreamToken(jwt.encode(claims, self._key, algorithm=_ALGORITHM), float(int(expires_at)))

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise AuthMissing("a stream token is required")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("the stream token is too long")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[_ALGORITHM],
                options={"require": ["exp", "jti", "typ", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthExpired("the stream token has expired; request a new one") from None
        except (jwt.InvalidTokenError, UnicodeError):
            # UnicodeError: text with no UTF-8 form (a lone surrogate), which PyJWT encodes first.
            raise AuthError(
                "?token= takes a stream token from POST /api/v1/auth/sse-token; this is not one"
            ) from None
        if claims.get("typ") != TOKEN_TYPE or not isinstance(claims.get("jti"), str):
            raise AuthError("?token= takes a stream token from POST /api/v1/auth/sse-token")
        base = principal_from_claims(claims)
        sexp, siat, sjti = claims.get("sexp"), claims.get("siat"), claims.get("sjti")
        return Principal(
            user_id=base.user_id,
            session_id=base.session_id,
            resources=base.resources,
            publisher=False,
            expires_at=float(sexp) if isinstance(sexp, int | float) else None,
            stream_token_id=claims["jti"],
            issued_at=float(siat) if isinstance(siat, int | float) else None,
            token_id=sjti if isinstance(sjti, str) else None,
        )

    async def acquire(self, principal: Principal) -> None:
        assert principal.stream_token_id is not None
        # The lease lasts as long as the token could be presented again.
        if not await self.leases.acquire(
            principal.user_id, principal.stream_token_id, self._clock() + self._ttl
        ):
            raise StreamTokenInUse(
                "this stream token already holds an open stream; a token opens one stream at a time"
            )
