"""How the manager reaches a connection's socket, whatever serves it.

The standalone server writes to an asyncio transport (:mod:`herald.server`);
an ASGI server is reached through ``send`` (:mod:`herald.api.asgi_stream`).
Either way the manager hands over pre-encoded bytes at most once per loop
turn and learns about flow control through :class:`SinkOwner`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class Sink(Protocol):
    def write(self, data: bytes) -> None:
        """Hand ``data`` to the socket now; never blocks, never awaits."""
        ...

    def writer(self) -> Callable[[bytes], None]:
        """The cheapest callable that does what :meth:`write` does, for the hot path.

        The manager calls it only while the connection is open."""
        ...

    def backlog(self) -> int:
        """Bytes handed over but not yet accepted by the peer's socket."""
        ...

    def close(self) -> None:
        """End the response after what was written, then drop the connection,
        aborting it if the peer does not read the rest in time. Idempotent."""
        ...


class SinkOwner(Protocol):
    """What a sink calls back: the :class:`herald.manager.connection.Connection`."""

    def pause_writing(self) -> None:
        """The socket's buffer passed its high-water mark."""
        ...

    def resume_writing(self) -> None:
        """The socket's buffer drained below its low-water mark."""
        ...

    def connection_lost(self) -> None:
        """The peer is gone."""
        ...
