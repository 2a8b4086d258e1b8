"""What a node says about itself: ``health()`` for people (what it holds, how its
parts are doing), ``readiness()`` for load balancers (whether to send it new
streams), and ``readings()``, the numbers a metrics scrape turns into Prometheus
families (D19). It only reads the other parts' state and counters."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from herald.bus.base import EventBus
from herald.bus.sharded import ShardedBus
from herald.cluster.control import NodeControl
from herald.config import Settings
from herald.gateway.admission import Admission
from herald.gateway.canary import CanaryWatcher
from herald.gateway.publishing import Publishing
from herald.gateway.subscriptions import LiveSubscriptions
from herald.manager.manager import ConnectionManager
from herald.obs.metrics import Readings
from herald.sources.incoming import Source


class NodeHealth:
    def __init__(
        self,
        settings: Settings,
        bus: EventBus,
        manager: ConnectionManager,
        control: NodeControl,
        sources: Sequence[Source],
        publishing: Publishing,
        admission: Admission,
        live_subscriptions: LiveSubscriptions,
        canaries: CanaryWatcher | None = None,
    ) -> None:
        self._settings = settings
        self._bus = bus
        self._manager = manager
        self._control = control
        self._sources = sources
        self._publishing = publishing
        self._admission = admission
        self._live_subscriptions = live_subscriptions
        self._canaries = canaries

    def health(self) -> dict[str, Any]:
        healthy = self._bus.healthy()
        throttle = self._publishing.throttle
        return {
            "status": "ok" if healthy else "degraded",
            "connections": len(self._manager),
            "users": self._manager.index.users(),
            "position": str(self._manager.position),
            "bus": {"backend": self._settings.bus, "healthy": healthy},
            "accepting": self._manager.accepting,
            "sources": {source.name: source.stats.as_dict() for source in self._sources},
            "throttle": {**throttle.stats.as_dict(), "holding": throttle.holding()},
        }

    def readiness(self) -> dict[str, Any]:
        """Whether this node should get new streams: accepting, and every configured
        backend answering. Liveness is only whether the process answers at all."""
        backends = self._backends_up()
        ready = self._manager.accepting and all(backends.values())
        return {
            "ready": ready,
            "accepting": self._manager.accepting,
            "draining": self._manager.draining_since is not None,
            "backends": backends,
        }

    def _backends_up(self) -> dict[str, bool]:
        backends = {f"bus:{self._settings.bus}": self._bus.healthy()}
        if self._settings.bus == "redis":
            backends["node_control"] = self._control.healthy()
            # Until read, streams are refused (a revoked token must not get in on a guess).
            backends["revocations"] = self._admission.revocations_healthy()
        for source in self._sources:
            up = _source_up(source)
            if up is not None:
                backends[f"source:{source.name}"] = up
        return backends

    def readings(self) -> Readings:
        """This node's numbers for a metrics scrape."""
        manager = self._manager
        stats = manager.stats
        lag: dict[str, float] = {}
        for source in self._sources:
            behind = getattr(source.stats, "lag", None)
            if isinstance(behind, int | float):
                lag[source.name] = float(behind)
        return Readings(
            connections=len(manager),
            users=manager.index.users(),
            backlogged=stats.backlogged,
            opened=stats.opened,
            closed=dict(stats.closed),
            refused=dict(self._admission.refused),
            events_in=dict(self._publishing.events_in),
            dispatched=stats.dispatched,
            delivered=manager.delivered(),
            dropped=list(stats.dropped_by_priority),
            coalesced=list(stats.coalesced_by_priority),
            replay_hits=stats.replay_hits,
            replay_misses=dict(stats.replay_miss_reasons),
            replay_sizes=stats.replay_sizes,
            retained_sent=stats.retained_sent,
            replay_reads=_replay_reads(self._bus),
            write_latency=stats.write_latency,
            subscriptions_added=stats.subscriptions_added,
            subscriptions_removed=stats.subscriptions_removed,
            subscriptions_refused=self._live_subscriptions.refused,
            sources={source.name: source.stats.as_dict() for source in self._sources},
            source_lag=lag,
            backends=self._backends_up(),
            accepting=manager.accepting,
            draining=manager.draining_since is not None,
            channels_followed=_channels_followed(self._bus),
            canaries=self._canaries.readings() if self._canaries is not None else {},
        )


def _replay_reads(bus: EventBus) -> dict[str, int]:
    """Where the Redis bus read its replays' channels from (nothing for the memory bus)."""
    if not isinstance(bus, ShardedBus):
        return {}
    return {"tail": bus.tails.hits, "redis": bus.replay_reads}


def _channels_followed(bus: EventBus) -> int:
    """How many channels the bus follows for this node (its ``interest``), when it counts."""
    interest = getattr(bus, "interest", None)
    return len(interest) if interest is not None else 0


def _source_up(source: object) -> bool | None:
    """Whether a source is connected, as it reports it: ``healthy()``, or the event it sets
    while connected (``subscribed``, ``listening``, ``ready``); ``None`` if it does not say."""
    healthy = getattr(source, "healthy", None)
    if callable(healthy):
        return bool(healthy())
    for name in ("subscribed", "listening", "ready"):
        flag = getattr(source, name, None)
        if isinstance(flag, asyncio.Event):
            return flag.is_set()
    return None
