"""Progress of a long task, as the catalogue's task events, throttled and always finished.

::

    async with progress(publisher, user_id="alice", task_id="t1", task_type="chapter-draft") as p:
        await p.update(40, "drafting")

On entry: ``task.created`` (when ``task_type`` is given) and
``task.status-changed`` ``pending`` → ``running``. :meth:`update` sends
``task.progress-updated`` (coalesce key ``task:{task_id}``) at most ``rate``
times a second, always the latest value: updates in between replace each
other and never wait for the network (``retain=True``: each is also kept as the
task's retained state, which a new stream gets first). On exit, whatever happened, the last
pending update and then the terminal state, in one request:

- the block ended: ``task.status-changed`` ``running`` → ``completed``;
- it raised: ``error.task-failed`` (``code``, ``message``, ``correlation_id`` =
  the task id), then ``task.status-changed`` → ``failed``; the exception
  propagates. A :class:`TaskError` chooses the code and the message the user
  sees; any other exception is reported as ``failure_code`` /
  ``failure_message`` (its text may hold internals and is not sent);
- it was cancelled (``asyncio.CancelledError``; ``KeyboardInterrupt`` and
  ``SystemExit`` for the sync variant): ``task.status-changed`` → ``cancelled``,
  and the cancellation is re-raised.

The catalogue has no ``task.completed`` / ``task.failed`` / ``task.cancelled``
events: a task's end is its ``task.status-changed`` (docs/events.md), and a
failure is the ``error.task-failed`` error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, overload

from herald_publisher.catalogue import (
    Payload,
    TaskCreated,
    TaskFailed,
    TaskProgressUpdated,
    TaskStatusChanged,
)
from herald_publisher.errors import HeraldError
from herald_publisher.events import Event
from herald_publisher.publisher import AsyncPublisher, Publisher

log = logging.getLogger("herald_publisher.progress")

State = Literal["pending", "running", "completed", "failed", "cancelled"]


class TaskError(Exception):
    """Raise it in a progress block to fail the task with this ``code`` and user-facing ``message``."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class TaskOptions:
    user_id: str
    task_id: str
    task_type: str | None = None
    description: str | None = None
    rate: float = 2.0
    failure_code: str = "TASK_FAILED"
    failure_message: str = "The task failed"
    retain: bool = False


class _Task:
    """The events of one task; shared by both variants."""

    def __init__(self, options: TaskOptions) -> None:
        if options.rate <= 0:
            raise ValueError("rate is updates per second: more than 0")
        self.user_id = options.user_id
        self.task_id = options.task_id
        self.task_type = options.task_type
        self.description = options.description
        self.interval = 1.0 / options.rate
        self.failure_code = options.failure_code
        self.failure_message = options.failure_message
        self.retain = options.retain
        #: ``running`` inside the block, then how it ended.
        self.state: State = "pending"
        #: Progress updates sent (not those replaced by a newer one before their turn).
        self.sent = 0
        #: Errors of throttled sends (the block goes on; the next update or the end may pass).
        self.errors: list[HeraldError] = []
        self._latest: TaskProgressUpdated | None = None

    def event(self, payload: Payload) -> Event:
        return Event.build(payload, key=self.user_id)

    def opening(self) -> list[Event]:
        events = []
        if self.task_type is not None:
            events.append(
                self.event(
                    TaskCreated(task_id=self.task_id, task_type=self.task_type, description=self.description)
                )
            )
        events.append(
            self.event(TaskStatusChanged(task_id=self.task_id, old_status="pending", new_status="running"))
        )
        return events

    def _set_latest(self, progress: int, message: str | None, estimated_remaining: float | None) -> None:
        # Built (validated) here, so a bad value fails in the caller's code at once.
        self._latest = TaskProgressUpdated(
            task_id=self.task_id, progress=progress, message=message, estimated_remaining=estimated_remaining
        )

    def take(self) -> Event | None:
        latest, self._latest = self._latest, None
        return None if latest is None else Event.build(latest, key=self.user_id, retain=self.retain)

    def closing(self, error: BaseException | None, *, cancelled: bool) -> list[Event]:
        """The last pending update, then the terminal state's events."""
        events = [event for event in [self.take()] if event is not None]
        if error is None:
            self.state = "completed"
        elif cancelled:
            self.state = "cancelled"
        else:
            self.state = "failed"
            if isinstance(error, TaskError):
                code, message, retry_after = error.code, error.message, error.retry_after
            else:
                code, message, retry_after = self.failure_code, self.failure_message, None
            failed = TaskFailed(
                code=code, message=message, retry_after=retry_after, correlation_id=self.task_id
            )
            events.append(self.event(failed))
        changed = TaskStatusChanged(task_id=self.task_id, old_status="running", new_status=self.state)
        events.append(self.event(changed))
        return events

    def record(self, error: HeraldError) -> None:
        self.errors.append(error)
        log.warning("herald progress update not sent: %s", error)


def _finish(results: Sequence[object], error: BaseException | None) -> None:
    """Raise the first error among the terminal events' results (or note it on ``error``)."""
    for result in results:
        if isinstance(result, HeraldError):
            if error is None:
                raise result
            error.add_note(f"herald: the task's terminal state was not published: {result}")
            return


