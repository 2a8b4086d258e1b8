"""Nodes writing two versions of the bus entry format on one Redis read each other's entries.

The rule (docs/architecture.md, D30): the Redis Stream entry grows by optional fields only;
a reader ignores the fields it does not know and does without the optional ones that are
missing. Tracing added ``traceparent``. Here entries of the format before it (a frozen copy
of that version's writer), of this version, and of a future one (an unknown field) share
one channel on a real Redis, and a node reads all of them, live and in a replay; the
frozen copy of the old reader reads the new entries too. Then two running gateways on one
Redis, one tracing and one not, deliver each other's events.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Mapping

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from herald.bus import shard_log
from herald.bus.base import BusRecord
from herald.bus.redis_entry import entry_fields, pairs, record_from_entry
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from herald.events.message import SSEMessage, build_message, encode_data
from herald.types import Priority
from herald.wire.cursor import Cursor, parse_cursor
from herald.wire.encoder import event_frame
from tests.support.api import unique
from tests.support.cluster import cluster_env
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.otlp import otlp_receiver
from tests.support.redis import RedisServer
from tests.support.sse import open_stream
from tests.support.waiting import wait_until

CHANNEL = "user:skew"
TRACEPARENT = "00-" + "4bf92f3577b34da6a3ce929d0e0e4736" + "-" + "00f067aa0ba902b7" + "-01"


# --- the format before tracing, frozen as that version wrote and read it


def old_entry_fields(message: SSEMessage, data_json: bytes) -> list[bytes | str]:
    """``entry_fields`` as it was before D30 (no ``traceparent``)."""
    fields: list[bytes | str] = [
        "event",
        message.event,
        "scope",
        message.scope,
        "priority",
        message.priority.name.lower(),
        "version",
        message.version,
        "data",
        data_json,
    ]
    for name, value in (("key", message.key), ("coalesce", message.coalesce), ("source", message.source)):
        if value is not None:
            fields += [name, value]
    return fields


def old_record_from_entry(entry_id: bytes, fields: Mapping[bytes, bytes]) -> BusRecord:
    """``record_from_entry`` as it was before D30."""
    cursor_text = entry_id.decode()
    ms, _, seq = cursor_text.partition("-")
    data_json = fields[b"data"]
    data = orjson.loads(data_json)
    for name in ("_scope", "_version"):
        data.pop(name, None)
    event = fields[b"event"].decode()

    def optional(name: bytes) -> str | None:
        value = fields.get(name)
        return None if value is None else value.decode()

    message = SSEMessage(
        event=event,
        scope=fields[b"scope"].decode(),
        key=optional(b"key"),
        data=data,
        priority=Priority.parse(fields[b"priority"].decode()),
        coalesce=optional(b"coalesce"),
        source=optional(b"source"),
        version=fields[b"version"].decode(),
    )
    return BusRecord(Cursor(int(ms), int(seq)), message, event_frame(cursor_text, event, data_json))


Writer = Callable[[SSEMessage, bytes], list[bytes | str]]


def future_entry_fields(message: SSEMessage, data_json: bytes) -> list[bytes | str]:
    """A later version's entry: this version's fields and one it has never heard of."""
    return [*entry_fields(message, data_json), "deadline_ms", "1700000000000"]


async def append_as(writer_bus: ShardedBus, fields_of: Writer, message: SSEMessage) -> str:
    """Append ``message`` through the real append path of a node whose entries are made by
    ``fields_of`` (a frozen copy of another version's ``entry_fields``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shard_log, "entry_fields", fields_of)
        result = await writer_bus.append(message, encode_data(message, 65536))
    return str(result.cursor)


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


def message(n: int, traceparent: str | None = None) -> SSEMessage:
    return build_message(
        event="task.created",
        scope="user",
        key="skew",
        data={"n": n},
        source="http",
        traceparent=traceparent,
    )


async def test_a_node_reads_old_new_and_future_entries_of_one_channel(
    redis_server: RedisServer, redis_client: aioredis.Redis
) -> None:
    keys = ShardKeys(f"skew-{secrets.token_hex(4)}")
    reader, writer = (
        ShardedBus([RedisConnections(redis_server.url, timeout=1.0)], keys=keys, owns_connections=True)
        for _ in range(2)
    )
    await reader.start()
    await writer.start()
    live: list[BusRecord] = []
    reader.subscribe(live.append)
    try:
        await reader.follow([CHANNEL])
        old, new, future = message(1), message(2, TRACEPARENT), message(3, TRACEPARENT)
        start = await append_as(writer, old_entry_fields, message(0, TRACEPARENT))
        written = [
            await append_as(writer, old_entry_fields, old),
            await append_as(writer, entry_fields, new),
            await append_as(writer, future_entry_fields, future),
        ]
        await wait_until(lambda: len(live) == 4, timeout=5)
        after = parse_cursor(start)
        assert after is not None
        replay = await reader.replay(after, [CHANNEL])
    finally:
        await reader.stop()
        await writer.stop()
    assert live[0].message.traceparent is None, "the old writer does not know the field"
    assert replay.exact
    for records in (live[1:], list(replay.records)):
        assert [str(record.cursor) for record in records] == written
        assert [record.message.data["n"] for record in records] == [1, 2, 3]
        # The missing optional field is no trace; the unknown one is ignored.
        assert [record.message.traceparent for record in records] == [None, TRACEPARENT, TRACEPARENT]
        for record in records:
            assert record.frame == event_frame(
                str(record.cursor), "task.created", encode_data(record.message, 65536)
            ), "the frame is the same whichever version wrote the entry"

    # The old version's reader reads this version's and the future's entries as well.
    entries = await redis_client.xrange(keys.log(CHANNEL))
    for entry_id, fields in entries:
        old_record = old_record_from_entry(entry_id, fields)
        new_record = record_from_entry(entry_id, pairs([item for pair in fields.items() for item in pair]))
        assert old_record.frame == new_record.frame
        assert old_record.message.data == new_record.message.data
        assert old_record.message.traceparent is None


async def publish(node: GatewayProcess, user: str, n: int, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{node.url}/api/v1/events",
            json={"event": "task.created", "scope": "user", "key": user, "data": {"n": n}},
            headers={"authorization": f"Bearer {node.publisher_token}", **headers},
        )
    assert response.status_code == 202, response.text
    cursor: str = response.json()["id"]
    return cursor


async def test_a_tracing_node_and_one_without_deliver_each_other_s_events(redis_server: RedisServer) -> None:
    user = unique("u")
    env = cluster_env(redis_server)
    with (
        otlp_receiver() as receiver,
        running_gateway({**env, **receiver.env()}) as tracing,
        running_gateway(env) as plain,
    ):
        token = tracing.token(user)
        async with (
            open_stream(tracing.url, token=token, params={"trace": "1"}) as on_tracing,
            open_stream(plain.url, token=token, params={"trace": "1"}) as on_plain,
        ):
            for stream in (on_tracing, on_plain):
                assert (await stream.next()).event == "connection.established"
            header = "00-" + secrets.token_hex(16) + "-" + secrets.token_hex(8) + "-01"
            through_plain = await publish(plain, user, 1, {"traceparent": header})
            through_tracing = await publish(tracing, user, 2, {"traceparent": header})
            seen_tracing = await on_tracing.take(2, timeout=10)
            seen_plain = await on_plain.take(2, timeout=10)
            spans = await receiver.wait_for(
                "herald.fanout", lambda span: span.attributes["herald.cursor"] == through_plain
            )
    for seen in (seen_tracing, seen_plain):
        assert [event.id for event in seen] == [through_plain, through_tracing]
        assert [event.json()["n"] for event in seen] == [1, 2]
        # Both nodes carry the producer's trace, whichever took the event in.
        assert {event.json()["trace_id"] for event in seen} == {header[3:35]}
    # The untraced node carried the producer's context through Redis as it came: the traced
    # node's fan-out span is the producer's span's child.
    [fanout] = spans
    assert fanout.trace_id == header[3:35]
    assert fanout.parent_span_id == header[36:52]
    assert (
        receiver.named("herald.ingest", lambda span: span.attributes["herald.cursor"] == through_plain) == []
    )
