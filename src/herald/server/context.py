"""What every connection of one server shares."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.types import ASGIApp

from herald.config import Settings
from herald.gateway import Gateway
from herald.server.gc_policy import GcPolicy

if TYPE_CHECKING:
    from herald.server.protocol import HttpProtocol


@dataclass(slots=True)
class ServerContext:
    loop: asyncio.AbstractEventLoop
    gateway: Gateway
    app: ASGIApp
    settings: Settings
    server_address: tuple[str, int] = ("127.0.0.1", 0)
    #: Open client connections, for shutdown.
    protocols: set[HttpProtocol] = field(default_factory=set)
    #: Freezes the garbage collector's view of long-lived streams after bursts.
    gc_policy: GcPolicy | None = None
    #: Set whenever the last client connection closes.
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def stream_write_limits(self) -> tuple[int, int]:
        """A stream transport's (high, low) write-buffer marks: a quarter of the slow-consumer
        budget, at most asyncio's default 64 KiB, at least 4 KiB."""
        high = max(4096, min(64 * 1024, self.settings.slow_consumer_bytes // 4))
        return high, high // 4
