"""Tracing (D30) end to end: real gateway processes export their spans over OTLP/HTTP to a
real receiver on a socket (tests/support/otlp.py); the trace context comes in through a
publish's header, a batch item's field, a Kafka record header and an outbox column, and
travels between nodes through Redis."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from herald.adapter import Adapter, default_mapping
from herald.sources.outbox import OutboxSource, create_table, enqueue
from tests.integration.test_kafka_gateway import kafka_env, wait_assigned
from tests.support.api import unique, wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.kafka import KafkaBroker
from tests.support.otlp import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.support.postgres import PostgresServer
from tests.support.recording_bus import SwitchableBus
from tests.support.redis import RedisServer
from tests.support.sse import Stream, open_stream


def traceparent() -> tuple[str, str, str]:
    """A producer's ``traceparent``, its trace id and its span id."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(receiver: OtlpReceiver) -> Iterator[GatewayProcess]:
    """One gateway exporting its spans to ``receiver``."""
    with running_gateway(receiver.env()) as gateway:
        yield gateway


async def publish(
    gateway: GatewayProcess, user: str, data: dict[str, Any], headers: dict[str, str] | None = None
) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{gateway.url}/api/v1/events",
            json={"event": "task.created", "scope": "user", "key": user, "data": data},
            headers={"authorization": f"Bearer {gateway.publisher_token}", **(headers or {})},
        )
    assert response.status_code == 202, response.text
    cursor: str = response.json()["id"]
    return cursor


@contextlib.asynccontextmanager
async def stream_of(
    node: GatewayProcess, token: str, *, trace: bool = False, **kw: Any
) -> AsyncIterator[Stream]:
    """An open stream past its ``connection.established``; ``trace``: it asks for trace ids."""
    params = {"trace": "1"} if trace else {}
    async with open_stream(node.url, token=token, params=params, **kw) as stream:
        established = await stream.next()
        assert established.event == "connection.established"
        yield stream


def with_cursor(cursor: str) -> Any:
    return lambda span: span.attributes.get("herald.cursor") == cursor


async def fanouts_of(receiver: OtlpReceiver, cursor: str, node_marker: str) -> list[ReceivedSpan]:
    """Every ``herald.fanout`` span of the event at ``cursor``: read once a later event's
    (``node_marker``'s) fan-out span arrived, so nothing of the first is still on its way."""
    await receiver.wait_for("herald.fanout", with_cursor(node_marker))
    return receiver.named("herald.fanout", with_cursor(cursor))


