"""Commands between the nodes of one cluster, for what only the node holding a
connection can do: close it (the per-user limit evicts the user's oldest
stream, wherever it is) or change its subscriptions (the request may reach any
node behind the load balancer).

The contract, for every implementation:

``start(handler)``
    Deliver every command another node sends to ``handler``; it answers with
    a JSON object when the command concerns this node, else ``None``.
``tell(command)``
    Send ``command`` to every other node; nothing comes back. At most once:
    a node that is disconnected at that moment does not get it.
``ask(command, timeout)``
    Send ``command`` to every other node and return the first answer that is
    not ``None``; ``None`` once every node answered ``None``, or after
    ``timeout`` seconds.
``gather(command, timeout)``
    Send ``command`` to every other node and return every answer that is not
    ``None``, in the order they came, once every node answered or after
    ``timeout`` seconds (then the answers so far). For what the whole cluster
    is asked at once: the admin console's nodes, streams and channels (D31).

A command is a JSON object with an ``op``. A node never receives its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

Command = dict[str, Any]
Answer = dict[str, Any]
Handler = Callable[[Command], Awaitable[Answer | None]]


class NodeControl(Protocol):
    async def start(self, handler: Handler) -> None: ...

    async def stop(self) -> None: ...

    async def tell(self, command: Command) -> None: ...

    async def ask(self, command: Command, timeout: float) -> Answer | None: ...  # noqa: ASYNC109

    async def gather(self, command: Command, timeout: float) -> list[Answer]: ...  # noqa: ASYNC109

    def healthy(self) -> bool: ...


class SingleNodeControl:
    """The memory deployment: one node, so nobody else to tell or ask."""

    async def start(self, handler: Handler) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def tell(self, command: Command) -> None:
        return None

    async def ask(self, command: Command, timeout: float) -> Answer | None:  # noqa: ASYNC109
        return None

    async def gather(self, command: Command, timeout: float) -> list[Answer]:  # noqa: ASYNC109
        return []

    def healthy(self) -> bool:
        return True
