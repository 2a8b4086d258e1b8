"""Payloads of the default catalogue's browser events: the single source of their fields.

Each model is the ``data`` of one SSE event of the default catalogue
(DESIGN.md, "Default catalogue"). The adapter keeps exactly these fields
when it maps a domain event of the catalogue (a mapping rule that names no
``fields`` takes them from here) and validates the payload against the
model, so a record that breaks it is a poison record; the TypeScript
client's types are generated from their JSON Schema (:func:`catalogue_schema`).

Timestamps are ISO 8601 strings in UTC (``2026-01-01T12:00:00Z``);
durations and remaining times are seconds.

``error.task-failed`` carries :class:`herald.events.system.ErrorEvent`.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from herald.events.system import ErrorEvent


class Payload(BaseModel):
    """Base of every catalogue payload: unknown fields are refused, not carried."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NovelCreated(Payload):
    id: str
    title: str
    theme: str | None = None
    status: str
    created_at: AwareDatetime


class NovelStatusChanged(Payload):
    novel_id: str
    old_status: str
    new_status: str
    changed_at: AwareDatetime


class ChapterDraftCreated(Payload):
    chapter_id: str
    chapter_number: int = Field(ge=0)
    title: str
    novel_id: str


class ChapterStatusChanged(Payload):
    chapter_id: str
    old_status: str
    new_status: str


class ChapterVersionPublished(Payload):
    chapter_id: str
    version_number: int = Field(ge=0)
    word_count: int = Field(ge=0)


class CharacterCreated(Payload):
    character_id: str
    name: str
    role: str | None = None
    novel_id: str


class CharacterUpdated(Payload):
    character_id: str
    updated_fields: list[str]
    novel_id: str


class WorldviewEntryCreated(Payload):
    entry_id: str
    entry_type: str
    name: str
    novel_id: str


class GenesisStepCompleted(Payload):
    session_id: str
    stage: str
    iteration: int = Field(ge=0)
    is_confirmed: bool


class GenesisSessionCompleted(Payload):
    session_id: str
    novel_id: str
    final_settings: dict[str, Any]


class WorkflowStarted(Payload):
    workflow_id: str
    workflow_type: str
    novel_id: str


class WorkflowStatusChanged(Payload):
    workflow_id: str
    old_status: str
    new_status: str


class WorkflowCompleted(Payload):
    workflow_id: str
    status: str
    duration: float = Field(ge=0, description="seconds")
    #: A summary of at most 280 characters; the full result stays with the back end.
    result_summary: str | None = None


class TaskCreated(Payload):
    task_id: str
    task_type: str
    description: str | None = None


class TaskProgressUpdated(Payload):
    task_id: str
    progress: int = Field(ge=0, le=100, description="percent")
    message: str | None = None
    estimated_remaining: float | None = Field(None, ge=0, description="seconds")


class TaskStatusChanged(Payload):
    task_id: str
    old_status: str
    new_status: str


class AgentActivityStarted(Payload):
    activity_id: str
    agent_type: str
    activity_type: str


class AgentActivityCompleted(Payload):
    activity_id: str
    status: str
    duration: float = Field(ge=0, description="seconds")


class SystemNotification(Payload):
    level: str
    title: str
    message: str
    action_required: bool = False


class SystemMaintenanceScheduled(Payload):
    start_time: AwareDatetime
    end_time: AwareDatetime
    affected_services: list[str]


#: SSE event name → its payload model: every browser event of the default catalogue.
CATALOGUE: Final[dict[str, type[BaseModel]]] = {
    "novel.created": NovelCreated,
    "novel.status-changed": NovelStatusChanged,
    "chapter.draft-created": ChapterDraftCreated,
    "chapter.status-changed": ChapterStatusChanged,
    "chapter.version-published": ChapterVersionPublished,
    "character.created": CharacterCreated,
    "character.updated": CharacterUpdated,
    "worldview.entry-created": WorldviewEntryCreated,
    "genesis.step-completed": GenesisStepCompleted,
    "genesis.session-completed": GenesisSessionCompleted,
    "workflow.started": WorkflowStarted,
    "workflow.status-changed": WorkflowStatusChanged,
    "workflow.completed": WorkflowCompleted,
    "task.created": TaskCreated,
    "task.progress-updated": TaskProgressUpdated,
    "task.status-changed": TaskStatusChanged,
    "error.task-failed": ErrorEvent,
    "agent.activity-started": AgentActivityStarted,
    "agent.activity-completed": AgentActivityCompleted,
    "system.notification": SystemNotification,
    "system.maintenance-scheduled": SystemMaintenanceScheduled,
}


def payload_model(event: str) -> type[BaseModel] | None:
    """The catalogue's model for ``event``, or ``None`` for an event outside it."""
    return CATALOGUE.get(event)


def catalogue_schema() -> dict[str, Any]:
    """JSON Schema of every catalogue payload: ``{"event name": schema}``, for code generation."""
    return {name: model.model_json_schema(mode="serialization") for name, model in CATALOGUE.items()}
