"""The arithmetic of docs/scaling.md (bench/scaling_model.py): load, read cost, sizing."""

from __future__ import annotations

import dataclasses

import pytest
from bench.scaling_model import (
    Coefficients,
    Mix,
    ShardCosts,
    load,
    read_us_at,
    shards_needed,
    size,
    size_sharded,
)

K = Coefficients(
    nodes=4,
    connections=60_000,
    rss_kib_per_conn=3.5,
    base_rss_mib=92.0,
    kernel_kib_per_conn=3.5,
    redis_bytes_per_conn=530.0,
    redis_calls_per_connect=6.0,
    idle_us_per_conn_s=1.8,
    redis_idle_us_per_conn_s=1.2,
    read_us=240.0,
    read_entry_us=10.0,
    read_call_us=300.0,
    read_top_rate=5000.0,
    read_calls_per_s_top=150.0,
    ingest_us=700.0,
    deliver_us=10.0,
    redis_append_us=13.0,
    redis_read_us_per_reader=1.0,
    redis_calls_per_event={"evalsha": 1.0},
    bytes_in_per_event=330.0,
    bytes_out_per_event_per_reader=250.0,
    log_bytes_per_event=150.0,
    broadcast_p99_ms=None,
    mix_p99_ms=None,
)


@pytest.mark.parametrize(
    ("connections", "mix", "events", "deliveries"),
    [
        (1000, Mix(0.05, 0.01, 3.0, 0.0), 60.0, 80.0),
        (1000, Mix(0.0, 0.0, 3.0, 1.0), 1.0, 1000.0),
        (100_000, Mix(), 6000 + 1 / 60, 100_000 * (0.05 + 0.03 + 1 / 60)),
    ],
)
def test_load(connections: int, mix: Mix, events: float, deliveries: float) -> None:
    e, g, d = load(connections, mix)
    assert (e, d) == (pytest.approx(events), pytest.approx(deliveries))
    assert g == mix.broadcasts


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (50.0, 10.0 + 300.0),  # slower than the XREADs measured: one XREAD per event
        (150.0, 10.0 + 300.0),
        (1500.0, 10.0 + 300.0 * 0.1),  # faster: batches of 10
        (60_000.0, 10.0 + 300.0 * 150 / 60_000),
    ],
)
def test_read_cost_per_event_falls_as_batches_grow(rate: float, expected: float) -> None:
    assert read_us_at(K, rate) == pytest.approx(expected)


def test_a_log_every_process_must_read_in_full_stops_scaling() -> None:
    one_log = size(1_000_000, Mix(), K)
    assert not one_log.feasible
    assert "every process reads" in one_log.limit
    shards = shards_needed(1_000_000, Mix(), K)
    sharded = size(1_000_000, Mix(), K, shards=shards)
    assert sharded.feasible
    assert sharded.read_cores_per_process <= 0.25 * 0.6
    assert shards > 1


def test_processes_follow_cpu_or_connections_whichever_needs_more() -> None:
    cpu_bound = size(100_000, Mix(), K)
    assert cpu_bound.limit == "CPU"
    idle_mix = Mix(0.0, 0.0, 1.0, 0.0)
    conn_bound = size(100_000, idle_mix, K, max_conns_per_process=5_000)
    assert (conn_bound.processes, conn_bound.limit) == (20, "connections per process")
    assert conn_bound.machines == 3  # 8 cores each


def test_more_readers_cost_redis_more() -> None:
    cheap = dataclasses.replace(K, redis_read_us_per_reader=0.0)
    assert size(100_000, Mix(), cheap).redis_cores_per_shard < size(100_000, Mix(), K).redis_cores_per_shard


S = ShardCosts(
    source="test", receive_us=110.0, redis_us_per_event=100.0, ingest_single_us=140.0, ingest_batch_us=20.0
)


def test_on_the_sharded_bus_a_process_costs_what_its_own_streams_receive() -> None:
    """No fixed per-process read term: ten times the users is ten times the processes,
    each receiving the same."""
    small = size_sharded(100_000, Mix(), K, S, max_conns_per_process=10**9)
    large = size_sharded(1_000_000, Mix(), K, S, max_conns_per_process=10**9)
    assert 10 * (small.processes - 1) < large.processes <= 10 * small.processes  # rounded up
    for term in ("cores_deliver", "cores_idle", "cores_ingest"):
        assert getattr(large, term) == pytest.approx(10 * getattr(small, term), rel=1e-3)
    assert large.received_per_process == pytest.approx(
        small.received_per_process * small.processes / large.processes * 10, rel=1e-3
    )
    # 100,000 users × 0.08 receptions/s each, at 100 µs beyond the delivery.
    assert small.cores_receive == pytest.approx((100_000 * 0.08 + small.processes / 60) * 100e-6)


def test_batches_cut_only_the_ingest_term() -> None:
    single = size_sharded(1_000_000, Mix(), K, S)
    batched = size_sharded(1_000_000, Mix(), K, S, batched=True)
    assert batched.cores_ingest == pytest.approx(single.cores_ingest / 7)
    assert (batched.cores_receive, batched.cores_deliver) == (single.cores_receive, single.cores_deliver)


def test_shards_follow_redis_cpu_per_event() -> None:
    z = size_sharded(1_000_000, Mix(), K, S)
    redis_cores = (60_000 + 1 / 60) * 100e-6 + 1_000_000 * 1.2e-6
    assert z.shards == -(-redis_cores // 0.6)
    assert z.redis_cores_per_shard <= 0.6
    assert z.redis_cores_per_shard == pytest.approx(redis_cores / z.shards)


def test_connections_per_process_cap_the_processes_when_cpu_does_not() -> None:
    z = size_sharded(1_000_000, Mix(), K, S, max_conns_per_process=20_000)
    assert (z.processes, z.limit) == (50, "connections per process")
