"""``Publishing.offer_many`` / ``publish_batch`` over a real memory bus: a batch goes to the bus
in one ``append_many`` and in order, an event that cannot be encoded fails alone, from the
first refusal on nothing more is appended, coalesced events pass the throttle in their place
and nothing to their address overtakes them, and ``events_in`` counts what went in anew.

The store that goes away is a :class:`MemoryBus` that refuses every item once it has taken a
chosen number (the contract's "the items a store could not take answer ``BusUnavailable``").
Time is real: the throttle's interval is short and every wait is for a condition."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from herald.bus.base import Append, AppendResult, BatchResult
from herald.bus.memory import MemoryBus
from herald.bus.throttle import Offered
from herald.config import Settings
from herald.errors import BusUnavailable, EventTooLarge, HeraldError, InvalidEvent
from herald.events.message import SSEMessage, build_message
from herald.gateway.publishing import Publishing
from herald.wire.cursor import Cursor
from tests.support.waiting import wait_until

INTERVAL = 0.2


class Store(MemoryBus):
    """A memory bus that counts its calls and, after ``room`` more items (``None``: no
    limit), refuses every item as a store gone away does."""

    def __init__(self, room: int | None = None) -> None:
        super().__init__()
        self.room = room
        self.append_calls = 0
        #: The size of each ``append_many`` call, in order.
        self.batches: list[int] = []

    def _take_one(self) -> None:
        if self.room is None:
            return
        if self.room <= 0:
            raise BusUnavailable("the store went away", retry_after=1)
        self.room -= 1

    async def append(
        self,
        message: SSEMessage,
        data_json: bytes,
        *,
        idempotency_key: str | None = None,
        superseded_keys: Sequence[str] = (),
    ) -> AppendResult:
        self.append_calls += 1
        self._take_one()
        return self.append_now(
            message, data_json, idempotency_key=idempotency_key, superseded_keys=superseded_keys
        )

    async def append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        self.batches.append(len(appends))
        results: list[BatchResult] = []
        for item in appends:
            try:
                self._take_one()
            except BusUnavailable as exc:
                results.append(exc)
                continue
            results.append(
                self.append_now(
                    item.message,
                    item.data_json,
                    idempotency_key=item.idempotency_key,
                    superseded_keys=item.superseded_keys,
                )
            )
        return results

    def numbers(self) -> list[Any]:
        return [record.message.data.get("n") for record in self.records()]

    def cursors(self) -> list[Cursor]:
        return [record.cursor for record in self.records()]


def publishing(
    store: MemoryBus, *, interval: float = INTERVAL, max_event_bytes: int = 64 * 1024
) -> Publishing:
    settings = Settings(
        jwt_secret="x" * 32,
        coalesce_interval_seconds=interval,
        max_event_bytes=max_event_bytes,
        redis_timeout_seconds=0.5,
    )
    return Publishing(settings, store)


def plain(n: int, user: str = "u1", source: str | None = "http") -> SSEMessage:
    return build_message(event="task.status-changed", scope="user", key=user, data={"n": n}, source=source)


def progress(n: int, user: str = "u1", task: str = "t1", source: str | None = "http") -> SSEMessage:
    return build_message(
        event="task.progress-updated",
        scope="user",
        key=user,
        data={"n": n, "task_id": task},
        coalesce=f"task:{task}",
        source=source,
    )


def appended(outcome: Offered | HeraldError) -> AppendResult:
    """The result of an outcome that went straight into the bus."""
    assert isinstance(outcome, Offered), outcome
    assert outcome.result is not None, "held, not appended"
    return outcome.result


def held(outcome: Offered | HeraldError) -> asyncio.Future[AppendResult]:
    assert isinstance(outcome, Offered), outcome
    assert outcome.result is None, "appended, not held"
    assert outcome.pending is not None
    assert not outcome.pending.done()
    return outcome.pending


async def test_a_batch_of_plain_events_goes_to_the_bus_in_one_append_many_in_order() -> None:
    store = Store()
    path = publishing(store)
    messages = [plain(n, user=f"u{n % 3}") for n in range(40)]
    items = [(m, f"k{n}" if n % 2 else None) for n, m in enumerate(messages)]

    outcomes = await path.offer_many(items)

    results = [appended(o) for o in outcomes]
    assert store.batches == [40], "one append_many for the whole batch"
    assert store.append_calls == 0
    assert [record.message for record in store.records()] == messages
    assert [r.cursor for r in results] == store.cursors()
    assert store.cursors() == sorted(store.cursors())
    assert len(set(store.cursors())) == 40
    assert not any(r.duplicate or r.coalesced for r in results)

    # publish_batch answers the same way, and a key seen before is a duplicate of its first cursor.
    again = await path.publish_batch([(plain(100), "k1"), (plain(101), "k-new"), (plain(102), "k-new")])
    assert store.batches == [40, 3]
    assert again[0] == AppendResult(results[1].cursor, duplicate=True)
    assert isinstance(again[1], AppendResult)
    assert again[2] == AppendResult(again[1].cursor, duplicate=True)
    assert store.numbers()[40:] == [101]


async def test_an_event_that_cannot_be_encoded_fails_alone() -> None:
    store = Store()
    path = publishing(store, max_event_bytes=1024)
    too_large = build_message(event="task.status-changed", scope="user", key="u1", data={"pad": "x" * 2000})
    not_json = build_message(event="task.status-changed", scope="user", key="u1", data={"x": object()})
    items: list[tuple[SSEMessage, str | None]] = [
        (plain(0), None),
        (too_large, None),
        (plain(2), "k2"),
        (not_json, None),
        (plain(4), None),
    ]

    results = await path.publish_batch(items)

    assert isinstance(results[1], EventTooLarge)
    assert results[1].code == "EVENT_TOO_LARGE"
    assert not results[1].retriable
    assert results[1].detail["limit"] == 1024
    assert isinstance(results[3], InvalidEvent)
    assert results[3].code == "EVENT_INVALID"
    assert not results[3].retriable
    assert results[3].detail["field"] == "data"
    good = [results[0], results[2], results[4]]
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in good)
    assert store.numbers() == [0, 2, 4], "the others are appended, in order"
    assert [r.cursor for r in good if isinstance(r, AppendResult)] == store.cursors()
    assert store.batches == [3], "a failed event does not split the batch"
    assert path.events_in == {"http": 3}


async def test_from_the_first_refusal_every_event_answers_it_and_nothing_later_is_appended() -> None:
    # The store takes two events, then goes away: in a run of plain events.
    store = Store(room=2)
    path = publishing(store)
    outcomes = await path.offer_many([(plain(n), f"a{n}") for n in range(6)])
    assert [appended(o).cursor for o in outcomes[:2]] == store.cursors()
    refusals = outcomes[2:]
    assert all(isinstance(r, BusUnavailable) and r.retriable for r in refusals)
    assert store.numbers() == [0, 1]
    assert path.events_in == {"http": 2}


async def test_a_refusal_before_a_coalesced_event_stops_it_and_all_after_it_reaching_the_bus() -> None:
    store = Store(room=2)
    path = publishing(store)
    items: list[tuple[SSEMessage, str | None]] = [
        (plain(0), "b0"),
        (plain(1), "b1"),
        (plain(2), "b2"),  # refused: the store has room for two
        (progress(3), "b3"),  # must not go out after a refused event before it
        (plain(4), "b4"),
        (progress(5, task="t2"), "b5"),
        (plain(6, user="u2"), "b6"),
    ]
    outcomes = await path.offer_many(items)
    assert [appended(o).cursor for o in outcomes[:2]] == store.cursors()
    assert all(isinstance(o, BusUnavailable) and o.retriable for o in outcomes[2:])
    assert store.numbers() == [0, 1]
    assert store.append_calls == 0, "the coalesced event never reached the throttle's append"
    assert path.throttle.holding() == 0, "nothing refused is held for later"

    # The store back, the refused tail sent again goes in after what went in: order holds.
    store.room = None
    resent = await path.publish_batch(items[2:])
    assert all(isinstance(r, AppendResult) and not r.duplicate for r in resent)
    assert store.numbers() == [0, 1, 2, 3, 4, 5, 6]
    await path.flush_held()


async def test_a_refusal_of_the_throttles_own_append_stops_the_rest_of_the_batch() -> None:
    # The plain event goes in with append_many; the coalesced one is the first of its key, so
    # the throttle appends it at once, with append: the store has no room left for it.
    store = Store(room=1)
    path = publishing(store)
    items: list[tuple[SSEMessage, str | None]] = [
        (plain(0), None),
        (progress(1), None),
        (plain(2), None),
        (plain(3, user="u2"), None),
        (progress(4, task="t9"), None),
    ]
    outcomes = await path.offer_many(items)
    appended(outcomes[0])
    assert all(isinstance(o, BusUnavailable) for o in outcomes[1:])
    assert outcomes[1] is outcomes[4], "every later event answers the same refusal"
    assert store.numbers() == [0]
    assert store.batches == [1]
    assert store.append_calls == 1
    assert path.throttle.holding() == 0
    await path.flush_held()


async def test_coalesced_events_the_first_goes_out_at_once_the_newest_when_the_interval_ends() -> None:
    store = Store()
    path = publishing(store)
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcomes = await path.offer_many(
        [
            (progress(1), "c1"),
            (progress(2), "c2"),
            (plain(10, user="u2"), None),  # another address: not held up by the throttle
            (progress(3), "c3"),
        ]
    )
    first = appended(outcomes[0])
    second, third = held(outcomes[1]), held(outcomes[3])
    other = appended(outcomes[2])
    assert store.numbers() == [1, 10]
    assert store.batches == [1]
    assert path.throttle.holding() == 1

    await wait_until(third.done, timeout=2 * INTERVAL + 2)
    waited = loop.time() - started
    assert waited >= INTERVAL - 0.01, f"held for its interval: went out after {waited:.3f}s"
    assert store.numbers() == [1, 10, 3], "the superseded event never went out"
    newest = store.cursors()[-1]
    assert third.result() == AppendResult(newest)
    assert second.done()
    assert second.result() == AppendResult(newest, coalesced=True)
    assert first.cursor < other.cursor < newest
    assert path.events_in == {"http": 3}
    await path.flush_held()


async def test_a_plain_event_to_the_same_address_later_in_the_batch_never_overtakes_the_held_one() -> None:
    store = Store()
    path = publishing(store)
    outcomes = await path.offer_many(
        [
            (progress(1), None),
            (progress(2), None),
            (progress(3), None),
            (plain(4), None),  # to u1, like the held progress: it goes out after it
            (plain(5, user="u2"), None),
        ]
    )
    # Nothing waited for the interval: the plain event sent the held one out before itself.
    assert path.throttle.holding() == 0
    assert store.numbers() == [1, 3, 4, 5]
    cursors = store.cursors()
    assert appended(outcomes[0]).cursor == cursors[0]
    assert isinstance(outcomes[1], Offered)
    assert isinstance(outcomes[2], Offered)
    assert outcomes[1].pending is not None
    assert outcomes[2].pending is not None
    assert outcomes[1].pending.result() == AppendResult(cursors[1], coalesced=True)
    assert outcomes[2].pending.result() == AppendResult(cursors[1])
    assert appended(outcomes[3]).cursor == cursors[2]
    assert appended(outcomes[4]).cursor == cursors[3]
    assert store.batches == [1], "only the event to another address went with append_many"


async def test_a_plain_event_in_a_later_batch_sends_out_what_its_address_holds_first() -> None:
    store = Store()
    path = publishing(store)
    first = await path.offer_many([(progress(1), None), (progress(2), None)])
    waiting = held(first[1])
    assert store.numbers() == [1]

    results = await path.publish_batch([(plain(3, user="u2"), None), (plain(4), None)])

    assert store.numbers() == [1, 3, 2, 4]
    assert waiting.done()
    assert waiting.result() == AppendResult(store.cursors()[2])
    assert results == [AppendResult(store.cursors()[1]), AppendResult(store.cursors()[3])]


async def test_publish_batch_waits_for_held_events_and_answers_each() -> None:
    store = Store()
    path = publishing(store)
    results = await path.publish_batch(
        [(progress(1), None), (progress(2), None), (progress(3), None), (plain(4, user="u2"), None)]
    )
    cursors = store.cursors()
    assert store.numbers() == [1, 4, 3]
    assert results == [
        AppendResult(cursors[0]),
        AppendResult(cursors[2], coalesced=True),
        AppendResult(cursors[2]),
        AppendResult(cursors[1]),
    ]


async def test_a_held_event_the_bus_does_not_take_in_time_answers_bus_unavailable_and_stays_held() -> None:
    store = Store(room=1)
    path = publishing(store)
    results = await path.publish_batch([(progress(1), None), (progress(2), "late")])
    assert isinstance(results[0], AppendResult)
    assert isinstance(results[1], BusUnavailable)
    assert results[1].retriable
    assert store.numbers() == [1]
    assert path.throttle.stats.retries >= 1, "its release was tried and refused"
    # Once the store is back the throttle appends it by itself: it stayed held.
    store.room = None
    await wait_until(lambda: store.numbers() == [1, 2], timeout=5)
    assert path.throttle.holding() == 0
    again = await path.publish_batch([(progress(2), "late")])
    assert again == [AppendResult(store.cursors()[1], duplicate=True)]


async def test_events_in_counts_by_source_label_only_events_appended_anew() -> None:
    store = Store()
    path = publishing(store)
    await path.offer_many([(plain(0, source="kafka:t:0:7"), "kafka:t:0:7")])
    assert path.events_in == {"kafka": 1}
    outcomes = await path.offer_many(
        [
            (plain(1, source="http"), "h1"),
            (plain(2, source="http"), "h1"),  # the same key within the batch: a duplicate
            (plain(3, source="kafka:t:0:7"), "kafka:t:0:7"),  # appended before: a duplicate
            (plain(4, source="kafka:t:0:8"), "kafka:t:0:8"),
            (plain(5, source="outbox:herald_outbox:1"), None),
            (plain(6, source=None), None),
            (
                build_message(
                    event="task.status-changed", scope="user", key="u1", data={"x": object()}, source="http"
                ),
                None,
            ),
        ]
    )
    assert appended(outcomes[1]).duplicate
    assert appended(outcomes[2]).duplicate
    assert isinstance(outcomes[6], InvalidEvent)
    assert store.numbers() == [0, 1, 4, 5, 6]
    assert path.events_in == {"kafka": 2, "http": 1, "outbox": 1, "python": 1}


async def test_after_a_refusal_an_invalid_event_keeps_its_own_error_wherever_it_is() -> None:
    """Resending cannot help an event that cannot be encoded, so it says why, whether it
    comes in a run of plain events or after a coalesced one; the valid ones answer the
    refusal."""
    for middle in (plain(1), progress(1)):
        store = Store(room=1)
        path = publishing(store, max_event_bytes=1024)
        too_large = build_message(
            event="task.status-changed", scope="user", key="u1", data={"pad": "x" * 2048}, source="http"
        )
        outcomes = await path.offer_many(
            [
                (plain(0), None),
                (middle, None),
                (too_large, None),
                (progress(3, task="t9"), None),
                (plain(4), None),
            ]
        )
        appended(outcomes[0])
        assert isinstance(outcomes[1], BusUnavailable)
        assert isinstance(outcomes[2], EventTooLarge)
        assert not outcomes[2].retriable
        assert all(isinstance(o, BusUnavailable) and o.retriable for o in outcomes[3:])
        assert store.numbers() == [0]
        assert path.throttle.holding() == 0
