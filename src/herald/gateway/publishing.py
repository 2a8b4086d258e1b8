"""The publish path: every way an event comes in (``POST /api/v1/events``, a source,
an application publishing in-process) goes through :class:`Publishing`, which
validates and encodes it once, passes it through the coalesce throttle and appends
it to the bus, and counts what went in, by source.

One object for all of them, so they share one throttle (a coalesce key is held
once, whichever way its events come) and one set of counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from herald.bus.base import Append, AppendResult, BatchResult, EventBus
from herald.bus.throttle import Offered, Throttle
from herald.config import Settings
from herald.errors import BusUnavailable, HeraldError
from herald.events.canary import CANARY_SCOPE
from herald.events.message import SSEMessage, carrying, encode_data
from herald.obs.tracing import Span, Tracing
from herald.sources.incoming import OfferItem

#: Distinct ``source`` labels counted for ``herald_events_in``; more become ``other``.
_MAX_SOURCE_LABELS = 16


def publisher_key(publisher: str, key: str | None) -> str | None:
    """``key`` as the bus stores it for an HTTP publisher (the JWT's ``sub``): scoped to that
    publisher, so that one service can never suppress another's event by reusing its key
    (issue 13). Length-prefixed, so no two (publisher, key) pairs meet. Keys the sources
    make (``kafka:topic:partition:offset``, ``outbox:…``) are theirs and unscoped."""
    return None if key is None else f"pub:{len(publisher)}:{publisher}:{key}"


class Publishing:
    def __init__(self, settings: Settings, bus: EventBus) -> None:
        self._settings = settings
        self._bus = bus
        #: Events with a coalesce key pass here before the bus: at most one per key per interval.
        self.throttle = Throttle(self._append, settings.coalesce_interval_seconds)
        #: Events appended through this node, by source label (``herald_events_in``).
        self.events_in: dict[str, int] = {}
        #: This node's tracer when tracing is on (D30); ``None``: no span is made.
        self.tracing: Tracing | None = None

    async def publish(self, message: SSEMessage, *, idempotency_key: str | None = None) -> AppendResult:
        """Append ``message`` to the bus; every path in answers with a cursor or an error.

        An event the coalesce throttle holds is answered when it goes out (its
        cursor) or is superseded (the cursor carrying the newer content,
        ``coalesced=True``): within the interval, or :class:`BusUnavailable` if the
        bus does not take it in time (it stays held, and is appended when it can be)."""
        offered = await self.offer(message, idempotency_key=idempotency_key)
        if offered.result is not None:
            return offered.result
        try:
            async with asyncio.timeout(self._held_answer_seconds):
                return await offered.wait()
        except TimeoutError:
            raise BusUnavailable(
                "the event is held for its coalesce interval and the bus has not taken it yet",
                retry_after=1,
            ) from None

    async def offer(self, message: SSEMessage, *, idempotency_key: str | None = None) -> Offered:
        """Hand ``message`` to the publish path: returns once it is in the bus, or held by
        the coalesce throttle (``Offered.pending`` settles when it is appended or
        superseded). For sources that go on with their next record meanwhile."""
        if self.tracing is not None:
            return await self._offer_traced(self.tracing, message, idempotency_key)
        data_json = encode_data(message, self._settings.max_event_bytes)
        return await self.throttle.offer(message, data_json, idempotency_key)

    async def _offer_traced(
        self, tracing: Tracing, message: SSEMessage, idempotency_key: str | None
    ) -> Offered:
        """:meth:`offer` inside a ``herald.ingest`` span; the event carries the span onwards."""
        span = tracing.start_ingest(message.traceparent, _ingest_attributes(message))
        try:
            message = _carrying(tracing, span, message)
            data_json = encode_data(message, self._settings.max_event_bytes)
            span.set_attribute("herald.data_bytes", len(data_json))
            offered = await self.throttle.offer(message, data_json, idempotency_key)
        except HeraldError as exc:
            tracing.error(span, exc.code, exc.message)
            span.end()
            raise
        except BaseException:
            span.end()
            raise
        _end_ingest(tracing, span, offered)
        return offered

    async def offer_many(self, items: Sequence[OfferItem]) -> list[Offered | HeraldError]:
        """Several events, in order, each taken as :meth:`offer` takes one; one result per
        event, in order: its :class:`Offered`, or the error that refused it.

        Events the throttle need not see go to the bus together (``append_many``: one
        round trip per store); one the throttle must see (a coalesce key, or an address
        holding an event it must not overtake) is offered in its place, after what came
        before it. Once the bus refuses, that event and every later valid one answer the
        (retriable) refusal, unappended: what a caller resends comes after all that went
        in, so order holds. An event that cannot be encoded answers its own error."""
        results: list[Offered | HeraldError | None] = [None] * len(items)
        run: list[tuple[int, Append]] = []
        refusal: HeraldError | None = None
        max_bytes = self._settings.max_event_bytes
        tracing = self.tracing
        spans: list[Span] = []

        async def append_run() -> HeraldError | None:
            answers = await self._append_many([append for _, append in run])
            failed: HeraldError | None = None
            for (index, _), answer in zip(run, answers, strict=True):
                if isinstance(answer, HeraldError):
                    failed = failed or answer
                results[index] = (
                    Offered(answer) if failed is None and isinstance(answer, AppendResult) else failed
                )
            run.clear()
            return failed

        for index, (message, key) in enumerate(items):
            if tracing is not None:
                span = tracing.start_ingest(message.traceparent, _ingest_attributes(message))
                spans.append(span)
                message = _carrying(tracing, span, message)
            try:
                data_json = encode_data(message, max_bytes)
            except HeraldError as exc:
                results[index] = exc  # its own error, refusal or not: resending cannot help
                continue
            if refusal is not None:
                results[index] = refusal
                continue
            if not self.throttle.takes(message):
                run.append((index, Append(message, data_json, key)))
                continue
            if run and (refusal := await append_run()) is not None:
                results[index] = refusal
                continue
            try:
                results[index] = await self.throttle.offer(message, data_json, key)
            except HeraldError as exc:
                results[index] = exc
                if exc.retriable:
                    refusal = exc
        if run:
            await append_run()
        answers = [result if result is not None else _NOT_TRIED for result in results]
        if tracing is not None:
            for answer, span in zip(answers, spans, strict=True):
                if isinstance(answer, HeraldError):
                    tracing.error(span, answer.code, answer.message)
                    span.end()
                else:
                    _end_ingest(tracing, span, answer)
        return answers

    async def publish_batch(self, items: Sequence[OfferItem]) -> list[AppendResult | HeraldError]:
        """:meth:`offer_many`, answered as :meth:`publish` answers each event: held events are
        waited for (together, within the same bound)."""
        offered = await self.offer_many(items)
        pending = {
            index: asyncio.ensure_future(o.wait())
            for index, o in enumerate(offered)
            if isinstance(o, Offered) and o.result is None
        }
        if pending:
            await asyncio.wait(pending.values(), timeout=self._held_answer_seconds)
        results: list[AppendResult | HeraldError] = []
        for index, outcome in enumerate(offered):
            if isinstance(outcome, HeraldError):
                results.append(outcome)
            elif outcome.result is not None:
                results.append(outcome.result)
            else:
                results.append(_held_answer(pending[index]))
        return results

    async def flush_held(self) -> None:
        """Append every event the throttle holds now; later ones go straight through.
        Bounded: what the bus does not take within 5 s stays unappended (and its sources
        uncommitted)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self.throttle.close()

    @property
    def _held_answer_seconds(self) -> float:
        return self.throttle.interval + max(2.0, 2 * self._settings.redis_timeout_seconds)

    async def _append(
        self, message: SSEMessage, data_json: bytes, idempotency_key: str | None, superseded: Sequence[str]
    ) -> AppendResult:
        result = await self._bus.append(
            message, data_json, idempotency_key=idempotency_key, superseded_keys=superseded
        )
        if not result.duplicate and message.scope != CANARY_SCOPE:  # canaries are no user's events
            kind = self._source_label(message.source)
            self.events_in[kind] = self.events_in.get(kind, 0) + 1
        return result

    async def _append_many(self, appends: Sequence[Append]) -> list[BatchResult]:
        results = await self._bus.append_many(appends)
        for append, result in zip(appends, results, strict=True):
            if (
                isinstance(result, AppendResult)
                and not result.duplicate
                and append.message.scope != CANARY_SCOPE
            ):
                kind = self._source_label(append.message.source)
                self.events_in[kind] = self.events_in.get(kind, 0) + 1
        return results

    def _source_label(self, source: str | None) -> str:
        """``http``, ``python`` (published in-process) or the source's kind: a bounded label."""
        if source is None:
            return "python"
        kind = source.partition(":")[0]
        if kind in self.events_in or len(self.events_in) < _MAX_SOURCE_LABELS:
            return kind
        return "other"


def _ingest_attributes(message: SSEMessage) -> dict[str, str | int]:
    attributes: dict[str, str | int] = {"herald.event": message.event, "herald.scope": message.scope}
    if message.source is not None:
        attributes["herald.source"] = message.source
    return attributes


def _carrying(tracing: Tracing, span: Span, message: SSEMessage) -> SSEMessage:
    """``message`` carrying ``span``'s context, for the nodes that fan it out."""
    traceparent = tracing.traceparent(span, message.traceparent)
    if traceparent == message.traceparent:
        return message
    return carrying(message, traceparent)


def _end_ingest(tracing: Tracing, span: Span, offered: Offered) -> None:
    """End ``span`` once its event is in the bus (or superseded, or refused)."""
    if offered.result is not None:
        _ended(tracing, span, offered.result, None)
        return
    pending = offered.pending
    assert pending is not None
    span.set_attribute("herald.held", True)

    def settled(future: asyncio.Future[AppendResult]) -> None:
        error = None if future.cancelled() else future.exception()
        _ended(tracing, span, None if error is not None or future.cancelled() else future.result(), error)

    pending.add_done_callback(settled)


def _ended(tracing: Tracing, span: Span, result: AppendResult | None, error: BaseException | None) -> None:
    if result is not None:
        span.set_attribute("herald.cursor", str(result.cursor))
        if result.duplicate:
            span.set_attribute("herald.duplicate", True)
        if result.coalesced:
            span.set_attribute("herald.coalesced", True)
    elif isinstance(error, HeraldError):
        tracing.error(span, error.code, error.message)
    span.end()


#: A result slot :meth:`Publishing.offer_many` never filled (cannot happen; typed away).
_NOT_TRIED = BusUnavailable("the event was not tried", retry_after=1)


def _held_answer(waiting: asyncio.Future[AppendResult]) -> AppendResult | HeraldError:
    """What a held event of a batch answers: its result, or why there is none."""
    if not waiting.done():
        waiting.cancel()  # the wait only; the event stays held and goes out when it can
        return BusUnavailable(
            "the event is held for its coalesce interval and the bus has not taken it yet",
            retry_after=1,
        )
    error = waiting.exception()
    if error is None:
        return waiting.result()
    if isinstance(error, HeraldError):
        return error
    raise error
