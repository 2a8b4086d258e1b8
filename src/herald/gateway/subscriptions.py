"""Changing the subscriptions of a live stream (``POST /api/v1/events/subscriptions``, D17).

The request may reach any node behind the load balancer, and only the node holding
the stream can change it. So the keys are checked and authorized where the request
arrived, and the change is applied here when this node holds the stream, else by
asking the other nodes (:mod:`herald.cluster.control`); the node holding it
answers with what it did."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import structlog

from herald.auth.authorizers import ResourceAuthorizer
from herald.auth.grants import MAX_SUBSCRIPTIONS, check_resource_key
from herald.auth.principal import Principal
from herald.cluster.control import Answer, Command, NodeControl
from herald.errors import (
    ConnectionNotFound,
    GrantRevoked,
    HeraldError,
    PermissionDenied,
    SubscriptionInvalid,
)
from herald.manager.manager import ConnectionManager

log = structlog.get_logger("herald.gateway")


@dataclass(frozen=True, slots=True)
class SubscriptionChange:
    """What ``POST /api/v1/events/subscriptions`` did to a live stream."""

    connection_id: str
    subscriptions: list[str]
    added: list[str]
    removed: list[str]
    #: ``{"key", "code", "message"}`` for each key not applied.
    refused: list[dict[str, str]] = field(default_factory=list)
    #: The cursor after which the added resources' events reach the stream live.
    live_from: str = ""


#: Bound on asking the other nodes about a connection this node does not hold.
_ASK_TIMEOUT = 2.0


class LiveSubscriptions:
    def __init__(
        self,
        manager: ConnectionManager,
        authorizer: ResourceAuthorizer,
        control: NodeControl,
        authenticate: Callable[[str | None], Awaitable[Principal]],
        grant_revoked: Callable[[Principal, str], bool] = lambda principal, key: False,
    ) -> None:
        """``grant_revoked``: whether an admin revoked a resource's grant for a token."""
        self._grant_revoked = grant_revoked
        self._manager = manager
        self._authorizer = authorizer
        self._control = control
        self._authenticate = authenticate
        #: Keys refused in subscription changes (``herald_subscription_changes{outcome="refused"}``).
        self.refused = 0

    async def change(
        self,
        *,
        authorization: str | None,
        connection_id: str,
        add: Sequence[str],
        remove: Sequence[str],
    ) -> SubscriptionChange:
        """Add and remove resource subscriptions on a live stream of the caller's.

        Keys are checked here (the node that got the request): malformed ones are
        refused ``SUBSCRIPTION_INVALID``, those the authorizer does not grant
        ``PERMISSION_DENIED``. The rest is applied by the node holding the stream,
        whichever it is. :class:`ConnectionNotFound` when no node holds a stream
        of this user with this id.
        """
        principal = await self._authenticate(authorization)
        refused: list[dict[str, str]] = []
        to_add = self._valid_keys(add, refused)
        to_remove = self._valid_keys(remove, refused)
        both = set(to_add) & set(to_remove)
        for key in sorted(both):
            refused.append(_refusal(key, SubscriptionInvalid("a key cannot be both added and removed")))
        to_add = [key for key in to_add if key not in both]
        to_remove = [key for key in to_remove if key not in both]
        revoked = [key for key in to_add if self._grant_revoked(principal, key)]
        for key in revoked:
            refused.append(_refusal(key, GrantRevoked("the grant of this resource was revoked")))
        to_add = [key for key in to_add if key not in revoked]
        if to_add:
            granted = await self._authorizer.granted(principal, to_add)
            for key in to_add:
                if key not in granted:
                    refused.append(_refusal(key, PermissionDenied("this resource is not granted")))
            to_add = [key for key in to_add if key in granted]
        command: Command = {
            "op": "subscriptions",
            "connection_id": connection_id,
            "user_id": principal.user_id,
            "add": to_add,
            "remove": to_remove,
        }
        answer = await self.apply(command)
        if answer is None:
            answer = await self._control.ask(command, _ASK_TIMEOUT)
        if answer is None:
            raise ConnectionNotFound("no open stream of yours has this connection id")
        refused.extend(answer.get("refused", []))
        self.refused += len(refused)
        return SubscriptionChange(
            connection_id=connection_id,
            subscriptions=list(answer["subscriptions"]),
            added=list(answer["added"]),
            removed=list(answer["removed"]),
            refused=refused,
            live_from=str(answer["live_from"]),
        )

    @staticmethod
    def _valid_keys(keys: Sequence[str], refused: list[dict[str, str]]) -> list[str]:
        valid: list[str] = []
        for key in keys:
            try:
                check_resource_key(key)
            except SubscriptionInvalid as exc:
                refused.append(_refusal(key, exc))
                continue
            if key not in valid:
                valid.append(key)
        return valid

    async def apply(self, command: Command) -> Answer | None:
        """Apply a subscription change to a stream of this node; ``None`` if it has none such.
        Called for this node's own requests and for other nodes' ``subscriptions`` commands."""
        conn = self._manager.index.all.get(str(command["connection_id"]))
        if conn is None or conn.closed or conn.user_id != command["user_id"]:
            return None
        add = [str(key) for key in command["add"]]
        refused: list[dict[str, str]] = []
        room = MAX_SUBSCRIPTIONS - len(conn.subscriptions)
        fresh = [key for key in add if key not in conn.subscriptions]
        if len(fresh) > room:
            too_many = SubscriptionInvalid(f"at most {MAX_SUBSCRIPTIONS} subscriptions per stream")
            refused = [_refusal(key, too_many) for key in fresh[max(0, room) :]]
            add = [key for key in add if key not in set(fresh[max(0, room) :])]
        added, removed, position = await self._manager.change_subscriptions(
            conn, add, [str(key) for key in command["remove"]]
        )
        log.info(
            "sse_subscriptions_changed",
            connection_id=conn.id,
            user_id=conn.user_id,
            added=added,
            removed=removed,
            refused=len(refused),
        )
        return {
            "subscriptions": sorted(conn.subscriptions),
            "added": added,
            "removed": removed,
            "live_from": str(position),
            "refused": refused,
        }


def _refusal(key: str, error: HeraldError) -> dict[str, str]:
    return {"key": key[:80], "code": error.code, "message": error.message}
