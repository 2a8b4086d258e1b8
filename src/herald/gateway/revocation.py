"""Revocations made and enforced (issue 13): ``POST /api/v1/admin/revocations``.

An admin revokes every token of a user issued before a time, one token by its
``jti``, or one resource grant of a user. The revocation is kept
(:mod:`herald.auth.revocations`: in memory, or in Redis for every node) and
every node that learns of it acts on the streams it holds:

- a revoked token's streams end at once with ``error.auth-revoked``; the
  same token opening a stream (or minting a stream token) is refused 401
  ``AUTH_REVOKED`` until the revocation's TTL, by when it has expired anyway;
- a revoked grant removes that subscription from the user's streams
  (``connection.subscriptions-changed`` with ``reason: "revoked"``) and the
  stream goes on with its other resources; subscribing to it again with a
  token issued before the revocation is refused 403 ``AUTH_REVOKED``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog

from herald.auth.grants import check_resource_key
from herald.auth.principal import Principal
from herald.auth.revocations import Revocation, Revocations
from herald.errors import RequestInvalid, SubscriptionInvalid
from herald.events.names import ROUTING_KEY
from herald.manager import frames
from herald.manager.connection import CloseReason, Connection
from herald.manager.manager import ConnectionManager

log = structlog.get_logger("herald.gateway.revocation")

#: A ``jti`` longer than this is no token's (and would only bloat the store).
MAX_JTI_CHARS = 256


def revocation_from_request(
    *,
    user: str | None,
    jti: str | None,
    resource: str | None,
    issued_before: datetime | None,
    ttl_seconds: float,
    now: float,
) -> Revocation:
    """The revocation a request asks for, or :class:`RequestInvalid` saying what is wrong."""
    until = now + ttl_seconds
    if jti is not None:
        if user is not None or resource is not None or issued_before is not None:
            raise RequestInvalid("'jti' revokes one token: send it alone")
        if not jti or len(jti) > MAX_JTI_CHARS:
            raise RequestInvalid(f"'jti' must be 1 to {MAX_JTI_CHARS} characters")
        return Revocation("token", until, jti=jti)
    if user is None or not ROUTING_KEY.fullmatch(user):
        raise RequestInvalid("send 'user' (a user id), optionally with 'resource', or 'jti'")
    before = now if issued_before is None else _unix_seconds(issued_before)
    if before > now:
        raise RequestInvalid("'issued_before' is in the future: tokens not issued yet cannot be revoked")
    if resource is not None:
        try:
            check_resource_key(resource)
        except SubscriptionInvalid as exc:
            raise RequestInvalid(f"'resource': {exc.message}") from None
        return Revocation("grant", until, user=user, resource=resource, issued_before=before)
    return Revocation("user", until, user=user, issued_before=before)


def _unix_seconds(moment: datetime) -> float:
    if moment.tzinfo is None:
        raise RequestInvalid("'issued_before' needs a time zone (ISO 8601 with 'Z' or an offset)")
    return moment.timestamp()


class RevocationEnforcer:
    """Ends what a revocation matches among this node's streams."""

    def __init__(self, manager: ConnectionManager, revocations: Revocations) -> None:
        self._manager = manager
        self.revocations = revocations
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        await self.revocations.start(self.on_revoked)

    async def stop(self) -> None:
        await self.revocations.stop()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def remember(self, conn: Connection, principal: Principal) -> None:
        conn.issued_at = principal.issued_at
        conn.token_id = principal.token_id

    async def revoke(self, revocation: Revocation, *, by: str) -> None:
        await self.revocations.revoke(revocation)
        log.warning("revocation_made", by=by, **revocation.to_json())

    def on_revoked(self, revocation: Revocation) -> None:
        if revocation.kind == "grant":
            self._remove_grant(revocation)
            return
        conns: Iterable[Connection]
        if revocation.kind == "token":
            conns = list(self._manager.index.all.values())  # rare: a scan beats an index per stream
        else:
            conns = list(self._manager.index.by_user.get(revocation.user or "", ()))
        for conn in conns:
            if not conn.closed and revocation.revokes(conn.user_id, conn.issued_at, conn.token_id):
                self._manager.close(conn, CloseReason.AUTH_REVOKED, frames.auth_revoked())

    def _remove_grant(self, revocation: Revocation) -> None:
        resource = revocation.resource or ""
        for conn in list(self._manager.index.by_user.get(revocation.user or "", ())):
            if (
                not conn.closed
                and resource in conn.subscriptions
                and revocation.revokes_grant(conn.user_id, conn.issued_at, resource)
            ):
                task = asyncio.get_running_loop().create_task(
                    self._manager.change_subscriptions(conn, (), [resource], reason="revoked")
                )
                self._background.add(task)
                task.add_done_callback(self._background.discard)
