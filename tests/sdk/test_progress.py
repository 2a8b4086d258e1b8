"""``progress()`` against a real gateway: throttled updates (the latest always sent), and the
terminal state whatever the block did: completed, failed (``error.task-failed``), cancelled."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any

import pytest
from herald_publisher import AsyncPublisher, InvalidEventError, Publisher, TaskError, progress
from herald_publisher import Event as PublisherEvent
from herald_publisher.catalogue import TaskProgressUpdated

from tests.sdk.test_publisher import until_marker
from tests.support.api import unique
from tests.support.gateway import GatewayProcess
from tests.support.sse import Event, open_stream

#: Work between two updates in the tests' loops: a stand-in for a task's real steps.
STEP_SECONDS = 0.01


def summary(events: list[Event]) -> list[tuple[str, Any]]:
    """Each task event in short: the status change, the progress, the error code."""
    out: list[tuple[str, Any]] = []
    for event in events:
        data = event.json()
        if event.event == "task.status-changed":
            out.append((event.event, f"{data['old_status']}->{data['new_status']}"))
        elif event.event == "task.progress-updated":
            out.append((event.event, data["progress"]))
        elif event.event == "error.task-failed":
            out.append((event.event, data["code"]))
        else:
            out.append((event.event, None))
    return out


async def test_updates_are_throttled_the_latest_is_sent_and_the_task_completes(
    gateway: GatewayProcess, publisher: AsyncPublisher
) -> None:
    user, task = unique("alice"), unique("t")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        started = time.monotonic()
        async with progress(publisher, user_id=user, task_id=task, task_type="chapter-draft", rate=5) as p:
            for n in range(1, 61):
                await p.update(n, f"step {n}")
                await asyncio.sleep(STEP_SECONDS)
        took = time.monotonic() - started
        events = await until_marker(gateway, stream, user)
    seen = summary(events)
    assert seen[:2] == [("task.created", None), ("task.status-changed", "pending->running")]
    assert seen[-1] == ("task.status-changed", "running->completed")
    updates = [value for name, value in seen if name == "task.progress-updated"]
    # Measured figure, shown with ``pytest -s``.
    print(f"\nprogress: 60 updates in {took:.2f}s at rate 5/s -> {len(updates)} sent: {updates}")
    assert updates[-1] == 60, "the latest update is always sent"
    assert updates == sorted(updates)
    assert 2 <= len(updates) <= math.ceil(took * 5) + 1, (len(updates), took)
    assert events[-2].json()["message"] == "step 60"
    assert all(e.json()["task_id"] == task for e in events)
    assert p.state == "completed"
    assert p.errors == []


async def test_an_exception_fails_the_task_with_its_code_and_propagates(
    gateway: GatewayProcess, publisher: AsyncPublisher
) -> None:
    user = unique("bob")
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        model_timeout = TaskError("MODEL_TIMEOUT", "The model did not answer in time", retry_after=30)
        with pytest.raises(TaskError):
            await fail(publisher, user, "t-model", model_timeout, update=30)
        with pytest.raises(RuntimeError, match="db password"):
            await fail(publisher, user, "t-bug", RuntimeError("db password is hunter2"))
        events = await until_marker(gateway, stream, user)
    assert summary(events) == [
        ("task.status-changed", "pending->running"),
        ("task.progress-updated", 30),
        ("error.task-failed", "MODEL_TIMEOUT"),
        ("task.status-changed", "running->failed"),
        ("task.status-changed", "pending->running"),
        ("error.task-failed", "TASK_FAILED"),
        ("task.status-changed", "running->failed"),
    ]
    assert events[2].json() == {
        "level": "error",
        "code": "MODEL_TIMEOUT",
        "message": "The model did not answer in time",
        "retry_after": 30.0,
        "correlation_id": "t-model",
        "_scope": "user",
        "_version": "1.0",
    }
    assert events[5].json()["message"] == "The task failed", "an exception's own text is not sent"


async def fail(
    publisher: AsyncPublisher, user: str, task: str, error: Exception, update: int | None = None
) -> None:
    async with progress(publisher, user_id=user, task_id=task) as p:
        if update is not None:
            await p.update(update, "thinking")
        raise error


async def test_cancellation_sends_the_cancelled_state_and_is_reraised(
    gateway: GatewayProcess, publisher: AsyncPublisher
) -> None:
    user = unique("carol")
    inside = asyncio.Event()
    reporter: list[Any] = []

    async def work() -> None:
        async with progress(publisher, user_id=user, task_id="t-long") as p:
            reporter.append(p)
            await p.update(10)
            inside.set()
            await asyncio.Event().wait()  # until cancelled

    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        task = asyncio.create_task(work())
        await asyncio.wait_for(inside.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        events = await until_marker(gateway, stream, user)
    assert summary(events) == [
        ("task.status-changed", "pending->running"),
        ("task.progress-updated", 10),
        ("task.status-changed", "running->cancelled"),
    ]
    assert reporter[0].state == "cancelled"


async def test_the_sync_variant_throttles_and_always_finishes(gateway: GatewayProcess) -> None:
    user = unique("dave")

    def run(publisher: Publisher) -> float:
        started = time.monotonic()
        with progress(publisher, user_id=user, task_id="t-sync", rate=5) as p:
            for n in range(1, 41):
                p.update(n)
                time.sleep(STEP_SECONDS)
        took = time.monotonic() - started
        with pytest.raises(ValueError, match="bad input"):
            fail_sync(publisher)
        return took

    def fail_sync(publisher: Publisher) -> None:
        with progress(publisher, user_id=user, task_id="t-bad") as p:
            p.update(5)
            raise ValueError("bad input")

    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        with Publisher(gateway.url, gateway.publisher_token) as publisher:
            took = await asyncio.to_thread(run, publisher)
        events = await until_marker(gateway, stream, user)
    seen = summary(events)
    first = seen[: seen.index(("task.status-changed", "running->completed")) + 1]
    updates = [value for name, value in first if name == "task.progress-updated"]
    assert first[0] == ("task.status-changed", "pending->running")
    assert updates[-1] == 40
    assert 2 <= len(updates) <= math.ceil(took * 5) + 1, (len(updates), took)
    assert seen[len(first) :] == [
        ("task.status-changed", "pending->running"),
        ("task.progress-updated", 5),
        ("error.task-failed", "TASK_FAILED"),
        ("task.status-changed", "running->failed"),
    ]
    assert not [t for t in threading.enumerate() if t.name.startswith("herald-progress-")], (
        "sender threads end"
    )


async def test_retained_progress_is_what_a_stream_opened_later_gets_first(
    gateway: GatewayProcess, publisher: AsyncPublisher
) -> None:
    user, task = unique("rita"), unique("t")
    async with progress(publisher, user_id=user, task_id=task, retain=True) as p:
        await p.update(30, "outlining")
        await p.update(40, "drafting")
    # A page reloaded after the updates: the task's latest progress comes first, without a fetch.
    async with open_stream(gateway.url, token=gateway.token(user)) as stream:
        events = await until_marker(gateway, stream, user)
    retained = [e for e in events if e.json().get("_retained") is True]
    assert [(e.event, e.json()["progress"], e.json()["message"]) for e in retained] == [
        ("task.progress-updated", 40, "drafting")
    ]
    assert events[0] is retained[0], "retained states come first"
    assert p.state == "completed"


def test_retain_needs_a_coalesce_key() -> None:
    assert PublisherEvent.build(TaskProgressUpdated(task_id="t1", progress=5), key="u", retain=True).body()[
        "retain"
    ]
    assert "retain" not in PublisherEvent.build(TaskProgressUpdated(task_id="t1", progress=5), key="u").body()
    with pytest.raises(InvalidEventError) as refused:
        PublisherEvent.build(
            "task.status-changed",
            key="u",
            data={"task_id": "t1", "old_status": "pending", "new_status": "running"},
            retain=True,
        )
    assert refused.value.details["field"] == "retain"
