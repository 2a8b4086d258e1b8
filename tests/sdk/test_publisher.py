"""The SDK's publishers against a real gateway: events reach real SSE streams, refusals are typed,
retries reuse the idempotency key (one event, however many attempts), batches."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from herald_publisher import (
    AsyncPublisher,
    AuthenticationError,
    Event,
    HeraldError,
    InvalidEventError,
    PermissionDeniedError,
    Published,
    Publisher,
    RetryPolicy,
    TooLargeError,
)
from herald_publisher.catalogue import ChapterDraftCreated, TaskProgressUpdated
from pydantic import ValidationError

from tests.sdk.conftest import FAST_RETRY, Requests
from tests.sdk.proxy import DROP_ANSWER, FORWARD, Answer, FaultProxy, Seen
from tests.support.api import unique, wait_until
from tests.support.cluster import cluster_env
from tests.support.gateway import GatewayProcess, running_gateway, start_gateway
from tests.support.redis import free_port, running_redis
from tests.support.sse import Event as SSEEvent
from tests.support.sse import Stream, open_stream

MARKER = "test.marker-published"
BATCH = "/api/v1/events/batch"
PUBLISH = "/api/v1/events"


async def until_marker(gateway: GatewayProcess, stream: Stream, user: str) -> list[SSEEvent]:
    """What ``stream`` got before a marker published now: proof nothing else was on the way."""
    marker = gateway.publish(MARKER, "user", user, {})
    seen = await stream.until(lambda event: event.id == marker)
    return [event for event in seen[:-1] if not event.event.startswith("connection.")]


async def test_published_events_reach_a_real_stream(
    gateway: GatewayProcess, publisher: AsyncPublisher
) -> None:
    user, novel = unique("alice"), unique("n")
    async with open_stream(
        gateway.url, token=gateway.token(user, resources=[f"novel:{novel}"]), subscribe=f"novel:{novel}"
    ) as stream:
        typed = await publisher.publish(
            TaskProgressUpdated(task_id="t1", progress=40, message="drafting"), key=user
        )
        named = await publisher.publish(
            "task.progress-updated", scope="user", key=user, data={"task_id": "t1", "progress": 50}
        )
        # a novel-scope event's routing key is in its payload
        chapter = await publisher.publish(
            ChapterDraftCreated(chapter_id="c9", chapter_number=3, title="Ch. 3", novel_id=novel)
        )
        free = await publisher.publish("billing.invoice-paid", scope="user", key=user, data={"invoice": "i1"})
        events = await until_marker(gateway, stream, user)
    assert [(e.event, e.id) for e in events] == [
        ("task.progress-updated", typed),
        ("task.progress-updated", named),
        ("chapter.draft-created", chapter),
        ("billing.invoice-paid", free),
    ]
    assert events[0].json() == {
        "task_id": "t1",
        "progress": 40,
        "message": "drafting",
        "estimated_remaining": None,
        "_scope": "user",
        "_version": "1.0",
    }
    assert events[1].json()["progress"] == 50
    assert events[2].json()["_scope"] == "novel"


async def test_the_sync_publisher_reaches_a_real_stream(gateway: GatewayProcess) -> None:
    user = unique("bob")
    requests = Requests()
    client = httpx.Client(timeout=10, event_hooks={"request": [requests.sync_hook]})
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        with client, Publisher(gateway.url, gateway.publisher_token, client=client) as publisher:
            cursor = await asyncio.to_thread(
                publisher.publish, TaskProgressUpdated(task_id="t2", progress=10), key=user
            )
            results = await asyncio.to_thread(
                publisher.publish_many,
                [Event.build(TaskProgressUpdated(task_id="t2", progress=n), key=user) for n in (20, 30)],
            )
        events = await until_marker(gateway, stream, user)
    assert [e.json()["progress"] for e in events] == [10, 20, 30]
    assert events[0].id == cursor
    assert [r.id for r in results if isinstance(r, Published)] == [e.id for e in events[1:]]
    assert requests.paths == [PUBLISH, BATCH]


async def test_a_producers_typo_fails_before_anything_is_sent(
    publisher: AsyncPublisher, requests: Requests
) -> None:
    with pytest.raises(ValidationError):
        TaskProgressUpdated(task_id="t1", progres=40)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TaskProgressUpdated(task_id="t1", progress=140)
    with pytest.raises(InvalidEventError) as typo:
        await publisher.publish("task.progress-updated", key="alice", data={"task_id": "t1", "progres": 40})
    assert (typo.value.code, typo.value.status, typo.value.field) == ("EVENT_INVALID", 0, "data")
    assert "progres" in str(typo.value)
    with pytest.raises(InvalidEventError) as no_key:
        await publisher.publish(TaskProgressUpdated(task_id="t1", progress=1))
    assert no_key.value.field == "key"
    with pytest.raises(InvalidEventError):
        await publisher.publish("Not A Name", scope="user", key="alice", data={})
    assert requests.paths == []


async def test_refusals_are_typed_by_the_gateways_codes_and_not_retried(
    gateway: GatewayProcess, requests: Requests
) -> None:
    client = httpx.AsyncClient(timeout=10, event_hooks={"request": [requests.hook]})
    ok = {"event": "test.refused-published", "scope": "user", "key": "alice", "data": {}}
    async with client:
        stranger = AsyncPublisher(gateway.url, "not-a-jwt", retry=FAST_RETRY, client=client)
        with pytest.raises(AuthenticationError) as unauthenticated:
            await stranger.publish(ok["event"], scope="user", key="alice", data={})
        reader = AsyncPublisher(gateway.url, gateway.token("reader"), retry=FAST_RETRY, client=client)
        with pytest.raises(PermissionDeniedError) as forbidden:
            await reader.publish(ok["event"], scope="user", key="alice", data={})
        publisher = AsyncPublisher(gateway.url, gateway.publisher_token, retry=FAST_RETRY, client=client)
        # Past the SDK's own checks (an Event made by hand): the gateway's 422.
        with pytest.raises(InvalidEventError) as invalid:
            await publisher.publish(Event(event="connection.established", scope="user", key="alice", data={}))
        with pytest.raises(TooLargeError) as too_large:
            await publisher.publish(ok["event"], scope="user", key="alice", data={"text": "x" * 70_000})
    assert (unauthenticated.value.status, unauthenticated.value.code) == (401, "AUTH_INVALID")
    assert (forbidden.value.status, forbidden.value.code) == (403, "PERMISSION_DENIED")
    assert (invalid.value.status, invalid.value.code, invalid.value.field) == (422, "EVENT_INVALID", "event")
    assert (too_large.value.status, too_large.value.code) == (413, "EVENT_TOO_LARGE")
    assert all(isinstance(error.value.message, str) and error.value.message for error in (invalid, too_large))
    assert requests.paths == [PUBLISH] * 4, "a refusal is never retried"


async def test_a_lost_answer_is_retried_with_the_same_key_and_the_stream_gets_one_event(
    gateway: GatewayProcess,
) -> None:
    """The gateway appends the event, the connection breaks before its answer: the retry
    carries the same idempotency key, so the gateway answers the first event's id."""
    user = unique("carol")

    def decide(seen: Seen) -> str:
        return DROP_ANSWER if len(seen_paths(proxy, PUBLISH)) == 1 else FORWARD

    with FaultProxy(gateway.url, decide) as proxy:
        async with (
            open_stream(gateway.url, token=gateway.token(user)) as stream,
            AsyncPublisher(proxy.url, gateway.publisher_token, retry=FAST_RETRY) as publisher,
        ):
            cursor = await publisher.publish("test.once-published", scope="user", key=user, data={"n": 1})
            events = await until_marker(gateway, stream, user)
    first, second = proxy.seen
    assert first.outcome == "dropped"
    assert second.outcome == 202
    assert first.body["idempotency_key"] == second.body["idempotency_key"]
    assert first.upstream == {"id": cursor, "duplicate": False, "coalesced": False}
    assert second.upstream == {"id": cursor, "duplicate": True, "coalesced": False}
    assert [(e.event, e.id) for e in events] == [("test.once-published", cursor)]


