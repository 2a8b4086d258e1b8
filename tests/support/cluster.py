"""Several real gateway processes sharing one real Redis: a cluster behind no balancer."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.redis import RedisServer


def cluster_env(redis: RedisServer, prefix: str | None = None, **extra: str) -> dict[str, str]:
    """Settings for nodes of one cluster; a fresh key prefix keeps tests sharing a Redis apart."""
    return {
        "HERALD_BUS": "redis",
        "HERALD_REDIS_URL": redis.url,
        "HERALD_REDIS_PREFIX": prefix or f"t{secrets.token_hex(4)}",
        "HERALD_HEARTBEAT_SECONDS": "0.5",
        **extra,
    }


@contextlib.contextmanager
def running_cluster(size: int, env: Mapping[str, str]) -> Iterator[list[GatewayProcess]]:
    """``size`` nodes started side by side with the same ``env``; all stopped afterwards."""
    with ThreadPoolExecutor(size) as pool:
        futures = [pool.submit(start_gateway, env) for _ in range(size)]
    nodes: list[GatewayProcess] = []
    errors: list[BaseException] = []
    for future in futures:
        try:
            nodes.append(future.result())
        except Exception as exc:
            errors.append(exc)
    try:
        if errors:
            raise errors[0]
        yield nodes
    finally:
        for node in nodes:
            node.stop()
