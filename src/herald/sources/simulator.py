"""Simulated AI tasks for the demo: progress, status changes, a notification now and then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from herald.events.message import SSEMessage, build_message

Publish = Callable[[SSEMessage], Awaitable[Any]]


async def run_simulator(publish: Publish, *, user: str = "demo", tick_seconds: float = 0.5) -> None:
    n = 0
    while True:
        n += 1
        task_id = f"t{n}"
        await publish(
            build_message(
                event="task.created",
                scope="user",
                key=user,
                data={"task_id": task_id, "task_type": "chapter-draft", "description": "Drafting"},
            )
        )
        for progress in range(0, 101, 10):
            await publish(
                build_message(
                    event="task.progress-updated",
                    scope="user",
                    key=user,
                    data={"task_id": task_id, "progress": progress, "message": "drafting"},
                    coalesce=f"progress:{task_id}",
                )
            )
            await asyncio.sleep(tick_seconds)
        await publish(
            build_message(
                event="task.status-changed",
                scope="user",
                key=user,
                data={"task_id": task_id, "old_status": "running", "new_status": "completed"},
            )
        )
