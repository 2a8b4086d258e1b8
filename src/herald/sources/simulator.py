"""Simulated AI writing tasks for ``herald serve --demo``.

Two halves. :func:`schedule` is pure: from a random generator it plans an
endless, time-ordered script of events, several tasks overlapping (chapter
drafts, world building, character design, continuity checks), each going
``task.created`` → ``task.status-changed`` (running) → ``task.progress-updated``
… → completed, or now and then ``error.task-failed`` → failed; the novel-scope
events a finished task produces (``chapter.draft-created`` …); and a global
``system.notification`` now and then. :func:`run_simulator` only sleeps
between the planned times and publishes, so tests drive it with a fake sleep.

Field names follow the default catalogue (docs: DESIGN.md, "Default catalogue").
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import structlog

from herald.errors import HeraldError
from herald.events.message import SSEMessage, build_message
from herald.types import GLOBAL, USER, Priority

log = structlog.get_logger("herald.simulator")

Publish = Callable[[SSEMessage], Awaitable[object]]
Sleep = Callable[[float], Awaitable[None]]

NOVEL = "novel"

#: Event names the simulator emits: the demo page listens for exactly these.
TASK_CREATED = "task.created"
TASK_PROGRESS = "task.progress-updated"
TASK_STATUS = "task.status-changed"
TASK_FAILED = "error.task-failed"
NOTIFICATION = "system.notification"
CHAPTER_DRAFT_CREATED = "chapter.draft-created"
WORLDVIEW_ENTRY_CREATED = "worldview.entry-created"
CHARACTER_CREATED = "character.created"
AGENT_STARTED = "agent.activity-started"
AGENT_COMPLETED = "agent.activity-completed"
EVENT_NAMES: Final = frozenset(
    {
        TASK_CREATED,
        TASK_PROGRESS,
        TASK_STATUS,
        TASK_FAILED,
        NOTIFICATION,
        CHAPTER_DRAFT_CREATED,
        WORLDVIEW_ENTRY_CREATED,
        CHARACTER_CREATED,
        AGENT_STARTED,
        AGENT_COMPLETED,
    }
)


@dataclass(frozen=True, slots=True)
class Timing:
    """The script's pace, in seconds of simulated time."""

    first_task_at: float = 0.5
    #: Between the starts of two tasks.
    task_gap: tuple[float, float] = (2.0, 6.0)
    #: Between two progress updates of one task: at most one a second reaches a client.
    step: tuple[float, float] = (1.0, 2.0)
    #: Progress updates per task.
    steps: tuple[int, int] = (6, 12)
    max_concurrent: int = 4
    first_notification_at: float = 6.0
    notification_gap: tuple[float, float] = (20.0, 40.0)
    #: Chance that a task fails part-way.
    fail_rate: float = 0.15


DEFAULT_TIMING = Timing()


@dataclass(frozen=True, slots=True)
class Scheduled:
    """One event of the script, ``at`` seconds after the simulation started."""

    at: float
    message: SSEMessage


@dataclass(frozen=True, slots=True)
class _Kind:
    task_type: str
    agent_type: str
    phases: tuple[str, ...]


_KINDS = (
    _Kind(
        "chapter-draft",
        "writer",
        (
            "Reading the outline",
            "Planning the scenes",
            "Drafting the opening scene",
            "Drafting the middle scenes",
            "Drafting the closing scene",
            "Revising the dialogue",
            "Polishing the prose",
        ),
    ),
    _Kind(
        "world-building",
        "worldsmith",
        (
            "Gathering existing lore",
            "Sketching the geography",
            "Inventing the history",
            "Checking against the canon",
            "Writing the entry",
        ),
    ),
    _Kind(
        "character-design",
        "character-designer",
        (
            "Reading the cast list",
            "Shaping the backstory",
            "Finding the voice",
            "Writing the profile",
        ),
    ),
    _Kind(
        "continuity-check",
        "editor",
        (
            "Indexing names and places",
            "Comparing timelines",
            "Checking character traits",
            "Writing the report",
        ),
    ),
)