def seen_paths(proxy: FaultProxy, path: str) -> list[str]:
    return [p for p in proxy.paths() if p == path]


async def test_429_and_503_are_retried_after_their_retry_after(gateway: GatewayProcess) -> None:
    user = unique("dave")
    answers = [
        Answer(429, {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down"}, {"retry-after": "0.3"}),
        Answer(503, {"code": "BUS_UNAVAILABLE", "message": "the bus is away"}, {"retry-after": "0.5"}),
    ]

    def decide(_: Seen) -> str | Answer:
        return answers.pop(0) if answers else FORWARD

    with FaultProxy(gateway.url, decide) as proxy:
        async with (
            open_stream(gateway.url, token=gateway.token(user)) as stream,
            AsyncPublisher(proxy.url, gateway.publisher_token, retry=FAST_RETRY) as publisher,
        ):
            started = time.monotonic()
            cursor = await publisher.publish("test.patient-published", scope="user", key=user, data={})
            took = time.monotonic() - started
            events = await until_marker(gateway, stream, user)
    assert [seen.outcome for seen in proxy.seen] == [429, 503, 202]
    assert len({seen.body["idempotency_key"] for seen in proxy.seen}) == 1
    assert took >= 0.8, "each Retry-After was waited for"
    assert [e.id for e in events] == [cursor]


async def test_a_publish_waits_out_a_gateway_restart(gateway: GatewayProcess) -> None:
    """Connection refused while the gateway is down: retried until it is back on its port."""
    port = free_port()
    node = start_gateway(port=port)
    node.stop()
    patient = RetryPolicy(attempts=200, deadline=30.0, base=0.05, cap=0.2)
    async with AsyncPublisher(
        f"http://127.0.0.1:{port}", gateway.publisher_token, retry=patient
    ) as publisher:
        publishing = asyncio.create_task(
            publisher.publish("test.late-published", scope="user", key="erin", data={})
        )
        node = await asyncio.to_thread(start_gateway, port=port)
        try:
            cursor = await asyncio.wait_for(publishing, 20)
        finally:
            node.stop()
    assert cursor


async def test_publish_many_uses_the_batch_endpoint_with_a_result_per_event(
    gateway: GatewayProcess, publisher: AsyncPublisher, requests: Requests
) -> None:
    user = unique("frank")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        results = await publisher.publish_many(
            [
                Event.build(TaskProgressUpdated(task_id="t", progress=1), key=user),
                Event(event="Bad Name", scope="user", key=user, data={}),
                Event.build("test.third-published", scope="user", key=user, data={"n": 3}),
            ]
        )
        events = await until_marker(gateway, stream, user)
    assert requests.paths == [BATCH]
    first, bad, third = results
    assert isinstance(first, Published)
    assert isinstance(third, Published)
    assert isinstance(bad, InvalidEventError)
    assert (bad.code, bad.status, bad.field) == ("EVENT_INVALID", 422, "event")
    assert [(e.event, e.id) for e in events] == [
        ("task.progress-updated", first.id),
        ("test.third-published", third.id),
    ]


async def test_publish_many_splits_what_one_batch_cannot_hold(
    publisher: AsyncPublisher, requests: Requests
) -> None:
    user = unique("gina")
    events = [Event.build("test.many-published", scope="user", key=user, data={"n": n}) for n in range(1100)]
    results = await publisher.publish_many(events)
    assert requests.paths == [BATCH] * 3
    assert all(isinstance(result, Published) and not result.duplicate for result in results)
    assert len({result.id for result in results if isinstance(result, Published)}) == 1100


async def test_a_batch_whose_answer_was_lost_is_sent_again_without_a_second_event(
    gateway: GatewayProcess,
) -> None:
    user = unique("hank")

    def decide(_: Seen) -> str:
        return DROP_ANSWER if len(proxy.seen) == 1 else FORWARD

    with FaultProxy(gateway.url, decide) as proxy:
        async with (
            open_stream(gateway.url, token=gateway.token(user)) as stream,
            AsyncPublisher(proxy.url, gateway.publisher_token, retry=FAST_RETRY) as publisher,
        ):
            items = [
                Event.build("test.batched-published", scope="user", key=user, data={"n": n}) for n in range(3)
            ]
            results = await publisher.publish_many(items)
            events = await until_marker(gateway, stream, user)
    assert [seen.outcome for seen in proxy.seen] == ["dropped", 200]
    assert all(isinstance(r, Published) and r.duplicate for r in results)
    assert [e.json()["n"] for e in events] == [0, 1, 2]
    assert [e.id for e in events] == [r.id for r in results if isinstance(r, Published)]


async def test_publish_many_falls_back_to_single_publishes_without_a_batch_endpoint(
    gateway: GatewayProcess,
) -> None:
    """An older gateway answers 404 to the batch: one publish after another, in order."""
    user = unique("iris")

    def decide(seen: Seen) -> str | Answer:
        return Answer(404, {"detail": "Not Found"}) if seen.path == BATCH else FORWARD

    with FaultProxy(gateway.url, decide) as proxy:
        async with (
            open_stream(gateway.url, token=gateway.token(user)) as stream,
            AsyncPublisher(proxy.url, gateway.publisher_token, retry=FAST_RETRY) as publisher,
        ):
            items = [
                Event.build("test.single-published", scope="user", key=user, data={"n": n}) for n in range(3)
            ]
            results = await publisher.publish_many(items)
            again = await publisher.publish_many(items[:1])
            events = await until_marker(gateway, stream, user)
    assert proxy.paths() == [BATCH, PUBLISH, PUBLISH, PUBLISH, PUBLISH], "the 404 is remembered"
    assert all(isinstance(r, Published) for r in results)
    assert isinstance(again[0], Published)
    assert again[0].duplicate
    assert [e.json()["n"] for e in events] == [0, 1, 2]


def test_errors_keep_code_status_message_and_details() -> None:
    from herald_publisher.errors import UnavailableError, error_from_body

    error = error_from_body(
        503, {"code": "SERVER_OVERLOAD", "message": "full", "fallback": "retry"}, retry_after=2
    )
    assert isinstance(error, UnavailableError)
    assert isinstance(error, HeraldError)
    assert (error.code, error.status, error.message, error.details, error.retry_after) == (
        "SERVER_OVERLOAD",
        503,
        "full",
        {"fallback": "retry"},
        2,
    )
    assert error.retriable


async def test_a_real_bus_outage_answers_503_and_the_publish_goes_through_once_the_bus_is_back() -> None:
    """No injected answer here: the gateway's Redis goes away, the gateway answers 503
    ``BUS_UNAVAILABLE`` with ``Retry-After``, the publisher waits it out until Redis is back."""
    statuses: list[int] = []

    async def on_response(response: httpx.Response) -> None:
        statuses.append(response.status_code)

    with (
        running_redis() as redis,
        running_gateway(cluster_env(redis, HERALD_REDIS_TIMEOUT_SECONDS="1")) as node,
    ):
        user = unique("kim")
        client = httpx.AsyncClient(timeout=10, event_hooks={"response": [on_response]})
        patient = RetryPolicy(attempts=100, deadline=60.0, base=0.05, cap=0.5)
        # The user's stream may be sent away while the bus is gone (it is, when the node
        # notices first): like a browser, it comes back from its cursor afterwards.
        before = node.publish(MARKER, "user", user, {})
        async with client:
            redis.stop(save=True)
            publisher = AsyncPublisher(node.url, node.publisher_token, retry=patient, client=client)
            publishing = asyncio.create_task(
                publisher.publish("test.outage-published", scope="user", key=user, data={})
            )
            await wait_until(lambda: 503 in statuses, timeout=15, what="a 503 from the gateway")
            redis.start()
            cursor = await asyncio.wait_for(publishing, 45)
            async with open_stream(node.url, token=node.token(user), last_event_id=before) as stream:
                established = await stream.next()
                assert established.event == "connection.established"
                assert established.json()["recovered"] is True
                events = await until_marker(node, stream, user)
    assert statuses[0] == 503
    assert statuses[-1] == 202
    assert [(e.event, e.id) for e in events] == [("test.outage-published", cursor)]
