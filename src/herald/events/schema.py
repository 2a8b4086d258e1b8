"""JSON Schema of every payload model in ``herald.events``: what the TypeScript types are made from.

Discovery is automatic, so a new model needs no registration here: every
pydantic model defined in a module of this package is exported, and every
module-level mapping of event names to models (``system.EVENT_PAYLOADS``,
``catalogue.CATALOGUE``) names the events that carry them, which gives the
client typed handlers for those names.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

import herald.events
from herald.events.names import EVENT_NAME

#: The keys every payload carries on the wire besides its model's fields.
ENVELOPE_FIELDS = ("_scope", "_version")


def event_modules() -> list[ModuleType]:
    """Every module of ``herald.events``, imported, in name order."""
    names = sorted(info.name for info in pkgutil.iter_modules(herald.events.__path__))
    return [importlib.import_module(f"herald.events.{name}") for name in names]


def payload_models(modules: list[ModuleType] | None = None) -> list[type[BaseModel]]:
    """The pydantic models defined (not merely imported) in those modules, by name."""
    found: dict[str, type[BaseModel]] = {}
    for module in modules if modules is not None else event_modules():
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseModel)
                and value is not BaseModel
                and value.__module__ == module.__name__
            ):
                if value.__name__ in found and found[value.__name__] is not value:
                    raise ValueError(f"two payload models are named {value.__name__}: names must be unique")
                found[value.__name__] = value
    return [found[name] for name in sorted(found)]


def _name_to_model(value: object) -> Mapping[str, type[BaseModel]] | None:
    """``value`` if it is a non-empty mapping of event names to payload models."""
    if not isinstance(value, Mapping) or not value:
        return None
    for name, model in value.items():
        if not (isinstance(name, str) and EVENT_NAME.fullmatch(name)):
            return None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return value


def event_payloads(modules: list[ModuleType] | None = None) -> dict[str, type[BaseModel]]:
    """Event name → payload model, merged from every module-level mapping of names to models."""
    merged: dict[str, type[BaseModel]] = {}
    for module in modules if modules is not None else event_modules():
        declared = [found for value in vars(module).values() if (found := _name_to_model(value)) is not None]
        for name, model in (item for mapping in declared for item in mapping.items()):
            if merged.get(name, model) is not model:
                raise ValueError(f"event {name!r} is given two payload models")
            merged[name] = model
    return dict(sorted(merged.items()))


def events_json_schema() -> dict[str, Any]:
    """``{"$defs": {model: schema}, "events": {name: model}}`` for the payloads as sent on the wire."""
    modules = event_modules()
    models = payload_models(modules)
    events = event_payloads(modules)
    unknown = [model.__name__ for model in events.values() if model not in models]
    if unknown:
        raise ValueError(f"EVENT_PAYLOADS names models outside herald.events: {unknown}")
    _, schema = models_json_schema(
        [(model, "serialization") for model in models], ref_template="#/$defs/{model}"
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Herald event payloads",
        "$defs": schema.get("$defs", {}),
        "events": {name: model.__name__ for name, model in events.items()},
        "envelope": list(ENVELOPE_FIELDS),
    }
