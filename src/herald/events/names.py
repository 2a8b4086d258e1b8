"""What an event name, a scope and a routing key may look like.

Event names are ``domain.action-past`` in kebab-case (``task.progress-updated``)
or ``error.*``. A name is never ``error`` alone: that collides with
EventSource's own ``error`` event. ``connection.*`` belongs to the gateway.
"""

from __future__ import annotations

import re
from typing import Final

from herald.errors import InvalidEvent
from herald.types import GLOBAL

_WORD = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*"
EVENT_NAME: Final = re.compile(rf"{_WORD}\.{_WORD}")
SCOPE_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: Ids of users, sessions and resources: no whitespace, commas or control characters,
#: so that ``novel:42,novel:7`` lists and SSE lines stay unambiguous; and no lone
#: surrogates (JSON's ``"\ud800"`` decodes to one), which no UTF-8 encoder, Redis's
#: client included, can write.
ROUTING_KEY: Final = re.compile(r"[^\s,\x00-\x1f\x7f\ud800-\udfff]{1,256}")
MAX_EVENT_NAME_CHARS: Final = 100
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")

#: Prefixes only the gateway itself emits.
RESERVED_PREFIXES: Final = ("connection.",)
#: Names with a meaning the gateway gives them (a producer could otherwise make
#: clients drop a healthy stream); other ``error.*`` and ``auth.*`` names are free.
RESERVED_NAMES: Final = frozenset(
    {
        "error.slow-consumer",
        "error.auth-expired",
        "error.auth-revoked",
        "auth.expiring",
        "error.connection-limit-exceeded",
        "error.connection-evicted",
        "error.server-overload",
        "herald.canary",
    }
)
#: Scopes only the gateway itself publishes to, and no stream subscribes to: ``herald``
#: carries canary events (:mod:`herald.events.canary`, D32).
RESERVED_SCOPES: Final = frozenset({"herald"})


def encodable(text: str) -> bool:
    """Whether ``text`` is valid Unicode text, i.e. has a UTF-8 encoding (no lone surrogates)."""
    return _SURROGATE.search(text) is None


def check_event_name(name: str, *, internal: bool = False) -> str:
    if len(name) > MAX_EVENT_NAME_CHARS or not EVENT_NAME.fullmatch(name):
        raise InvalidEvent(
            f"event name {name[:MAX_EVENT_NAME_CHARS]!r} is not 'domain.action-past' in kebab-case",
            field="event",
        )
    if not internal and (name.startswith(RESERVED_PREFIXES) or name in RESERVED_NAMES):
        raise InvalidEvent(f"{name!r} is one of the gateway's own event names", field="event")
    return name


def check_scope(scope: str, *, internal: bool = False) -> str:
    if not SCOPE_NAME.fullmatch(scope):
        raise InvalidEvent(
            f"scope {scope[:40]!r} is not user, session, global or a resource type like 'novel'",
            field="scope",
        )
    if not internal and scope in RESERVED_SCOPES:
        raise InvalidEvent(f"scope {scope!r} is the gateway's own", field="scope")
    return scope


def check_key(scope: str, key: str | None) -> str | None:
    if scope == GLOBAL:
        if key not in (None, ""):
            raise InvalidEvent("a global event has no key", field="key")
        return None
    if key is None or not ROUTING_KEY.fullmatch(key):
        raise InvalidEvent(
            f"scope {scope!r} needs a key of 1-256 characters without whitespace or commas",
            field="key",
        )
    return key
