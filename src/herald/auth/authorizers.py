"""Who may subscribe to which resource: pluggable, asked on every stream admission
(so again at each reconnect) and on every subscription change.

Three kinds, one contract (:class:`ResourceAuthorizer`):

``ClaimsAuthorizer`` (the default)
    The token's ``resources`` claim: an exact key, or ``novel:*`` for a type.
``HttpAuthorizer``
    The application answers: ``POST {url}`` with
    ``{"user_id": …, "session_id": …, "resources": ["novel:42", …]}`` and
    answers ``{"allowed": ["novel:42"]}``. Answers are cached per user and
    key for ``cache_seconds`` (refusals too), so a reconnect storm asks once.
    An application that cannot answer (timeout, non-2xx, a body that is not
    the contract) makes the request fail with 503 ``AUTH_UNAVAILABLE``: no
    stream is granted on a guess.
``CallableAuthorizer``
    A Python function ``(principal, key) -> bool`` (or awaitable) passed by an
    application that embeds Herald.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import httpx
import structlog

from herald.auth.grants import grants
from herald.auth.principal import Principal
from herald.errors import AuthUnavailable

log = structlog.get_logger("herald.auth")

#: ``(principal, resource key) -> may subscribe``; plain or ``async``.
Decide = Callable[[Principal, str], bool | Awaitable[bool]]


class ResourceAuthorizer(Protocol):
    async def granted(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        """The subset of ``keys`` (valid resource keys) that ``principal`` may subscribe to.
        Raises :class:`herald.errors.AuthUnavailable` when that cannot be known now."""
        ...

    async def aclose(self) -> None: ...


class ClaimsAuthorizer:
    async def granted(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        return frozenset(key for key in keys if grants(principal, key))

    async def aclose(self) -> None:
        return None


class CallableAuthorizer:
    def __init__(self, decide: Decide) -> None:
        self._decide = decide

    async def granted(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        allowed = []
        for key in keys:
            verdict = self._decide(principal, key)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if verdict is True:
                allowed.append(key)
        return frozenset(allowed)

    async def aclose(self) -> None:
        return None


class HttpAuthorizer:
    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        cache_seconds: float = 10.0,
        timeout_seconds: float = 2.0,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._headers = {"authorization": f"Bearer {token}"} if token else {}
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._max_entries = max_entries
        self._clock = clock
        #: (user, key) -> (allowed, until)
        self._cache: dict[tuple[str, str], tuple[bool, float]] = {}
        self._client: httpx.AsyncClient | None = None
        #: Questions sent to the application (tests and metrics read it).
        self.calls = 0

    async def granted(self, principal: Principal, keys: Sequence[str]) -> frozenset[str]:
        now = self._clock()
        user = principal.user_id
        allowed: set[str] = set()
        unknown: list[str] = []
        for key in keys:
            cached = self._cache.get((user, key))
            if cached is not None and cached[1] > now:
                if cached[0]:
                    allowed.add(key)
            else:
                unknown.append(key)
        if unknown:
            answered = await self._ask(principal, unknown)
            until = self._clock() + self._cache_seconds
            if len(self._cache) + len(unknown) > self._max_entries:
                self._forget_expired(now)
            for key in unknown:
                ok = key in answered
                self._cache[(user, key)] = (ok, until)
                if ok:
                    allowed.add(key)
        return frozenset(allowed)

    async def _ask(self, principal: Principal, keys: list[str]) -> frozenset[str]:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        body = {"user_id": principal.user_id, "session_id": principal.session_id, "resources": keys}
        self.calls += 1
        try:
            response = await self._client.post(self.url, json=body)
        except httpx.HTTPError as exc:
            log.warning("authorizer_unreachable", error=type(exc).__name__)
            raise AuthUnavailable("the resource authorizer cannot be reached", retry_after=1) from None
        if response.status_code // 100 != 2:
            log.warning("authorizer_failed", status=response.status_code)
            raise AuthUnavailable("the resource authorizer failed", retry_after=1)
        try:
            allowed = response.json()["allowed"]
        except (ValueError, KeyError, TypeError):
            allowed = None
        if not isinstance(allowed, list) or not all(isinstance(k, str) for k in allowed):
            log.warning("authorizer_answer_invalid")
            raise AuthUnavailable("the resource authorizer's answer is not {'allowed': [...]}")
        return frozenset(allowed) & frozenset(keys)

    def _forget_expired(self, now: float) -> None:
        expired = [k for k, (_, until) in self._cache.items() if until <= now]
        for k in expired:
            del self._cache[k]
        while len(self._cache) >= self._max_entries:
            del self._cache[next(iter(self._cache))]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
