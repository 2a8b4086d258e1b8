"""Verify the application's JWTs (PyJWT) and turn their claims into a :class:`Principal`.

Claims read: ``sub`` (user id, required), ``sid`` (session id), ``resources``
(list of resource keys the user may subscribe to), ``roles`` (``publisher``
may publish, ``admin`` may use the admin API), ``iat`` and ``jti`` (what a
revocation names). ``exp`` is required unless configured otherwise; ``nbf``,
``iss`` and ``aud`` are checked when present or configured.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import jwt
import structlog
from jwt.types import Options

from herald.auth.principal import ADMIN_ROLE, PUBLISHER_ROLE, Principal
from herald.auth.verified_cache import VerifiedTokens
from herald.config import Settings
from herald.errors import AuthError, AuthExpired, AuthMissing, AuthUnavailable
from herald.events.names import ROUTING_KEY

log = structlog.get_logger("herald.auth")

#: A bearer token longer than this is refused before any parsing.
MAX_TOKEN_CHARS = 8192


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._secret = settings.jwt_secret
        self._public_key = settings.public_key_pem()
        self._jwks = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=int(settings.jwks_cache_seconds))
            if settings.jwks_url
            else None
        )
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        required = ["sub"]
        if settings.jwt_require_exp:
            required.append("exp")
        self._options: Options = {"require": required}
        self._verified = VerifiedTokens(leeway=self._leeway)

    async def verify(self, token: str | None) -> Principal:
        """The principal behind a bearer token, or an :class:`AuthError` saying why not."""
        if token is not None and (known := self._verified.get(token)) is not None:
            return known
        alg = _checked_algorithm(token, self._algorithms)
        if alg.startswith("HS") or self._jwks is None:
            principal = self.verify_with_key(token, self._static_key(alg))
        else:
            # Fetching an unknown signing key is blocking network I/O: off the loop.
            key = await asyncio.to_thread(self._jwks_key, token)
            principal = self.verify_with_key(token, key)
        assert token is not None
        self._verified.put(token, principal)
        return principal

    def verify_with_key(self, token: str | None, key: Any) -> Principal:
        assert token is not None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                options=self._options,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise AuthExpired("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("the token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token was refused: {_reason(exc)}") from None
        except (jwt.PyJWTError, TypeError, ValueError):
            # The key found for the token's ``alg``/``kid`` is of another type
            # (an EC key for an RS256 header): PyJWT raises these, not InvalidTokenError.
            raise AuthError("the token's algorithm does not match its verification key") from None
        return principal_from_claims(claims)

    def _static_key(self, alg: str) -> Any:
        key = self._secret if alg.startswith("HS") else self._public_key
        if key is None:
            raise AuthError(f"no key is configured for {alg} tokens")
        return key

    def _jwks_key(self, token: str | None) -> Any:
        assert self._jwks is not None
        assert token is not None
        try:
            return self._jwks.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientConnectionError:
            log.warning("jwks_unreachable")
            # 503, not 401: the token may be fine; the message does not echo the URL.
            raise AuthUnavailable("signing keys cannot be fetched right now", retry_after=5) from None
        except jwt.PyJWKClientError as exc:
            raise AuthError(f"no signing key for this token: {_reason(exc)}") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError(f"the token was refused: {_reason(exc)}") from None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header, or ``None``."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("the Authorization header must be 'Bearer <token>'")
    return token.strip()


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    sub = claims.get("sub")
    if not isinstance(sub, str) or not ROUTING_KEY.fullmatch(sub):
        raise AuthError("claim 'sub' must be a user id without whitespace or commas")
    sid = claims.get("sid")
    if sid is not None and (not isinstance(sid, str) or not ROUTING_KEY.fullmatch(sid)):
        raise AuthError("claim 'sid' must be a session id without whitespace or commas")
    resources = claims.get("resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        raise AuthError("claim 'resources' must be a list of strings")
    roles = claims.get("roles", [])
    if not isinstance(roles, list):
        raise AuthError("claim 'roles' must be a list of strings")
    jti = claims.get("jti")
    return Principal(
        user_id=sub,
        session_id=sid,
        resources=frozenset(resources),
        publisher=PUBLISHER_ROLE in roles,
        expires_at=_seconds(claims.get("exp")),
        admin=ADMIN_ROLE in roles,
        issued_at=_seconds(claims.get("iat")),
        token_id=jti if isinstance(jti, str) and jti else None,
    )


def _seconds(value: Any) -> float | None:
    """A NumericDate claim as Unix seconds, if it is one."""
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _checked_algorithm(token: str | None, allowed: list[str]) -> str:
    """The header's ``alg``, refused unless allowlisted; ``none`` never is."""
    if token is None:
        raise AuthMissing("credentials are required: 'Authorization: Bearer <jwt>' or '?token='")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError(f"the token is longer than {MAX_TOKEN_CHARS} characters")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, UnicodeError):
        # UnicodeError: text with no UTF-8 form (a lone surrogate), which PyJWT encodes first.
        raise AuthError("the token is not a well-formed JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise AuthError(f"algorithm {str(alg)[:20]!r} is not accepted; allowed: {allowed}")
    return alg


def _reason(exc: Exception) -> str:
    return str(exc)[:200] or type(exc).__name__
