"""Redis connections for every part of Herald that keeps state in Redis.

Two kinds, deliberately configured apart:

``commands``
    A bounded pool for request/response commands (append, replay pages,
    leases, counts). Every call is bounded by ``timeout`` — connecting,
    waiting for a free connection, reading the reply — and never retried by
    the client library: a publish must answer 503 promptly while Redis is
    away, and an XADD retried after a lost reply could append twice.

``blocking(block_seconds)``
    A client of its own for one long-lived blocking reader (``XREAD BLOCK``,
    ``XREADGROUP BLOCK``). Its read timeout is the block time *plus*
    ``timeout``: a quiet but healthy connection always gets its (empty)
    answer before the socket gives up, so idleness never looks like failure
    (LESSONS: "Blocking listeners that die when idle"), while a stalled Redis
    is noticed within a bounded time.

``subscriber()``
    For ``SUBSCRIBE``: no read timeout at all (a channel may be silent for
    hours); TCP keepalive and the reader's own periodic ``PING`` notice a
    dead peer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from herald.cluster.backoff import reconnect_delay
from herald.errors import BusUnavailable

_log = structlog.get_logger("herald.cluster.redis")

#: Errors that mean "Redis cannot be reached right now", as opposed to a bug.
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)
#: Replies of a reachable Redis that cannot serve writes for now (out of memory under
#: ``noeviction``, a replica, loading its dump, a busy script, a failing cluster).
_TRANSIENT_REPLIES = ("OOM", "READONLY", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN")
#: Seconds a client told "unavailable" should wait before trying again.
RETRY_AFTER_SECONDS = 1.0


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says Redis cannot serve right now (retriable), not that we erred."""
    if isinstance(error, UNREACHABLE):
        return True
    return isinstance(error, ResponseError) and str(error).startswith(_TRANSIENT_REPLIES)


def unavailable(what: str, error: BaseException) -> BusUnavailable:
    return BusUnavailable(
        f"{what}: Redis is unavailable ({type(error).__name__}); retry shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )


async def stop_reader(task: asyncio.Task[None], client: Redis, grace: float = 0.3) -> None:
    """End a task that is blocked reading from ``client``, for certain.

    redis-py (8.1) swallows a cancellation that lands while a connection is
    being set up, and the task then blocks in its next read as if nothing
    happened. So: cancel; if the task is still running after ``grace``, close
    the client's connections (its read fails) and cancel again. The task's
    loop must also check a stop flag of its own.
    """
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        await client.connection_pool.disconnect()
        task.cancel()
        await asyncio.wait({task}, timeout=grace)


async def subscribe_forever(
    client: Redis,
    channels: Sequence[str],
    on_message: Callable[[bytes, str], Awaitable[None]],
    *,
    subscribed: asyncio.Event,
    stopping: Callable[[], bool],
    ping_seconds: float,
    lost: str,
    **fields: Any,
) -> None:
    """Hand every pub/sub message on ``channels`` to ``on_message(data, channel)`` until
    ``stopping()``. A lost connection is logged (as ``lost``) once per outage and the
    subscription renewed with backoff: messages published meanwhile are gone, which is
    pub/sub's contract. ``subscribed`` is set while the subscription stands."""
    attempt = 0
    while not stopping():
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(*channels)
            subscribed.set()
            attempt = 0
            while not stopping():
                message: dict[str, Any] | None = await pubsub.get_message(timeout=ping_seconds)
                if message is None:
                    await pubsub.ping()  # a dead connection fails here rather than stay silent
                elif message["type"] == "message":
                    channel = message["channel"]
                    await on_message(
                        message["data"], channel.decode() if isinstance(channel, bytes) else channel
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            subscribed.clear()
            if stopping():
                return
            if attempt == 0:
                _log.warning(lost, error=repr(exc), **fields)
            await asyncio.sleep(reconnect_delay(attempt))
            attempt += 1
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # untyped before redis-py 8


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def _no_maintenance_notifications() -> MaintNotificationsConfig:
    # With these on ("auto"), redis-py 8 skips its check that a pooled connection
    # is still open, so the first command after a Redis restart fails on a dead
    # socket. Herald talks to plain Redis servers; it needs none of them.
    return MaintNotificationsConfig(enabled=False)


class RedisConnections:
    """The Redis clients of one node; :meth:`aclose` closes every one it made."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, max_connections: int = 64, name: str = "herald"
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.name = name
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,  # waiting for a free pooled connection
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=_no_retry(),
            client_name=name,
            maint_notifications_config=_no_maintenance_notifications(),
        )
        self._pool = pool
        self.commands: Redis = Redis(connection_pool=pool)
        self._own: list[Redis] = [self.commands]

    def blocking(self, block_seconds: float) -> Redis:
        client: Redis = Redis.from_url(
            self.url,
            socket_timeout=block_seconds + self.timeout,
            socket_connect_timeout=self.timeout,
            retry=_no_retry(),
            single_connection_client=True,
            client_name=self.name,
            maint_notifications_config=_no_maintenance_notifications(),
        )
        self._own.append(client)
        return client

    def subscriber(self) -> Redis:
        # TCP keepalive notices a dead peer; a Unix socket (the workers' embedded log)
        # has none to notice, and its connections take no such option.
        keepalive = {} if self.url.startswith("unix:") else {"socket_keepalive": True}
        client: Redis = Redis.from_url(
            self.url,
            socket_timeout=None,
            socket_connect_timeout=self.timeout,
            retry=_no_retry(),
            client_name=self.name,
            maint_notifications_config=_no_maintenance_notifications(),
            **keepalive,
        )
        self._own.append(client)
        return client

    async def aclose(self) -> None:
        for client in self._own:
            await client.aclose()
        self._own.clear()
        await self._pool.aclose()


def shard_list(redis: RedisConnections | Sequence[RedisConnections]) -> list[RedisConnections]:
    """One Redis is a list of one shard."""
    return [redis] if isinstance(redis, RedisConnections) else list(redis)
