"""Reading values out of a domain record and reshaping them: paths, templates, transforms. Pure."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

import orjson

#: ``{task_id}`` or ``{payload.task_id}`` in a template.
PLACEHOLDER: Final = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
PATH: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z_][A-Za-z0-9_-]*)*")
#: Epoch numbers at or above this are milliseconds (year 5138 in seconds, 1973 in ms).
_EPOCH_MS_FROM = 100_000_000_000
ELLIPSIS: Final = "…"


class Missing:
    """The value at a path that is not there (``None`` is a value: JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = Missing()


class ValueProblem(ValueError):
    """A record's value cannot be used as the rule says; the message names it."""


def lookup(record: Mapping[str, Any], path: str, *, under: str = "") -> Any:
    """The value at a dotted ``path``; with ``under``, looked for there first, then at the top."""
    if under:
        nested = _walk(record, under)
        if isinstance(nested, Mapping):
            found = _walk(nested, path)
            if found is not MISSING:
                return found
    return _walk(record, path)


def _walk(value: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return value


def render(template: str, record: Mapping[str, Any], *, under: str = "", url: bool = False) -> str:
    """``template`` with each ``{path}`` replaced by the record's value (percent-encoded for URLs)."""

    def substitute(match: re.Match[str]) -> str:
        value = lookup(record, match[1], under=under)
        if value is MISSING or value is None or isinstance(value, (dict, list)):
            raise ValueProblem(f"{match[1]!r} (needed by {template!r}) is missing or not a scalar")
        text = scalar_text(value)
        return quote(text, safe="") if url else text

    return PLACEHOLDER.sub(substitute, template)


def scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def routing_key(value: Any, path: str) -> str:
    """A routing key read from the record: a string, or an integer as its digits."""
    if value is MISSING or value is None:
        raise ValueProblem(f"the routing key {path!r} is missing")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueProblem(f"the routing key {path!r} must be a string or an integer")
    return str(value)


def iso8601(value: Any) -> str:
    """A timestamp as ISO 8601 in UTC: from epoch seconds, epoch milliseconds or ISO text
    (text without an offset is taken as UTC)."""
    if isinstance(value, bool):
        raise ValueProblem("a timestamp cannot be true or false")
    if isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= _EPOCH_MS_FROM else float(value)
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueProblem(f"{value!r} is not a usable epoch timestamp") from None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueProblem(f"{value[:40]!r} is not an ISO 8601 timestamp") from None
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    else:
        raise ValueProblem(f"a timestamp must be a number or text, not {type(value).__name__}")
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


def summary(value: Any, limit: int) -> str:
    """At most ``limit`` characters: text as is, anything else as its JSON; cut with an ellipsis."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if len(text) <= limit:
        return text
    return text[: limit - 1] + ELLIPSIS
