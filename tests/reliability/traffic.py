"""Steady traffic into a deployment through every way in: the HTTP publish API (user
events and global ticks, over all nodes), a Kafka topic and a PostgreSQL outbox table.

Every event carries a uid of the harness's own, recorded in the :class:`Ledger` when
it is attempted and again when it is acknowledged (a 202, a broker ack, a commit).
The HTTP publisher behaves like a careful producer: a refusal (503) or a broken
connection keeps the event, with its idempotency key, to send again later.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Callable, Sequence

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from herald.sources.outbox import enqueue
from tests.reliability.ledger import Ledger, Published

PUBLISH = "/api/v1/events"
TICK = "system.notification"


class Pacer:
    """Sleeps so that a loop runs ``rate`` times a second on average."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.next_at = time.monotonic()

    async def wait(self) -> None:
        self.next_at = max(self.next_at + self.interval, time.monotonic() - 1.0)
        await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))


class HttpTraffic:
    def __init__(
        self,
        urls: Callable[[], Sequence[str]],
        token: str,
        users: Sequence[str],
        ledger: Ledger,
        *,
        rate: float,
        tick_every: int = 4,
        seed: int = 1,
    ) -> None:
        self.urls = urls
        self.token = token
        self.users = users
        self.ledger = ledger
        self.rate = rate
        self.tick_every = tick_every
        self.random = random.Random(seed)
        self.pending: list[tuple[str, dict[str, object], float]] = []
        self.refused = 0
        self.broken = 0
        #: (sent at, seconds to the answer, status or 0 for a broken request, error code)
        self.answers: list[tuple[float, float, int, str | None]] = []
        self._turn = itertools.count()
        self._seq = itertools.count()

    def _body(self, uid: str, user: str | None) -> dict[str, object]:
        if user is None:
            return {"event": TICK, "scope": "global", "key": None,
                    "data": {"uid": uid, "level": "info", "title": "tick", "message": uid}}  # fmt: skip
        return {"event": "task.created", "scope": "user", "key": user, "data": {"uid": uid}}

    async def send(self, http: httpx.AsyncClient, uid: str, body: dict[str, object], started: float) -> bool:
        urls = self.urls()
        url = urls[next(self._turn) % len(urls)]
        sent = time.monotonic()
        try:
            response = await http.post(
                url + PUBLISH,
                content=orjson.dumps({**body, "idempotency_key": uid}),
                headers={"authorization": f"Bearer {self.token}", "content-type": "application/json"},
            )
        except httpx.HTTPError:
            self.answers.append((sent, time.monotonic() - sent, 0, None))
            self.broken += 1
            return False
        is_json = response.headers.get("content-type") == "application/json"
        code = response.json().get("code") if response.status_code != 202 and is_json else None
        self.answers.append((sent, time.monotonic() - sent, response.status_code, code))
        if response.status_code == 202:
            user = body["key"] if body["scope"] == "user" else None
            assert user is None or isinstance(user, str)
            self.ledger.accept(Published(uid, user, "http", started, time.monotonic()))
            return True
        self.check_refusal(response)
        self.refused += 1
        return False

    def check_refusal(self, response: httpx.Response) -> None:
        """A refusal this traffic expects (a node or its bus away, briefly): 503."""
        assert response.status_code == 503, response.text

    async def publish(self, http: httpx.AsyncClient, user: str | None, prefix: str = "h") -> str:
        uid = f"{prefix}{next(self._seq)}-{self.random.randrange(1 << 30):x}"
        self.ledger.attempt(uid, user)
        body = self._body(uid, user)
        started = time.monotonic()
        if not await self.send(http, uid, body, started):
            self.pending.append((uid, body, started))
        return uid

    async def run(self, stop: asyncio.Event) -> None:
        pacer = Pacer(self.rate)
        retried_at = time.monotonic()
        async with httpx.AsyncClient(timeout=5.0) as http:
            for n in itertools.count():
                if stop.is_set():
                    return
                user = None if n % self.tick_every == 0 else self.random.choice(self.users)
                await self.publish(http, user, "g" if user is None else "h")
                if self.pending and time.monotonic() - retried_at > 0.5:
                    retried_at = time.monotonic()
                    await self._retry_some(http, 5)
                await pacer.wait()

    async def _retry_some(self, http: httpx.AsyncClient, n: int) -> None:
        batch, self.pending = self.pending[:n], self.pending[n:]
        for uid, body, started in batch:
            if not await self.send(http, uid, body, started):
                self.pending.append((uid, body, started))
                return

    async def drain(self, timeout: float = 60.0) -> None:
        """Send every refused event again (same idempotency key) until each is accepted."""
        async with httpx.AsyncClient(timeout=5.0) as http, asyncio.timeout(timeout):
            while self.pending:
                await self._retry_some(http, len(self.pending))
                if self.pending:
                    await asyncio.sleep(0.2)

    async def marker(self) -> str:
        """A global event published after everything else: the end of a phase."""
        async with httpx.AsyncClient(timeout=5.0) as http:
            uid = await self.publish(http, None, "end")
        await self.drain()
        return uid


