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

A URL ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service[/db]``
names a primary that Redis Sentinel manages (docs/operations.md, "Replicas and
Sentinel"): every client kind above asks the Sentinels for the service's current
primary each time it opens a connection, so after a failover the next
connection of each (a pooled command's, a reader's reconnect, a subscriber's
renewal) reaches the promoted replica. The rules above hold unchanged: the
Sentinels are asked with the same timeout and no retry, and a primary that no
Sentinel names yet is "unavailable" like a Redis that does not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import structlog
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
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


def not_replicated(acknowledged: int, wanted: int) -> BusUnavailable:
    """An append the primary took but fewer than ``wanted`` replicas acknowledged in time
    (``HERALD_REDIS_MIN_REPLICAS_ACK``): not "acknowledged" for Herald, since a failover
    now could lose it. The publisher sends it again with its ``idempotency_key``."""
    return BusUnavailable(
        f"the event reached the Redis primary but {acknowledged} of the {wanted} replicas required "
        "acknowledged it in time; retry with the same idempotency_key",
        retry_after=RETRY_AFTER_SECONDS,
        reason="not_replicated",
    )


async def script_then_wait(
    client: Redis, script: Any, keys: Sequence[Any], args: Sequence[Any], replicas: int, timeout_ms: int
) -> tuple[Any, int]:
    """Run ``script`` (from ``register_script``), then ``WAIT replicas timeout_ms`` on the same
    connection (``WAIT`` counts the replicas that have *this connection's* writes, and a
    script may not call it), pipelined: one round trip. The script's reply and how many
    replicas acknowledged it. Not retried, as no command here is; a script the server does
    not have cached (restarted, or a replica just promoted) is loaded first: it did not run."""
    for _ in range(2):
        async with client.pipeline(transaction=False) as pipe:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
            pipe.execute_command("WAIT", replicas, timeout_ms)
            reply, acknowledged = await pipe.execute(raise_on_error=False)
        if isinstance(reply, NoScriptError):
            await client.script_load(script.script)
            continue
        for answer in (reply, acknowledged):
            if isinstance(answer, Exception):
                raise answer
        return reply, int(acknowledged)
    raise NoScriptError("the script could not be loaded")


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


#: The scheme of a primary found through Redis Sentinel.
SENTINEL_SCHEME = "redis+sentinel://"
#: Sentinel's own port, when a URL names a Sentinel without one.
SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names: the Sentinels to ask, the service (the
    ``sentinel monitor`` name) whose primary to use, and how to log in to that primary."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """``redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[/db]``, or
    ``None`` for any other URL. ``ValueError`` for such a URL that names no Sentinel or no
    service. The credentials are the primary's (Sentinels are asked without)."""
    if not url.startswith(SENTINEL_SCHEME):
        return None
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):  # [::1]:26379
            host, _, port = item[1:].partition("]")
            port = port.removeprefix(":")
        else:
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "")
        if not host:
            raise ValueError(f"a Sentinel without a host in {url!r}")
        sentinels.append((host, int(port) if port else SENTINEL_PORT))
    service, _, db = path.strip("/").partition("/")
    if not sentinels or not service:
        raise ValueError(
            "a redis+sentinel:// URL names its Sentinels and a service: host:port,…/service[/db]"
        )
    return SentinelTarget(tuple(sentinels), unquote(service), int(db) if db else 0, username, password)


class _Sentinel(Sentinel):
    """Sentinels asked for the primary, minding one more state than redis-py does."""

    def check_master_state(self, state: dict[str, Any], service_name: str) -> bool:
        # The Sentinel leading a failover names the *old* primary until the failover ends
        # (the others already name the promoted replica); if the old one is back meanwhile
        # (restarted, often empty), it is not down either, and writes sent there are lost
        # when the Sentinels make it a replica. Ask the next Sentinel instead.
        flags = state.get("flags", "")
        if "failover_in_progress" in (flags.split(",") if isinstance(flags, str) else flags):
            return False
        return super().check_master_state(state, service_name)


class _SentinelPool(SentinelConnectionPool):
    """Connections to the service's current primary, as Sentinel names it when each one
    connects; the idle ones are dropped when Sentinel names another."""

    def __init__(self, service: str, sentinel: Sentinel, **options: Any) -> None:
        super().__init__(service, sentinel, **options)  # type: ignore[no-untyped-call]


class _BlockingSentinelPool(_SentinelPool, BlockingConnectionPool):
    """The command pool's bound (wait at most ``timeout`` for a free connection) with
    Sentinel's choice of server."""


class RedisConnections:
    """The Redis clients of one node; :meth:`aclose` closes every one it made."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, max_connections: int = 64, name: str = "herald"
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.name = name
        #: With a ``redis+sentinel://`` URL: the Sentinels that name the primary.
        self.target = parse_sentinel_url(url)
        self._sentinel: Sentinel | None = None
        self._pools: list[Any] = []
        common: dict[str, Any] = {
            "socket_connect_timeout": timeout,
            "retry": _no_retry(),
            "client_name": name,
            "maint_notifications_config": _no_maintenance_notifications(),
        }
        if self.target is not None:
            self._sentinel = _Sentinel(
                list(self.target.sentinels),
                # Asked with the same bound as every command, never retried: master
                # discovery moves on to the next Sentinel by itself.
                sentinel_kwargs={
                    "socket_timeout": timeout,
                    "socket_connect_timeout": timeout,
                    "retry": _no_retry(),
                },
            )
            common.update(db=self.target.db, username=self.target.username, password=self.target.password)
        self._common = common
        pool: BlockingConnectionPool
        if self._sentinel is not None:
            assert self.target is not None
            pool = _BlockingSentinelPool(
                self.target.service,
                self._sentinel,
                max_connections=max_connections,
                timeout=timeout,  # waiting for a free pooled connection
                socket_timeout=timeout,
                **common,
            )
        else:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=timeout,  # waiting for a free pooled connection
                socket_timeout=timeout,
                **common,
            )
        self._pool = pool
        self.commands: Redis = Redis(connection_pool=pool)
        self._own: list[Redis] = [self.commands]

    def _client(self, *, single: bool = False, **options: Any) -> Redis:
        """A client of its own (not sharing the command pool), with ``options`` on top of
        the common ones; through the Sentinels when the URL names them."""
        client: Redis
        if self._sentinel is None:
            client = Redis.from_url(self.url, single_connection_client=single, **self._common, **options)
        else:
            assert self.target is not None
            pool = _SentinelPool(self.target.service, self._sentinel, **self._common, **options)
            self._pools.append(pool)
            client = Redis(connection_pool=pool, single_connection_client=single)
        self._own.append(client)
        return client

    def blocking(self, block_seconds: float) -> Redis:
        return self._client(single=True, socket_timeout=block_seconds + self.timeout)

    def subscriber(self) -> Redis:
        # TCP keepalive notices a dead peer; a Unix socket (the workers' embedded log)
        # has none to notice, and its connections take no such option.
        keepalive = {} if self.url.startswith("unix:") else {"socket_keepalive": True}
        return self._client(socket_timeout=None, **keepalive)

    async def aclose(self) -> None:
        for client in self._own:
            await client.aclose()
        self._own.clear()
        await self._pool.aclose()
        for pool in self._pools:
            await pool.aclose()
        self._pools.clear()
        if self._sentinel is not None:
            await self._sentinel.aclose()


def shard_list(redis: RedisConnections | Sequence[RedisConnections]) -> list[RedisConnections]:
    """One Redis is a list of one shard."""
    return [redis] if isinstance(redis, RedisConnections) else list(redis)
