"""Mint application JWTs: for ``herald token``, the demo and tests. Applications
normally mint their own with the same claims."""

from __future__ import annotations

import time
from collections.abc import Iterable

import jwt

from herald.auth.principal import PUBLISHER_ROLE


def mint_token(
    secret: str,
    *,
    sub: str,
    sid: str | None = None,
    resources: Iterable[str] = (),
    publisher: bool = False,
    ttl_seconds: float = 3600,
    algorithm: str = "HS256",
    now: float | None = None,
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
    if publisher:
        claims["roles"] = [PUBLISHER_ROLE]
    return jwt.encode(claims, secret, algorithm=algorithm)
