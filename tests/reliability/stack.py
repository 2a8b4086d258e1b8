"""A whole deployment of real processes: several gateway nodes on one Redis bus, a Kafka
broker and a PostgreSQL outbox feeding them. Each part can be killed for real."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import httpx

from herald.sources.outbox import create_table
from tests.support.api import wait_until
from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.kafka import KafkaBroker
from tests.support.postgres import PostgresServer
from tests.support.redis import RedisServer


class Stack:
    def __init__(self, nodes: int, *, partitions: int | None = None, **env: str) -> None:
        self.size = nodes
        self.partitions = partitions or nodes
        self.extra_env = env
        self.redis = RedisServer(appendonly=True)
        self.kafka = KafkaBroker()
        self.postgres = PostgresServer(synchronous_commit=True)
        self.topic = f"rel-{secrets.token_hex(3)}"
        self.group = f"g-{self.topic}"
        self.table = f"outbox_{secrets.token_hex(3)}"
        self.nodes: list[GatewayProcess | None] = []
        self.env: dict[str, str] = {}

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes if n is not None]

    @property
    def all_urls(self) -> list[str]:
        """Every node's address, the dead ones too (a client's list of where to go)."""
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def node(self, i: int) -> GatewayProcess:
        found = self.nodes[i]
        assert found is not None
        return found

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(3) as pool:
            started = [
                loop.run_in_executor(pool, self.redis.start),
                loop.run_in_executor(pool, self.kafka.start),
                loop.run_in_executor(pool, self.postgres.start),
            ]
            await asyncio.gather(*started)
        await self.kafka.create_topics({self.topic: self.partitions})
        connection = await asyncpg.connect(self.postgres.dsn)
        try:
            await create_table(connection, self.table)
        finally:
            await connection.close()
        self.env = {
            "HERALD_BUS": "redis",
            "HERALD_REDIS_URL": self.redis.url,
            "HERALD_REDIS_PREFIX": f"rel{secrets.token_hex(3)}",
            "HERALD_REDIS_TIMEOUT_SECONDS": "1",
            "HERALD_HEARTBEAT_SECONDS": "1",
            "HERALD_RETRY_MS": "300",
            "HERALD_SHUTDOWN_RETRY_SPREAD_MS": "700",
            "HERALD_KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "HERALD_KAFKA_TOPICS": self.topic,
            "HERALD_KAFKA_GROUP": self.group,
            "HERALD_KAFKA_AUTO_OFFSET_RESET": "earliest",
            "HERALD_KAFKA_SESSION_TIMEOUT_SECONDS": "6",
            "HERALD_OUTBOX_DSN": self.postgres.dsn,
            "HERALD_OUTBOX_TABLE": self.table,
            "HERALD_OUTBOX_POLL_SECONDS": "1",
            "HERALD_LOG_LEVEL": "warning",
            **self.extra_env,
        }
        with ThreadPoolExecutor(self.size) as pool:
            self.nodes = list(await asyncio.gather(*(loop.run_in_executor(pool, self._start_node, 0)
                                                     for _ in range(self.size))))  # fmt: skip
        self.ports = [self.node(i).port for i in range(self.size)]
        await self.wait_sources()

    def _start_node(self, port: int) -> GatewayProcess:
        return start_gateway(self.env, port=port)

    async def wait_sources(self, timeout: float = 60.0) -> None:
        """Every partition has an owner among the nodes, and every node's outbox poller is up."""

        async def assigned() -> bool:
            owned = 0
            async with httpx.AsyncClient(timeout=2.0) as http:
                for url in self.urls:
                    with contextlib.suppress(httpx.HTTPError):
                        ready = (await http.get(url + "/api/v1/events/health/ready")).json()
                        if not ready["ready"]:
                            return False
                        health = (await http.get(url + "/api/v1/events/health")).json()
                        owned += health["sources"]["kafka"]["partitions"]
            return owned == self.partitions

        await wait_until(
            assigned, timeout=timeout, interval=0.2, what="Kafka partitions assigned, nodes ready"
        )

    def kill_node(self, i: int) -> None:
        self.node(i).stop(signal.SIGKILL)
        self.nodes[i] = None

    async def restart_node(self, i: int) -> None:
        assert self.nodes[i] is None
        self.nodes[i] = await asyncio.get_running_loop().run_in_executor(
            None, self._start_node, self.ports[i]
        )

    async def drained(self, timeout: float = 60.0) -> None:
        """Every Kafka record produced so far is committed (so in the log) and no outbox row
        is pending."""

        async def done() -> bool:
            with contextlib.suppress(Exception):
                ends = await self.kafka.end_offsets(self.topic, range(self.partitions))
                committed = await self.kafka.committed(self.group, self.topic)
                if any(committed.get(p, -1) < end for p, end in ends.items()):
                    return False
                connection = await asyncpg.connect(self.postgres.dsn, timeout=2)
                try:
                    pending = await connection.fetchval(
                        f"SELECT count(*) FROM {self.table} WHERE status = 'pending'"  # noqa: S608
                    )
                finally:
                    await connection.close()
                return bool(pending == 0)
            return False

        await wait_until(done, timeout=timeout, interval=0.25, what="Kafka and the outbox drained")

    def logs(self) -> dict[str, list[dict[str, Any]]]:
        return {f"node{i}": n.logs() for i, n in enumerate(self.nodes) if n is not None}

    def close(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.stop()
        self.kafka.close()
        self.postgres.close()
        self.redis.close()


@contextlib.contextmanager
def closing(stack: Stack) -> Iterator[Stack]:
    try:
        yield stack
    finally:
        stack.close()
