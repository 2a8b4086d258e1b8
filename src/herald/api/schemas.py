"""Request and response bodies of the control API (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from herald.events.message import SSEMessage, build_message


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(description="`domain.action-past` in kebab-case, or `error.*`", max_length=100)
    scope: str = Field(description="`user`, `session`, `global` or a resource type such as `novel`")
    key: str | None = Field(None, description="the user, session or resource id; none for `global`")
    data: dict[str, Any] = Field(description="JSON object, at most 64 KiB encoded")
    priority: Literal["high", "normal", "low"] = "normal"
    coalesce: str | None = Field(
        None, description="a newer event with the same key replaces one still queued", max_length=256
    )
    idempotency_key: str | None = Field(
        None,
        description=(
            "publishing the same key again appends nothing and answers the first id; a key is "
            "the publisher's own (the JWT's sub): another publisher's event with the same key "
            "is another event"
        ),
        min_length=1,
        max_length=256,
    )
    traceparent: str | None = Field(
        None,
        description=(
            "W3C trace context of the event (`00-<trace id>-<parent span id>-<flags>`): its spans "
            "join the producer's trace. Wins over the request's `traceparent` header (in a batch: "
            "per event). A malformed value is ignored, never refused"
        ),
    )
    retain: bool = Field(
        False,
        description=(
            "keep this event as the retained state of its `coalesce` key on its channel (needs "
            "`coalesce`): a stream that starts without a cursor, or whose cursor is not recovered, "
            "gets the newest retained event of each key first, marked `_retained: true`, without `id`"
        ),
    )
    retain_seconds: int | None = Field(
        None,
        description="how long the retained state is kept (1 s to 30 days; default `HERALD_RETAIN_SECONDS`)",
    )

    def message(self, source: str, traceparent: str | None = None) -> SSEMessage:
        """The event this request publishes; :class:`InvalidEvent` naming the field at fault.
        ``traceparent``: the request's header, for an event without its own."""
        return build_message(
            event=self.event,
            scope=self.scope,
            key=self.key,
            data=self.data,
            priority=self.priority,
            coalesce=self.coalesce,
            source=source,
            traceparent=self.traceparent if self.traceparent is not None else traceparent,
            retain=self.retain,
            retain_seconds=self.retain_seconds,
        )


class PublishResponse(BaseModel):
    id: str = Field(
        description="the event's cursor: its SSE `id`; when `coalesced`, the cursor of the newer "
        "event with the same coalesce key that went out in its place"
    )
    duplicate: bool = Field(description="true when the idempotency key was seen before")
    coalesced: bool = Field(
        False,
        description="true when the event was held by the coalesce throttle and a newer one with "
        "the same coalesce key, scope and key replaced it before it went out",
    )


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[PublishRequest] = Field(
        min_length=1,
        max_length=500,
        description="1 to 500 events (and at most 1 MiB of body), appended in this order",
    )


class BatchItemError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str = Field(description="`EVENT_INVALID`, `EVENT_TOO_LARGE`, or `BUS_UNAVAILABLE` (retriable)")
    message: str
    retriable: bool = Field(description="the same item may succeed if sent again later")
    retry_after: float | None = None


class BatchItemResult(BaseModel):
    """Either ``id`` (with ``duplicate`` and ``coalesced``, as a single publish answers) or
    ``error``, never both."""

    id: str | None = Field(None, description="the event's cursor, as `POST /api/v1/events` answers")
    duplicate: bool | None = None
    coalesced: bool | None = None
    error: BatchItemError | None = None


class BatchResponse(BaseModel):
    results: list[BatchItemResult] = Field(description="one per event of the request, in its order")
    accepted: int = Field(description="items with an `id`: appended now, duplicates, coalesced")
    failed: int = Field(description="items with an `error`: not appended")


class StreamTokenResponse(BaseModel):
    token: str
    expires_at: float = Field(description="Unix seconds after which the token opens no stream")
    expires_in: float
    stream_url: str = Field(description="the stream path with this token, ready for EventSource")


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    retry_after: float | None = None


class BusHealth(BaseModel):
    backend: str
    healthy: bool


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    connections: int
    users: int
    position: str
    bus: BusHealth
    accepting: bool
    sources: dict[str, dict[str, int]] = Field(
        default_factory=dict,
        description="per source: messages received, published, duplicates, rejected (bad), failed",
    )
    throttle: dict[str, int] = Field(
        default_factory=dict,
        description="the coalesce throttle: events held, superseded, released, retries; "
        "`holding`: keys holding an event now",
    )


class PresenceResponse(BaseModel):
    user_id: str
    connected: bool = Field(description="the user has at least one stream open, on any node")
    connections: int = Field(description="the user's open streams, cluster-wide")
    online_since: float | None = Field(
        None,
        description="Unix seconds: when the presence announced by `connection.opened` began "
        "(lifecycle events on; null otherwise, or when the user is not present)",
    )
    grace_until: float | None = Field(
        None,
        description="Unix seconds, while the user has no stream but is not announced gone yet: "
        "when `connection.closed` is due unless a stream of theirs opens first",
    )


