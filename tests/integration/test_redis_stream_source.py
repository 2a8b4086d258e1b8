"""The Redis Streams source acknowledges an entry only once its event is in the bus."""

from __future__ import annotations

import secrets

import orjson

from herald.bus.base import AppendResult
from herald.cluster.redis_client import RedisConnections
from herald.errors import BusUnavailable
from herald.events.message import SSEMessage
from herald.sources.incoming import offer_from
from herald.sources.redis_streams import RedisStreamSource
from herald.wire.cursor import Cursor
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until


class FlakyBus:
    """Refuses the first ``refusals`` appends, as a bus whose Redis is away would."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.appended: list[tuple[SSEMessage, str | None]] = []

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        if self.refusals > 0:
            self.refusals -= 1
            raise BusUnavailable("the bus is away", retry_after=1)
        self.appended.append((message, idempotency_key))
        return AppendResult(Cursor(len(self.appended), 0))


async def test_an_entry_stays_pending_until_the_bus_takes_it_and_order_is_kept(
    redis_server: RedisServer,
) -> None:
    stream = f"app:{secrets.token_hex(4)}"
    bus = FlakyBus(refusals=3)
    connections = RedisConnections(redis_server.url)
    source = RedisStreamSource(
        connections, offer_from(bus.publish), stream=stream, group="herald", consumer="node-1"
    )
    await source.start()
    try:
        await wait_until(source.ready.is_set)
        with redis_server.client() as app:
            ids = [
                app.xadd(
                    stream,
                    {
                        "json": orjson.dumps(
                            {"event": "task.created", "scope": "user", "key": "u", "data": {"n": n}}
                        )
                    },
                )
                for n in range(3)
            ]
            await wait_until(lambda: len(bus.appended) == 3, timeout=10)
            assert [m.data["n"] for m, _ in bus.appended] == [0, 1, 2]
            assert [key for _, key in bus.appended] == [f"redis-stream:{stream}:{i.decode()}" for i in ids]
            await wait_until(lambda: app.xpending(stream, "herald")["pending"] == 0)
        assert source.stats.as_dict() == {
            "received": 3,
            "published": 3,
            "duplicates": 0,
            "rejected": 0,
            "failed": 0,
        }
    finally:
        await source.stop()
        await connections.aclose()
