"""``AsyncPublisher`` and ``Publisher``: publish over HTTP, retried without ever making a second event.

Every event carries an idempotency key (a fresh one when the caller gave
none), and a retry sends the same key: the gateway answers a repeated key
within its window (``IDEMPOTENCY_WINDOW_SECONDS``, 10 minutes by default)
with the first event's id, ``duplicate: true``. So a publish whose answer was
lost (the connection broke after the gateway appended it) is retried safely.

Retried: connection errors and timeouts, 429 (after ``Retry-After``), 503
(after ``Retry-After``) and other 5xx; with backoff (exponential, full
jitter) until ``RetryPolicy.attempts`` or ``RetryPolicy.deadline`` run out.
Never retried: 400, 401, 403, 404, 413, 422; they raise their typed error
(:mod:`herald_publisher.errors`) at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel

from herald_publisher.catalogue import Payload
from herald_publisher.errors import ConnectionFailedError, HeraldError, error_from_body
from herald_publisher.events import Event, Priority

PUBLISH_PATH = "/api/v1/events"
BATCH_PATH = "/api/v1/events/batch"
#: The gateway's bounds on one batch (docs/api.md): the SDK splits larger lists.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1024 * 1024 - 1024
USER_AGENT = "herald-publisher-python/0.1.0"

Token = str | Callable[[], str]


@dataclass(frozen=True, slots=True)
class Published:
    """What the gateway answered for one event: its ``id`` (cursor); ``duplicate`` when its
    idempotency key had been seen (the id is the first event's); ``coalesced`` when a newer
    event with the same coalesce key replaced it."""

    id: str
    duplicate: bool = False
    coalesced: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a publish keeps trying: at most ``attempts`` requests within ``deadline``
    seconds; waits ``base`` × 2ⁿ (full jitter, at most ``cap``) or the ``Retry-After``."""

    attempts: int = 6
    deadline: float = 30.0
    base: float = 0.1
    cap: float = 5.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, retry_after)
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311 - jitter


NO_RETRY = RetryPolicy(attempts=1)


class _Attempts:
    """The retry budget of one publish."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.done = 0

    def next_delay(self, error: HeraldError) -> float | None:
        """How long to wait before the next attempt; ``None`` when ``error`` is final."""
        self.done += 1
        if not error.retriable or self.done >= self.policy.attempts:
            return None
        delay = self.policy.delay(self.done - 1, error.retry_after)
        if time.monotonic() + delay - self.started > self.policy.deadline:
            return None
        return delay


class _Core:
    """What both publishers share: settings, bodies, answers."""

    def __init__(self, url: str, token: Token, retry: RetryPolicy, timeout: float) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.retry = retry
        self.timeout = timeout
        #: False once the gateway answered 404 to a batch (an older gateway): single publishes.
        self.batch_supported: bool | None = None

    def headers(self) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        return {"authorization": f"Bearer {token}", "user-agent": USER_AGENT}

    @staticmethod
    def event(
        event: str | Payload | Event,
        scope: str | None,
        key: str | None,
        data: Mapping[str, Any] | BaseModel | None,
        priority: Priority | None,
        coalesce: str | None,
        idempotency_key: str | None,
        retain: bool = False,
    ) -> Event:
        if isinstance(event, Event):
            return event
        return Event.build(
            event,
            scope=scope,
            key=key,
            data=data,
            priority=priority,
            coalesce=coalesce,
            idempotency_key=idempotency_key,
            retain=retain,
        )

    @staticmethod
    def items(events: Iterable[Event | Payload]) -> list[Event]:
        return [item if isinstance(item, Event) else Event.build(item) for item in events]

    @staticmethod
    def error(response: httpx.Response) -> HeraldError:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        retry_after: float | None = None
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return error_from_body(
            response.status_code, body, retry_after=retry_after, fallback=response.reason_phrase
        )

    @staticmethod
    def published(body: Mapping[str, Any]) -> Published:
        return Published(str(body["id"]), bool(body.get("duplicate")), bool(body.get("coalesced")))

    @staticmethod
    def transport(exc: httpx.TransportError) -> HeraldError:
        return ConnectionFailedError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    @staticmethod
    def chunks(items: Sequence[Event], indices: Sequence[int]) -> list[list[int]]:
        """``indices`` cut into batches within the gateway's count and size bounds."""
        out: list[list[int]] = []
        current: list[int] = []
        size = 16
        for index in indices:
            length = len(json.dumps(items[index].body(), separators=(",", ":"))) + 1
            if current and (len(current) >= MAX_BATCH_EVENTS or size + length > MAX_BATCH_BYTES):
                out.append(current)
                current, size = [], 16
            current.append(index)
            size += length
        if current:
            out.append(current)
        return out

    def batch_results(
        self,
        response: httpx.Response,
        chunk: list[int],
        results: list[Published | HeraldError | None],
    ) -> tuple[list[int], HeraldError | None]:
        """Record a batch answer (200/207); the indices to send again, and the error that says why."""
        answers = response.json()["results"]
        again: list[int] = []
        last: HeraldError | None = None
        for index, answer in zip(chunk, answers, strict=True):
            if "error" in answer:
                error = error_from_body(None, answer["error"])
                results[index] = error
                if answer["error"].get("retriable"):
                    again.append(index)
                    last = error
            else:
                results[index] = self.published(answer)
        return again, last


