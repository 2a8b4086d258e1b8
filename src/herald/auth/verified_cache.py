"""Remember tokens already verified, so a reconnect storm does not verify each one again.

A token string is its own signature: the same string verified a minute ago
verifies now, unless it expired meanwhile, which is checked at every use.
Entries live at most ``max_age`` seconds, so a signing key withdrawn from a
JWKS stops working within that time, and the table holds at most
``max_entries`` tokens (the oldest go first).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from herald.auth.principal import Principal
from herald.errors import AuthExpired


class VerifiedTokens:
    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_age: float = 60.0,
        leeway: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._max_entries = max_entries
        self._max_age = max_age
        self._leeway = leeway
        self._clock = clock

    def get(self, token: str) -> Principal | None:
        """The principal of a token verified before, or ``None``; :class:`AuthExpired`
        when it was verified but has expired since."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        principal, verified_at = entry
        now = self._clock()
        if now - verified_at > self._max_age:
            del self._entries[token]
            return None
        if principal.expires_at is not None and principal.expires_at + self._leeway <= now:
            del self._entries[token]
            raise AuthExpired("the token has expired")
        return principal

    def put(self, token: str, principal: Principal) -> None:
        entries = self._entries
        if token in entries:
            return
        if len(entries) >= self._max_entries:
            del entries[next(iter(entries))]
        entries[token] = (principal, self._clock())

    def __len__(self) -> int:
        return len(self._entries)
