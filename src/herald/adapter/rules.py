"""A mapping: which domain events become which browser events, and how. Pure data.

One :class:`Rule` per source event type. The rules come from a mapping file
(:mod:`herald.adapter.loading`) and are applied by :class:`herald.adapter.Adapter`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from herald.types import Priority

#: The ``level`` values an error event may carry (``ErrorEvent.level``).
ERROR_LEVELS = ("info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    """How a domain event becomes an ``error.*`` event (``ErrorEvent``): each field is
    read from a path in the record; ``code`` falls back to ``default_code``."""

    level: str = "error"
    code: str | None = None
    default_code: str | None = None
    message: str | None = None
    default_message: str | None = None
    correlation_id: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """How one source event type becomes one browser event.

    ``fields``: payload field → path in the record it is read from (every other
    field of the record is dropped). ``timestamps``: payload fields turned into
    ISO 8601. ``summaries``: payload fields cut to a number of characters.
    ``urls``: payload fields made from a URL template over the record.
    ``coalesce``: a template (``task:{task_id}``) for the coalesce key.
    ``retain``/``retain_seconds``: the event is kept as its coalesce key's retained
    state (D33), as a publish's ``retain`` says.
    """

    source_type: str
    event: str
    scope: str
    key: str | None
    fields: Mapping[str, str] = field(default_factory=dict)
    timestamps: frozenset[str] = frozenset()
    summaries: Mapping[str, int] = field(default_factory=dict)
    urls: Mapping[str, str] = field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    coalesce: str | None = None
    retain: bool = False
    retain_seconds: int | None = None
    error: ErrorSpec | None = None
    #: Where the rule was written, for messages: ``"mapping.toml:12"``.
    origin: str = ""


@dataclass(frozen=True, slots=True)
class MappingTable:
    """Every rule, by source event type, and where records say their type."""

    rules: Mapping[str, Rule]
    #: Dotted path of the record's type field.
    type_field: str = "event_type"
    #: A dotted path where payload fields are looked for first (an envelope's ``payload``).
    payload_path: str = ""

    def rule_for(self, source_type: str) -> Rule | None:
        return self.rules.get(source_type)

    def __len__(self) -> int:
        return len(self.rules)
