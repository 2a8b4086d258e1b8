"""Prometheus metrics, read at scrape time from plain counters.

The hot path (routing, delivery) bumps integers and :class:`Histogram`
buckets it owns; nothing there calls prometheus-client. A scrape asks the
gateway for a :class:`Readings` snapshot and :class:`HeraldCollector` turns
it into metric families. Labels take values from small fixed sets (close
reasons, priorities, error codes, source names): never a user or a
connection id, so the number of series does not grow with traffic.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PRIORITIES = ("low", "normal", "high")
#: What every source counts (``SourceStats``); sources' extra numbers stay in the health report.
SOURCE_OUTCOMES = ("received", "published", "duplicates", "rejected", "failed")


class Histogram:
    """Fixed buckets, plain counters: ``observe`` is a bisect and two additions."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus wants them, ending with ``+Inf``."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            running += n
            out.append((_le(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and bound >= 1 else repr(float(bound))


@dataclass(frozen=True)
class CanaryReading:
    """One source's canaries as this node saw them (docs/architecture.md, D32)."""

    latency: Histogram
    #: Seconds since the last canary of the source reached this node's bus.
    staleness: float
    observed: int = 0
    #: Canaries this node wrote into the source, and writes that failed.
    sent: int = 0
    send_failures: int = 0


@dataclass
class Readings:
    """What one node reports at a scrape."""

    connections: int = 0
    users: int = 0
    backlogged: int = 0
    opened: int = 0
    closed: Mapping[str, int] = field(default_factory=dict)
    refused: Mapping[str, int] = field(default_factory=dict)
    events_in: Mapping[str, int] = field(default_factory=dict)
    dispatched: int = 0
    delivered: int = 0
    dropped: Sequence[int] = (0, 0, 0)
    coalesced: Sequence[int] = (0, 0, 0)
    replay_hits: int = 0
    replay_misses: Mapping[str, int] = field(default_factory=dict)
    replay_sizes: Histogram | None = None
    #: Retained states written to streams that did not resume exactly (D33).
    retained_sent: int = 0
    #: The Redis bus: channel reads for replays, from a channel's tail or from Redis.
    replay_reads: Mapping[str, int] = field(default_factory=dict)
    write_latency: Histogram | None = None
    subscriptions_added: int = 0
    subscriptions_removed: int = 0
    subscriptions_refused: int = 0
    #: Per source: what it did with the messages it received (``SourceStats``).
    sources: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    #: Per source that knows it (Kafka): records it is behind its input.
    source_lag: Mapping[str, float] = field(default_factory=dict)
    #: Per configured backend (``bus``, ``connection_counts``, ``node_control``, sources): up or not.
    backends: Mapping[str, bool] = field(default_factory=dict)
    accepting: bool = True
    #: Whether the node is being drained (``herald drain``).
    draining: bool = False
    #: Bus channels this node's streams (and its canary watcher) follow.
    channels_followed: int = 0
    #: Per source carrying canaries (``HERALD_CANARY_INTERVAL_SECONDS``).
    canaries: Mapping[str, CanaryReading] = field(default_factory=dict)


class HeraldCollector(Collector):
    def __init__(self, read: Callable[[], Readings]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        r = self._read()
        yield _gauge("herald_connections", "Open streams on this node", r.connections)
        yield _gauge("herald_users", "Distinct users with an open stream on this node", r.users)
        yield _gauge(
            "herald_connections_backlogged",
            "Streams whose socket is past its high-water mark (events queue, coalesce, drop)",
            r.backlogged,
        )
        yield _gauge("herald_accepting", "1 while the node accepts new streams", int(r.accepting))
        yield _gauge("herald_draining", "1 while the node is being drained (herald drain)", int(r.draining))
        yield _gauge(
            "herald_bus_channels_followed",
            "Bus channels this node follows for its streams (and its canary watcher)",
            r.channels_followed,
        )
        yield _counter("herald_connections_opened", "Streams opened", r.opened)
        yield _labelled_counter("herald_connections_closed", "Streams closed, by reason", "reason", r.closed)
        yield _labelled_counter(
            "herald_connections_refused",
            "Stream requests refused at admission, by error code",
            "code",
            r.refused,
        )
        yield _counter(
            "herald_slow_consumer_closes",
            "Streams closed with error.slow-consumer",
            r.closed.get("slow_consumer", 0),
        )
        yield _labelled_counter(
            "herald_events_in",
            "Events appended to the bus through this node, by source",
            "source",
            r.events_in,
        )
        yield _counter("herald_events_dispatched", "Bus records routed by this node", r.dispatched)
        yield _counter(
            "herald_events_out", "Events written to streams (deliveries, replays included)", r.delivered
        )
        yield _labelled_counter(
            "herald_events_dropped",
            "Events shed from backlogged streams, by priority",
            "priority",
            dict(zip(PRIORITIES, r.dropped, strict=True)),
        )
        yield _labelled_counter(
            "herald_events_coalesced",
            "Queued events replaced by a newer one with the same coalesce key, by priority",
            "priority",
            dict(zip(PRIORITIES, r.coalesced, strict=True)),
        )
        replays = CounterMetricFamily(
            "herald_replays", "Streams opened with a Last-Event-ID, by outcome", labels=["outcome"]
        )
        replays.add_metric(["hit"], r.replay_hits)
        for reason in ("stale", "malformed"):
            replays.add_metric([reason], r.replay_misses.get(reason, 0))
        yield replays
        if r.replay_sizes is not None:
            yield _histogram("herald_replay_events", "Events written by each exact replay", r.replay_sizes)
        yield _counter(
            "herald_retained_events",
            "Retained states written to streams that did not resume exactly (D33)",
            r.retained_sent,
        )
        if r.replay_reads:
            yield _labelled_counter(
                "herald_replay_channel_reads",
                "Channels read for replays on the Redis bus, by where from (tail: this node's memory)",
                "source",
                r.replay_reads,
            )
        if r.write_latency is not None:
            yield _histogram(
                "herald_publish_to_write_seconds",
                "From an event's append to the bus (its cursor's clock) to its write to the sockets",
                r.write_latency,
            )
        subs = CounterMetricFamily(
            "herald_subscription_changes", "Resource keys changed on live streams", labels=["outcome"]
        )
        subs.add_metric(["added"], r.subscriptions_added)
        subs.add_metric(["removed"], r.subscriptions_removed)
        subs.add_metric(["refused"], r.subscriptions_refused)
        yield subs
        messages = CounterMetricFamily(
            "herald_source_messages",
            "What each source did with what it received",
            labels=["source", "outcome"],
        )
        for source, outcomes in sorted(r.sources.items()):
            for outcome in SOURCE_OUTCOMES:
                messages.add_metric([source, outcome], outcomes.get(outcome, 0))
        yield messages
        lag = GaugeMetricFamily(
            "herald_source_lag",
            "Records a source is behind its input (high watermark minus handled), where it can tell",
            labels=["source"],
        )
        for source, seconds in sorted(r.source_lag.items()):
            lag.add_metric([source], seconds)
        yield lag
        up = GaugeMetricFamily("herald_backend_up", "1 when a configured backend answers", labels=["backend"])
        for backend, healthy in sorted(r.backends.items()):
            up.add_metric([backend], int(healthy))
        yield up
        yield from _canary_families(r.canaries)


def _canary_families(canaries: Mapping[str, CanaryReading]) -> Iterator[Metric]:
    """Always present (empty while canaries are off), so dashboards and alerts name them."""
    latency = HistogramMetricFamily(
        "herald_canary_latency_seconds",
        "From a canary's send (its sender's clock) to its arrival on this node's bus, by source",
        labels=["source"],
    )
    staleness = GaugeMetricFamily(
        "herald_canary_staleness_seconds",
        "Seconds since the last canary of a source reached this node's bus",
        labels=["source"],
    )
    sent = CounterMetricFamily(
        "herald_canary_sent", "Canaries this node wrote into a source", labels=["source"]
    )
    failures = CounterMetricFamily(
        "herald_canary_send_failures", "Canaries this node failed to write into a source", labels=["source"]
    )
    observed = CounterMetricFamily(
        "herald_canary_observed", "Canaries (of any node) that reached this node's bus", labels=["source"]
    )
    for source, reading in sorted(canaries.items()):
        latency.add_metric([source], reading.latency.cumulative(), sum_value=reading.latency.sum)
        staleness.add_metric([source], reading.staleness)
        sent.add_metric([source], reading.sent)
        failures.add_metric([source], reading.send_failures)
        observed.add_metric([source], reading.observed)
    yield from (latency, staleness, sent, failures, observed)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _labelled_counter(name: str, doc: str, label: str, values: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for value, n in sorted(values.items()):
        family.add_metric([value], n)
    return family


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], histogram.cumulative(), sum_value=histogram.sum)
    return family


class RuntimeCollector(Collector):
    """The event loop's tasks: a number that must level off under steady traffic (a task
    leaked per connection or per request shows here first; docs/reliability.md)."""

    def collect(self) -> Iterator[Metric]:
        try:
            tasks = len(asyncio.all_tasks())
        except RuntimeError:  # scraped from outside the loop (a thread): nothing to count
            return
        yield _gauge("herald_asyncio_tasks", "asyncio tasks alive in the node's event loop", tasks)


def registry_for(read: Callable[[], Readings]) -> CollectorRegistry:
    """A registry of its own (not the process-global one), so several gateways in one
    process (tests, embedding) never collide. It also carries the process's own numbers
    (``process_resident_memory_bytes``, ``process_open_fds``, CPU seconds) and the event
    loop's task count."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HeraldCollector(read))
    registry.register(RuntimeCollector())
    ProcessCollector(registry=registry)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