class KafkaTraffic:
    """``TaskCreatedEvent`` records keyed by user (one partition per user: ordered)."""

    def __init__(
        self, bootstrap: str, topic: str, users: Sequence[str], ledger: Ledger, *, rate: float
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.users = users
        self.ledger = ledger
        self.rate = rate
        self.failed = 0
        self._seq = itertools.count()
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=60_000
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def run(self, stop: asyncio.Event) -> None:
        assert self._producer is not None
        pacer = Pacer(self.rate)
        rng = random.Random(2)
        while not stop.is_set():
            user = rng.choice(self.users)
            uid = f"k{next(self._seq)}"
            self.ledger.attempt(uid, user)
            record = {"event_type": "TaskCreatedEvent", "user_id": user, "task_id": uid, "task_type": "rel"}
            started = time.monotonic()
            try:
                await self._producer.send_and_wait(self.topic, orjson.dumps(record), key=user.encode())
            except (KafkaError, TimeoutError):
                self.failed += 1
            else:
                self.ledger.accept(Published(uid, user, "kafka", started, time.monotonic()))
            await pacer.wait()


class OutboxTraffic:
    """``TaskCreatedEvent`` rows, each committed on its own (the commit is the ack)."""

    def __init__(self, dsn: str, table: str, users: Sequence[str], ledger: Ledger, *, rate: float) -> None:
        self.dsn = dsn
        self.table = table
        self.users = users
        self.ledger = ledger
        self.rate = rate
        self.failed = 0
        self._seq = itertools.count()

    async def run(self, stop: asyncio.Event) -> None:
        pacer = Pacer(self.rate)
        rng = random.Random(3)
        connection: asyncpg.Connection | None = None
        try:
            while not stop.is_set():
                if connection is None:
                    try:
                        connection = await asyncpg.connect(self.dsn, timeout=2)
                    except (OSError, asyncpg.PostgresError, TimeoutError):
                        self.failed += 1
                        await asyncio.sleep(0.2)
                        continue
                user = rng.choice(self.users)
                uid = f"o{next(self._seq)}"
                self.ledger.attempt(uid, user)
                payload = {"user_id": user, "task_id": uid, "task_type": "rel"}
                started = time.monotonic()
                try:
                    await enqueue(connection, "TaskCreatedEvent", payload, table=self.table)
                except (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    asyncpg.InternalClientError,
                    TimeoutError,
                ):
                    self.failed += 1
                    with contextlib.suppress(Exception):
                        connection.terminate()
                    connection = None
                    continue
                self.ledger.accept(Published(uid, user, "outbox", started, time.monotonic()))
                await pacer.wait()
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    await connection.close(timeout=2)
