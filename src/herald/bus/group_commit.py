"""Group commit: single appends made while another is on its way to the store go together in
the next round trip (docs/architecture.md, D27). A busy node pays the client's per-call cost
once per round trip, not once per event; a lone append goes at once; each caller gets its
own result, in the order the appends were made."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from herald.bus.base import Append, AppendResult, BatchResult
from herald.errors import BusUnavailable

#: The most queued appends sent in one round trip (the batch endpoint's limit too).
MAX_GROUP = 500


class GroupCommit:
    def __init__(
        self, append_many: Callable[[Sequence[Append]], Awaitable[list[BatchResult]]], name: str
    ) -> None:
        self._append_many = append_many
        self._name = name
        self._queued: list[tuple[Append, asyncio.Future[BatchResult]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, item: Append) -> AppendResult:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[BatchResult] = loop.create_future()
        self._queued.append((item, waiter))
        if self._writer is None:
            self._writer = loop.create_task(self._write(), name=self._name)
        result = await waiter
        if isinstance(result, BusUnavailable):
            raise result
        return result

    async def settle(self, seconds: float = 5.0) -> None:
        """Wait (bounded) for the appends already on their way."""
        if self._writer is not None:
            await asyncio.wait({self._writer}, timeout=seconds)

    async def _write(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[:MAX_GROUP], self._queued[MAX_GROUP:]
                try:
                    results = await self._append_many([item for item, _ in batch])
                except Exception as exc:
                    for _, waiter in batch:
                        if not waiter.done():
                            waiter.set_exception(exc)
                    continue
                for (_, waiter), result in zip(batch, results, strict=True):
                    if not waiter.done():  # a caller that gave up: its event is appended all the same
                        waiter.set_result(result)
        finally:
            self._writer = None
