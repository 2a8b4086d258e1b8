"""The control API: publish, stream tokens, subscriptions, health, metrics."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Header, Path, Request
from fastapi.responses import JSONResponse, Response

from herald.api import paths
from herald.api.schemas import (
    DrainRequest,
    DrainResponse,
    ErrorBody,
    Health,
    Liveness,
    PresenceResponse,
    PublishRequest,
    PublishResponse,
    Readiness,
    RevocationRequest,
    RevocationResponse,
    StreamTokenResponse,
    SubscriptionsRequest,
    SubscriptionsResponse,
)
from herald.gateway import Gateway
from herald.gateway.publishing import publisher_key
from herald.obs.metrics import CONTENT_TYPE, exposition

router = APIRouter()

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in (
        (401, "missing, malformed, expired or badly signed credentials"),
        (403, "the token lacks the role or the grant"),
        (413, "the event's encoded data is over the limit"),
        (422, "the request body or the event is not valid"),
        (503, "the bus cannot take events right now; retry after `Retry-After`"),
    )
}


#: herald.events.names.ROUTING_KEY as JSON Schema writes it (its surrogate range is implied:
#: a path is UTF-8, so it decodes to none).
_USER_ID = r"^[^\s,\x00-\x1f\x7f]{1,256}$"


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post(
    paths.PUBLISH,
    status_code=202,
    response_model=PublishResponse,
    responses=_ERRORS,
    summary="Publish an event",
    tags=["events"],
)
async def publish(
    body: PublishRequest,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    traceparent: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> PublishResponse:
    """Append an event to the log; it reaches its receivers' streams from there.

    Needs a bearer JWT with the `publisher` role. Answers with the event's
    cursor; a repeated `idempotency_key` answers the first event's cursor.

    A W3C `traceparent` header (or the body's `traceparent`) puts the event's spans in
    the producer's trace; a malformed one is ignored.

    An event with a `coalesce` key goes out at most once per
    `HERALD_COALESCE_INTERVAL_SECONDS` per (scope, key, coalesce): the first at
    once, later ones held and the newest appended when the interval ends. The
    answer to a held event comes when it is appended (its cursor) or replaced by
    a newer one (that one's cursor, `coalesced: true`): within the interval. If
    the bus cannot take it by then, 503: the event stays held and is appended
    when the bus is back; a retry with the same `idempotency_key` answers it.
    """
    gateway = _gateway(request)
    publisher = await gateway.authenticate_publisher(authorization)
    result = await gateway.publish(
        body.message(source="http", traceparent=traceparent),
        idempotency_key=publisher_key(publisher.user_id, body.idempotency_key),
    )
    return PublishResponse(id=str(result.cursor), duplicate=result.duplicate, coalesced=result.coalesced)


@router.post(
    paths.STREAM_TOKEN,
    response_model=StreamTokenResponse,
    responses={401: _ERRORS[401]},
    summary="Exchange a JWT for a stream token",
    tags=["auth"],
)
async def stream_token(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> StreamTokenResponse:
    """A short-lived token for `GET /api/v1/events/stream?token=…`, for clients such as
    native EventSource that cannot send an Authorization header. It opens one
    stream at a time and may reopen it (EventSource's reconnect) until it expires."""
    gateway = _gateway(request)
    principal = await gateway.authenticate(authorization)
    minted = gateway.stream_tokens.mint(principal)
    return StreamTokenResponse(
        token=minted.token,
        expires_at=minted.expires_at,
        expires_in=max(0.0, round(minted.expires_at - time.time(), 3)),
        stream_url=f"{paths.STREAM}?token={quote(minted.token)}",
    )


@router.get(paths.HEALTH, response_model=Health, summary="Health and connection counts", tags=["operations"])
async def health(request: Request) -> JSONResponse:
    body = _gateway(request).health()
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


@router.post(
    paths.SUBSCRIPTIONS,
    response_model=SubscriptionsResponse,
    responses={
        401: _ERRORS[401],
        404: {
            "model": ErrorBody,
            "description": "no open stream of yours has this id (`CONNECTION_NOT_FOUND`)",
        },
        422: _ERRORS[422],
        503: {"model": ErrorBody, "description": "the resource authorizer cannot answer now"},
    },
    summary="Change the resource subscriptions of a live stream",
    tags=["events"],
)
async def change_subscriptions(
    body: SubscriptionsRequest,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> SubscriptionsResponse:
    """Add or remove resource subscriptions on an open stream of the caller (the JWT's
    `sub` must be the stream's user), wherever in the cluster the stream is.

    Each key is granted or refused on its own: `refused` lists the others with
    `SUBSCRIPTION_INVALID` (malformed, or past 100 per stream) or
    `PERMISSION_DENIED` (the authorizer does not grant it). The stream gets a
    `connection.subscriptions-changed` event; added resources' events reach it
    live from `live_from` on. A reconnect must send the new list in `?subscribe=`.
    """
    change = await _gateway(request).change_subscriptions(
        authorization=authorization, connection_id=body.connection_id, add=body.add, remove=body.remove
    )
    return SubscriptionsResponse.model_validate(change, from_attributes=True)


@router.get(
    paths.PRESENCE + "/{user_id:path}",
    response_model=PresenceResponse,
    responses={
        401: _ERRORS[401],
        403: _ERRORS[403],
        404: {"model": ErrorBody, "description": "the path holds no user id (a line break in it)"},
        422: {"model": ErrorBody, "description": "not a user id (whitespace, commas, control characters)"},
        503: {"model": ErrorBody, "description": "Redis cannot answer now"},
    },
    summary="Is this user connected anywhere?",
    tags=["events"],
)
async def presence(
    user_id: Annotated[str, Path(pattern=_USER_ID)],
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> PresenceResponse:
    """Whether the user has a stream open on any node of the cluster, counted from the
    nodes' renewed leases (a node that vanished stops counting within
    `CONNECTION_LEASE_SECONDS`). With lifecycle events on, also since when the user is
    announced present, and, during the grace after their last stream closed, when
    `connection.closed` is due. Needs a bearer JWT with the `publisher` role: it is for
    the application's services and operators, not for browsers."""
    gateway = _gateway(request)
    await gateway.authenticate_publisher(authorization)
    found = await gateway.presence(user_id)
    return PresenceResponse(
        user_id=found.user_id,
        connected=found.connected,
        connections=found.connections,
        online_since=found.online_since,
        grace_until=found.grace_until,
    )


@router.post(
    paths.REVOCATIONS,
    status_code=201,
    response_model=RevocationResponse,
    responses={
        401: _ERRORS[401],
        403: {"model": ErrorBody, "description": "the token lacks the `admin` role"},
        400: {"model": ErrorBody, "description": "not one of the three forms (`REQUEST_INVALID`)"},
        422: _ERRORS[422],
        503: {"model": ErrorBody, "description": "Redis cannot keep the revocation now"},
    },
    summary="Revoke a user's tokens, one token, or one grant",
    tags=["admin"],
)
async def revoke(
    body: RevocationRequest,
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> RevocationResponse:
    """Needs a bearer JWT with the `admin` role. Within a second, on every node:

    - `{"user": "alice"}` (tokens issued before `issued_before`, default now) or
      `{"jti": "…"}`: the matching streams end with `error.auth-revoked`, and the
      tokens (and the stream tokens minted from them) are refused with 401
      `AUTH_REVOKED`: a client must not retry with them.
    - `{"user": "alice", "resource": "novel:42"}`: the user's streams lose that
      subscription (`connection.subscriptions-changed`, `reason: "revoked"`) and go
      on; subscribing to it with a token issued before the revocation is refused
      403 `AUTH_REVOKED`.

    A revocation is kept `HERALD_REVOCATION_TTL_SECONDS` (a day): make it longer than
    your tokens live. Tokens without `iat` count as issued before any time.
    """
    revocation = await _gateway(request).revoke(
        authorization=authorization,
        user=body.user,
        jti=body.jti,
        resource=body.resource,
        issued_before=body.issued_before,
    )
    return RevocationResponse.model_validate(revocation.to_json())


@router.post(
    paths.DRAIN,
    status_code=202,
    response_model=DrainResponse,
    responses={
        401: _ERRORS[401],
        403: {"model": ErrorBody, "description": "the token lacks the `admin` role"},
    },
    summary="Drain this node: move its streams to the others",
    tags=["admin"],
)
async def drain(
    request: Request,
    body: DrainRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> DrainResponse:
    """Needs a bearer JWT with the `admin` role. The node that answers turns unready
    (readiness 503, `draining: true`), refuses new streams (503 `SERVER_OVERLOAD`,
    `fallback: "retry"`), and closes its open streams over `window_seconds` in
    batches every quarter second, each with `connection.closing` (`reason: "drain"`)
    and a `retry:` that brings the client back through the load balancer to another
    node, resuming from its cursor. The other nodes see about (streams ÷ window) new
    streams a second. A second call reports the drain under way. The node keeps
    running (empty) until it is stopped. SIGUSR1 and `herald drain` do the same."""
    gateway = _gateway(request)
    window = await gateway.drain(
        authorization=authorization, window_seconds=body.window_seconds if body is not None else None
    )
    since = gateway.manager.draining_since
    assert since is not None
    return DrainResponse(draining=True, since=since, streams=len(gateway.manager), window_seconds=window)


@router.get(paths.LIVE, response_model=Liveness, summary="Liveness: the process answers", tags=["operations"])
async def live() -> Liveness:
    """200 whenever the process can answer at all; restart it when this fails."""
    return Liveness(status="alive")


@router.get(
    paths.READY,
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "not ready: shutting down, or a backend is down"}},
    summary="Readiness: send this node new streams?",
    tags=["operations"],
)
async def ready(request: Request) -> JSONResponse:
    """200 while the node accepts streams and every configured backend (the bus; with
    Redis, the node-control channel; sources that report health) answers; else 503."""
    body = _gateway(request).readiness()
    return JSONResponse(body, status_code=200 if body["ready"] else 503)


@router.get(
    paths.METRICS,
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text exposition"}},
    summary="Prometheus metrics",
    tags=["operations"],
)
async def metrics(request: Request) -> Response:
    """Connections, events in and out, drops and coalesces, replays, latency, sources."""
    registry = request.app.state.metrics
    return Response(exposition(registry), media_type=CONTENT_TYPE)
