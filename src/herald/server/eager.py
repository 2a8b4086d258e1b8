"""Run a coroutine's first step in the callback that has its input, not a loop turn later.

``loop.create_task`` runs a task's first step in the next turn of the loop. On a node
busy broadcasting, a turn is the writes to every stream (tens of milliseconds at
10,000 streams), so a publish handed to a task is routed one whole turn later than
the raw-asyncio ceiling routes it from ``data_received`` (issue 16: a turn of p50 at
10,000 streams × 20 events/s).

Python 3.12's ``asyncio.eager_task_factory`` does this; the node runs on 3.11, so
:func:`start_eagerly` does what 3.12's eager start does, with 3.11's own pieces. The
task is made *first* and is the current task during the eager step, so that whatever
the step captures (``asyncio.timeout`` captures the current task to cancel it later)
belongs to the task that carries the coroutine on after its first wait. The step runs
in the task's context, so context variables set before a wait are there after it.
"""

from __future__ import annotations

import asyncio
import contextvars
from asyncio.tasks import _enter_task, _leave_task
from collections.abc import Coroutine, Generator
from typing import Any

#: Eager steps under way (in this thread's loop, as they are synchronous).
_running = 0


def start_eagerly(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run ``coro`` now until it first waits; its task carries on from there, if it does.

    A publish on the memory bus never waits: it is routed, and answered, right here.
    The task returned finishes a turn later with nothing left to do.

    Called from inside another eager step, ``coro`` is an ordinary task instead: a
    client's pipelined publishes are each started as the one before is answered, and
    eagerly they would nest one inside another, as deep as the pipeline."""
    global _running
    if _running:
        return loop.create_task(coro)
    rest = _Rest(coro)
    context = contextvars.copy_context()
    task = loop.create_task(rest.run(), context=context)
    prior = asyncio.current_task(loop)
    if prior is not None:
        _leave_task(loop, prior)
    _enter_task(loop, task)
    _running += 1
    try:
        context.run(rest.first_step)
    finally:
        _running -= 1
        _leave_task(loop, task)
        if prior is not None:
            _enter_task(loop, prior)
    return task


class _Rest:
    """The coroutine after its eager step: what it waits on, or how it ended."""

    __slots__ = ("coro", "failure", "finished", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.waiting: Any = None
        self.finished = False
        self.failure: BaseException | None = None

    def first_step(self) -> None:
        try:
            self.waiting = self.coro.send(None)
        except StopIteration:
            self.finished = True
        except BaseException as exc:  # raised by the task, as a task's first step would
            self.finished = True
            self.failure = exc

    async def run(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.finished:
            await _Resumed(self.coro, self.waiting)


class _Resumed:
    """Hands the task the future the coroutine yielded, then the coroutine itself.

    The future still has ``_asyncio_future_blocking`` set, so the task waits on it as if
    the coroutine had yielded it to the task directly, cancellation included: cancelling
    the task cancels the future, and what the task throws in is thrown into the
    coroutine where it waits, as a task does."""

    __slots__ = ("coro", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, None], waiting: Any) -> None:
        self.coro = coro
        self.waiting = waiting

    def __await__(self) -> Generator[Any, None, None]:
        try:
            yield self.waiting
        except BaseException as exc:
            return (yield from _thrown(self.coro, exc))
        return (yield from self.coro.__await__())


def _thrown(coro: Coroutine[Any, Any, None], exc: BaseException) -> Generator[Any, None, None]:
    """Throw ``exc`` into ``coro`` where it waits, then drive it on as ``yield from`` would."""
    try:
        waiting = coro.throw(exc)
    except StopIteration:
        return
    rest = _Resumed(coro, waiting)
    yield from rest.__await__()
