"""The worker policy (src/herald/server/workers.py): how many, where the log lives, restarts."""

from __future__ import annotations

import pytest

from herald.config import Settings
from herald.server.workers import (
    MAX_RESTART_DELAY,
    STABLE_AFTER_SECONDS,
    WorkerPlan,
    WorkersRefused,
    fast_exits_after,
    plan_workers,
    private_port,
    restart_delay,
    worker_settings,
)


@pytest.mark.parametrize(
    ("requested", "cpus", "bus", "redis_server", "expected"),
    [
        # One worker is today's single process, whatever the bus.
        (1, 8, "memory", False, WorkerPlan(1)),
        (1, 8, "redis", True, WorkerPlan(1)),
        # The default is one per core; a single core is one worker.
        (0, 1, "memory", True, WorkerPlan(1)),
        (0, 4, "redis", False, WorkerPlan(4)),
        # With the memory bus, several workers share an embedded log.
        (0, 2, "memory", True, WorkerPlan(2, embedded_log=True)),
        (3, 2, "memory", True, WorkerPlan(3, embedded_log=True)),
        # With the Redis bus they share the configured Redis.
        (3, 2, "redis", True, WorkerPlan(3)),
    ],
)
def test_plan(requested: int, cpus: int, bus: str, redis_server: bool, expected: WorkerPlan) -> None:
    assert plan_workers(requested, cpus=cpus, bus=bus, redis_server_found=redis_server) == expected


def test_the_default_falls_back_to_one_worker_without_a_redis_server_and_says_why() -> None:
    plan = plan_workers(0, cpus=4, bus="memory", redis_server_found=False)
    assert plan.workers == 1
    assert not plan.embedded_log
    assert plan.note is not None
    assert "redis-server" in plan.note


def test_an_explicit_count_is_refused_without_a_redis_server_for_the_memory_bus() -> None:
    with pytest.raises(WorkersRefused, match="redis-server"):
        plan_workers(2, cpus=4, bus="memory", redis_server_found=False)


@pytest.mark.parametrize(
    ("fast_exits", "delay"),
    [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, MAX_RESTART_DELAY), (40, MAX_RESTART_DELAY)],
)
def test_restart_delay(fast_exits: int, delay: float) -> None:
    assert restart_delay(fast_exits) == delay


@pytest.mark.parametrize(
    ("previous", "ran", "after"),
    [(0, 0.2, 1), (3, STABLE_AFTER_SECONDS - 0.01, 4), (3, STABLE_AFTER_SECONDS, 0), (0, 3600.0, 0)],
)
def test_fast_exits_count_only_exits_soon_after_a_start(previous: int, ran: float, after: int) -> None:
    assert fast_exits_after(previous, ran) == after


@pytest.mark.parametrize(
    ("base", "worker", "port"), [(None, 1, None), (0, 3, 0), (9100, 1, 9100), (9100, 4, 9103)]
)
def test_private_port(base: int | None, worker: int, port: int | None) -> None:
    assert private_port(base, worker) == port


def test_private_ports_past_the_range_are_refused() -> None:
    with pytest.raises(WorkersRefused):
        private_port(65535, 2)


def settings(**values: object) -> Settings:
    return Settings.model_validate({"jwt_secret": "s" * 40, **values})


def test_workers_on_an_embedded_log_use_the_redis_bus_there() -> None:
    mine = worker_settings(settings(workers=4, port=0), port=8123, shared_log_url="unix:///tmp/x/redis.sock")
    assert (mine.port, mine.workers, mine.bus, mine.redis_url) == (
        8123,
        1,
        "redis",
        "unix:///tmp/x/redis.sock",
    )


def test_workers_on_the_redis_bus_keep_the_configured_redis() -> None:
    configured = settings(bus="redis", redis_url="redis://r:6379/2")
    mine = worker_settings(configured, port=8000, shared_log_url=None)
    assert (mine.bus, mine.redis_url, mine.workers) == ("redis", "redis://r:6379/2", 1)


def test_sources_and_lifecycle_events_keep_the_applications_redis_beside_an_embedded_log() -> None:
    configured = settings(redis_url="redis://app:6379/0", redis_pubsub_source=True, lifecycle_events="redis")
    mine = worker_settings(configured, port=8000, shared_log_url="unix:///tmp/x/redis.sock")
    assert mine.redis_url == "unix:///tmp/x/redis.sock"
    assert mine.redis_source_url == "redis://app:6379/0"
    assert mine.lifecycle_redis_url == "redis://app:6379/0"


def test_lifecycle_events_to_kafka_keep_their_presence_in_the_embedded_log() -> None:
    configured = settings(lifecycle_events="kafka", kafka_bootstrap="k:9092")
    mine = worker_settings(configured, port=8000, shared_log_url="unix:///tmp/x/redis.sock")
    assert mine.lifecycle_redis_url is None  # presence lives with the workers' shared state