_CHAPTER_TITLES = (
    "The Lantern Road",
    "Salt and Ash",
    "A Map Drawn in Rain",
    "The Quiet Archive",
    "What the River Kept",
    "Glass Orchard",
    "The Second Bell",
    "Under the Copper Moon",
)
_WORLD_ENTRIES = (
    ("location", "The Drowned Library"),
    ("faction", "The Cartographers' Guild"),
    ("history", "The Year Without Tides"),
    ("magic", "Lantern-binding"),
    ("location", "Ninefold Market"),
    ("culture", "The Ember Festival"),
)
_CHARACTERS = (
    ("Mira Vell", "protagonist"),
    ("Oren Tash", "mentor"),
    ("Captain Ilse Brand", "antagonist"),
    ("Pell", "sidekick"),
    ("The Archivist", "mystery"),
    ("Joss Amberly", "rival"),
)
_FAILURES = (
    ("MODEL_TIMEOUT", "The language model did not answer in time"),
    ("CONTEXT_TOO_LONG", "The outline and earlier chapters no longer fit the model's context"),
    ("UPSTREAM_UNAVAILABLE", "The generation service is temporarily unavailable"),
)
_NOTIFICATIONS = (
    ("info", "New model available", "Drafts now use the latest writing model.", False),
    ("info", "Autosave", "All drafts were saved to the cloud.", False),
    ("warning", "High load", "Generation may be slower than usual for a few minutes.", False),
    ("info", "Weekly goal", "You are 2,000 words away from this week's goal.", False),
    ("warning", "Review needed", "A continuity report is waiting for your review.", True),
)