async def test_a_publish_span_carries_the_producers_trace_and_fans_out_once_per_node(
    traced: GatewayProcess, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent_id = traceparent()
    user = unique("u")
    token = traced.token(user)
    async with (
        stream_of(traced, token) as one,
        stream_of(traced, token) as two,
        stream_of(traced, token) as three,
    ):
        cursor = await publish(traced, user, {"task_id": "t1"}, {"traceparent": header})
        for stream in (one, two, three):
            event = await stream.next()
            assert event.id == cursor
            assert "trace_id" not in event.json(), "only a stream that asks gets the trace id"
        marker = await publish(traced, user, {"task_id": "marker"})
        for stream in (one, two, three):
            assert (await stream.next()).id == marker
        [ingest] = await receiver.wait_for("herald.ingest", with_cursor(cursor))
        fanouts = await fanouts_of(receiver, cursor, marker)
    assert ingest.trace_id == trace_id
    assert ingest.parent_span_id == parent_id
    assert ingest.attributes["herald.event"] == "task.created"
    assert ingest.attributes["herald.source"] == "http"
    assert ingest.resource["service.name"] == "herald-test"
    # One span for the event on this node, not one per connection.
    [fanout] = fanouts
    assert fanout.trace_id == trace_id
    assert fanout.parent_span_id == ingest.span_id
    assert fanout.attributes["herald.receivers"] == 3
    assert fanout.attributes["herald.bytes"] > 0
    assert fanout.attributes["herald.slowest_write_us"] >= 0
    # An event without a traceparent starts its own trace at the ingest span.
    [marker_ingest] = receiver.named("herald.ingest", with_cursor(marker))
    assert marker_ingest.parent_span_id == ""
    assert marker_ingest.trace_id not in (trace_id, "0" * 32)


async def test_a_batch_item_s_traceparent_wins_over_the_request_header(
    traced: GatewayProcess, receiver: OtlpReceiver
) -> None:
    own, own_trace, own_parent = traceparent()
    header, header_trace, header_parent = traceparent()
    user = unique("u")
    events = [
        {"event": "task.created", "scope": "user", "key": user, "data": {"n": 1}, "traceparent": own},
        {"event": "task.created", "scope": "user", "key": user, "data": {"n": 2}},
        {"event": "task.created", "scope": "user", "key": user, "data": {"n": 3}, "traceparent": "nonsense"},
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{traced.url}/api/v1/events/batch",
            json={"events": events},
            headers={"authorization": f"Bearer {traced.publisher_token}", "traceparent": header},
        )
    assert response.status_code == 200, response.text
    cursors = [result["id"] for result in response.json()["results"]]
    spans = [(await receiver.wait_for("herald.ingest", with_cursor(cursor)))[0] for cursor in cursors]
    assert (spans[0].trace_id, spans[0].parent_span_id) == (own_trace, own_parent)
    assert (spans[1].trace_id, spans[1].parent_span_id) == (header_trace, header_parent)
    # A malformed traceparent of its own is ignored (not refused): the item is a root.
    assert spans[2].parent_span_id == ""
    assert spans[2].trace_id not in (own_trace, header_trace)


async def test_a_malformed_traceparent_is_ignored_and_the_event_delivered(
    traced: GatewayProcess, receiver: OtlpReceiver
) -> None:
    user = unique("u")
    bad = [
        "garbage",
        "00-" + "0" * 32 + "-" + "1" * 16 + "-01",  # an all-zero trace id is invalid
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",  # version ff is invalid
        "00-" + "A" * 32 + "-" + "b" * 16 + "-01-extra",
        "x" * 5000,
    ]
    async with stream_of(traced, traced.token(user), trace=True) as stream:
        for value in bad:
            cursor = await publish(traced, user, {"bad": value[:10]}, {"traceparent": value})
            event = await stream.next()
            assert event.id == cursor
            [span] = await receiver.wait_for("herald.ingest", with_cursor(cursor))
            assert span.parent_span_id == ""
            # The event is traced from the gateway on: the stream sees the gateway's trace.
            assert event.json()["trace_id"] == span.trace_id
    assert traced.process.poll() is None, "the gateway is still up"


async def test_a_stream_that_asks_gets_the_trace_id_in_each_event_s_data(
    traced: GatewayProcess, gateway: GatewayProcess
) -> None:
    """On a traced node, and on one without tracing: the trace a producer sent travels with
    the event either way, and only streams that asked for it see it."""
    for node in (traced, gateway):
        header, trace_id, _ = traceparent()
        user = unique("u")
        token = node.token(user)
        async with (
            stream_of(node, token, trace=True) as asked,
            stream_of(node, token) as plain,
        ):
            cursor = await publish(node, user, {"task_id": "t1"}, {"traceparent": header})
            seen = await asked.next()
            other = await plain.next()
            untraced_cursor = await publish(node, user, {"task_id": "t2"})
            seen_untraced = await asked.next()
        assert seen.id == other.id == cursor
        assert seen.json() == {"task_id": "t1", "_scope": "user", "_version": "1.0", "trace_id": trace_id}
        assert other.json() == {"task_id": "t1", "_scope": "user", "_version": "1.0"}
        assert seen_untraced.id == untraced_cursor
        if node is gateway:
            # No tracing and no traceparent: no trace to name.
            assert "trace_id" not in seen_untraced.json()
        else:
            assert len(seen_untraced.json()["trace_id"]) == 32


async def test_a_replay_gives_a_stream_that_asks_the_trace_ids_too(traced: GatewayProcess) -> None:
    header, trace_id, _ = traceparent()
    user = unique("u")
    token = traced.token(user)
    async with stream_of(traced, token) as first:
        start = await publish(traced, user, {"n": 0})
        assert (await first.next()).id == start
        cursor = await publish(traced, user, {"n": 1}, {"traceparent": header})
        assert (await first.next()).id == cursor
    async with stream_of(traced, token, trace=True, last_event_id=start) as again:
        replayed = await again.next()
    assert replayed.id == cursor
    assert replayed.json()["trace_id"] == trace_id


async def test_a_kafka_record_header_traceparent_parents_the_ingest_span(
    kafka_broker: KafkaBroker, receiver: OtlpReceiver
) -> None:
    topic = f"traced-{secrets.token_hex(4)}"
    await kafka_broker.create_topics({topic: 1})
    header, trace_id, parent_id = traceparent()
    user = unique("u")
    record = {"event_type": "TaskProgressUpdateEvent", "user_id": user, "task_id": "t1", "progress": 5}
    with running_gateway({**kafka_env(kafka_broker, topic), **receiver.env()}) as gateway:
        await wait_assigned(gateway)
        async with (
            stream_of(gateway, gateway.token(user), trace=True) as stream,
            kafka_broker.producer() as producer,
        ):
            await producer.send_and_wait(
                topic, orjson.dumps(record), headers=[("traceparent", header.encode())]
            )
            await producer.send_and_wait(
                topic, orjson.dumps({**record, "task_id": "t2"}), headers=[("traceparent", b"not-one")]
            )
            traced_event, untraced_event = await stream.take(2, timeout=20)
    assert traced_event.json()["trace_id"] == trace_id
    [span] = await receiver.wait_for("herald.ingest", with_cursor(traced_event.id or ""))
    assert span.trace_id == trace_id
    assert span.parent_span_id == parent_id
    assert span.attributes["herald.source"] == f"kafka:{topic}:0:0"
    # A malformed header is ignored: delivered, traced from the gateway on.
    [other] = await receiver.wait_for("herald.ingest", with_cursor(untraced_event.id or ""))
    assert other.parent_span_id == ""
    assert untraced_event.json()["trace_id"] == other.trace_id


async def test_an_outbox_row_s_traceparent_column_parents_the_ingest_span(
    postgres_server: PostgresServer, db: Any, table: str, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent_id = traceparent()
    user = unique("u")
    env = {
        "HERALD_OUTBOX_DSN": postgres_server.dsn,
        "HERALD_OUTBOX_TABLE": table,
        "HERALD_OUTBOX_POLL_SECONDS": "0.2",
        **receiver.env(),
    }
    payload = {"user_id": user, "task_id": "t1", "progress": 5}
    with running_gateway(env) as gateway:
        async with stream_of(gateway, gateway.token(user), trace=True) as stream:
            row = await enqueue(db, "TaskProgressUpdateEvent", payload, table=table, traceparent=header)
            event = await stream.next(timeout=10)
    assert event.json()["trace_id"] == trace_id
    [span] = await receiver.wait_for("herald.ingest", with_cursor(event.id or ""))
    assert (span.trace_id, span.parent_span_id) == (trace_id, parent_id)
    assert span.attributes["herald.source"] == f"outbox:{table}:{row}"


async def test_the_outbox_reads_the_column_where_it_exists_and_works_without_it(
    postgres_server: PostgresServer, db: Any
) -> None:
    """A table made before the column (its old DDL) delivers as before; ``herald outbox init``
    adds the column, and a poller that reconnects then reads it."""
    header, _, _ = traceparent()
    old = f"outbox_old_{secrets.token_hex(4)}"
    await db.execute(
        f"CREATE TABLE {old} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, event_type text NOT NULL,"
        " payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),"
        " status text NOT NULL DEFAULT 'pending', processed_at timestamptz, error text)"
    )
    bus = SwitchableBus()
    adapter = Adapter(default_mapping())

    async def delivered(expected: int) -> None:
        source = OutboxSource(bus.offer, adapter, dsn=postgres_server.dsn, table=old, poll_seconds=0.1)
        await source.start()
        try:
            await wait_until(lambda: len(bus.messages) == expected, timeout=10)
        finally:
            await source.stop()

    await enqueue(db, "TaskProgressUpdateEvent", {"user_id": "u1", "task_id": "t1", "progress": 1}, table=old)
    await delivered(1)
    assert bus.messages[0].traceparent is None
    await create_table(db, old)  # the upgrade: the column is added, nothing else changes
    await enqueue(
        db,
        "TaskProgressUpdateEvent",
        {"user_id": "u1", "task_id": "t2", "progress": 2},
        table=old,
        traceparent=header,
    )
    await enqueue(
        db,
        "TaskProgressUpdateEvent",
        {"user_id": "u1", "task_id": "t3", "progress": 3},
        table=old,
        traceparent="bogus",
    )
    await delivered(3)
    assert [m.traceparent for m in bus.messages] == [None, header, None]


async def test_the_redis_bus_carries_the_trace_between_nodes(
    redis_server: RedisServer, receiver: OtlpReceiver
) -> None:
    header, trace_id, parent_id = traceparent()
    env = cluster_env(redis_server, **receiver.env())
    user = unique("u")
    with running_gateway(env) as writer, running_gateway(env) as reader:
        async with stream_of(reader, reader.token(user), trace=True) as stream:
            cursor = await publish(writer, user, {"task_id": "t1"}, {"traceparent": header})
            event = await stream.next(timeout=10)
            marker = await publish(writer, user, {"task_id": "marker"})
            assert (await stream.next(timeout=10)).id == marker
            [ingest] = await receiver.wait_for("herald.ingest", with_cursor(cursor))
            fanouts = await fanouts_of(receiver, cursor, marker)
    assert event.id == cursor
    assert event.json()["trace_id"] == trace_id
    assert (ingest.trace_id, ingest.parent_span_id) == (trace_id, parent_id)
    # The reader's span is the child of the writer's: the traceparent crossed Redis.
    [fanout] = fanouts
    assert fanout.node != ingest.node
    assert fanout.trace_id == trace_id
    assert fanout.parent_span_id == ingest.span_id
    assert fanout.attributes["herald.receivers"] == 1


async def test_each_worker_exports_its_own_spans(receiver: OtlpReceiver) -> None:
    """``--workers 2``: each worker sets up its own exporter once it runs; an event published
    on one worker and delivered on the other makes a span in each, joined in one trace."""
    header, trace_id, parent_id = traceparent()
    user = unique("u")
    env = {"HERALD_WORKERS": "2", "HERALD_WORKER_PORT_BASE": "0", **receiver.env()}
    with running_gateway(env) as gateway:
        workers = {w["worker"]: w for w in gateway.listening["workers"]}
        first, second = (
            GatewayProcess(
                url=f"http://127.0.0.1:{workers[n]['private_port']}",
                port=workers[n]["private_port"],
                process=gateway.process,
                log_path=gateway.log_path,
            )
            for n in (1, 2)
        )
        async with stream_of(first, first.token(user), trace=True) as stream:
            cursor = await publish(second, user, {"task_id": "t1"}, {"traceparent": header})
            event = await stream.next(timeout=10)
            [ingest] = await receiver.wait_for("herald.ingest", with_cursor(cursor))
            [fanout] = await receiver.wait_for("herald.fanout", with_cursor(cursor))
    assert event.json()["trace_id"] == trace_id
    assert (ingest.trace_id, ingest.parent_span_id) == (trace_id, parent_id)
    assert (fanout.trace_id, fanout.parent_span_id) == (trace_id, ingest.span_id)
    pids = {str(workers[n]["pid"]) for n in (1, 2)}
    assert ingest.node != fanout.node
    assert {ingest.node.split("-")[-2], fanout.node.split("-")[-2]} == pids
