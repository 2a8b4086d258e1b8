"""Deep replay from a real Kafka: a client whose cursor fell out of the log's window gets the
Kafka events it may see (by scope and grants), without ids and only the newest per coalesce
key, then the log's exact replay from its floor, then live — and is told it is not recovered,
because events of other sources (here, one published over HTTP) are gone."""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from herald.adapter import Adapter, default_mapping
from herald.sources.kafka_replay import KafkaDeepReplay
from herald.wire.cursor import parse_cursor
from tests.integration.test_kafka_gateway import kafka_env, kafka_stats, wait_assigned
from tests.support.api import api_client, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.kafka import KafkaBroker
from tests.support.sse import Event, open_stream

NOVEL, OTHER_NOVEL = "n1", "n2"


def task_created(user: str, task: str) -> bytes:
    return orjson.dumps(
        {"event_type": "TaskCreatedEvent", "user_id": user, "task_id": task, "task_type": "draft"}
    )


def progress(user: str, task: str, value: int) -> bytes:
    return orjson.dumps(
        {"event_type": "TaskProgressUpdateEvent", "user_id": user, "task_id": task, "progress": value}
    )


def chapter(novel: str, chapter_id: str) -> bytes:
    return orjson.dumps(
        {
            "event_type": "ChapterDraftCreatedEvent",
            "novel_id": novel,
            "chapter_id": chapter_id,
            "chapter_number": 1,
            "title": "t",
        }
    )


def label(event: Event) -> str:
    data: dict[str, Any] = event.json()
    return str(data.get("task_id") or data.get("chapter_id"))


async def wait_received(gateway: GatewayProcess, records: int) -> None:
    async def handled() -> bool:
        return int((await kafka_stats(gateway))["received"]) >= records

    await wait_until(handled, timeout=20, what=f"{records} Kafka records handled")


async def test_a_cursor_older_than_the_window_gets_its_kafka_events_then_the_log_then_live(
    kafka_broker: KafkaBroker,
) -> None:
    topic = f"deep-{secrets.token_hex(4)}"
    user = f"alice-{secrets.token_hex(3)}"
    await kafka_broker.create_topics({topic: 2})
    env = kafka_env(
        kafka_broker,
        topic,
        HERALD_REPLAY_MAX_EVENTS="5",  # a tiny window: six events push anything out
        HERALD_KAFKA_COMMIT_INTERVAL_SECONDS="0",
        HERALD_COALESCE_INTERVAL_SECONDS="0",  # every progress value in the log, to see deep replay coalesce
    )
    with running_gateway(env) as gateway:
        await wait_assigned(gateway)
        token = gateway.token(user, resources=[f"novel:{NOVEL}"])
        async with open_stream(gateway.url, token=token, subscribe=f"novel:{NOVEL}") as first:
            await first.next()
            await kafka_broker.produce(topic, [task_created(user, "a0")], partition=0)
            cursor = (await first.next(timeout=20)).id
        assert cursor is not None

        # Missed while away: Kafka events for this stream, others not for it, and one over HTTP.
        await kafka_broker.produce(
            topic,
            [
                task_created(user, "a1"),
                chapter(NOVEL, "c1"),
                progress(user, "t1", 10),
                progress(user, "t1", 20),
            ],
            partition=0,
        )
        await kafka_broker.produce(
            topic,
            [task_created(user, "a2"), task_created("bob", "b1"), chapter(OTHER_NOVEL, "c2")],
            partition=1,
        )
        await wait_received(gateway, 8)
        async with api_client(gateway) as api:
            await api.publish("task.created", "user", user, {"task_id": "over-http"})
            for n in range(6):  # push the window past the cursor
                await api.publish("task.created", "user", f"filler-{n}", {"task_id": "f"})
        # After the floor: this one is in the log, and comes from there with its cursor.
        await kafka_broker.produce(topic, [task_created(user, "a3")], partition=1)
        await wait_received(gateway, 9)

        async with open_stream(
            gateway.url, token=token, subscribe=f"novel:{NOVEL}", last_event_id=cursor
        ) as again:
            hello = await again.next()
            told = hello.json()
            events = await again.until(lambda e: label(e) == "a3", timeout=10)
            await kafka_broker.produce(topic, [task_created(user, "a4")], partition=0)
            live = await again.next(timeout=20)

    assert told["recovered"] is False
    assert told["replay_miss"] == "stale"
    deep = told["deep_replay"]
    assert deep["source"] == "kafka"
    assert deep["complete"] is True
    recovered, from_log = events[:-1], events[-1]
    # The stream's own events from Kafka, newest progress only; nothing of bob, novel n2 or HTTP.
    names = [label(e) for e in recovered if label(e) != "a0"]  # a0's time may equal the cursor's
    assert sorted(names) == ["a1", "a2", "c1", "t1"]
    assert deep["events"] == len(recovered)
    assert [e.json()["progress"] for e in recovered if label(e) == "t1"] == [20]
    assert names.index("a1") < names.index("c1") < names.index("t1")  # partition 0's order
    assert all(e.id == "" for e in recovered)  # no cursor: Last-Event-ID does not move
    # Then the log from its floor (the established id), exactly, and live.
    floor = parse_cursor(hello.id)
    assert floor is not None
    assert floor > parse_cursor(cursor)  # type: ignore[operator]
    assert from_log.id is not None
    assert parse_cursor(from_log.id) > floor  # type: ignore[operator]
    assert label(live) == "a4"
    assert parse_cursor(live.id) > parse_cursor(from_log.id)  # type: ignore[operator]

    # The bounds: a recovery allowed two events says it is incomplete.
    bounded = KafkaDeepReplay(
        Adapter(default_mapping()),
        bootstrap=kafka_broker.bootstrap,
        topics=[topic],
        group=f"g-{topic}",
        max_events=2,
    )
    since = parse_cursor(cursor)
    assert since is not None
    found = await bounded.recover(since.ms, lambda m: True, set())
    assert found is not None
    messages, complete = found
    assert (len(messages), complete) == (2, False)
