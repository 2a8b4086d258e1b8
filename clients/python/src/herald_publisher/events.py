"""An event to publish: built from a catalogue model or from a name and ``data``, checked locally.

:meth:`Event.build` is where a producer's mistake fails before anything is
sent: a catalogue event's ``data`` is validated against its payload model
(unknown fields, wrong types, out-of-range values), and the scope and key are
checked the way the gateway checks them.
"""

from __future__ import annotations

import re
import string
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from herald_publisher.catalogue import EVENTS, Payload
from herald_publisher.errors import InvalidEventError

Priority = Literal["high", "normal", "low"]

_SCOPE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_KEY = re.compile(r"[^\s,\x00-\x1f\x7f]{1,256}")
_WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
_EVENT_NAME = re.compile(rf"{_WORD}\.{_WORD}")


def new_idempotency_key() -> str:
    """A fresh idempotency key (random, 32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Event:
    """One event as the gateway takes it (``POST /api/v1/events``); make it with :meth:`build`."""

    event: str
    scope: str
    key: str | None
    data: dict[str, Any]
    priority: Priority | None = None
    coalesce: str | None = None
    idempotency_key: str = field(default_factory=new_idempotency_key)
    #: Kept as the retained state of its coalesce key: a new stream gets it first (D33).
    retain: bool = False

    @classmethod
    def build(
        cls,
        event: str | Payload,
        *,
        scope: str | None = None,
        key: str | None = None,
        data: Mapping[str, Any] | BaseModel | None = None,
        priority: Priority | None = None,
        coalesce: str | None = None,
        idempotency_key: str | None = None,
        retain: bool = False,
    ) -> Event:
        """The event, validated.

        ``event`` is a catalogue model instance (``TaskProgressUpdated(task_id="t1",
        progress=40)``: its name, and the catalogue's scope, priority and coalesce key
        are the defaults) or an event name with ``data``. A catalogue event's ``data``
        is validated against its model; any other name's ``data`` is sent as given.
        The key defaults to the payload's routing field when it has one
        (``novel_id`` of a novel-scope event). ``retain``: the gateway keeps the event as
        the latest state of its coalesce key, sent first to every new stream that may see
        it (it needs a coalesce key). Raises :class:`InvalidEventError`.
        """
        model: type[Payload] | None
        payload: Payload | None
        if isinstance(event, Payload):
            if data is not None:
                raise TypeError("pass either a payload model or data, not both")
            model, payload, name = type(event), event, event.herald_event
        else:
            name = event
            model = EVENTS.get(name)
            payload = _validated(model, data) if model is not None else None
        if not _EVENT_NAME.fullmatch(name) or len(name) > 100:
            raise _invalid(f"event name {name[:100]!r} is not 'domain.action-past' in kebab-case", "event")
        if payload is not None:
            body = payload.model_dump(mode="json", exclude_unset=not isinstance(event, Payload))
        elif isinstance(data, BaseModel):
            body = data.model_dump(mode="json")
        else:
            body = to_jsonable_python(dict(data or {}))
        if model is not None:
            scope = scope or model.herald_scope or None
            if key is None and scope == model.herald_scope and model.herald_key_field in body:
                found = body[model.herald_key_field]
                key = found if isinstance(found, str) else None
            if priority is None and model.herald_priority != "normal":
                priority = cast(Priority, model.herald_priority)
            if coalesce is None and model.herald_coalesce is not None:
                coalesce = _render(model.herald_coalesce, body)
        if scope is None:
            raise _invalid(f"{name!r} is outside the catalogue: give its scope", "scope")
        if retain and coalesce is None:
            raise _invalid("retain needs a coalesce key: the retained state is kept per key", "retain")
        if not _SCOPE.fullmatch(scope):
            raise _invalid(f"scope {scope[:40]!r} is not user, session, global or a resource type", "scope")
        if scope == "global":
            key = None
        elif key is None or not _KEY.fullmatch(key):
            raise _invalid(
                f"scope {scope!r} needs a key of 1-256 characters without whitespace or commas", "key"
            )
        return cls(
            event=name,
            scope=scope,
            key=key,
            data=body,
            priority=priority,
            coalesce=coalesce,
            idempotency_key=idempotency_key or new_idempotency_key(),
            retain=retain,
        )

    def body(self) -> dict[str, Any]:
        """The JSON body of ``POST /api/v1/events`` (and one item of a batch)."""
        out: dict[str, Any] = {"event": self.event, "scope": self.scope, "data": self.data}
        if self.key is not None:
            out["key"] = self.key
        if self.priority is not None:
            out["priority"] = self.priority
        if self.coalesce is not None:
            out["coalesce"] = self.coalesce
        if self.retain:
            out["retain"] = True
        out["idempotency_key"] = self.idempotency_key
        return out


def _validated(model: type[Payload], data: Mapping[str, Any] | BaseModel | None) -> Payload:
    if isinstance(data, model):
        return data
    raw = data.model_dump() if isinstance(data, BaseModel) else dict(data or {})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [
            {"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in exc.errors()
        ]
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "data"
        raise InvalidEventError(
            f"{model.herald_event}: {where}: {first['msg']}",
            code="EVENT_INVALID",
            status=0,
            details={"field": "data", "errors": errors},
        ) from exc


def _render(template: str, data: Mapping[str, Any]) -> str | None:
    """``task:{task_id}`` over ``data``; ``None`` when a field it names is missing."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    if any(data.get(name) is None for name in names):
        return None
    return template.format_map({name: data[name] for name in names})


def _invalid(message: str, field_name: str) -> InvalidEventError:
    return InvalidEventError(message, code="EVENT_INVALID", status=0, details={"field": field_name})
