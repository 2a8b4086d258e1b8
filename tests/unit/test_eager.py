"""``start_eagerly``: a coroutine's first step runs in the caller's callback; what comes
after a wait runs as a task would run it, results, exceptions and cancellation included."""

from __future__ import annotations

import asyncio

import pytest

from herald.server.eager import start_eagerly
from tests.support.waiting import wait_until


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


async def test_a_timeout_entered_in_the_eager_step_cancels_the_task_that_carries_it_on() -> None:
    loop = asyncio.get_running_loop()
    never: asyncio.Future[None] = loop.create_future()
    outcome: list[str] = []
    caller = asyncio.current_task()

    async def held_answer() -> None:
        outcome.append("eager" if asyncio.current_task() is not caller else "caller's task")
        try:
            async with asyncio.timeout(0.05):
                await never
        except TimeoutError:
            outcome.append("timed out")

    carrier = start_eagerly(loop, held_answer())
    assert asyncio.current_task() is caller
    await asyncio.wait_for(carrier, 5)
    assert outcome == ["eager", "timed out"]
    assert never.cancelled()


async def test_context_variables_set_before_the_first_wait_are_there_after_it() -> None:
    import contextvars

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="none")
    loop = asyncio.get_running_loop()
    later: asyncio.Future[None] = loop.create_future()
    seen: list[str] = []

    async def traced() -> None:
        token = request_id.set("r-1")
        await later
        seen.append(request_id.get())
        request_id.reset(token)  # raises if the context is not the one it was set in

    carrier = start_eagerly(loop, traced())
    assert request_id.get() == "none"
    later.set_result(None)
    await asyncio.wait_for(carrier, 5)
    assert seen == ["r-1"]


async def test_an_exception_in_the_eager_step_is_raised_by_the_task() -> None:
    async def refuses() -> None:
        raise ValueError("bad body")

    carrier = start_eagerly(asyncio.get_running_loop(), refuses())
    with pytest.raises(ValueError, match="bad body"):
        await carrier


async def test_started_from_inside_an_eager_step_it_is_an_ordinary_task_so_steps_never_nest() -> None:
    loop = asyncio.get_running_loop()
    order: list[str] = []

    async def answer(n: int) -> None:
        order.append(f"start {n}")
        if n < 3:
            start_eagerly(loop, answer(n + 1))  # as a pipelined publish after this one's answer
        order.append(f"end {n}")

    first = start_eagerly(loop, answer(0))
    assert order == ["start 0", "end 0"]
    await first
    await wait_until(lambda: len(order) == 8)
    # 1 runs as a task; 2, started from that task (not an eager step), eagerly inside it; 3 as a task.
    assert order == ["start 0", "end 0", "start 1", "start 2", "end 2", "end 1", "start 3", "end 3"]
