"""The admin console's view of the cluster and its actions (D31).

Every node answers for itself (:meth:`AdminConsole.node_summary`, its streams of a user,
its busiest channels) and asks the others with the node control channel's ``gather``
(:mod:`herald.cluster.control`): the node that takes an admin request answers for the
whole cluster, whichever it is. Rates are read from a sample of the node's counters
taken every second (no work per event beyond what the counters already cost).

Every action (disconnect, drain of a chosen node) is logged as ``admin_action`` with the
admin's ``sub`` (``by``), on the node that took the request and on each node that acted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from herald import __version__
from herald.bus.base import EventBus
from herald.bus.channels import channel_of
from herald.cluster.control import Answer, Command, NodeControl
from herald.errors import NodeNotFound
from herald.gateway.health import NodeHealth
from herald.gateway.publishing import Publishing
from herald.manager.connection import CloseReason, Connection, State
from herald.manager.manager import ConnectionManager
from herald.manager.stats import LATENCY_BOUNDS
from herald.types import USER
from herald.wire.cursor import Cursor

log = structlog.get_logger("herald.admin")

#: Seconds a cluster-wide question waits for the other nodes.
GATHER_SECONDS = 2.0
#: Samples of the node's counters kept (one a second).
_SAMPLES = 11


class _Sample:
    __slots__ = ("deliveries", "events_in", "latency", "slow", "t")

    def __init__(self, t: float, events_in: int, deliveries: int, latency: Sequence[int], slow: int) -> None:
        self.t = t
        self.events_in = events_in
        self.deliveries = deliveries
        self.latency = tuple(latency)
        self.slow = slow


class AdminConsole:
    def __init__(
        self,
        *,
        node: str,
        bus: EventBus,
        manager: ConnectionManager,
        control: NodeControl,
        publishing: Publishing,
        health: NodeHealth,
        drain: Callable[[float | None], float],
    ) -> None:
        self.node = node
        self._bus = bus
        self._manager = manager
        self._control = control
        self._publishing = publishing
        self._health = health
        self._drain = drain
        self.started_at = time.time()
        self._samples: deque[_Sample] = deque(maxlen=_SAMPLES)
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.started_at = time.time()
        self._sample()
        self._sampler = asyncio.create_task(self._run_sampler(), name="herald-admin-sampler")

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
            self._sampler = None

    async def _run_sampler(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._sample()

    def _sample(self) -> None:
        stats = self._manager.stats
        self._samples.append(
            _Sample(
                time.monotonic(),
                sum(self._publishing.events_in.values()),
                self._manager.traffic.deliveries,
                stats.write_latency.counts,
                stats.closed.get(CloseReason.SLOW_CONSUMER, 0),
            )
        )

    # --- this node

    def node_summary(self) -> dict[str, Any]:
        """What the console shows of this node (no user ids in it)."""
        manager = self._manager
        readiness = self._health.readiness()
        readings = self._health.readings()
        samples = self._samples
        events_in = events_out = 0.0
        p50 = p99 = None
        if len(samples) >= 2:
            # Rates over the last two seconds (or what there is); latency over ten.
            newest, older = samples[-1], samples[max(0, len(samples) - 3)]
            span = max(1e-3, newest.t - older.t)
            events_in = (newest.events_in - older.events_in) / span
            events_out = (newest.deliveries - older.deliveries) / span
            oldest = samples[0]
            delta = [a - b for a, b in zip(newest.latency, oldest.latency, strict=True)]
            p50, p99 = _quantile_ms(delta, 0.5), _quantile_ms(delta, 0.99)
        return {
            "node": self.node,
            "version": __version__,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "ready": readiness["ready"],
            "accepting": readiness["accepting"],
            "draining": readiness["draining"],
            "draining_since": manager.draining_since,
            "backends": readiness["backends"],
            "streams": len(manager),
            "users": manager.index.users(),
            "events_in_per_second": round(events_in, 2),
            "events_out_per_second": round(events_out, 2),
            "events_in": readings.events_in,
            "deliveries": manager.traffic.deliveries,
            "latency_p50_ms": p50,
            "latency_p99_ms": p99,
            "slow_consumer_closes": manager.stats.closed.get(CloseReason.SLOW_CONSUMER, 0),
            "source_lag": readings.source_lag,
        }

    def streams_of(self, user_id: str) -> list[dict[str, Any]]:
        return [_stream(self.node, conn) for conn in self._users_streams(user_id)]

    def disconnect_here(self, user_id: str, by: str) -> int:
        """Close this node's streams of ``user_id`` with ``connection.closing`` (reason
        ``disconnected``, a jittered ``retry:``); how many."""
        conns = self._users_streams(user_id)
        for conn in conns:
            self._manager.send_away(conn, CloseReason.DISCONNECTED)
        if conns:
            log.warning("admin_action", action="disconnect", by=by, user_id=user_id, streams=len(conns))
        return len(conns)

    def drain_here(self, window_seconds: float | None, by: str) -> dict[str, Any]:
        window = self._drain(window_seconds)
        log.warning("admin_action", action="drain", by=by, node=self.node, window_s=window)
        since = self._manager.draining_since
        return {
            "node": self.node,
            "draining": True,
            "since": since,
            "streams": len(self._manager),
            "window_seconds": window,
        }

    def _users_streams(self, user_id: str) -> list[Connection]:
        found = self._manager.index.by_user.get(user_id)
        return sorted(found, key=lambda c: c.opened_at) if found else []

    # --- the whole cluster

    async def nodes(self) -> list[dict[str, Any]]:
        others = await self._control.gather({"op": "admin.node"}, GATHER_SECONDS)
        return sorted([self.node_summary(), *others], key=lambda n: str(n.get("node")))

    async def user_streams(self, user_id: str) -> list[dict[str, Any]]:
        others = await self._control.gather({"op": "admin.streams", "user": user_id}, GATHER_SECONDS)
        streams = self.streams_of(user_id)
        for answer in others:
            streams.extend(answer.get("streams", []))
        return sorted(streams, key=lambda s: (s["since"], s["node"]))

    async def disconnect(self, user_id: str, by: str) -> dict[str, int]:
        """Close ``user_id``'s streams on every node; how many on each node that had some."""
        log.warning("admin_action", action="disconnect_requested", by=by, user_id=user_id)
        answers = await self._control.gather(
            {"op": "admin.disconnect", "user": user_id, "by": by}, GATHER_SECONDS
        )
        closed = {self.node: self.disconnect_here(user_id, by)}
        for answer in answers:
            closed[str(answer.get("node"))] = int(answer.get("closed", 0))
        return {node: n for node, n in closed.items() if n}

    async def drain_node(self, node: str, window_seconds: float | None, by: str) -> dict[str, Any]:
        """Drain ``node`` (this one, or another through the control channel)."""
        if node == self.node:
            return self.drain_here(window_seconds, by)
        log.warning("admin_action", action="drain_requested", by=by, node=node)
        answer = await self._control.ask(
            {"op": "admin.drain", "node": node, "window": window_seconds, "by": by}, GATHER_SECONDS
        )
        if answer is None:
            raise NodeNotFound(f"no node {node!r} answered", node=node)
        return answer

    async def channels(self, top: int) -> tuple[float, list[dict[str, Any]]]:
        """The ``top`` channels by deliveries over the window, summed over the nodes' own top lists."""
        answers = await self._control.gather({"op": "admin.channels", "top": top * 2}, GATHER_SECONDS)
        totals: dict[str, list[int]] = {}
        for answer in [self._channels_here(top * 2), *answers]:
            for channel, events, deliveries in answer.get("channels", []):
                entry = totals.setdefault(str(channel), [0, 0, 0])
                entry[0] += int(events)
                entry[1] += int(deliveries)
                entry[2] += 1
        ranked = sorted(totals.items(), key=lambda item: (-item[1][1], -item[1][0], item[0]))[:top]
        rows = [
            {"channel": channel, "events": events, "deliveries": deliveries, "nodes": nodes}
            for channel, (events, deliveries, nodes) in ranked
        ]
        return self._manager.traffic.window_seconds, rows

    def _channels_here(self, top: int) -> dict[str, Any]:
        return {"node": self.node, "channels": [list(row) for row in self._manager.traffic.top(top)]}

    async def user_events(self, user_id: str, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` events still in the log on the channels ``user_id``'s open
        streams receive (their user channel and resources; not ``global``), newest first."""
        streams = await self.user_streams(user_id)
        channels = {f"{USER}:{user_id}"}
        for stream in streams:
            channels.update(stream["subscriptions"])
        records = await self._window(channels)
        newest = [r for r in records if channel_of(r.message) in channels][-limit:]
        return [
            {
                "id": str(r.cursor),
                "event": r.message.event,
                "channel": channel_of(r.message),
                "at": r.cursor.ms / 1000.0,
            }
            for r in reversed(newest)
        ]

    async def _window(self, channels: set[str]) -> Sequence[Any]:
        """Every record the log still holds on ``channels``: replayed from its floor."""
        after = Cursor(0, 0)
        for _ in range(3):
            replay = await self._bus.replay(after, channels)  # BusUnavailable: the caller's 503
            if replay.exact:
                return replay.records
            if replay.floor is None or replay.floor == after:
                return []
            after = replay.floor
        return []

    # --- what the other nodes ask

    async def on_command(self, command: Command) -> Answer | None:
        op = command.get("op")
        if op == "admin.node":
            return self.node_summary()
        if op == "admin.streams":
            return {"node": self.node, "streams": self.streams_of(str(command.get("user")))}
        if op == "admin.channels":
            return self._channels_here(int(command.get("top", 10)))
        if op == "admin.disconnect":
            closed = self.disconnect_here(str(command.get("user")), str(command.get("by")))
            return {"node": self.node, "closed": closed}
        if op == "admin.drain" and command.get("node") == self.node:
            window = command.get("window")
            return self.drain_here(float(window) if window else None, str(command.get("by")))
        return None


def _stream(node: str, conn: Connection) -> dict[str, Any]:
    return {
        "node": node,
        "connection_id": conn.id,
        "since": conn.opened_at,
        "subscriptions": sorted(conn.subscriptions),
        "last_event_id": str(conn.last_cursor) if conn.last_cursor is not None else None,
        "events_sent": conn.events_sent,
        "state": "replaying" if conn.state is State.REPLAYING else "live",
        "expires_at": conn.expires_at,
    }


def _quantile_ms(counts: Sequence[int], q: float) -> float | None:
    """The upper bound (ms) of the latency bucket holding quantile ``q``; ``None`` without events."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    running = 0
    for index, n in enumerate(counts):
        running += n
        if running >= rank and n:
            bound = LATENCY_BOUNDS[min(index, len(LATENCY_BOUNDS) - 1)]
            return round(bound * 1000.0, 3)
    return round(LATENCY_BOUNDS[-1] * 1000.0, 3)
