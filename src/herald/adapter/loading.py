"""Reading a mapping file (TOML) into a :class:`MappingTable`, refusing every mistake at once.

The format (docs/events.md has the whole catalogue)::

    format = 1
    type_field = "event_type"   # where a record names its type (a dotted path)
    payload_path = ""           # optional envelope: paths are looked for here first
    extends = "default"         # "default": start from the built-in catalogue; "none"

    [rules.TaskProgressUpdateEvent]
    event = "task.progress-updated"
    scope = "user"              # user | session | global | a resource type
    key = "user_id"             # path of the routing key (none for global)
    fields = ["task_id", "progress", "message", "estimated_remaining"]
    from = { message = "status.text" }      # a payload field read from another path
    timestamps = ["changed_at"]             # become ISO 8601, UTC
    summaries = { result_summary = 280 }    # cut to at most N characters
    urls = { link = "https://app.example/tasks/{task_id}" }
    priority = "normal"                     # high | normal | low
    coalesce = "task:{task_id}"             # newer replaces older in a slow queue
    retain = true                           # keep the newest per coalesce key (D33)
    retain_seconds = 3600                   # for this long (default HERALD_RETAIN_SECONDS)

    [rules.TaskFailedEvent]
    event = "error.task-failed"
    scope = "user"
    key = "user_id"
    error = { code = "error_code", default_code = "TASK_FAILED", message = "error_message",
              correlation_id = "task_id" }

A rule for an event of the default catalogue (:mod:`herald.events.catalogue`)
that names no ``fields`` keeps exactly its model's fields; a rule that does
must produce every required field of the model and nothing outside it.

Every problem is reported with the file, the line and the rule:
``mapping.toml:14: rule TaskCreatedEvent: scope 'user' needs a key``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from herald.adapter.rules import ERROR_LEVELS, ErrorSpec, MappingTable, Rule
from herald.adapter.values import PATH, PLACEHOLDER
from herald.errors import InvalidEvent
from herald.events.catalogue import payload_model
from herald.events.message import MAX_RETAIN_SECONDS
from herald.events.names import check_event_name, check_scope
from herald.events.system import ErrorEvent
from herald.types import GLOBAL, Priority

FORMAT = 1
DEFAULT_RESOURCE = "default_mapping.toml"
_TOP_KEYS = frozenset({"format", "type_field", "payload_path", "extends", "rules"})
_RULE_KEYS = frozenset(
    {
        "event", "scope", "key", "fields", "from", "timestamps", "summaries", "urls",
        "priority", "coalesce", "retain", "retain_seconds", "error",
    }
)  # fmt: skip
_ERROR_KEYS = frozenset(
    {"level", "code", "default_code", "message", "default_message", "correlation_id", "retry_after"}
)
_TOML_LINE = re.compile(r"at line (\d+)")


class MappingInvalid(ValueError):
    """A mapping file that cannot be used; ``problems`` holds one line per mistake."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def default_mapping_text() -> str:
    return resources.files("herald.adapter").joinpath(DEFAULT_RESOURCE).read_text(encoding="utf-8")


def default_mapping() -> MappingTable:
    """The built-in default catalogue (DESIGN.md's 21 event types)."""
    return parse_mapping(default_mapping_text(), origin=f"<built-in {DEFAULT_RESOURCE}>", base=None)


def load_mapping(path: Path | None) -> MappingTable:
    """The mapping in ``path`` (on top of the default catalogue if it ``extends`` it), or the default."""
    if path is None:
        return default_mapping()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingInvalid([f"{path}: cannot be read: {exc.strerror or exc}"]) from None
    return parse_mapping(text, origin=str(path))


