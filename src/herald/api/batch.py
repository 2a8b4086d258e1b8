"""``POST /api/v1/events/batch``: many events in one request, one result per event.

The body is read and checked here rather than by a FastAPI body model: one
bad event must fail alone (its result says why), not turn the whole batch
into a 422. Each event is checked by the single publish's model
(``PublishRequest``) and the event rules, so both refuse the same things;
that costs about 6 µs per event here.

Statuses: 200 when every item has an ``id``; 503 (``Retry-After``) when none
was appended because the bus is unavailable, so the whole batch may be sent
again; 207 otherwise, with each item's ``id`` or ``error``.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError

from herald.api import paths
from herald.api.schemas import BatchResponse, ErrorBody, PublishRequest
from herald.bus.base import AppendResult
from herald.errors import BatchInvalid, BatchTooLarge, BodyTooLarge, BusUnavailable, HeraldError, InvalidEvent
from herald.events.message import SSEMessage
from herald.gateway import Gateway
from herald.gateway.publishing import publisher_key

router = APIRouter()

#: The most events, and body bytes, one batch may carry.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 1024 * 1024

BATCH_REQUEST_REF = "#/components/schemas/BatchRequest"


def _error_response(description: str) -> dict[str, object]:
    return {"model": ErrorBody, "description": description}


@router.post(
    paths.PUBLISH_BATCH,
    status_code=200,
    response_model=BatchResponse,
    responses={
        207: {"model": BatchResponse, "description": "some items failed: each result has `id` or `error`"},
        401: _error_response("missing, malformed, expired or badly signed credentials"),
        403: _error_response("the token lacks the `publisher` role"),
        413: _error_response("more than 500 events (`BATCH_TOO_LARGE`) or 1 MiB (`BODY_TOO_LARGE`)"),
        422: _error_response('the body is not JSON of the form `{"events": [...]}` (`REQUEST_INVALID`)'),
        503: _error_response("the bus took none of the events; send the batch again after `Retry-After`"),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": BATCH_REQUEST_REF}}},
        }
    },
    summary="Publish up to 500 events at once",
    tags=["events"],
)
async def publish_batch(request: Request, authorization: Annotated[str | None, Header()] = None) -> Response:
    """Append up to 500 events (1 MiB of body) in one request; the answer has one result per
    event, in the request's order: what `POST /api/v1/events` would have answered for it
    (`id`, `duplicate`, `coalesced`) or an `error` (`code`, `message`, `retriable`).

    Events are checked one by one: an invalid one fails alone and the others are
    appended, in order. Status 200: every event has an `id`. 207: some have an
    `error`; those with an `id` are appended, the others are not (send again
    those whose error is `retriable`; with `idempotency_key`s, sending the whole
    batch again is safe). 503: the bus took none of them.

    Order: the valid events are appended in the request's order, so they reach each
    stream in that order; an event with a `coalesce` key goes through the throttle
    as a single publish does (it may be held, and answers once appended or replaced).

    Tracing: an event's own `traceparent` field, else the request's `traceparent` header.
    """
    gateway: Gateway = request.app.state.gateway
    publisher = await gateway.authenticate_publisher(authorization)
    items = parse_batch(await _bounded_body(request), request.headers.get("traceparent"))
    results = await publish_items(gateway, items, publisher.user_id)
    status, answer = batch_answer(results)
    return Response(
        orjson.dumps(answer),
        status_code=status,
        media_type="application/json",
        headers=batch_headers(status, results),
    )


async def _bounded_body(request: Request) -> bytes:
    """The body, read no further than the limit (an embedding ASGI server may not bound it)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BATCH_BYTES:
            raise BodyTooLarge(f"a batch body is at most {MAX_BATCH_BYTES} bytes", limit=MAX_BATCH_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


Item = tuple[SSEMessage, str | None] | HeraldError


def parse_batch(body: bytes, traceparent: str | None = None) -> list[Item]:
    """Each event of the body as a message and its idempotency key, or the error that refuses
    it; :class:`BatchInvalid` / :class:`BatchTooLarge` for the body as a whole.
    ``traceparent``: the request's header, for the events without their own."""
    if len(body) > MAX_BATCH_BYTES:
        raise BodyTooLarge(f"a batch body is at most {MAX_BATCH_BYTES} bytes", limit=MAX_BATCH_BYTES)
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BatchInvalid(f"the body is not JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) != {"events"}:
        raise BatchInvalid('the body must be {"events": [...]}')
    events = document["events"]
    if not isinstance(events, list) or not events:
        raise BatchInvalid('"events" must be a list of 1 to 500 events')
    if len(events) > MAX_BATCH_EVENTS:
        raise BatchTooLarge(
            f"a batch holds at most {MAX_BATCH_EVENTS} events; this one has {len(events)}",
            limit=MAX_BATCH_EVENTS,
        )
    return [_parse_item(event, traceparent) for event in events]


def _parse_item(raw: object, traceparent: str | None) -> Item:
    try:
        request = PublishRequest.model_validate(raw)
        message = request.message(source="http", traceparent=traceparent)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first.get("loc", ()))
        return InvalidEvent(f"{field or 'event'}: {first.get('msg', 'not valid')}", field=field)
    except InvalidEvent as exc:
        return exc
    return message, request.idempotency_key


async def publish_items(
    gateway: Gateway, items: list[Item], publisher: str
) -> list[AppendResult | HeraldError]:
    """The gateway's answer for the valid items, merged with the refusals, in order; their
    idempotency keys scoped to ``publisher``."""
    valid = [
        (item[0], publisher_key(publisher, item[1])) for item in items if not isinstance(item, HeraldError)
    ]
    published = iter(await gateway.publish_batch(valid) if valid else [])
    return [item if isinstance(item, HeraldError) else next(published) for item in items]


def batch_headers(status: int, results: list[AppendResult | HeraldError]) -> dict[str, str]:
    """``Retry-After`` on a 503: the longest any item was told to wait."""
    if status != 503:
        return {}
    retry = max((r.retry_after or 1) for r in results if isinstance(r, HeraldError))
    return {"retry-after": str(max(1, round(retry)))}


def batch_answer(results: list[AppendResult | HeraldError]) -> tuple[int, dict[str, Any]]:
    """The status and body for ``results``."""
    out: list[dict[str, Any]] = []
    failed = 0
    for result in results:
        if isinstance(result, AppendResult):
            out.append(
                {"id": str(result.cursor), "duplicate": result.duplicate, "coalesced": result.coalesced}
            )
            continue
        failed += 1
        error = {**result.body(), "retriable": result.retriable}
        out.append({"error": error})
    accepted = len(results) - failed
    if failed == 0:
        status = 200
    elif accepted == 0 and all(isinstance(r, BusUnavailable) for r in results):
        status = 503
    else:
        status = 207
    return status, {"results": out, "accepted": accepted, "failed": failed}
