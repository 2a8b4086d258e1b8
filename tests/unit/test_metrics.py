"""The metrics exposition: plain histograms and the collector's families."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from herald.obs.metrics import Histogram, Readings, exposition, registry_for


def test_a_histogram_counts_into_upper_inclusive_buckets() -> None:
    histogram = Histogram((0.01, 0.1, 1.0))
    for value in (0.005, 0.01, 0.05, 0.1, 0.5, 2.0, 30.0):
        histogram.observe(value)
    assert histogram.counts == [2, 2, 1, 2]
    assert histogram.cumulative() == [("0.01", 2), ("0.1", 4), ("1", 5), ("+Inf", 7)]
    assert histogram.count == 7
    assert histogram.sum == 0.005 + 0.01 + 0.05 + 0.1 + 0.5 + 2.0 + 30.0


def test_the_collector_exposes_readings_with_bounded_labels() -> None:
    latency = Histogram((0.01, 0.1))
    latency.observe(0.05)
    readings = Readings(
        connections=3,
        closed={"slow_consumer": 2, "client_gone": 5},
        refused={"RATE_LIMIT_EXCEEDED": 1},
        events_in={"http": 7},
        dropped=[4, 0, 0],
        coalesced=[0, 6, 0],
        replay_hits=1,
        replay_misses={"stale": 2},
        replay_reads={"tail": 199, "redis": 1},
        write_latency=latency,
        sources={"kafka": {"received": 9, "published": 8, "lag": 3, "partitions": 2}},
        source_lag={"kafka": 3.0},
        backends={"bus:memory": True},
    )
    text = exposition(registry_for(lambda: readings)).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in families.values()
        for sample in family.samples
    }
    assert samples[("herald_connections", ())] == 3
    assert samples[("herald_slow_consumer_closes_total", ())] == 2
    assert samples[("herald_connections_closed_total", (("reason", "client_gone"),))] == 5
    assert samples[("herald_events_dropped_total", (("priority", "low"),))] == 4
    assert samples[("herald_events_coalesced_total", (("priority", "normal"),))] == 6
    assert samples[("herald_replays_total", (("outcome", "stale"),))] == 2
    assert samples[("herald_replays_total", (("outcome", "malformed"),))] == 0
    assert samples[("herald_publish_to_write_seconds_bucket", (("le", "0.1"),))] == 1
    assert samples[("herald_replay_channel_reads_total", (("source", "tail"),))] == 199
    assert samples[("herald_source_messages_total", (("outcome", "published"), ("source", "kafka")))] == 8
    # a source's other numbers are not counters of messages
    assert ("herald_source_messages_total", (("outcome", "lag"), ("source", "kafka"))) not in samples
    assert samples[("herald_source_lag", (("source", "kafka"),))] == 3
    assert samples[("herald_backend_up", (("backend", "bus:memory"),))] == 1
    labels = {name for f in families.values() for s in f.samples for name in s.labels}
    assert labels <= {"reason", "code", "source", "priority", "outcome", "backend", "le"}


async def test_the_registry_counts_the_loops_tasks_and_the_processs_memory_and_files() -> None:
    """The soak (docs/reliability.md) watches these level off: a leak of tasks, memory or
    sockets per connection shows in them."""

    def scrape() -> dict[str, float]:
        text = exposition(registry_for(Readings)).decode()
        return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples}

    import asyncio

    before = scrape()
    assert before["process_resident_memory_bytes"] > 0
    assert before["process_open_fds"] > 0
    blocker = asyncio.Event()
    extra = [asyncio.create_task(blocker.wait()) for _ in range(5)]
    assert scrape()["herald_asyncio_tasks"] == before["herald_asyncio_tasks"] + 5
    blocker.set()
    await asyncio.gather(*extra)
