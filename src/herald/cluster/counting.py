"""How many streams each user has open, across every node: the counting behind the
per-user connection limit (the limit itself is the connection manager's).

The count must not drift (LESSONS, "Counters that drift"): each connection
holds a *lease* that the node owning it keeps renewing, so a node that dies
stops counting once its leases lapse, and releasing a lease twice, or one
that was never counted, changes nothing.

The contract, for every implementation:

``acquire(user_id, lease_id)``
    Count a new connection of ``user_id`` under a fresh ``lease_id``;
    returns the user's open connections cluster-wide, this one included.
    Raises :class:`herald.errors.BusUnavailable` when the count cannot be
    known right now; the lease is then still held by this node and will be
    counted once the store is back (release it as usual).
``release(user_id, lease_id, reason)``
    Stop counting it; ``reason`` is why its stream closed (lifecycle events
    report it). Idempotent. Call it after ``acquire`` returned or raised.
``count(user_id)``
    The user's open connections cluster-wide.
``presence(user_id)``
    The same count, and, where lifecycle events are kept, when the user's
    announced presence began and when its grace ends (:class:`Presence`).
``leases(user_id)``
    The user's live leases cluster-wide (the per-user limit orders them: the
    gateway names leases so that they sort by opening time).
``start()`` / ``stop()``
    Run the renewal of this node's leases, where there is one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a user is connected anywhere in the cluster."""

    user_id: str
    #: The user's open streams, on every node.
    connections: int
    #: Unix seconds: when the presence announced by ``connection.opened`` began (with
    #: lifecycle events on; ``None`` otherwise, or when the user is not present).
    online_since: float | None = None
    #: Unix seconds, while the user has no stream but is not announced gone yet: when
    #: ``connection.closed`` is due unless a stream opens first.
    grace_until: float | None = None

    @property
    def connected(self) -> bool:
        return self.connections > 0


class ConnectionCounter(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def acquire(self, user_id: str, lease_id: str) -> int: ...

    async def release(self, user_id: str, lease_id: str, reason: str = "client_gone") -> None: ...

    async def count(self, user_id: str) -> int: ...

    async def leases(self, user_id: str) -> list[str]: ...

    async def presence(self, user_id: str) -> Presence: ...


class MemoryConnectionCounter:
    """One node is the whole cluster: a set of leases per user, nothing to renew."""

    def __init__(self) -> None:
        self._leases: dict[str, set[str]] = {}

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def acquire(self, user_id: str, lease_id: str) -> int:
        leases = self._leases.setdefault(user_id, set())
        leases.add(lease_id)
        return len(leases)

    async def release(self, user_id: str, lease_id: str, reason: str = "client_gone") -> None:
        leases = self._leases.get(user_id)
        if leases is None:
            return
        leases.discard(lease_id)
        if not leases:
            del self._leases[user_id]

    async def count(self, user_id: str) -> int:
        return len(self._leases.get(user_id, ()))

    async def leases(self, user_id: str) -> list[str]:
        return sorted(self._leases.get(user_id, ()))

    async def presence(self, user_id: str) -> Presence:
        return Presence(user_id, len(self._leases.get(user_id, ())))
