"""The authenticated caller, as every layer above ``auth`` sees it."""

from __future__ import annotations

from dataclasses import dataclass

PUBLISHER_ROLE = "publisher"


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