class AsyncTaskProgress(_Task):
    """``async with progress(async_publisher, ...) as p``: see the module's text."""

    def __init__(self, publisher: AsyncPublisher, options: TaskOptions) -> None:
        super().__init__(options)
        self.publisher = publisher
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    async def __aenter__(self) -> AsyncTaskProgress:
        for event in self.opening():
            await self.publisher.publish_event(event)
        self.state = "running"
        self._sender = asyncio.create_task(self._send_updates(), name=f"herald-progress-{self.task_id}")
        return self

    async def update(
        self, progress: int, message: str | None = None, *, estimated_remaining: float | None = None
    ) -> None:
        """Report ``progress`` (0–100); returns at once (the send is throttled, the latest wins)."""
        self._set_latest(progress, message, estimated_remaining)
        self._wake.set()

    async def _send_updates(self) -> None:
        loop = asyncio.get_running_loop()
        last = -self.interval
        while True:
            await self._wake.wait()
            wait = last + self.interval - loop.time()
            if wait > 0 and not self._closed.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._closed.wait()
            if self._closed.is_set():
                return  # the exit sends what is left
            self._wake.clear()
            event = self.take()
            if event is None:
                continue
            last = loop.time()
            try:
                await self.publisher.publish_event(event)
                self.sent += 1
            except HeraldError as exc:
                self.record(exc)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        self._closed.set()
        self._wake.set()
        if self._sender is not None:
            # Let a send in flight finish, so nothing overtakes the terminal state.
            await asyncio.wait({self._sender}, timeout=self.publisher.timeout)
            if not self._sender.done():
                self._sender.cancel()
            elif not self._sender.cancelled() and (crash := self._sender.exception()) is not None:
                log.error("herald progress updates stopped: %r", crash)
        events = self.closing(error, cancelled=isinstance(error, asyncio.CancelledError | KeyboardInterrupt))
        try:
            results = await self.publisher.publish_many(events)
        except HeraldError as refused:
            results = [refused]
        _finish(results, error)


class TaskProgress(_Task):
    """``with progress(publisher, ...) as p``: the sync variant (a sender thread)."""

    def __init__(self, publisher: Publisher, options: TaskOptions) -> None:
        super().__init__(options)
        self.publisher = publisher
        self._lock = threading.Condition()
        self._closed = False
        self._sender: threading.Thread | None = None

    def __enter__(self) -> TaskProgress:
        for event in self.opening():
            self.publisher.publish_event(event)
        self.state = "running"
        self._sender = threading.Thread(
            target=self._send_updates, name=f"herald-progress-{self.task_id}", daemon=True
        )
        self._sender.start()
        return self

    def update(
        self, progress: int, message: str | None = None, *, estimated_remaining: float | None = None
    ) -> None:
        """Report ``progress`` (0–100); returns at once (the send is throttled, the latest wins)."""
        with self._lock:
            self._set_latest(progress, message, estimated_remaining)
            self._lock.notify_all()

    def _send_updates(self) -> None:
        last = -self.interval
        while True:
            with self._lock:
                while self._latest is None and not self._closed:
                    self._lock.wait()
                while not self._closed and (wait := last + self.interval - time.monotonic()) > 0:
                    self._lock.wait(wait)
                if self._closed:
                    return
                event = self.take()
            if event is None:
                continue
            last = time.monotonic()
            try:
                self.publisher.publish_event(event)
                self.sent += 1
            except HeraldError as exc:
                self.record(exc)

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        if self._sender is not None:
            self._sender.join(self.publisher.timeout)
        with self._lock:
            events = self.closing(error, cancelled=error is not None and not isinstance(error, Exception))
        try:
            results = self.publisher.publish_many(events)
        except HeraldError as refused:
            results = [refused]
        _finish(results, error)


@overload
def progress(
    publisher: AsyncPublisher,
    *,
    user_id: str,
    task_id: str,
    task_type: str | None = None,
    description: str | None = None,
    rate: float = 2.0,
    failure_code: str = "TASK_FAILED",
    failure_message: str = "The task failed",
    retain: bool = False,
) -> AsyncTaskProgress: ...


@overload
def progress(
    publisher: Publisher,
    *,
    user_id: str,
    task_id: str,
    task_type: str | None = None,
    description: str | None = None,
    rate: float = 2.0,
    failure_code: str = "TASK_FAILED",
    failure_message: str = "The task failed",
    retain: bool = False,
) -> TaskProgress: ...


def progress(
    publisher: AsyncPublisher | Publisher,
    *,
    user_id: str,
    task_id: str,
    task_type: str | None = None,
    description: str | None = None,
    rate: float = 2.0,
    failure_code: str = "TASK_FAILED",
    failure_message: str = "The task failed",
    retain: bool = False,
) -> AsyncTaskProgress | TaskProgress:
    """A task's progress reporter for ``user_id``: ``async with`` for an :class:`AsyncPublisher`,
    ``with`` for a :class:`Publisher`. ``rate``: progress updates sent per second at most.
    ``task_type``: also announce ``task.created`` on entry. ``retain``: the gateway keeps the
    latest progress as the task's retained state (coalesce key ``task:{task_id}``), which a
    new stream (a reloaded page) gets first."""
    options = TaskOptions(
        user_id, task_id, task_type, description, rate, failure_code, failure_message, retain
    )
    if isinstance(publisher, AsyncPublisher):
        return AsyncTaskProgress(publisher, options)
    return TaskProgress(publisher, options)
