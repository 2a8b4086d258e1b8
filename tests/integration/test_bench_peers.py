"""The peer benchmark's harness end to end against real Herald processes on both engines
(a real redis-server): the numbers it reports are only as good as what it counts. Centrifugo
is left out here (building it takes minutes); its frames are read in tests/unit/test_bench_peers.py."""

from __future__ import annotations

from typing import Any

import pytest
from bench.common import stop_all
from bench.peers.plan import PeerPlan
from bench.peers.run import run_all
from bench.peers.variants import Servers
from bench.redis_server import RedisServer

N = 60


def tiny_plan() -> PeerPlan:
    plan = PeerPlan.quick()
    plan.n = N
    plan.engines = ["memory", "redis"]
    plan.cores = [1]
    plan.targeted_rates = [100]
    plan.scenarios = ["targeted", "publish", "restart"]
    plan.stage_seconds = 1.0
    plan.drain_seconds = 5.0
    plan.publish_events = 200
    plan.batch_events = 200
    plan.restart_events = 20
    plan.loadgen = 1
    plan.publishers = 1
    return plan


@pytest.fixture(scope="module")
def results() -> list[dict[str, Any]]:
    import asyncio

    redis = RedisServer().start()
    try:
        return asyncio.run(run_all(tiny_plan(), Servers(None, redis), ["herald"], redis))
    finally:
        stop_all()
        redis.stop()


def by_engine(results: list[dict[str, Any]], engine: str) -> dict[str, Any]:
    (found,) = [r for r in results if r["engine"] == engine]
    assert not found.get("error"), found
    return found


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_every_targeted_event_reaches_its_one_stream(results: list[dict[str, Any]], engine: str) -> None:
    r = by_engine(results, engine)
    assert r["connected"] == N
    (stage,) = r["targeted"]
    assert stage["ok"], stage["reason"]
    assert stage["wanted"] == stage["published"] == 100
    assert stage["delivered"] == stage["wanted"]
    assert stage["server_cpu_us_per_event"] > 0


@pytest.mark.timeout(300)
@pytest.mark.parametrize("engine", ["memory", "redis"])
def test_publish_cost_counts_every_accepted_event(results: list[dict[str, Any]], engine: str) -> None:
    publish = by_engine(results, engine)["publish"]
    assert publish["single"]["accepted"] == 200
    assert publish["single"]["errors"] == 0
    assert publish["single"]["in_flight"] == 8
    batch = publish["batch"]
    # Herald's batch endpoint is issue 12's; until then the bench says it is missing.
    assert batch["supported"] is False or batch["accepted"] == batch["events"]
    if engine == "redis":
        assert publish["single"]["redis_cpu_us_per_event"] > 0


@pytest.mark.timeout(300)
def test_after_a_restart_on_the_redis_bus_every_stream_gets_exactly_what_it_missed(
    results: list[dict[str, Any]],
) -> None:
    restart = by_engine(results, "redis")["restart"]
    assert restart["missed_events"] == 20
    assert restart["reconnected"] == N
    assert restart["exact"] == N
    assert restart["received_before_range"] == 0
    assert restart["told_recovered"] == N


@pytest.mark.timeout(300)
def test_after_a_restart_on_the_memory_bus_herald_says_it_could_not_recover(
    results: list[dict[str, Any]],
) -> None:
    restart = by_engine(results, "memory")["restart"]
    assert restart["reconnected"] == N
    assert restart["told_not_recovered"] == N
    assert restart["exact"] == 0
    assert restart["received_before_range"] == 0
