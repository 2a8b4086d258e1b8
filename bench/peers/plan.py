"""How much of each scenario a peer run does: ``quick`` (minutes) or ``full`` (``make bench-peers``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PeerPlan:
    n: int
    rounds: int
    cores: list[int]
    engines: list[str]
    broadcast_rates: list[float]
    targeted_rates: list[float]
    mix_rates: list[float]
    stage_seconds: float
    drain_seconds: float
    #: Publish cost: this many events to users with no stream, closed loop ...
    publish_events: int = 5000
    #: ... with this many requests in flight (over all publishing processes).
    publish_in_flight: int = 8
    batch_size: int = 100
    batch_events: int = 20_000
    #: The restart: events published while the streams are away.
    restart_events: int = 100
    #: Load-generator processes holding the streams, and processes publishing.
    loadgen: int = 2
    publishers: int = 2
    #: Connections per publishing process during the rate stages.
    publisher_connections: int = 8
    connect_concurrency: int = 256
    p99_limit_ms: float = 1000.0
    min_delivered_fraction: float = 0.99
    #: No stage asks more of the load generator than this.
    max_deliveries_per_s: float = 1_000_000
    scenarios: list[str] = field(
        default_factory=lambda: ["broadcast", "targeted", "mix", "publish", "restart"]
    )

    @classmethod
    def quick(cls) -> PeerPlan:
        return cls(
            n=2000,
            rounds=1,
            cores=[1],
            engines=["memory", "redis"],
            broadcast_rates=[10, 50, 100, 200],
            targeted_rates=[250, 500, 1000, 2000, 4000, 6000, 8000],
            mix_rates=[100, 250, 500],
            stage_seconds=3.0,
            drain_seconds=3.0,
            batch_events=10_000,
        )

    @classmethod
    def full(cls) -> PeerPlan:
        return cls(
            n=10_000,
            rounds=2,
            cores=[1, 2],
            engines=["memory", "redis"],
            broadcast_rates=[1, 5, 10, 20, 35, 50, 75, 100],
            targeted_rates=[250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000],
            mix_rates=[100, 250, 500, 1000],
            stage_seconds=6.0,
            drain_seconds=4.0,
        )
