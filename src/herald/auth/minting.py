"""Mint application JWTs: for ``herald token``, the demo and tests. Applications
normally mint their own with the same claims."""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt

from herald.auth.principal import ADMIN_ROLE, PUBLISHER_ROLE


def mint_token(
    secret: str,
    *,
    sub: str,
    sid: str | None = None,
    resources: Iterable[str] = (),
    publisher: bool = False,
    admin: bool = False,
    ttl_seconds: float = 3600,
    algorithm: str = "HS256",
    now: float | None = None,
    jti: str | None = None,
) -> str:
    issued = time.time() if now is None else now
    claims: dict[str, object] = {
        "sub": sub,
        "iat": int(issued),
        "exp": int(issued + ttl_seconds),
        "resources": list(resources),
    }
    if sid is not None:
        claims["sid"] = sid
    roles = [role for role, has in ((PUBLISHER_ROLE, publisher), (ADMIN_ROLE, admin)) if has]
    if roles:
        claims["roles"] = roles
    if jti is not None:
        claims["jti"] = jti
    return jwt.encode(claims, secret, algorithm=algorithm)
