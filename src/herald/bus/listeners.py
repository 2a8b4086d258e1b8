"""The listeners of a bus: who gets each record, in order, whatever one of them does."""

from __future__ import annotations

import asyncio
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


class Progress:
    """Wakes whoever waits for a bus's position to pass a point (a replay waiting for the
    node's reader, bounded): :meth:`moved` after every advance."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def moved(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def until(self, done: Callable[[], bool], seconds: float) -> bool:
        """Whether ``done()`` held within ``seconds`` (checked at each advance)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not done():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except TimeoutError:
                return False
        return True
