"""The coalesce throttle in a real gateway: at most one progress event per task per interval
on the wire, the last value always, other keys untouched, cursor order and replay exact, every
publish answered with the cursor that carries its content, held events flushed on SIGTERM."""

from __future__ import annotations

import asyncio
import itertools
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.api import Api, api_client, publish_pipelined, unique, wait_until
from tests.support.gateway import GatewayProcess, running_gateway
from tests.support.sse import open_stream

INTERVAL = 0.4


@pytest.fixture(scope="module")
def throttled() -> Iterator[GatewayProcess]:
    with running_gateway(
        {"HERALD_HEARTBEAT_SECONDS": "0.5", "HERALD_COALESCE_INTERVAL_SECONDS": str(INTERVAL)}
    ) as process:
        yield process


def progress(user: str, task: str, value: int) -> dict[str, Any]:
    return {
        "event": "task.progress-updated",
        "scope": "user",
        "key": user,
        "data": {"task_id": task, "progress": value},
        "coalesce": f"task:{task}",
    }


def ms(cursor: str | None) -> int:
    assert cursor is not None
    return int(cursor.partition("-")[0])


def key(cursor: str | None) -> tuple[int, int]:
    assert cursor is not None
    a, _, b = cursor.partition("-")
    return int(a), int(b)


async def wait_holding(api: Api, keys: int) -> None:
    async def holding() -> bool:
        return int((await api.health())["throttle"]["holding"]) == keys

    await wait_until(holding, what=f"{keys} keys holding an event")


async def post(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post_event(body, api.gateway.publisher_token)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_burst_reaches_the_stream_at_most_once_per_interval_with_the_last_value(
    throttled: GatewayProcess,
) -> None:
    user = unique("u")
    async with (
        api_client(throttled) as api,
        open_stream(throttled.url, token=throttled.token(user)) as stream,
    ):
        start = (await stream.next()).id
        # 60 progress values of t1 over ~3 intervals, from producers that do not wait for
        # each other's answers; one t2 event in the middle of the burst.
        answers: list[asyncio.Task[dict[str, Any]]] = []
        other: dict[str, Any] = {}
        for value in range(1, 61):
            answers.append(asyncio.create_task(post(api, progress(user, "t1", value))))
            if value == 30:
                other = await post(api, progress(user, "t2", 7))
            await asyncio.sleep(INTERVAL / 20)  # the burst's pace: the producers' clock, not a wait
        replies = await asyncio.gather(*answers)
        final = replies[-1]
        seen = await stream.until(lambda e: e.id == final["id"], timeout=10)
        marker = await api.marker()
        seen += [
            e for e in await stream.until(lambda e: e.id == marker) if e.event != "test.marker-published"
        ]

    t1 = [e for e in seen if e.json().get("task_id") == "t1"]
    t2 = [e for e in seen if e.json().get("task_id") == "t2"]
    # At most one per interval: the bus's own clock stamps each release.
    gaps = [ms(b.id) - ms(a.id) for a, b in itertools.pairwise(t1)]
    assert all(gap >= INTERVAL * 1000 * 0.9 for gap in gaps), gaps
    assert 2 <= len(t1) <= 12, [e.json()["progress"] for e in t1]
    assert t1[-1].json()["progress"] == 60
    assert [e.json()["progress"] for e in t1] == sorted(e.json()["progress"] for e in t1)
    # The other key went out at once, amid the burst.
    assert [e.id for e in t2] == [other["id"]]
    assert other["coalesced"] is False
    # Cursor order on the wire.
    assert all(key(a.id) < key(b.id) for a, b in itertools.pairwise(seen))
    # Every publish was answered with a cursor the stream carried; superseded ones say so.
    wire = {e.id for e in seen}
    assert {r["id"] for r in replies} <= wire
    delivered = {e.id: e.json()["progress"] for e in t1}
    for value, reply in zip(itertools.count(1), replies, strict=False):
        if reply["coalesced"]:
            assert delivered[reply["id"]] > value
        else:
            assert delivered[reply["id"]] == value
    assert sum(not r["coalesced"] for r in replies) == len(t1)

    # A reconnect from before the burst replays exactly what the live stream saw.
    async with open_stream(throttled.url, token=throttled.token(user), last_event_id=start) as again:
        assert (await again.next()).json()["recovered"] is True
        replayed = await again.take(len(seen))
    assert [(e.id, e.data) for e in replayed] == [(e.id, e.data) for e in seen]


async def test_a_status_change_never_overtakes_the_held_progress_of_its_user(
    throttled: GatewayProcess,
) -> None:
    user = unique("u")
    async with (
        api_client(throttled) as api,
        open_stream(throttled.url, token=throttled.token(user)) as stream,
    ):
        await stream.next()
        await post(api, progress(user, "t1", 10))
        held = asyncio.create_task(post(api, progress(user, "t1", 99)))
        await wait_holding(api, 1)
        status = await post(
            api,
            {"event": "task.status-changed", "scope": "user", "key": user, "data": {"task_id": "t1"}},
        )
        seen = await stream.until(lambda e: e.id == status["id"])
        answer = await held
    assert [(e.event, e.json().get("progress")) for e in seen] == [
        ("task.progress-updated", 10),
        ("task.progress-updated", 99),
        ("task.status-changed", None),
    ]
    assert answer["id"] == seen[1].id


async def test_sigterm_sends_the_held_events_before_the_streams_close() -> None:
    user = unique("u")
    with running_gateway({"HERALD_COALESCE_INTERVAL_SECONDS": "30"}) as gateway:
        async with api_client(gateway) as api, open_stream(gateway.url, token=gateway.token(user)) as stream:
            await stream.next()
            await post(api, progress(user, "t1", 1))
            held = asyncio.create_task(post(api, progress(user, "t1", 2)))
            first = await stream.next()
            await wait_holding(api, 1)
            gateway.process.send_signal(signal.SIGTERM)
            await stream.wait_closed(timeout=10)
            rest = [e for e in stream.events if e is not first and e.event != "connection.established"]
            answer = await held
    assert first.json()["progress"] == 1
    assert [e.event for e in rest] == ["task.progress-updated", "connection.closing"]
    assert rest[0].json()["progress"] == 2
    assert answer["id"] == rest[0].id


async def test_publishes_pipelined_behind_a_held_one_are_each_answered_in_order(
    throttled: GatewayProcess,
) -> None:
    """A publish is run at once from the callback that parsed it (D21). The ones a client
    pipelined behind a publish that waits (here one the throttle holds) run when it is
    answered, each finishing at once: every one is answered, in order. (That their eager
    steps do not nest is tests/unit/test_eager.py's: one read here nested 145 deep before,
    under Python's limit, so this test passed then too.)"""
    user, task = unique("u"), unique("t")
    plain = {"event": "task.created", "scope": "user", "key": user, "data": {"task_id": task}}
    cursors = await publish_pipelined(
        throttled, [progress(user, task, 1), progress(user, task, 2), *[plain] * 1500]
    )
    assert len(cursors) == 1502
    assert [key(c) for c in cursors[2:]] == sorted(key(c) for c in cursors[2:])
