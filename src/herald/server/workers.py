"""Worker processes: how many, where their shared state lives, when a dead one comes back.

Pure policy, no I/O: :mod:`herald.server.supervisor` acts on these answers.

Several workers are several nodes on one machine. Everything nodes share
(the log, stream-token leases, per-user counts, commands between nodes)
must then live outside any one worker: in the configured Redis with
``bus = "redis"``, and otherwise in a private ``redis-server`` Herald starts
for the purpose (an *embedded shared log*), so that a client resumes
exactly on any worker (docs/architecture.md, D21).
"""

from __future__ import annotations

from dataclasses import dataclass

from herald.config import Settings

#: A worker that exits sooner than this after it started counts as a fast exit.
STABLE_AFTER_SECONDS = 10.0
#: Delay before restarting a worker after its first fast exit; doubles for each one after.
FIRST_RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0


class WorkersRefused(ValueError):
    """More than one worker was asked for, and they could not share a log."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    workers: int
    #: Start a private redis-server for the log and the workers' shared state.
    embedded_log: bool = False
    #: Why fewer workers run than one per core (logged, as information: one process is the
    #: embedded default's whole deployment).
    note: str | None = None


def plan_workers(requested: int, *, cpus: int, bus: str, redis_server_found: bool) -> WorkerPlan:
    """``requested`` 0 means one per core.

    With the Redis bus the workers share it like any nodes. With the memory
    bus and more than one worker they share an embedded log; without a
    ``redis-server`` binary there is none: the default falls back to one
    worker (with a note), an explicit count is refused.
    """
    count = requested or max(1, cpus)
    if count == 1:
        return WorkerPlan(1)
    if bus == "redis":
        return WorkerPlan(count)
    if redis_server_found:
        return WorkerPlan(count, embedded_log=True)
    if requested == 0:
        return WorkerPlan(
            1,
            note=(
                f"one worker instead of {count}: the memory bus shares its log between workers through "
                "a private redis-server, and none was found (set HERALD_EMBEDDED_REDIS_SERVER, or "
                "HERALD_BUS=redis)"
            ),
        )
    raise WorkersRefused(
        f"--workers {count} with the memory bus needs redis-server for the workers' shared log, and "
        "none was found: install it (Debian: redis-server), set HERALD_EMBEDDED_REDIS_SERVER, use "
        "HERALD_BUS=redis, or run --workers 1"
    )


def worker_settings(settings: Settings, *, port: int, shared_log_url: str | None) -> Settings:
    """What one worker runs with: the supervisor's settings on the reserved ``port``, as a
    single process, and, with an embedded log, the Redis bus at ``shared_log_url``."""
    update: dict[str, object] = {"port": port, "workers": 1}
    if shared_log_url is not None:
        update["bus"] = "redis"
        update["redis_url"] = shared_log_url
        if (settings.redis_pubsub_source or settings.redis_stream_source) and not settings.redis_source_url:
            # The Redis sources keep reading the Redis the application writes to.
            update["redis_source_url"] = settings.redis_url
        if settings.lifecycle_events == "redis" and not settings.lifecycle_redis_url:
            # Lifecycle events go to the application's Redis, not the private one.
            update["lifecycle_redis_url"] = settings.redis_url
    return settings.model_copy(update=update)


def restart_delay(fast_exits: int) -> float:
    """Seconds before restarting a worker that exited: none after a worker that ran a
    while; growing for a worker that keeps dying soon after it starts (a crash loop
    must not burn the machine)."""
    if fast_exits <= 0:
        return 0.0
    return float(min(MAX_RESTART_DELAY, FIRST_RESTART_DELAY * 2 ** (fast_exits - 1)))


def fast_exits_after(previous: int, ran_seconds: float) -> int:
    """The count of fast exits in a row, after a worker that ran ``ran_seconds`` exited."""
    return previous + 1 if ran_seconds < STABLE_AFTER_SECONDS else 0


def private_port(base: int | None, worker: int) -> int | None:
    """Where worker ``worker`` (1-based) listens alone: ``None`` (nowhere), 0 (a free port)
    or ``base + worker - 1``."""
    if base is None:
        return None
    if base == 0:
        return 0
    port = base + worker - 1
    if port > 65535:
        raise WorkersRefused(f"worker {worker}'s own port {port} is past 65535 (worker_port_base {base})")
    return port
