"""``Adapter``: a domain record in, the browser event its rule makes out. Pure.

Three outcomes for a record:

- its type has a rule: one :class:`SSEMessage`, its payload exactly the
  rule's fields (validated against the catalogue model when the event is
  one of the default catalogue's);
- its type has no rule: ``None`` (the source counts it and moves on);
- it is a *poison record*: not a JSON object, no type, or it matches a rule
  but lacks the routing key or breaks the payload: :class:`PoisonRecord`,
  whose message says why (sources dead-letter it with that message).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import ValidationError

from herald.adapter.rules import ErrorSpec, MappingTable, Rule
from herald.adapter.values import MISSING, ValueProblem, iso8601, lookup, render, routing_key, summary
from herald.errors import InvalidEvent
from herald.events.canary import canary_message, is_canary_record
from herald.events.catalogue import payload_model
from herald.events.message import SSEMessage, build_message
from herald.events.system import ErrorEvent


class PoisonRecord(InvalidEvent):
    """A record no retry can deliver; ``event_type`` when it named one."""

    code = "RECORD_POISON"

    def __init__(self, message: str, *, event_type: str | None = None) -> None:
        super().__init__(message)
        self.event_type = event_type


def decode_record(raw: bytes | str | None) -> dict[str, Any]:
    """A record's JSON object; :class:`PoisonRecord` for anything else."""
    if raw is None:
        raise PoisonRecord("the record has no value")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise PoisonRecord(f"the record is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PoisonRecord(f"the record is JSON but not an object ({type(body).__name__})")
    return body


class Adapter:
    def __init__(self, table: MappingTable) -> None:
        self.table = table

    def event_type(self, record: Mapping[str, Any]) -> str:
        value = lookup(record, self.table.type_field)
        if not isinstance(value, str) or not value:
            raise PoisonRecord(f"the record has no {self.table.type_field!r} naming its type")
        return value

    def map(
        self, record: Mapping[str, Any], *, source: str | None = None, event_type: str | None = None
    ) -> SSEMessage | None:
        """The browser event ``record`` becomes; ``None`` when no rule knows its type.

        ``event_type``: the type, when the source keeps it beside the record (an outbox
        column) rather than in it. A canary (:mod:`herald.events.canary`) passes before
        any rule, whatever the mapping says.
        """
        if is_canary_record(record, event_type):
            try:
                return canary_message(record, source=source)
            except InvalidEvent as exc:
                raise PoisonRecord(f"canary: {exc.message}", event_type=event_type) from None
        source_type = event_type or self.event_type(record)
        rule = self.table.rule_for(source_type)
        if rule is None:
            return None
        try:
            return self._apply(rule, record, source)
        except (ValueProblem, InvalidEvent) as exc:
            message = exc.message if isinstance(exc, InvalidEvent) else str(exc)
            raise PoisonRecord(f"{source_type} -> {rule.event}: {message}", event_type=source_type) from None

    def map_raw(self, raw: bytes | str | None, *, source: str | None = None) -> SSEMessage | None:
        return self.map(decode_record(raw), source=source)

    def _apply(self, rule: Rule, record: Mapping[str, Any], source: str | None) -> SSEMessage:
        under = self.table.payload_path
        key = None
        if rule.key is not None:
            key = routing_key(lookup(record, rule.key, under=under), rule.key)
        if rule.error is not None:
            data = _error_payload(rule.error, record, under)
        else:
            data = self._payload(rule, record, under)
        coalesce = render(rule.coalesce, record, under=under) if rule.coalesce else None
        return build_message(
            event=rule.event,
            scope=rule.scope,
            key=key,
            data=data,
            priority=rule.priority,
            coalesce=coalesce,
            source=source,
            retain=rule.retain,
            retain_seconds=rule.retain_seconds,
        )

    def _payload(self, rule: Rule, record: Mapping[str, Any], under: str) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name, path in rule.fields.items():
            value = lookup(record, path, under=under)
            if value is MISSING:
                continue
            if value is not None:
                if name in rule.timestamps:
                    value = _field(name, iso8601, value)
                if name in rule.summaries:
                    value = summary(value, rule.summaries[name])
            data[name] = value
        for name, template in rule.urls.items():
            data[name] = render(template, record, under=under, url=True)
        return _validated(rule.event, data)


def _field(name: str, transform: Any, value: Any) -> Any:
    try:
        return transform(value)
    except ValueProblem as exc:
        raise ValueProblem(f"field {name!r}: {exc}") from None


def _error_payload(spec: ErrorSpec, record: Mapping[str, Any], under: str) -> dict[str, Any]:
    def text(path: str | None, default: str | None, name: str) -> str | None:
        value = lookup(record, path, under=under) if path else MISSING
        if value is MISSING or value is None:
            return default
        if isinstance(value, (dict, list, bool)):
            raise ValueProblem(f"error {name} at {path!r} must be text")
        return str(value)

    code = text(spec.code, spec.default_code, "code")
    message = text(spec.message, spec.default_message, "message")
    if code is None:
        raise ValueProblem(f"the error code {spec.code!r} is missing")
    if message is None:
        raise ValueProblem(f"the error message {spec.message!r} is missing")
    data: dict[str, Any] = {"level": spec.level, "code": code, "message": message}
    correlation = text(spec.correlation_id, None, "correlation_id")
    if correlation is not None:
        data["correlation_id"] = correlation
    if spec.retry_after:
        retry = lookup(record, spec.retry_after, under=under)
        if retry is not MISSING and retry is not None:
            data["retry_after"] = retry
    return _validated("error.*", data, error=True)


def _validated(event: str, data: dict[str, Any], *, error: bool = False) -> dict[str, Any]:
    """``data`` as its catalogue model has it (JSON types, optional fields present)."""
    model = ErrorEvent if error else payload_model(event)
    if model is None:
        return data
    try:
        valid = model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'payload'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise ValueProblem(f"the payload breaks {model.__name__}: {problems}") from None
    dumped: dict[str, Any] = valid.model_dump(mode="json")
    return dumped
