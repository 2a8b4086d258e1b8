"""The demo simulator: its script (pure) and its runner (fake sleep, list-collecting publish)."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from typing import Any

import pytest

from herald.errors import EventTooLarge
from herald.events.message import SSEMessage, build_message, encode_data
from herald.sources import simulator
from herald.sources.simulator import Scheduled, Timing, run_simulator, schedule
from herald.types import Priority

#: The default catalogue's kept fields, for every name the simulator may emit.
CATALOGUE: dict[str, tuple[str, str | None, frozenset[str]]] = {
    "task.created": ("user", "demo", frozenset({"task_id", "task_type", "description"})),
    "task.progress-updated": (
        "user",
        "demo",
        frozenset({"task_id", "progress", "message", "estimated_remaining"}),
    ),
    "task.status-changed": ("user", "demo", frozenset({"task_id", "old_status", "new_status"})),
    "error.task-failed": ("user", "demo", frozenset({"level", "code", "message", "correlation_id"})),
    "system.notification": ("global", None, frozenset({"level", "title", "message", "action_required"})),
    "chapter.draft-created": ("novel", "1", frozenset({"chapter_id", "chapter_number", "title", "novel_id"})),
    "worldview.entry-created": ("novel", "1", frozenset({"entry_id", "entry_type", "name", "novel_id"})),
    "character.created": ("novel", "1", frozenset({"character_id", "name", "role", "novel_id"})),
    "agent.activity-started": ("novel", "1", frozenset({"activity_id", "agent_type", "activity_type"})),
    "agent.activity-completed": ("novel", "1", frozenset({"activity_id", "status", "duration"})),
}


def script(seed: int, n: int = 2000, **kw: Any) -> list[Scheduled]:
    return list(itertools.islice(schedule(random.Random(seed), **kw), n))


def by_task(items: list[Scheduled]) -> dict[str, list[Scheduled]]:
    tasks: dict[str, list[Scheduled]] = defaultdict(list)
    for item in items:
        data = item.message.data
        task_id = data.get("task_id") or data.get("correlation_id")
        if task_id is not None:
            tasks[task_id].append(item)
    return tasks


def complete_tasks(items: list[Scheduled]) -> dict[str, list[Scheduled]]:
    """Tasks whose whole life lies inside ``items`` (the script is cut off somewhere)."""
    return {
        task_id: events
        for task_id, events in by_task(items).items()
        if events[-1].message.event == "task.status-changed"
        and events[-1].message.data["new_status"] in ("completed", "failed")
    }


@pytest.mark.parametrize("seed", range(5))
def test_every_message_is_valid_and_uses_the_catalogue_fields(seed: int) -> None:
    for item in script(seed):
        m = item.message
        assert m.event in CATALOGUE, m.event
        scope, key, fields = CATALOGUE[m.event]
        assert (m.scope, m.key) == (scope, key)
        assert set(m.data) == fields, m.event
        rebuilt = build_message(
            event=m.event, scope=m.scope, key=m.key, data=m.data, priority=m.priority, coalesce=m.coalesce
        )
        assert rebuilt.event == m.event
        assert len(encode_data(m, 64 * 1024)) < 1024


def test_the_script_is_in_time_order_and_reproducible() -> None:
    items = script(7)
    times = [item.at for item in items]
    assert times == sorted(times)
    assert items == script(7)
    assert items != script(8)


def test_a_task_goes_created_running_progress_then_one_ending() -> None:
    tasks = complete_tasks(script(11))
    assert len(tasks) > 20
    for task_id, events in tasks.items():
        names = [e.message.event for e in events]
        assert names[0] == "task.created"
        assert events[1].message.data == {
            "task_id": task_id,
            "old_status": "pending",
            "new_status": "running",
        }
        ending = events[-1].message.data
        assert ending["old_status"] == "running"
        progress = [e.message.data["progress"] for e in events if e.message.event == "task.progress-updated"]
        assert progress == sorted(set(progress)), "progress only climbs"
        assert all(0 < p <= 100 for p in progress)
        if ending["new_status"] == "completed":
            assert progress[-1] == 100
            assert "error.task-failed" not in names
        else:
            assert ending["new_status"] == "failed"
            assert progress[-1] < 100
            assert names[-2] == "error.task-failed"
            failure = events[-2].message.data
            assert failure["level"] == "error"
            assert failure["code"] in {"MODEL_TIMEOUT", "CONTEXT_TOO_LONG", "UPSTREAM_UNAVAILABLE"}
            assert failure["message"]


def test_some_tasks_fail_and_most_complete() -> None:
    endings = [events[-1].message.data["new_status"] for events in complete_tasks(script(3, 5000)).values()]
    assert endings.count("failed") >= 1
    assert endings.count("completed") > endings.count("failed") * 2


def test_progress_is_coalesced_per_task_and_at_most_once_a_second() -> None:
    for task_id, events in complete_tasks(script(5)).items():
        updates = [e for e in events if e.message.event == "task.progress-updated"]
        assert updates
        assert {e.message.coalesce for e in updates} == {f"task:{task_id}"}
        gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
        assert all(gap >= 1.0 for gap in gaps)
        remaining = [e.message.data["estimated_remaining"] for e in updates]
        assert remaining == sorted(remaining, reverse=True)
    others = [item for item in script(5) if item.message.event != "task.progress-updated"]
    assert all(item.message.coalesce is None for item in others)


def test_tasks_overlap_but_never_more_than_the_cap() -> None:
    timing = Timing(max_concurrent=3)
    tasks = complete_tasks(script(9, 3000, timing=timing))
    spans = [(events[0].at, events[-1].at) for events in tasks.values()]
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert 2 <= most <= 3


def test_errors_and_status_changes_are_high_priority_agent_activity_low() -> None:
    for item in script(2):
        m = item.message
        if m.event in ("error.task-failed", "task.status-changed"):
            assert m.priority is Priority.HIGH
        elif m.event.startswith("agent."):
            assert m.priority is Priority.LOW
        else:
            assert m.priority is Priority.NORMAL


def test_a_completed_task_produces_its_novel_event() -> None:
    items = script(4, 4000)
    tasks = complete_tasks(items)
    produced = {item.message.event for item in items if item.message.scope == "novel"}
    assert {"chapter.draft-created", "worldview.entry-created", "character.created"} <= produced
    chapters = [i.message.data["chapter_number"] for i in items if i.message.event == "chapter.draft-created"]
    assert len(chapters) == len(set(chapters))
    checked = 0
    for events in tasks.values():
        created = events[0].message.data
        if created["task_type"] == "chapter-draft" and events[-1].message.data["new_status"] == "completed":
            end = events[-1].at
            drafts = [i for i in items if i.at == end and i.message.event == "chapter.draft-created"]
            assert len(drafts) == 1
            number = drafts[0].message.data["chapter_number"]
            assert created["description"].startswith(f"Draft chapter {number}: ")
            checked += 1
    assert checked > 3


def test_notifications_are_global_and_recur() -> None:
    notes = [item for item in script(6, 3000) if item.message.event == "system.notification"]
    assert len(notes) >= 3
    assert notes[0].at == Timing().first_notification_at
    gaps = [b.at - a.at for a, b in itertools.pairwise(notes)]
    assert all(20.0 <= gap <= 40.0 for gap in gaps)


def test_ids_differ_between_runs_so_a_restarted_gateway_cannot_confuse_a_page() -> None:
    first = set(by_task(script(1, 200)))
    second = set(by_task(script(2, 200)))
    assert len(first) > 3
    assert len(second) > 3
    assert not first & second


def test_the_user_and_novel_are_configurable() -> None:
    items = script(1, 300, user="alice", novel_id="42")
    assert {i.message.key for i in items if i.message.scope == "user"} == {"alice"}
    assert {i.message.key for i in items if i.message.scope == "novel"} == {"42"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


async def test_the_runner_publishes_the_script_at_its_times() -> None:
    clock = FakeClock()
    published: list[tuple[float, SSEMessage]] = []

    async def publish(message: SSEMessage) -> None:
        published.append((clock.now, message))

    count = await run_simulator(publish, rng=random.Random(12), sleep=clock.sleep, limit=150)
    expected = script(12, 150)
    assert count == 150
    assert [m for _, m in published] == [item.message for item in expected]
    assert [at for at, _ in published] == pytest.approx([item.at for item in expected])
    assert clock.now == pytest.approx(expected[-1].at)


async def test_the_runner_skips_an_event_the_gateway_refuses_and_goes_on() -> None:
    clock = FakeClock()
    published: list[SSEMessage] = []

    async def publish(message: SSEMessage) -> None:
        if message.event == "task.created":
            raise EventTooLarge("too big", size=1, limit=0)
        published.append(message)

    count = await run_simulator(publish, rng=random.Random(12), sleep=clock.sleep, limit=100)
    refused = sum(1 for item in script(12, 100) if item.message.event == "task.created")
    assert refused > 0
    assert count == len(published) == 100 - refused
    assert all(m.event != "task.created" for m in published)


def test_the_module_names_every_event_it_emits() -> None:
    assert set(CATALOGUE) == simulator.EVENT_NAMES
    assert {item.message.event for item in script(0, 5000)} == simulator.EVENT_NAMES
