"""The publish path: every way an event comes in (``POST /api/v1/events``, a source,
an application publishing in-process) goes through :class:`Publishing`, which
validates and encodes it once, passes it through the coalesce throttle and appends
it to the bus, and counts what went in, by source.

One object for all of them, so they share one throttle (a coalesce key is held
once, whichever way its events come) and one set of counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from herald.bus.base import AppendResult, EventBus
from herald.bus.throttle import Offered, Throttle
from herald.config import Settings
from herald.errors import BusUnavailable
from herald.events.message import SSEMessage, encode_data

#: Distinct ``source`` labels counted for ``herald_events_in``; more become ``other``.
_MAX_SOURCE_LABELS = 16


class Publishing:
    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self._settings = settings
        self._bus = bus
        #: Events with a coalesce key pass here before the bus: at most one per key per interval.
        self.throttle = Throttle(self._append, settings.coalesce_interval_seconds)
        #: Events appended through this node, by source label (``herald_events_in``).
        self.events_in: dict[str, int] = {}

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        """Append ``message`` to the bus; every path in answers with a cursor or an error.

        An event the coalesce throttle holds is answered when it goes out (its
        cursor) or is superseded (the cursor carrying the newer content,
        ``coalesced=True``): within the interval, or :class:`BusUnavailable` if the
        bus does not take it in time (it stays held, and is appended when it can be)."""
        offered = await self.offer(message, idempotency_key=idempotency_key)
        if offered.result is not None:
            return offered.result
        try:
            async with asyncio.timeout(self._held_answer_seconds):
                return await offered.wait()
        except TimeoutError:
            raise BusUnavailable(
                "the event is held for its coalesce interval and the bus has not taken it yet",
                retry_after=1,
            ) from None

    async def offer(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        """Hand ``message`` to the publish path: returns once it is in the bus, or held by
        the coalesce throttle (``Offered.pending`` settles when it is appended or
        superseded). For sources that go on with their next record meanwhile."""
        data_json = encode_data(message, self._settings.max_event_bytes)
        return await self.throttle.offer(message, data_json, idempotency_key)

    async def flush_held(self) -> None:
        """Append every event the throttle holds now; later ones go straight through.
        Bounded: what the bus does not take within 5 s stays unappended (and its sources
        uncommitted)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.throttle.close()

    @property
    def _held_answer_seconds(self) -> float:
        return self.throttle.interval + max(2.0, 2 * self._settings.redis_timeout_seconds)

    async def _append(
        self, message: SSEMessage, data_json: bytes, idempotency_key: str | None, superseded: Sequence[str]
    ) -> AppendResult:
        result = await self._bus.append(
            message, data_json, idempotency_key=idempotency_key, superseded_keys=superseded
        )
        if not result.duplicate:
            kind = self._source_label(message.source)
            self.events_in[kind] = self.events_in.get(kind, 0) + 1
        return result

    def _source_label(self, source: str | None) -> str:
        """``http``, ``python`` (published in-process) or the source's kind: a bounded label."""
        if source is None:
            return "python"
        kind = source.partition(":")[0]
        if kind in self.events_in or len(self.events_in) < _MAX_SOURCE_LABELS:
            return kind
        return "other"
