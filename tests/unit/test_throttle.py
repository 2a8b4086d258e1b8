"""The throttle in front of a real memory bus: what is appended, what each offer is answered.

Intervals are short and every wait is for a future the throttle settles, never a sleep.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from herald.bus.base import AppendResult
from herald.bus.memory import MemoryBus
from herald.bus.throttle import Throttle
from herald.errors import BusUnavailable
from herald.events.message import SSEMessage, build_message, encode_data
from tests.support.waiting import wait_until

INTERVAL = 0.05


class Bus:
    """A memory bus behind a switch, as the gateway's append sees it."""

    def __init__(self) -> None:
        self.bus = MemoryBus()
        self.available = True
        self.refused = 0

    async def append(
        self, message: SSEMessage, data_json: bytes, key: str | None, superseded: Sequence[str]
    ) -> AppendResult:
        if not self.available:
            self.refused += 1
            raise BusUnavailable("away", retry_after=1)
        return self.bus.append_now(message, data_json, idempotency_key=key, superseded_keys=superseded)

    def values(self) -> list[tuple[str, object]]:
        return [(r.message.event, r.message.data.get("p")) for r in self.bus.records()]


def progress(p: int, task: str = "t1", user: str = "u1") -> SSEMessage:
    return build_message(
        event="task.progress-updated",
        scope="user",
        key=user,
        data={"task_id": task, "p": p},
        coalesce=f"task:{task}",
    )


def status(user: str = "u1") -> SSEMessage:
    return build_message(event="task.status-changed", scope="user", key=user, data={"p": "done"})


async def offer(throttle: Throttle, message: SSEMessage, key: str | None = None):  # type: ignore[no-untyped-def]
    return await throttle.offer(message, encode_data(message, 65536), key)


async def test_a_burst_goes_out_as_the_first_and_the_newest_every_offer_answered() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, INTERVAL)
    first = await offer(throttle, progress(0))
    assert first.result is not None
    assert first.settled
    held = [await offer(throttle, progress(p)) for p in range(1, 6)]
    assert all(o.result is None and not o.settled for o in held)
    assert bus.values() == [("task.progress-updated", 0)]
    answers = [await o.wait() for o in held]
    assert bus.values() == [("task.progress-updated", 0), ("task.progress-updated", 5)]
    last = bus.bus.records()[-1].cursor
    assert answers[-1] == AppendResult(last)
    assert all(a == AppendResult(last, coalesced=True) for a in answers[:-1])
    assert throttle.stats.as_dict() == {"held": 5, "superseded": 4, "released": 1, "retries": 0}


async def test_other_keys_and_other_receivers_are_not_held_by_a_busy_key() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, INTERVAL)
    await offer(throttle, progress(0, "t1"))
    held = await offer(throttle, progress(1, "t1"))
    other_task = await offer(throttle, progress(0, "t2"))
    other_user = await offer(throttle, progress(0, "t1", user="u2"))
    assert other_task.result is not None
    assert other_user.result is not None
    await held.wait()
    assert len(bus.bus.records()) == 4


async def test_an_event_without_a_coalesce_key_never_overtakes_a_held_one_to_the_same_receivers() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, 60.0)  # a held event would wait a minute on its own
    await offer(throttle, progress(10))
    held = await offer(throttle, progress(99))
    elsewhere = await offer(throttle, progress(5, user="u2"))
    await offer(throttle, progress(6, user="u2"))
    done = await offer(throttle, status())
    assert held.settled
    assert done.result is not None
    assert (await held.wait()).cursor < done.result.cursor
    assert bus.values()[-2:] == [("task.progress-updated", 99), ("task.status-changed", "done")]
    assert elsewhere.settled
    assert throttle.holding() == 1
    await throttle.close()
    assert throttle.holding() == 0


async def test_a_retry_of_a_held_event_joins_it_and_superseded_keys_answer_the_carrying_cursor() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, INTERVAL)
    await offer(throttle, progress(0), "k0")
    one = await offer(throttle, progress(1), "k1")
    again = await offer(throttle, progress(1), "k1")
    assert again.pending is one.pending
    two = await offer(throttle, progress(2), "k2")
    carried = await two.wait()
    assert await one.wait() == AppendResult(carried.cursor, coalesced=True)
    # Later retries of either key are duplicates answering the cursor that carried them.
    late = await offer(throttle, progress(1), "k1")
    assert late.result is None  # within the interval: held, then found in the log
    assert await late.wait() == AppendResult(carried.cursor, duplicate=True)
    assert bus.values() == [("task.progress-updated", 0), ("task.progress-updated", 2)]


async def test_a_stale_retry_arriving_after_a_newer_value_does_not_replace_it() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, INTERVAL)
    first = await offer(throttle, progress(10), "k10")
    assert first.result is not None
    newer = await offer(throttle, progress(20), "k20")
    stale = await offer(throttle, progress(10), "k10")  # the producer retries an old value
    assert await stale.wait() == AppendResult(first.result.cursor, duplicate=True)
    assert (await newer.wait()).coalesced is False
    assert bus.values() == [("task.progress-updated", 10), ("task.progress-updated", 20)]


async def test_a_refused_release_is_held_again_and_newer_values_keep_replacing_it() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, INTERVAL)
    await offer(throttle, progress(0))
    held = await offer(throttle, progress(1))
    bus.available = False
    await wait_until(lambda: bus.refused >= 3)
    newest = await offer(throttle, progress(2))
    bus.available = True
    assert (await newest.wait()).coalesced is False
    assert (await held.wait()).coalesced is True
    assert bus.values() == [("task.progress-updated", 0), ("task.progress-updated", 2)]
    assert throttle.stats.retries >= 3


async def test_close_appends_what_is_held_and_lets_later_events_through() -> None:
    bus = Bus()
    throttle = Throttle(bus.append, 60.0)
    await offer(throttle, progress(0))
    held = await offer(throttle, progress(1))
    await throttle.close()
    assert held.settled
    after = await offer(throttle, progress(2))
    assert after.result is not None
    assert [p for _, p in bus.values()] == [0, 1, 2]


@pytest.mark.parametrize("interval", [0.0])
async def test_interval_zero_is_no_throttle(interval: float) -> None:
    bus = Bus()
    throttle = Throttle(bus.append, interval)
    offered = [await offer(throttle, progress(p)) for p in range(5)]
    assert all(o.result is not None for o in offered)
    assert [p for _, p in bus.values()] == [0, 1, 2, 3, 4]
