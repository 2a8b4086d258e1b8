"""Resource grants: may this principal subscribe to ``novel:42``?"""

from __future__ import annotations

from herald.auth.principal import Principal
from herald.errors import PermissionDenied, SubscriptionInvalid
from herald.events.names import RESERVED_SCOPES, ROUTING_KEY, SCOPE_NAME
from herald.types import BUILTIN_SCOPES

MAX_SUBSCRIPTIONS = 100


def parse_subscriptions(raw: str | None) -> list[str]:
    """``novel:42,novel:7`` as a list of keys, or :class:`SubscriptionInvalid`."""
    if not raw:
        return []
    keys: list[str] = []
    for part in raw.split(","):
        key = part.strip()
        if not key:
            continue
        check_resource_key(key)
        if key not in keys:
            keys.append(key)
    if len(keys) > MAX_SUBSCRIPTIONS:
        raise SubscriptionInvalid(f"at most {MAX_SUBSCRIPTIONS} subscriptions per stream")
    return keys


def check_resource_key(key: str) -> str:
    scope, sep, ident = key.partition(":")
    if not sep or not SCOPE_NAME.fullmatch(scope) or not ROUTING_KEY.fullmatch(ident):
        raise SubscriptionInvalid(f"{key[:80]!r} is not a resource key like 'novel:42'", key=key[:80])
    if scope in BUILTIN_SCOPES:
        raise SubscriptionInvalid(
            f"{scope!r} events reach their receivers without a subscription", key=key[:80]
        )
    if scope in RESERVED_SCOPES:  # the gateway's own events (canaries): never a stream's
        raise SubscriptionInvalid(f"{scope!r} is the gateway's own scope", key=key[:80])
    return key


def grants(principal: Principal, key: str) -> bool:
    """Token-claim authorization: an exact grant, or ``type:*`` for the whole type."""
    if key in principal.resources:
        return True
    scope = key.partition(":")[0]
    return f"{scope}:*" in principal.resources


def authorize_all(principal: Principal, keys: list[str]) -> frozenset[str]:
    """All of ``keys``, or :class:`PermissionDenied` naming those not granted."""
    refused = [key for key in keys if not grants(principal, key)]
    if refused:
        raise PermissionDenied(
            "the token does not grant these resources", refused=refused[:MAX_SUBSCRIPTIONS]
        )
    return frozenset(keys)
