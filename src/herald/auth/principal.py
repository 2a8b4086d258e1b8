"""The authenticated caller, as every layer above ``auth`` sees it."""

from __future__ import annotations

from dataclasses import dataclass

PUBLISHER_ROLE = "publisher"
#: May use the admin API (revocations).
ADMIN_ROLE = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """``resources``: resource keys the caller may subscribe to (``novel:42``, or
    ``novel:*`` for every novel). ``expires_at``: Unix seconds when the
    credentials behind a stream run out, which ends the stream."""

    user_id: str
    session_id: str | None = None
    resources: frozenset[str] = frozenset()
    publisher: bool = False
    expires_at: float | None = None
    #: Set for stream tokens: the token's id, which may hold one open stream.
    stream_token_id: str | None = None
    admin: bool = False
    #: The JWT's ``iat`` (a stream token's: the JWT it was minted from), for revocations
    #: of a user's tokens issued before a time; ``None``: unknown, so any of them applies.
    issued_at: float | None = None
    #: The JWT's ``jti`` (a stream token's: the JWT it was minted from), for revoking one token.
    token_id: str | None = None
