"""Structured logs (structlog): JSON lines in production, readable lines in a terminal.

Nothing Herald logs contains a query string: stream tokens travel in them.

Each line is one ``write`` (``WriteLoggerFactory``), so the worker processes
of ``herald serve --workers N``, which share the supervisor's stderr, never
interleave halves of their lines; ``fields`` (the worker's id) go on every line.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Literal

import structlog
from structlog.typing import EventDict, WrappedLogger


def configure_logging(
    level: str = "info", fmt: Literal["json", "console"] = "json", fields: Mapping[str, object] | None = None
) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    static = dict(fields or {})

    def add_fields(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
        for key, value in static.items():
            event.setdefault(key, value)
        return event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.WriteLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