class _Planner:
    """Turns a random generator into tasks and notifications; keeps the counters."""

    def __init__(self, rng: random.Random, user: str, novel_id: str, timing: Timing) -> None:
        self.rng = rng
        self.user = user
        self.novel_id = novel_id
        self.timing = timing
        # Ids stay distinct across gateway restarts: a page that reconnects to a
        # new process must not confuse its tasks with the old one's.
        self.run_id = f"{rng.getrandbits(24):06x}"
        self.tasks = itertools.count(1)
        self.chapters = itertools.count(1)
        self.entries = itertools.count(1)
        self.characters = itertools.count(1)

    def _user(self, event: str, data: dict[str, Any], **kw: Any) -> SSEMessage:
        return build_message(event=event, scope=USER, key=self.user, data=data, source="demo", **kw)

    def _novel(self, event: str, data: dict[str, Any], **kw: Any) -> SSEMessage:
        return build_message(event=event, scope=NOVEL, key=self.novel_id, data=data, source="demo", **kw)

    def task(self, start: float) -> list[Scheduled]:
        """One task's events, from its creation to its end, in time order."""
        rng, timing = self.rng, self.timing
        n = next(self.tasks)
        task_id = f"task-{self.run_id}-{n}"
        activity_id = f"act-{self.run_id}-{n}"
        kind = rng.choice(_KINDS)
        description, outcome = self._subject(kind)
        steps = rng.randint(*timing.steps)
        times = [start + 0.2]
        for _ in range(steps):
            times.append(times[-1] + rng.uniform(*timing.step))
        # Progress follows the planned time, so it agrees with ``estimated_remaining``.
        progress: list[int] = []
        for at in times[1:]:
            share = round(100 * (at - start) / (times[-1] - start))
            progress.append(max(share, progress[-1] + 1 if progress else 1))
        fails_at = rng.randint(2, steps - 1) if rng.random() < timing.fail_rate else None
        end = times[steps if fails_at is None else fails_at + 1] + 0.1

        out = [
            Scheduled(
                start,
                self._user(
                    TASK_CREATED,
                    {"task_id": task_id, "task_type": kind.task_type, "description": description},
                ),
            ),
            Scheduled(start, self._status(task_id, "pending", "running")),
            Scheduled(
                start,
                self._novel(
                    AGENT_STARTED,
                    {
                        "activity_id": activity_id,
                        "agent_type": kind.agent_type,
                        "activity_type": kind.task_type,
                    },
                    priority=Priority.LOW,
                ),
            ),
        ]
        for i in range(steps):
            at = times[i + 1]
            if fails_at is not None and i == fails_at:
                code, text = rng.choice(_FAILURES)
                out.append(
                    Scheduled(
                        at,
                        self._user(
                            TASK_FAILED,
                            {"level": "error", "code": code, "message": text, "correlation_id": task_id},
                            priority=Priority.HIGH,
                        ),
                    )
                )
                break
            phase = kind.phases[min(len(kind.phases) - 1, i * len(kind.phases) // steps)]
            out.append(
                Scheduled(
                    at,
                    self._user(
                        TASK_PROGRESS,
                        {
                            "task_id": task_id,
                            "progress": progress[i],
                            "message": phase if progress[i] < 100 else "Done",
                            "estimated_remaining": round(times[steps] - at),
                        },
                        coalesce=f"task:{task_id}",
                    ),
                )
            )
        failed = fails_at is not None
        out.append(Scheduled(end, self._status(task_id, "running", "failed" if failed else "completed")))
        if not failed and outcome is not None:
            out.append(Scheduled(end, outcome))
        out.append(
            Scheduled(
                end,
                self._novel(
                    AGENT_COMPLETED,
                    {
                        "activity_id": activity_id,
                        "status": "failed" if failed else "completed",
                        "duration": round(end - start, 1),
                    },
                    priority=Priority.LOW,
                ),
            )
        )
        return out

    def _status(self, task_id: str, old: str, new: str) -> SSEMessage:
        return self._user(
            TASK_STATUS, {"task_id": task_id, "old_status": old, "new_status": new}, priority=Priority.HIGH
        )

    def _subject(self, kind: _Kind) -> tuple[str, SSEMessage | None]:
        """The task's description, and the novel event its success produces."""
        rng, novel_id = self.rng, self.novel_id
        if kind.task_type == "chapter-draft":
            number = next(self.chapters)
            title = rng.choice(_CHAPTER_TITLES)
            data: dict[str, Any] = {
                "chapter_id": f"ch-{self.run_id}-{number}",
                "chapter_number": number,
                "title": title,
                "novel_id": novel_id,
            }
            return f"Draft chapter {number}: {title}", self._novel(CHAPTER_DRAFT_CREATED, data)
        if kind.task_type == "world-building":
            entry_type, name = rng.choice(_WORLD_ENTRIES)
            data = {
                "entry_id": f"we-{self.run_id}-{next(self.entries)}",
                "entry_type": entry_type,
                "name": name,
                "novel_id": novel_id,
            }
            return f"Build the world: {name}", self._novel(WORLDVIEW_ENTRY_CREATED, data)
        if kind.task_type == "character-design":
            name, role = rng.choice(_CHARACTERS)
            data = {
                "character_id": f"char-{self.run_id}-{next(self.characters)}",
                "name": name,
                "role": role,
                "novel_id": novel_id,
            }
            return f"Design character: {name} ({role})", self._novel(CHARACTER_CREATED, data)
        return "Check continuity across the drafted chapters", None

    def notification(self) -> SSEMessage:
        level, title, text, action_required = self.rng.choice(_NOTIFICATIONS)
        return build_message(
            event=NOTIFICATION,
            scope=GLOBAL,
            key=None,
            data={"level": level, "title": title, "message": text, "action_required": action_required},
            source="demo",
        )


def schedule(
    rng: random.Random,
    *,
    user: str = "demo",
    novel_id: str = "1",
    timing: Timing = DEFAULT_TIMING,
) -> Iterator[Scheduled]:
    """The endless script, in non-decreasing ``at`` order.

    A task starts every ``timing.task_gap`` seconds, later when
    ``timing.max_concurrent`` tasks are still running.
    """
    planner = _Planner(rng, user, novel_id, timing)
    pending: list[tuple[float, int, SSEMessage]] = []
    order = itertools.count()
    next_task = timing.first_task_at
    next_notice = timing.first_notification_at
    task_ends: list[float] = []
    while True:
        due = pending[0][0] if pending else float("inf")
        if min(next_task, next_notice) <= due:
            if next_task <= next_notice:
                task_ends = [end for end in task_ends if end > next_task]
                if len(task_ends) >= timing.max_concurrent:
                    next_task = min(task_ends)
                    continue
                events = planner.task(next_task)
                for item in events:
                    heapq.heappush(pending, (item.at, next(order), item.message))
                task_ends.append(events[-1].at)
                next_task += rng.uniform(*timing.task_gap)
            else:
                heapq.heappush(pending, (next_notice, next(order), planner.notification()))
                next_notice += rng.uniform(*timing.notification_gap)
            continue
        at, _, message = heapq.heappop(pending)
        yield Scheduled(at, message)


async def run_simulator(
    publish: Publish,
    *,
    user: str = "demo",
    novel_id: str = "1",
    rng: random.Random | None = None,
    sleep: Sleep = asyncio.sleep,
    timing: Timing = DEFAULT_TIMING,
    limit: int | None = None,
) -> int:
    """Publish the script in (simulated) real time; returns how many events the gateway took.

    Runs until cancelled, or through the script's first ``limit`` events. An
    event the gateway refuses is logged and skipped: the demo goes on.
    """
    now = 0.0
    published = 0
    script = schedule(rng or random.Random(), user=user, novel_id=novel_id, timing=timing)  # noqa: S311
    for item in itertools.islice(script, limit):
        if item.at > now:
            await sleep(item.at - now)
            now = item.at
        try:
            await publish(item.message)
        except HeraldError as exc:
            log.warning("simulator_publish_failed", event_name=item.message.event, code=exc.code)
            continue
        published += 1
    return published
