"""The listeners of a bus: who gets each record, in order, whatever one of them does."""

from __future__ import annotations

from collections.abc import Callable

import structlog

from herald.bus.base import BusRecord, Listener

log = structlog.get_logger("herald.bus")


class Listeners:
    def __init__(self) -> None:
        self._listeners: tuple[Listener, ...] = ()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners += (listener,)

        def unsubscribe() -> None:
            self._listeners = tuple(other for other in self._listeners if other is not listener)

        return unsubscribe

    def deliver(self, record: BusRecord) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:  # one listener's bug must not starve the others, nor undo the append
                log.exception("bus_listener_failed", cursor=str(record.cursor))

    def clear(self) -> None:
        self._listeners = ()
