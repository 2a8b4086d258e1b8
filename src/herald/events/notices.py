"""Payloads of the gateway's notices about connection management: a live stream's
subscriptions changed, or the stream was evicted under the per-user limit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, Literal

from pydantic import BaseModel, Field

from herald.events.system import ErrorEvent

SUBSCRIPTIONS_CHANGED = "connection.subscriptions-changed"
CONNECTION_EVICTED = "error.connection-evicted"


class SubscriptionsChanged(BaseModel):
    """Sent on a stream when ``POST /api/v1/events/subscriptions`` changed it.

    Events of an added resource reach the stream live from ``live_from`` on.
    When the notice carries that cursor as its SSE ``id`` (the stream had
    nothing waiting), the client's Last-Event-ID moves there, so a reconnect
    with the new ``?subscribe=`` list replays from the moment of the change;
    otherwise (``id`` absent) a reconnect may also replay the added resource's
    events between the client's cursor and ``live_from``. Never a gap, never a
    duplicate.
    """

    subscriptions: list[str] = Field(description="every resource key the stream has now")
    added: list[str]
    removed: list[str]
    live_from: str = Field(description="the cursor after which added resources' events are live")
    #: Why the gateway removed resources on its own: the authorizer no longer grants them
    #: (``withdrawn``), or an admin revoked the grant (``revoked``); absent when the
    #: subscriptions API changed them.
    reason: Literal["withdrawn", "revoked"] | None = None


#: Payload model of each notice (see ``herald.events.system.EVENT_PAYLOADS``).
EVENT_PAYLOADS: Final[Mapping[str, type[BaseModel]]] = {
    SUBSCRIPTIONS_CHANGED: SubscriptionsChanged,
    CONNECTION_EVICTED: ErrorEvent,
}
