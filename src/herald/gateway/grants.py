"""Resource grants checked again on open streams (issue 13).

An application's authorizer (HTTP or a Python callable) is asked when a stream
opens and when it adds a resource; a grant it withdraws later would otherwise
hold until the stream reconnects, which a healthy stream may not do for hours.
Every ``authorizer_recheck_seconds`` this node asks again, one call per stream
with resources, and drops what is no longer granted: the stream gets
``connection.subscriptions-changed`` with the key under ``removed``, and that
resource's events stop at once. An authorizer that cannot answer changes
nothing (nothing is withdrawn on a guess; the next round asks again).

The token's own ``resources`` claim (the default authorizer) cannot change
while the stream is open, so it is not asked again.
"""

from __future__ import annotations

import asyncio

import structlog

from herald.auth.authorizers import ResourceAuthorizer
from herald.auth.principal import Principal
from herald.manager.connection import Connection
from herald.manager.manager import ConnectionManager

log = structlog.get_logger("herald.gateway.grants")


class GrantRecheck:
    def __init__(self, manager: ConnectionManager, authorizer: ResourceAuthorizer, interval: float) -> None:
        self._manager = manager
        self._authorizer = authorizer
        self._interval = interval
        #: Who opened each stream (the authorizer is asked about them).
        self._principal_of: dict[str, Principal] = {}
        self._task: asyncio.Task[None] | None = None
        #: Subscriptions dropped because their grant was withdrawn.
        self.withdrawn = 0

    def remember(self, conn: Connection, principal: Principal) -> None:
        self._principal_of[conn.id] = principal

    def forget(self, conn: Connection) -> None:
        self._principal_of.pop(conn.id, None)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="herald-grant-recheck")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.recheck()
            except Exception:
                log.exception("grant_recheck_failed")

    async def recheck(self) -> int:
        """Ask again for every open stream with resources; the subscriptions dropped."""
        dropped = 0
        for conn_id, principal in list(self._principal_of.items()):
            conn = self._manager.index.all.get(conn_id)
            if conn is None or conn.closed or not conn.subscriptions:
                continue
            keys = sorted(conn.subscriptions)
            try:
                granted = await self._authorizer.granted(principal, keys)
            except Exception as exc:
                log.warning("grant_recheck_unanswered", connection_id=conn_id, error=repr(exc))
                continue
            withdrawn = [key for key in keys if key not in granted and key in conn.subscriptions]
            if not withdrawn or conn.closed:
                continue
            await self._manager.change_subscriptions(conn, (), withdrawn, reason="withdrawn")
            log.info("sse_grant_withdrawn", connection_id=conn_id, user_id=conn.user_id, removed=withdrawn)
            dropped += len(withdrawn)
        self.withdrawn += dropped
        return dropped