class AsyncPublisher(_Core):
    """Publish events to a Herald gateway from asyncio code.

    ``url``: the gateway (``http://herald:8000``); ``token``: a JWT with the
    ``publisher`` role, or a function returning a current one. Use it as an
    ``async with`` block, or call :meth:`aclose`.
    """

    def __init__(
        self,
        url: str,
        token: Token,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(url, token, retry or RetryPolicy(), timeout)
        self._own_client = client is None
        self._client = client or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> AsyncPublisher:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_client:
            await self._client.aclose()

    async def publish(
        self,
        event: str | Payload | Event,
        *,
        scope: str | None = None,
        key: str | None = None,
        data: Mapping[str, Any] | BaseModel | None = None,
        priority: Priority | None = None,
        coalesce: str | None = None,
        idempotency_key: str | None = None,
        retain: bool = False,
    ) -> str:
        """Publish one event; its id (cursor). Raises a :class:`HeraldError` subclass."""
        item = self.event(event, scope, key, data, priority, coalesce, idempotency_key, retain)
        return (await self.publish_event(item)).id

    async def publish_event(self, item: Event) -> Published:
        """Publish an :class:`Event`; the whole answer."""
        attempts = _Attempts(self.retry)
        while True:
            try:
                response = await self._client.post(
                    self.url + PUBLISH_PATH, json=item.body(), headers=self.headers()
                )
            except httpx.TransportError as exc:
                error = self.transport(exc)
            else:
                if response.is_success:
                    return self.published(response.json())
                error = self.error(response)
            delay = attempts.next_delay(error)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def publish_many(self, events: Iterable[Event | Payload]) -> list[Published | HeraldError]:
        """Publish many events, in order: one result per event (its answer, or its error).

        Uses ``POST /api/v1/events/batch`` (500 events or 1 MiB per request; more are
        split), falling back to one publish after another when the gateway answers 404.
        A whole batch refused for good (401, 403) raises; errors of single events are
        in the results. Build events with :meth:`Event.build` (or pass catalogue models
        whose routing key is in the payload).
        """
        items = self.items(events)
        results: list[Published | HeraldError | None] = [None] * len(items)
        if self.batch_supported is not False:
            for chunk in self.chunks(items, range(len(items))):
                if not await self._batch(items, chunk, results):
                    self.batch_supported = False
                    break
                self.batch_supported = True
        for index, result in enumerate(results):
            if result is None:
                try:
                    results[index] = await self.publish_event(items[index])
                except HeraldError as exc:
                    results[index] = exc
        return [result for result in results if result is not None]

    async def _batch(
        self, items: list[Event], chunk: list[int], results: list[Published | HeraldError | None]
    ) -> bool:
        """Send one batch until every item has a final answer; False if there is no batch endpoint."""
        attempts = _Attempts(self.retry)
        while chunk:
            body = {"events": [items[index].body() for index in chunk]}
            try:
                response = await self._client.post(self.url + BATCH_PATH, json=body, headers=self.headers())
            except httpx.TransportError as exc:
                error = self.transport(exc)
            else:
                if response.status_code == 404 and self.batch_supported is None:
                    return False
                if response.status_code in (200, 207):
                    chunk, found = self.batch_results(response, chunk, results)
                    if found is None:
                        return True
                    error = found
                else:
                    error = self.error(response)
            delay = attempts.next_delay(error)
            if delay is None:
                if not error.retriable:
                    raise error
                for index in chunk:
                    results[index] = error
                return True
            await asyncio.sleep(delay)
        return True


class Publisher(_Core):
    """The synchronous publisher: the same as :class:`AsyncPublisher`, for threads and scripts."""

    def __init__(
        self,
        url: str,
        token: Token,
        *,
        retry: RetryPolicy | None = None,
        timeout: float = 10.0,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(url, token, retry or RetryPolicy(), timeout)
        self._own_client = client is None
        self._client = client or httpx.Client(timeout=timeout)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own_client:
            self._client.close()

    def publish(
        self,
        event: str | Payload | Event,
        *,
        scope: str | None = None,
        key: str | None = None,
        data: Mapping[str, Any] | BaseModel | None = None,
        priority: Priority | None = None,
        coalesce: str | None = None,
        idempotency_key: str | None = None,
        retain: bool = False,
    ) -> str:
        """Publish one event; its id (cursor). Raises a :class:`HeraldError` subclass."""
        item = self.event(event, scope, key, data, priority, coalesce, idempotency_key, retain)
        return self.publish_event(item).id

    def publish_event(self, item: Event) -> Published:
        """Publish an :class:`Event`; the whole answer."""
        attempts = _Attempts(self.retry)
        while True:
            try:
                response = self._client.post(
                    self.url + PUBLISH_PATH, json=item.body(), headers=self.headers()
                )
            except httpx.TransportError as exc:
                error = self.transport(exc)
            else:
                if response.is_success:
                    return self.published(response.json())
                error = self.error(response)
            delay = attempts.next_delay(error)
            if delay is None:
                raise error
            time.sleep(delay)

    def publish_many(self, events: Iterable[Event | Payload]) -> list[Published | HeraldError]:
        """Publish many events, in order: as :meth:`AsyncPublisher.publish_many`."""
        items = self.items(events)
        results: list[Published | HeraldError | None] = [None] * len(items)
        if self.batch_supported is not False:
            for chunk in self.chunks(items, range(len(items))):
                if not self._batch(items, chunk, results):
                    self.batch_supported = False
                    break
                self.batch_supported = True
        for index, result in enumerate(results):
            if result is None:
                try:
                    results[index] = self.publish_event(items[index])
                except HeraldError as exc:
                    results[index] = exc
        return [result for result in results if result is not None]

    def _batch(
        self, items: list[Event], chunk: list[int], results: list[Published | HeraldError | None]
    ) -> bool:
        attempts = _Attempts(self.retry)
        while chunk:
            body = {"events": [items[index].body() for index in chunk]}
            try:
                response = self._client.post(self.url + BATCH_PATH, json=body, headers=self.headers())
            except httpx.TransportError as exc:
                error = self.transport(exc)
            else:
                if response.status_code == 404 and self.batch_supported is None:
                    return False
                if response.status_code in (200, 207):
                    chunk, found = self.batch_results(response, chunk, results)
                    if found is None:
                        return True
                    error = found
                else:
                    error = self.error(response)
            delay = attempts.next_delay(error)
            if delay is None:
                if not error.retriable:
                    raise error
                for index in chunk:
                    results[index] = error
                return True
            time.sleep(delay)
        return True