class RevocationRequest(BaseModel):
    """One of: `user` (every token of theirs issued before `issued_before`), `jti` (one
    token), or `user` with `resource` (that grant, for their tokens issued before
    `issued_before`)."""

    model_config = ConfigDict(extra="forbid")

    user: str | None = Field(None, max_length=256, description="the user id (the tokens' `sub`)")
    jti: str | None = Field(None, max_length=256, description="one token's `jti`")
    resource: str | None = Field(None, max_length=256, description="a resource key, with `user`")
    issued_before: datetime | None = Field(
        None,
        description="ISO 8601 with a time zone; tokens with an earlier `iat` (or none) are revoked. "
        "Default: now",
    )


class DrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window_seconds: float | None = Field(
        None,
        gt=0,
        le=3600,
        description="how long to move the streams off over; default `HERALD_DRAIN_WINDOW_SECONDS`",
    )


class DrainResponse(BaseModel):
    draining: bool
    since: float = Field(description="Unix seconds: when the drain began (an earlier call's, if any)")
    streams: int = Field(description="streams still on this node")
    window_seconds: float


class RevocationResponse(BaseModel):
    kind: Literal["user", "token", "grant"]
    user: str | None = None
    jti: str | None = None
    resource: str | None = None
    issued_before: float | None = Field(None, description="Unix seconds")
    until: float = Field(description="Unix seconds: kept until then (`HERALD_REVOCATION_TTL_SECONDS`)")


class SubscriptionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    connection_id: str = Field(
        description="the `connection_id` of the stream's `connection.established` event", max_length=64
    )
    add: list[str] = Field(default_factory=list, max_length=100, description="resource keys to subscribe to")
    remove: list[str] = Field(default_factory=list, max_length=100, description="resource keys to drop")


class SubscriptionRefusal(BaseModel):
    key: str
    code: Literal["PERMISSION_DENIED", "SUBSCRIPTION_INVALID"]
    message: str


class SubscriptionsResponse(BaseModel):
    connection_id: str
    subscriptions: list[str] = Field(description="every resource key the stream has now")
    added: list[str] = Field(description="keys newly subscribed")
    removed: list[str] = Field(description="keys no longer subscribed")
    refused: list[SubscriptionRefusal] = Field(description="keys not applied, and why")
    live_from: str = Field(
        description="added resources' events reach the stream live after this cursor (see docs/api.md)"
    )


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    ready: bool
    accepting: bool = Field(description="false while the node shuts down or is drained")
    draining: bool = Field(False, description="the node is being drained (`POST /api/v1/admin/drain`)")
    backends: dict[str, bool] = Field(description="each configured backend: answering or not")


# --- the admin console (D31)


class NodeSummary(BaseModel):
    node: str = Field(description="the node's id (host, pid and a random suffix)")
    version: str
    pid: int
    started_at: float = Field(description="Unix seconds")
    ready: bool
    accepting: bool
    draining: bool
    draining_since: float | None = None
    backends: dict[str, bool]
    streams: int
    users: int = Field(description="users with a stream on this node")
    events_in_per_second: float = Field(description="events appended through this node, last 2 s")
    events_out_per_second: float = Field(description="deliveries to this node's streams, last 2 s")
    events_in: dict[str, int] = Field(description="events appended through this node since start, by source")
    deliveries: int = Field(description="deliveries routed to this node's streams since start")
    latency_p50_ms: float | None = Field(
        None, description="append-to-write latency over the last 10 s: the bucket bound holding the median"
    )
    latency_p99_ms: float | None = None
    slow_consumer_closes: int = Field(description="streams closed as slow consumers since start")
    source_lag: dict[str, float] = Field(description="each source's lag, as it reports it")


class NodesResponse(BaseModel):
    answered_by: str = Field(description="the node that took the request")
    nodes: list[NodeSummary] = Field(description="every node that answered within 2 s")


class NodeDrainResponse(DrainResponse):
    node: str


class ChannelTrafficRow(BaseModel):
    channel: str = Field(description="`user:U`, `session:S`, a resource key, `global`, or `(other)`")
    events: int
    deliveries: int
    nodes: int = Field(description="nodes that counted it in their own top list")


class ChannelsResponse(BaseModel):
    window_seconds: float
    channels: list[ChannelTrafficRow]


class UserStream(BaseModel):
    node: str
    connection_id: str
    since: float = Field(description="Unix seconds: when the stream opened")
    subscriptions: list[str]
    last_event_id: str | None = Field(description="the cursor of the newest event handed to the stream")
    events_sent: int
    state: Literal["replaying", "live"]
    expires_at: float | None = None


class UserStreamsResponse(BaseModel):
    user_id: str
    streams: list[UserStream]


class DisconnectResponse(BaseModel):
    user_id: str
    closed: int = Field(description="streams closed, on every node")
    nodes: dict[str, int] = Field(description="streams closed per node")


class UserEvent(BaseModel):
    id: str
    event: str
    channel: str
    at: float = Field(description="Unix seconds: when it was appended")


class UserEventsResponse(BaseModel):
    user_id: str
    events: list[UserEvent] = Field(description="newest first")
