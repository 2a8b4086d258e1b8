"""The admin console (D31): its page at ``/admin`` and the control-API endpoints it is
built on, every one for a bearer JWT with the ``admin`` role. The node that takes a
request answers for the whole cluster (:mod:`herald.gateway.console`)."""

from __future__ import annotations

import base64
import functools
import hashlib
from importlib.resources import files
from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse

from herald.api import paths
from herald.api.schemas import (
    ChannelsResponse,
    ChannelTrafficRow,
    DisconnectResponse,
    DrainRequest,
    ErrorBody,
    NodeDrainResponse,
    NodesResponse,
    NodeSummary,
    UserEvent,
    UserEventsResponse,
    UserStream,
    UserStreamsResponse,
)
from herald.gateway import Gateway

router = APIRouter()

_ADMIN_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "missing, malformed, expired or badly signed credentials"},
    403: {"model": ErrorBody, "description": "the token lacks the `admin` role"},
}
_INVALID: dict[str, object] = {"model": ErrorBody, "description": "a parameter or the body is not valid"}
_USER_ERRORS: dict[int | str, dict[str, object]] = {
    **_ADMIN_ERRORS,
    404: {"model": ErrorBody, "description": "the path holds no user id (a line break in it)"},
    422: {"model": ErrorBody, "description": "not a user id (whitespace, commas, control characters)"},
}
#: herald.events.names.ROUTING_KEY, as in routes.py.
_USER_ID = r"^[^\s,\x00-\x1f\x7f]{1,256}$"
UserId = Annotated[str, Path(pattern=_USER_ID)]


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


async def _admin(request: Request, authorization: str | None) -> tuple[Gateway, str]:
    gateway = _gateway(request)
    admin = await gateway.authenticate_admin(authorization)
    return gateway, admin.user_id


@functools.cache
def _page() -> tuple[str, str]:
    """The page, and a Content-Security-Policy that lets only its own inline script run."""
    page = files("herald.api").joinpath("static/admin.html").read_text()
    script = page.split("<script>", 1)[1].split("</script>", 1)[0]
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    policy = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return page, policy


@router.get(paths.ADMIN_PAGE, include_in_schema=False)
async def admin_page() -> HTMLResponse:
    """The console itself: static, no data in it (each endpoint it polls needs the role)."""
    page, policy = _page()
    return HTMLResponse(
        page,
        headers={"cache-control": "no-cache", "content-security-policy": policy, "x-frame-options": "DENY"},
    )


@router.get(
    paths.ADMIN_NODES,
    response_model=NodesResponse,
    responses=_ADMIN_ERRORS,
    summary="Every node of the cluster and its state",
    tags=["admin"],
)
async def nodes(request: Request, authorization: Annotated[str | None, Header()] = None) -> NodesResponse:
    """Needs the `admin` role. The node that answers asks every other node over the node
    control channel and lists those that answered within 2 s (a node that vanished drops
    out): readiness and draining, streams, users, events in and out per second,
    append-to-write latency, slow-consumer closes, source lag. With `herald serve
    --workers N` each worker is a node. No user ids."""
    gateway, _ = await _admin(request, authorization)
    found = await gateway.console.nodes()
    return NodesResponse(answered_by=gateway.node, nodes=[NodeSummary.model_validate(n) for n in found])


@router.post(
    paths.ADMIN_NODES + "/{node}/drain",
    status_code=202,
    response_model=NodeDrainResponse,
    responses={
        **_ADMIN_ERRORS,
        404: {"model": ErrorBody, "description": "no node with this id answered (`NODE_NOT_FOUND`)"},
        422: _INVALID,
    },
    summary="Drain a chosen node",
    tags=["admin"],
)
async def drain_node(
    node: str,
    request: Request,
    body: DrainRequest | None = None,
    authorization: Annotated[str | None, Header()] = None,
) -> NodeDrainResponse:
    """Needs the `admin` role. `POST /api/v1/admin/drain` on the node `node` (an id from
    `GET /api/v1/admin/nodes`), forwarded over the node control channel when another node
    takes the request: it turns unready and moves its streams off over `window_seconds`."""
    gateway, by = await _admin(request, authorization)
    answer = await gateway.console.drain_node(node, body.window_seconds if body is not None else None, by)
    return NodeDrainResponse.model_validate(answer)


