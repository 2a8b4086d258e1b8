"""``start_eagerly``: a coroutine's first step runs in the caller's callback; what comes
after a wait runs as a task would run it, results, exceptions and cancellation included."""

from __future__ import annotations

import asyncio

import pytest

from herald.server.eager import start_eagerly


async def test_a_coroutine_that_never_waits_is_done_before_start_eagerly_returns() -> None:
    done: list[str] = []

    async def publish() -> None:
        done.append("routed")

    start_eagerly(asyncio.get_running_loop(), publish())
    assert done == ["routed"]


async def test_after_a_wait_it_carries_on_with_the_futures_result_and_exception() -> None:
    loop = asyncio.get_running_loop()
    value: asyncio.Future[int] = loop.create_future()
    failure: asyncio.Future[int] = loop.create_future()
    seen: list[object] = []
    finished = asyncio.Event()

    async def waits() -> None:
        seen.append("before")
        seen.append(await value)
        await asyncio.sleep(0)  # a bare yield
        try:
            await failure
        except ValueError as exc:
            seen.append(str(exc))
        finished.set()

    start_eagerly(loop, waits())
    assert seen == ["before"]
    value.set_result(7)
    failure.set_exception(ValueError("refused"))
    await asyncio.wait_for(finished.wait(), 5)
    assert seen == ["before", 7, "refused"]


async def test_cancelling_the_task_that_carries_it_on_cancels_the_coroutine() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    outcome: list[str] = []

    async def waits_forever() -> None:
        try:
            await never
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    before = asyncio.all_tasks()
    start_eagerly(loop, waits_forever())
    (carrier,) = asyncio.all_tasks() - before
    await asyncio.sleep(0)
    carrier.cancel()
    with pytest.raises(asyncio.CancelledError):
        await carrier
    assert outcome == ["cancelled"]
