"""A publish path for source tests: a real memory bus behind a switch that can refuse appends."""

from __future__ import annotations

from herald.bus.base import AppendResult
from herald.bus.memory import MemoryBus
from herald.bus.throttle import Offered
from herald.errors import BusUnavailable
from herald.events.message import SSEMessage, encode_data


class SwitchableBus:
    """``publish`` as the gateway has it, onto a :class:`MemoryBus`; while ``available`` is
    false every append raises :class:`BusUnavailable` (counted in ``refused``)."""

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.available = True
        self.refused = 0
        self.keys: list[str | None] = []

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        if not self.available:
            self.refused += 1
            raise BusUnavailable("the bus is away", retry_after=1)
        result = self.bus.append_now(
            message, encode_data(message, 64 * 1024), idempotency_key=idempotency_key
        )
        if not result.duplicate:
            self.keys.append(idempotency_key)
        return result

    @property
    def messages(self) -> list[SSEMessage]:
        return [record.message for record in self.bus.records()]

    async def offer(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        """``Gateway.offer`` with no throttle: every event is in the bus when it returns."""
        return Offered(await self.publish(message, idempotency_key=idempotency_key))
