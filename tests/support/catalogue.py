"""One domain record of every type of the default catalogue, and the browser event it becomes.

Shared by the adapter's unit tests and the end-to-end Kafka and outbox tests.
Every record carries fields the mapping must drop (``internal_*``, ``secret``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

USER = "u-cat"
SESSION = "s-cat"
NOVEL = "n-cat"
#: 2026-01-01T00:00:00Z
T0 = 1767225600
NOISE = {"internal_trace": "x-123", "secret": "do-not-leak"}


@dataclass(frozen=True)
class Case:
    record: dict[str, Any]
    event: str
    scope: str
    key: str | None
    data: dict[str, Any]
    priority: str = "normal"
    coalesce: str | None = None

    @property
    def event_type(self) -> str:
        value: str = self.record["event_type"]
        return value


def _r(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"event_type": event_type, **fields, **NOISE}


CASES: list[Case] = [
    Case(
        _r("NovelCreatedEvent", user_id=USER, id=NOVEL, title="Tides", theme="sea", status="draft",
           created_at=T0),
        "novel.created", "user", USER,
        {"id": NOVEL, "title": "Tides", "theme": "sea", "status": "draft",
         "created_at": "2026-01-01T00:00:00Z"},
    ),
    Case(
        _r("NovelStatusChangedEvent", novel_id=NOVEL, old_status="draft", new_status="writing",
           changed_at="2026-01-01T01:02:03.456+01:00"),
        "novel.status-changed", "novel", NOVEL,
        {"novel_id": NOVEL, "old_status": "draft", "new_status": "writing",
         "changed_at": "2026-01-01T00:02:03.456000Z"},
    ),
    Case(
        _r("ChapterDraftCreatedEvent", novel_id=NOVEL, chapter_id="c1", chapter_number=1, title="Dawn"),
        "chapter.draft-created", "novel", NOVEL,
        {"chapter_id": "c1", "chapter_number": 1, "title": "Dawn", "novel_id": NOVEL},
    ),
    Case(
        _r("ChapterStatusChangedEvent", novel_id=NOVEL, chapter_id="c1", old_status="draft",
           new_status="review"),
        "chapter.status-changed", "novel", NOVEL,
        {"chapter_id": "c1", "old_status": "draft", "new_status": "review"},
    ),
    Case(
        _r("ChapterVersionPublishedEvent", novel_id=NOVEL, chapter_id="c1", version_number=3,
           word_count=4200, content="a very long chapter text " * 100),
        "chapter.version-published", "novel", NOVEL,
        {"chapter_id": "c1", "version_number": 3, "word_count": 4200},
    ),
    Case(
        _r("CharacterCreatedEvent", novel_id=NOVEL, character_id="ch1", name="Mira", role="protagonist"),
        "character.created", "novel", NOVEL,
        {"character_id": "ch1", "name": "Mira", "role": "protagonist", "novel_id": NOVEL},
    ),
    Case(
        _r("CharacterUpdatedEvent", novel_id=NOVEL, character_id="ch1", updated_fields=["name", "role"]),
        "character.updated", "novel", NOVEL,
        {"character_id": "ch1", "updated_fields": ["name", "role"], "novel_id": NOVEL},
    ),
    Case(
        _r("WorldviewEntryCreatedEvent", novel_id=NOVEL, entry_id="w1", entry_type="magic",
           name="Lantern-binding"),
        "worldview.entry-created", "novel", NOVEL,
        {"entry_id": "w1", "entry_type": "magic", "name": "Lantern-binding", "novel_id": NOVEL},
    ),
    Case(
        _r("GenesisStepCompletedEvent", session_id=SESSION, stage="outline", iteration=2,
           is_confirmed=True),
        "genesis.step-completed", "session", SESSION,
        {"session_id": SESSION, "stage": "outline", "iteration": 2, "is_confirmed": True},
    ),
    Case(
        _r("GenesisSessionCompletedEvent", user_id=USER, session_id=SESSION, novel_id=NOVEL,
           final_settings={"genre": "fantasy"}),
        "genesis.session-completed", "user", USER,
        {"session_id": SESSION, "novel_id": NOVEL, "final_settings": {"genre": "fantasy"}},
    ),
    Case(
        _r("WorkflowStartedEvent", novel_id=NOVEL, workflow_id="wf1", workflow_type="draft"),
        "workflow.started", "novel", NOVEL,
        {"workflow_id": "wf1", "workflow_type": "draft", "novel_id": NOVEL},
    ),
    Case(
        _r("WorkflowStatusChangedEvent", novel_id=NOVEL, workflow_id="wf1", old_status="running",
           new_status="paused"),
        "workflow.status-changed", "novel", NOVEL,
        {"workflow_id": "wf1", "old_status": "running", "new_status": "paused"},
    ),
    Case(
        _r("WorkflowCompletedEvent", novel_id=NOVEL, workflow_id="wf1", status="completed",
           duration=12.5, result_summary="x" * 1000),
        "workflow.completed", "novel", NOVEL,
        {"workflow_id": "wf1", "status": "completed", "duration": 12.5,
         "result_summary": "x" * 279 + "…"},
    ),
    Case(
        _r("TaskCreatedEvent", user_id=USER, task_id="t1", task_type="chapter-draft",
           description="Draft chapter 1"),
        "task.created", "user", USER,
        {"task_id": "t1", "task_type": "chapter-draft", "description": "Draft chapter 1"},
        priority="high",
    ),
    Case(
        _r("TaskProgressUpdateEvent", user_id=USER, task_id="t1", progress=50, message="drafting",
           estimated_remaining=30),
        "task.progress-updated", "user", USER,
        {"task_id": "t1", "progress": 50, "message": "drafting", "estimated_remaining": 30.0},
        coalesce="task:t1",
    ),
    Case(
        _r("TaskStatusChangedEvent", user_id=USER, task_id="t1", old_status="running",
           new_status="completed"),
        "task.status-changed", "user", USER,
        {"task_id": "t1", "old_status": "running", "new_status": "completed"},
        priority="high",
    ),
    Case(
        _r("TaskFailedEvent", user_id=USER, task_id="t1", error_code="MODEL_TIMEOUT",
           error_message="The model did not answer", stack="Traceback ..."),
        "error.task-failed", "user", USER,
        {"level": "error", "code": "MODEL_TIMEOUT", "message": "The model did not answer",
         "retry_after": None, "correlation_id": "t1"},
        priority="high",
    ),
    Case(
        _r("AgentActivityStartedEvent", novel_id=NOVEL, activity_id="a1", agent_type="writer",
           activity_type="chapter-draft"),
        "agent.activity-started", "novel", NOVEL,
        {"activity_id": "a1", "agent_type": "writer", "activity_type": "chapter-draft"},
        priority="low",
    ),
    Case(
        _r("AgentActivityCompletedEvent", novel_id=NOVEL, activity_id="a1", status="completed",
           duration=3),
        "agent.activity-completed", "novel", NOVEL,
        {"activity_id": "a1", "status": "completed", "duration": 3.0},
        priority="low",
    ),
    Case(
        _r("SystemNotificationEvent", level="info", title="Autosave", message="Saved",
           action_required=False),
        "system.notification", "global", None,
        {"level": "info", "title": "Autosave", "message": "Saved", "action_required": False},
    ),
    Case(
        _r("SystemMaintenanceEvent", start_time=T0 * 1000, end_time="2026-01-01T02:00:00",
           affected_services=["generation"]),
        "system.maintenance-scheduled", "global", None,
        {"start_time": "2026-01-01T00:00:00Z", "end_time": "2026-01-01T02:00:00Z",
         "affected_services": ["generation"]},
    ),
]  # fmt: skip
