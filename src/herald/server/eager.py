"""Run a coroutine's first step in the callback that has its input, not a loop turn later.

``loop.create_task`` runs a task's first step in the next turn of the loop. On a node
busy broadcasting, a turn is the writes to every stream (tens of milliseconds at
10,000 streams), so a publish handed to a task is routed one whole turn later than
the raw-asyncio ceiling routes it from ``data_received`` (issue 16: a turn of p50 at
10,000 streams × 20 events/s). Python 3.12's ``asyncio.eager_task_factory`` does what
:func:`start_eagerly` does; this node runs on 3.11.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` now until it first waits; a task carries on from there, if it does.

    A publish on the memory bus never waits: it is routed, and answered, right here."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return
    loop.create_task(_carry_on(coro, waiting))


async def _carry_on(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive ``coro`` as its task would have: wait for what it yielded, resume it, and
    pass a cancellation of this task into it."""
    while True:
        try:
            await _until_done(waiting)
        except asyncio.CancelledError as cancelled:
            try:
                waiting = coro.throw(cancelled)
            except StopIteration:
                return
            continue
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


async def _until_done(waiting: Any) -> None:
    """Wait until the future ``coro`` yielded is done (without raising its exception:
    resuming ``coro`` does), or a bare ``yield`` (``asyncio.sleep(0)``): one turn."""
    if waiting is None:
        await asyncio.sleep(0)
        return
    # What a Task does with a future its coroutine yields (asyncio.Future.__await__).
    waiting._asyncio_future_blocking = False
    if not waiting.done():
        await asyncio.wait((waiting,))