@router.get(
    paths.ADMIN_CHANNELS,
    response_model=ChannelsResponse,
    responses={**_ADMIN_ERRORS, 422: _INVALID},
    summary="The busiest channels",
    tags=["admin"],
)
async def channels(
    request: Request,
    top: Annotated[int, Query(ge=1, le=100)] = 10,
    authorization: Annotated[str | None, Header()] = None,
) -> ChannelsResponse:
    """Needs the `admin` role. The channels with the most deliveries over the last minute,
    summed over the nodes' own top lists (each node counts once per event per channel,
    and keeps at most 10,000 channels per 10-second slice; the rest count as `(other)`)."""
    gateway, _ = await _admin(request, authorization)
    window, rows = await gateway.console.channels(top)
    rows_out = [ChannelTrafficRow.model_validate(row) for row in rows]
    return ChannelsResponse(window_seconds=window, channels=rows_out)


@router.get(
    paths.ADMIN_USERS + "/{user_id:path}/streams",
    response_model=UserStreamsResponse,
    responses=_USER_ERRORS,
    summary="A user's open streams across the cluster",
    tags=["admin"],
)
async def user_streams(
    user_id: UserId, request: Request, authorization: Annotated[str | None, Header()] = None
) -> UserStreamsResponse:
    """Needs the `admin` role. Every open stream of the user on every node that answered
    within 2 s: node, connection id, since, subscriptions, the last event id it was sent."""
    gateway, _ = await _admin(request, authorization)
    found = await gateway.console.user_streams(user_id)
    return UserStreamsResponse(user_id=user_id, streams=[UserStream.model_validate(s) for s in found])


@router.delete(
    paths.ADMIN_USERS + "/{user_id:path}/streams",
    response_model=DisconnectResponse,
    responses=_USER_ERRORS,
    summary="Disconnect a user's streams on every node",
    tags=["admin"],
)
async def disconnect_user(
    user_id: UserId, request: Request, authorization: Annotated[str | None, Header()] = None
) -> DisconnectResponse:
    """Needs the `admin` role. Every open stream of the user, on every node, ends with a
    jittered `retry:` and `connection.closing` (`reason: "disconnected"`). Their tokens
    stay valid, so clients come back (with their cursor, losing nothing): to keep a user
    out, revoke (`POST /api/v1/admin/revocations`), which ends their streams too."""
    gateway, by = await _admin(request, authorization)
    closed = await gateway.console.disconnect(user_id, by)
    return DisconnectResponse(user_id=user_id, closed=sum(closed.values()), nodes=closed)


@router.get(
    paths.ADMIN_USERS + "/{user_id:path}/events",
    response_model=UserEventsResponse,
    responses={**_USER_ERRORS, 503: {"model": ErrorBody, "description": "the bus cannot be read now"}},
    summary="The events recently sent on a user's channels",
    tags=["admin"],
)
async def user_events(
    user_id: UserId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    authorization: Annotated[str | None, Header()] = None,
) -> UserEventsResponse:
    """Needs the `admin` role. The newest `limit` events the log still holds (the replay
    window) on the channels the user's streams receive: their user channel and the
    resources their open streams subscribe to (not `global`, not sessions). Ids, names and
    channels only: no payloads."""
    gateway, _ = await _admin(request, authorization)
    found = await gateway.console.user_events(user_id, limit)
    return UserEventsResponse(user_id=user_id, events=[UserEvent.model_validate(e) for e in found])