def parse_mapping(
    text: str, *, origin: str = "mapping.toml", base: MappingTable | None = None
) -> MappingTable:
    """The table ``text`` describes. ``base``: rules it extends when it says ``extends = "default"``
    (the default catalogue when not given)."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = _TOML_LINE.search(str(exc))
        where = f"{origin}:{found[1]}" if found else origin
        raise MappingInvalid([f"{where}: not valid TOML: {exc}"]) from None
    lines = _Lines(text, origin)
    problems: list[str] = []
    for name in sorted(set(document) - _TOP_KEYS):
        problems.append(f"{lines.top(name)}: unknown setting {name!r}; expected one of {sorted(_TOP_KEYS)}")
    if document.get("format", FORMAT) != FORMAT:
        problems.append(f"{lines.top('format')}: format {document['format']!r} is not {FORMAT}")
    type_field = _path_setting(document, "type_field", "event_type", lines, problems)
    payload_path = _path_setting(document, "payload_path", "", lines, problems)
    extends = document.get("extends", "default")
    if extends not in ("default", "none"):
        problems.append(f"{lines.top('extends')}: extends must be 'default' or 'none', not {extends!r}")
    rules: dict[str, Rule] = {}
    if extends == "default":
        inherited = base if base is not None else default_mapping()
        rules.update(inherited.rules)
    raw_rules = document.get("rules", {})
    if not isinstance(raw_rules, dict):
        problems.append(f"{lines.top('rules')}: 'rules' must be a table of [rules.<event type>]")
        raw_rules = {}
    for source_type, body in raw_rules.items():
        rule = _rule(source_type, body, lines, problems)
        if rule is not None:
            rules[source_type] = rule
    if problems:
        raise MappingInvalid(problems)
    return MappingTable(rules, type_field=type_field, payload_path=payload_path)


def _path_setting(
    document: Mapping[str, Any], name: str, default: str, lines: _Lines, problems: list[str]
) -> str:
    value = document.get(name, default)
    if (
        not isinstance(value, str)
        or (value and not PATH.fullmatch(value))
        or (name == "type_field" and not value)
    ):
        problems.append(f"{lines.top(name)}: {name} must be a dotted path like 'event_type'")
        return default
    return value


def _rule(source_type: str, body: Any, lines: _Lines, problems: list[str]) -> Rule | None:
    where = lines.rule(source_type)
    before = len(problems)

    def problem(message: str, key: str | None = None) -> None:
        at = lines.rule(source_type, key) if key else where
        problems.append(f"{at}: rule {source_type}: {message}")

    if not isinstance(body, dict):
        problem("must be a table")
        return None
    for key in sorted(set(body) - _RULE_KEYS):
        problem(f"unknown key {key!r}; expected one of {sorted(_RULE_KEYS)}", key)

    event = body.get("event")
    if not isinstance(event, str):
        problem("'event' (the browser event's name) is required", "event")
        event = ""
    else:
        try:
            check_event_name(event)
        except InvalidEvent as exc:
            problem(exc.message, "event")
    scope = body.get("scope")
    if not isinstance(scope, str):
        problem("'scope' is required: user, session, global or a resource type", "scope")
        scope = GLOBAL
    else:
        try:
            check_scope(scope)
        except InvalidEvent as exc:
            problem(exc.message, "scope")
    key = body.get("key")
    if scope == GLOBAL and key is not None:
        problem("a global event has no key", "key")
    elif scope != GLOBAL and not (isinstance(key, str) and PATH.fullmatch(key)):
        problem(f"scope {scope!r} needs a key: the dotted path of the routing key in the record", "key")
        key = None

    fields = _field_paths(body, problem)
    timestamps = _names(body, "timestamps", problem)
    summaries = _table(body, "summaries", problem, int)
    for name, limit in summaries.items():
        if limit < 2:
            problem(f"summary of {name!r} must allow at least 2 characters", "summaries")
    urls = _table(body, "urls", problem, str)
    for name, template in urls.items():
        if not PLACEHOLDER.search(template):
            problem(f"URL template of {name!r} uses no {{field}} of the record", "urls")

    priority = Priority.NORMAL
    if "priority" in body:
        try:
            priority = Priority.parse(str(body["priority"]))
        except KeyError:
            problem("priority must be high, normal or low", "priority")
    coalesce = body.get("coalesce")
    if coalesce is not None and not (isinstance(coalesce, str) and PLACEHOLDER.search(coalesce)):
        problem("coalesce must be a template naming a field, like 'task:{task_id}'", "coalesce")
        coalesce = None
    retain = body.get("retain", False)
    if not isinstance(retain, bool):
        problem("retain must be true or false", "retain")
        retain = False
    if retain and "coalesce" not in body:
        problem("retain needs a coalesce template: the retained state is kept per coalesce key", "retain")
    retain_seconds = body.get("retain_seconds")
    if retain_seconds is not None and not (
        retain
        and isinstance(retain_seconds, int)
        and not isinstance(retain_seconds, bool)
        and 1 <= retain_seconds <= MAX_RETAIN_SECONDS
    ):
        problem(f"retain_seconds needs retain = true and is 1-{MAX_RETAIN_SECONDS}", "retain_seconds")
        retain_seconds = None

    error = _error_spec(body, problem)
    if event.startswith("error.") and error is None:
        problem("an error.* event needs an 'error' table (code, message, ...)", "event")
    if error is not None and not event.startswith("error."):
        problem("a rule with an 'error' table must name an error.* event", "error")
    if error is not None and (fields or urls):
        problem("an error event carries only the error fields; drop 'fields', 'from' and 'urls'", "error")

    if error is None:
        fields = _against_catalogue(event, fields, urls, problem)
    produced = set(fields) | set(urls)
    for name in sorted((timestamps | set(summaries)) - set(fields)):
        problem(f"{name!r} is transformed but not kept (add it to 'fields')")
    for name in sorted(set(urls) & set(fields)):
        problem(f"{name!r} is both kept and made from a URL template", "urls")
    if error is None and not produced and event:
        problem("keeps no field: name 'fields'")
    if len(problems) > before:
        return None
    return Rule(
        source_type=source_type,
        event=event,
        scope=scope,
        key=key,
        fields=fields,
        timestamps=frozenset(timestamps),
        summaries=summaries,
        urls=urls,
        priority=priority,
        coalesce=coalesce,
        retain=retain,
        retain_seconds=retain_seconds,
        error=error,
        origin=where,
    )


def _field_paths(body: Mapping[str, Any], problem: Any) -> dict[str, str]:
    names = body.get("fields", [])
    _names(body, "fields", problem)
    renamed = _table(body, "from", problem, str)
    # In the file's order: the payload's keys come out as the rule lists them.
    fields = {name: name for name in names if isinstance(name, str)} if isinstance(names, list) else {}
    for name, path in renamed.items():
        if not PATH.fullmatch(path):
            problem(f"from.{name} must be a dotted path, not {path!r}", "from")
        fields[name] = path
    return fields


def _names(body: Mapping[str, Any], key: str, problem: Any) -> set[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and PATH.fullmatch(v) for v in value):
        problem(f"{key!r} must be a list of field names", key)
        return set()
    if len(set(value)) != len(value):
        problem(f"{key!r} names a field twice", key)
    return set(value)


def _table(body: Mapping[str, Any], key: str, problem: Any, kind: type[Any]) -> dict[str, Any]:
    value = body.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(v, kind) and not isinstance(v, bool) for v in value.values()
    ):
        problem(f"{key!r} must be a table of field = {kind.__name__}", key)
        return {}
    return dict(value)


def _error_spec(body: Mapping[str, Any], problem: Any) -> ErrorSpec | None:
    spec = body.get("error")
    if spec is None:
        return None
    if not isinstance(spec, dict):
        problem("'error' must be a table", "error")
        return None
    for key in sorted(set(spec) - _ERROR_KEYS):
        problem(f"unknown error key {key!r}; expected one of {sorted(_ERROR_KEYS)}", "error")
    if not all(isinstance(v, str) for v in spec.values()):
        problem("every value of 'error' must be text", "error")
        return None
    level = spec.get("level", "error")
    if level not in ERROR_LEVELS:
        problem(f"error level must be one of {list(ERROR_LEVELS)}", "error")
    for key in ("code", "message", "correlation_id", "retry_after"):
        if key in spec and not PATH.fullmatch(spec[key]):
            problem(f"error.{key} must be a dotted path in the record", "error")
    if "code" not in spec and "default_code" not in spec:
        problem("error needs 'code' (a path) or 'default_code'", "error")
    if "message" not in spec and "default_message" not in spec:
        problem("error needs 'message' (a path) or 'default_message'", "error")
    return ErrorSpec(
        level=level,
        code=spec.get("code"),
        default_code=spec.get("default_code"),
        message=spec.get("message"),
        default_message=spec.get("default_message"),
        correlation_id=spec.get("correlation_id"),
        retry_after=spec.get("retry_after"),
    )


def _against_catalogue(
    event: str, fields: dict[str, str], urls: Mapping[str, str], problem: Any
) -> dict[str, str]:
    """A catalogue event's fields: its model's when the rule names none; else checked against it."""
    model = payload_model(event)
    if model is None or model is ErrorEvent:
        return fields
    known = model.model_fields
    if not fields and not urls:
        return {name: name for name in known}
    produced = set(fields) | set(urls)
    for name in sorted(produced - set(known)):
        problem(
            f"{name!r} is not a field of {event} (payload model {model.__name__}: {sorted(known)})", "fields"
        )
    required = {name for name, info in known.items() if info.is_required()}
    for name in sorted(required - produced):
        problem(f"{event} requires {name!r} (payload model {model.__name__})", "fields")
    return fields


class _Lines:
    """Where things are written in the file, for messages: ``origin:line``."""

    def __init__(self, text: str, origin: str) -> None:
        self.origin = origin
        self._lines = text.splitlines()

    def top(self, key: str) -> str:
        return self._at(self._find_key(key, 0, self._section_end(0, top=True)))

    def rule(self, source_type: str, key: str | None = None) -> str:
        header = re.compile(rf"\s*\[\s*rules\s*\.\s*[\"']?{re.escape(source_type)}[\"']?\s*\]")
        start = next((i for i, line in enumerate(self._lines) if header.match(line)), None)
        if start is None:
            return self.origin
        if key is None:
            return self._at(start)
        found = self._find_key(key, start + 1, self._section_end(start + 1))
        if found is None:
            # ``[rules.X.from]``-style sub-tables
            sub = re.compile(rf"\s*\[\s*rules\s*\.\s*[\"']?{re.escape(source_type)}[\"']?\s*\.\s*{key}\s*\]")
            found = next((i for i, line in enumerate(self._lines) if sub.match(line)), start)
        return self._at(found)

    def _section_end(self, start: int, *, top: bool = False) -> int:
        for i in range(start, len(self._lines)):
            if self._lines[i].lstrip().startswith("["):
                return i
        return len(self._lines)

    def _find_key(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"\s*[\"']?{re.escape(key)}[\"']?\s*=")
        return next((i for i in range(start, end) if pattern.match(self._lines[i])), None)

    def _at(self, index: int | None) -> str:
        return self.origin if index is None else f"{self.origin}:{index + 1}"


def rules_by_event(table: MappingTable) -> dict[str, list[Rule]]:
    """Rules grouped by the browser event they make (for documentation and checks)."""
    out: dict[str, list[Rule]] = {}
    for rule in table.rules.values():
        out.setdefault(rule.event, []).append(rule)
    return out


def describe(rules: Iterable[Rule]) -> list[str]:
    """One line per rule: ``TaskCreatedEvent -> task.created (user by user_id)``."""
    out = []
    for rule in rules:
        target = rule.scope if rule.key is None else f"{rule.scope} by {rule.key}"
        out.append(f"{rule.source_type} -> {rule.event} ({target})")
    return out
