"""Words shared by every layer: scopes and priorities."""

from __future__ import annotations

from enum import IntEnum
from typing import Final

USER: Final = "user"
SESSION: Final = "session"
GLOBAL: Final = "global"

#: Scopes with fixed meaning; any other scope names a resource type (``novel``).
BUILTIN_SCOPES: Final = frozenset({USER, SESSION, GLOBAL})


class Priority(IntEnum):
    """Under backpressure a connection loses ``LOW`` events first; ``HIGH`` are never dropped."""

    LOW = 0
    NORMAL = 1
    HIGH = 2

    @classmethod
    def parse(cls, name: str) -> Priority:
        return cls[name.upper()]


def resource_key(scope: str, key: str) -> str:
    """The subscription key of a resource: ``novel`` + ``42`` is ``novel:42``."""
    return f"{scope}:{key}"
