"""The scenarios, run against one server at one N, in one fresh server process:

connection rate (opening N streams, JWT verified) → idle memory (RSS per
connection) → broadcast at rising rates → targeted user-scope events (1 % of
the connections receive each) → a reconnect storm.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import STREAM_PATH, USER_GROUPS, ServerProcess, cpu_seconds, log, mint, user_of
from bench.loadgen.pool import Merged, WorkerPool
from bench.loadgen.publisher import Publisher

HOST = "127.0.0.1"


@dataclass
class Plan:
    ns: list[int]
    rates: list[float]
    stage_seconds: float
    drain_seconds: float
    targeted_rate: float
    storm_events: int
    connect_concurrency: int
    workers: int
    #: Each (N, server) is run this many times, servers interleaved; the report takes medians.
    repeat: int = 1
    #: A stage fails when its p99 passes this, or deliveries fall short.
    p99_limit_ms: float = 1000.0
    min_delivered_fraction: float = 0.99
    #: Hard ceiling on deliveries/s asked of a stage (the load generator's own bound).
    max_deliveries_per_s: float = 1_500_000

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            ns=[1000, 2000],
            rates=[1, 10, 50, 100, 200],
            stage_seconds=3.0,
            drain_seconds=3.0,
            targeted_rate=100,
            storm_events=5,
            connect_concurrency=256,
            workers=2,
        )

    @classmethod
    def full(cls) -> Plan:
        return cls(
            ns=[1000, 5000, 10000],
            rates=[1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200],
            stage_seconds=6.0,
            drain_seconds=4.0,
            targeted_rate=200,
            storm_events=10,
            connect_concurrency=256,
            workers=2,
        )

    @classmethod
    def from_args(
        cls,
        quick: bool,
        *,
        ns: list[int] | None = None,
        rates: str | None = None,
        stage_seconds: float | None = None,
        workers: int | None = None,
        repeat: int | None = None,
    ) -> Plan:
        """The quick or full plan with what the command line overrides."""
        plan = cls.quick() if quick else cls.full()
        if ns:
            plan.ns = list(ns)
        if rates:
            plan.rates = [float(r) for r in rates.split(",")]
        if stage_seconds:
            plan.stage_seconds = stage_seconds
        if workers:
            plan.workers = workers
        if repeat:
            plan.repeat = repeat
        return plan


@dataclass
class Stage:
    kind: str
    rate: float
    receivers_per_event: float
    wanted: int
    delivered: int
    deliveries_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float
    server_cpu_pct: float
    loadgen_cpu_pct: float
    coordinator_cpu_pct: float
    #: CPU the rest of the machine used during the stage (% of one core; 2 cores = 200 %).
    others_cpu_pct: float
    published: int
    publish_errors: int
    publish_max_lag_ms: float
    post_p50_ms: float
    held: int
    closed_unexpectedly: int
    ok: bool
    reason: str
    server_cpu_us_per_event: float = 0.0
    server_cpu_us_per_delivery: float = 0.0
    #: The stage's span on CLOCK_MONOTONIC, to attribute the server's collections to it.
    t0_ns: int = 0
    t1_ns: int = 0
    #: The server's garbage collections during the stage (``bench.gcwatch``).
    gc_full: int | None = None
    gc_listed_max_ms: float | None = None
    gc_total_ms: float | None = None


@dataclass
class RunResult:
    server: str
    n: int
    round: int = 0
    connected: int = 0
    connect_failed: int = 0
    connect_errors: dict[str, int] = field(default_factory=dict)
    connect_seconds: float = 0.0
    connect_rate: float = 0.0
    rss_before: int = 0
    rss_after: int = 0
    rss_per_conn_bytes: float = 0.0
    broadcast: list[Stage] = field(default_factory=list)
    nobody: Stage | None = None
    targeted: Stage | None = None
    storm: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    server_log_tail: list[str] = field(default_factory=list)
    #: Whole-run collection summary of the server: {generation: [count, total ms, max ms]}.
    gc: dict[str, list[float]] = field(default_factory=dict)

    def attribute_collections(self, events: list[tuple[int, int, int, int]] | None) -> None:
        """Count the server's collections (from ``bench.gcwatch``) into each stage."""
        if events is None:
            return
        for gen in (1, 2):
            mine = [e for e in events if e[1] == gen]
            self.gc[str(gen)] = [
                len(mine),
                round(sum(e[2] for e in mine) / 1e6, 1),
                round(max((e[2] for e in mine), default=0) / 1e6, 1),
            ]
        stages = [*self.broadcast, *(s for s in (self.nobody, self.targeted) if s is not None)]
        for stage in stages:
            inside = [e for e in events if stage.t0_ns <= e[0] <= stage.t1_ns]
            stage.gc_full = sum(1 for e in inside if e[1] == 2)
            stage.gc_listed_max_ms = max((e[2] for e in inside), default=0) / 1e6
            stage.gc_total_ms = sum(e[2] for e in inside) / 1e6

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class _CpuClock:
    """CPU seconds of the server, the load generator's workers and this process."""

    def __init__(self, server: ServerProcess, pool: WorkerPool) -> None:
        import psutil

        self.server = server
        self.pool = pool
        self.me = psutil.Process()
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        import psutil

        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        return (
            time.monotonic(),
            self.server.cpu_seconds(),
            self.pool.cpu_seconds(),
            cpu_seconds(self.me),
            busy,
        )

    def used(self) -> tuple[float, float, float, float]:
        """CPU seconds (server, load generator, coordinator, whole machine) since start."""
        now = self._read()
        return (
            now[1] - self.start[1],
            now[2] - self.start[2],
            now[3] - self.start[3],
            now[4] - self.start[4],
        )


async def run_one(server: ServerProcess, n: int, plan: Plan, pool: WorkerPool, round_: int = 0) -> RunResult:
    result = RunResult(server=server.name, n=n, round=round_)
    port = server.port
    publisher = Publisher(HOST, port, mint("bench-publisher", publisher=True))
    tokens = {f"u{g}": mint(f"u{g}") for g in range(USER_GROUPS)}
    try:
        await publisher.start()
        # Warm-up: first requests import and compile what the server loads lazily.
        await pool.connect(HOST, port, STREAM_PATH, [(u, tokens[u]) for u in list(tokens)[:20]], 20, 30)
        await publisher.run(20, 0.5, "global", lambda i: None)
        await pool.all("close", 30)
        await asyncio.sleep(1.5)
        result.rss_before = server.rss()

        # --- connection rate, then idle memory
        specs = [(user_of(i), tokens[user_of(i)]) for i in range(n)]
        t0 = time.monotonic()
        opened = await pool.connect(
            HOST, port, STREAM_PATH, specs, plan.connect_concurrency, time_limit=max(60.0, n / 50)
        )
        result.connect_seconds = time.monotonic() - t0
        result.connected = opened["ok"]
        result.connect_failed = opened["failed"]
        result.connect_errors = opened["errors"]
        result.connect_rate = result.connected / result.connect_seconds if result.connect_seconds else 0
        log(
            f"  {server.name} N={n}: {result.connected} streams in {result.connect_seconds:.2f}s "
            f"({result.connect_rate:.0f}/s), failed {result.connect_failed}"
        )
        await asyncio.sleep(3.0)
        result.rss_after = server.rss()
        if result.connected:
            result.rss_per_conn_bytes = (result.rss_after - result.rss_before) / result.connected
        log(
            f"  idle RSS {result.rss_before / 2**20:.1f} → {result.rss_after / 2**20:.1f} MiB: "
            f"{result.rss_per_conn_bytes / 1024:.2f} KiB/conn"
        )
        if not result.connected:
            result.error = "no connection could be opened"
            return result
        held = result.connected

        # --- broadcast at rising rates
        for rate in plan.rates:
            if rate * held > plan.max_deliveries_per_s:
                break
            stage = await _stage(
                server, pool, publisher, plan, "broadcast", rate, held, "global", lambda i: None
            )
            result.broadcast.append(stage)
            _log_stage(stage)
            if not server.alive():
                result.error = "server died"
                return result
            if not stage.ok:
                break
            await asyncio.sleep(1.0)
        await settle(pool, held)

        # --- targeted: a user with no connection (the fixed cost of an event), then 1 %
        per_user = held / USER_GROUPS
        result.nobody = await _stage(
            server, pool, publisher, plan, "nobody", plan.targeted_rate, 0, "user", lambda i: "nobody"
        )
        _log_stage(result.nobody)
        await asyncio.sleep(0.5)
        result.targeted = await _stage(
            server,
            pool,
            publisher,
            plan,
            "targeted",
            plan.targeted_rate,
            per_user,
            "user",
            lambda i: f"u{i % USER_GROUPS}",
        )
        _log_stage(result.targeted)
        await asyncio.sleep(0.5)

        # --- reconnect storm
        result.storm = await _storm(server, pool, publisher, plan, held)
        log(f"  storm: {result.storm}")
    except Exception as exc:  # one server's failure must not stop the others
        result.error = f"{type(exc).__name__}: {exc}"
        log(f"  {server.name} N={n} failed: {result.error}")
    finally:
        publisher.close()
        try:
            await pool.all("close", 60)
        except Exception as exc:
            log(f"  closing the load generator's connections failed: {exc}")
        result.server_log_tail = server.stderr_tail[-10:]
    return result


async def settle(pool: WorkerPool, held: int) -> None:
    """Wait (bounded) until deliveries stop arriving: a failed stage leaves a backlog."""
    before = (await pool.stats(hist=False)).delivered
    for _ in range(60):
        await asyncio.sleep(0.5)
        now = (await pool.stats(hist=False)).delivered
        if now == before:
            return
        before = now


async def _stage(
    server: ServerProcess,
    pool: WorkerPool,
    publisher: Publisher,
    plan: Plan,
    kind: str,
    rate: float,
    receivers: float,
    scope: str,
    key_of: Any,
) -> Stage:
    await pool.all("reset", 30)
    t0_ns = time.monotonic_ns()
    clock = _CpuClock(server, pool)
    pub = await publisher.run(rate, plan.stage_seconds, scope, key_of)
    wanted = round(pub.accepted * receivers)
    # Drain: wait until every delivery arrived, or the drain time passed.
    deadline = time.monotonic() + plan.drain_seconds
    merged: Merged = await pool.stats(hist=False)
    while merged.delivered < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        merged = await pool.stats(hist=False)
    server_cpu_s, loadgen_cpu_s, coord_cpu_s, machine_cpu_s = clock.used()
    merged = await pool.stats(hist=True)
    # Deliveries per second over the publishing window and the tail it took to deliver;
    # ``published / rate`` is the schedule's length (no fencepost error at low rates).
    window = max(pub.accepted / rate, merged.last_ns / 1e9 - clock.start[0], 1e-9)
    # CPU over the same window: the drain's idle polling after the last delivery adds
    # (next to) no CPU time, and must not dilute the percentage.
    server_cpu = 100 * server_cpu_s / window
    loadgen_cpu = 100 * loadgen_cpu_s / window
    coord_cpu = 100 * coord_cpu_s / window
    # What else ran meanwhile (other people's tests on a shared machine, the kernel's
    # softirqs): the noise a stage's numbers carry.
    others_cpu = max(0.0, 100 * machine_cpu_s / window - server_cpu - loadgen_cpu - coord_cpu)
    p99 = merged.percentile_ms(0.99)
    ok, reason = True, ""
    if pub.errors or pub.accepted < 0.95 * pub.wanted:
        ok, reason = False, f"publishes accepted {pub.accepted}/{pub.wanted}, errors {pub.errors}"
    elif pub.max_lag_ms > plan.p99_limit_ms:
        ok, reason = False, f"publishes fell {pub.max_lag_ms:.0f} ms behind the schedule"
    elif wanted and merged.delivered < plan.min_delivered_fraction * wanted:
        ok, reason = False, f"delivered {merged.delivered}/{wanted} within the drain time"
    elif p99 is not None and p99 > plan.p99_limit_ms:
        ok, reason = False, f"p99 {p99:.0f} ms > {plan.p99_limit_ms:.0f} ms"
    elif merged.closed_unexpectedly > max(1.0, 0.01 * (merged.open + merged.closed_unexpectedly)):
        ok, reason = False, f"{merged.closed_unexpectedly} connections closed by the server"
    return Stage(
        kind=kind,
        rate=rate,
        receivers_per_event=receivers,
        wanted=wanted,
        delivered=merged.delivered,
        deliveries_per_s=merged.delivered / window,
        p50_ms=merged.percentile_ms(0.50),
        p90_ms=merged.percentile_ms(0.90),
        p99_ms=p99,
        max_ms=merged.max_ns / 1e6,
        server_cpu_pct=server_cpu,
        loadgen_cpu_pct=loadgen_cpu,
        coordinator_cpu_pct=coord_cpu,
        others_cpu_pct=others_cpu,
        published=pub.accepted,
        publish_errors=pub.errors,
        publish_max_lag_ms=pub.max_lag_ms,
        post_p50_ms=pub.post_p50_ms,
        held=merged.held,
        closed_unexpectedly=merged.closed_unexpectedly,
        ok=ok,
        reason=reason,
        server_cpu_us_per_event=1e6 * server_cpu_s / pub.accepted if pub.accepted else 0.0,
        server_cpu_us_per_delivery=1e6 * server_cpu_s / merged.delivered if merged.delivered else 0.0,
        t0_ns=t0_ns,
        t1_ns=time.monotonic_ns(),
    )


def _log_stage(s: Stage) -> None:
    p = "—" if s.p99_ms is None else f"{s.p50_ms:.1f}/{s.p99_ms:.1f}"
    log(
        f"  {s.kind:9} {s.rate:>5g} ev/s: {s.deliveries_per_s:>9.0f} deliveries/s, p50/p99 {p} ms, "
        f"max {s.max_ms:.0f} ms, server CPU {s.server_cpu_pct:.0f}%, loadgen CPU {s.loadgen_cpu_pct:.0f}%, "
        f"others {s.others_cpu_pct:.0f}%"
        f"{'' if s.ok else '  FAILED: ' + s.reason}"
    )


async def _storm(
    server: ServerProcess, pool: WorkerPool, publisher: Publisher, plan: Plan, held: int
) -> dict[str, Any]:
    """Every client drops at once; events are published while they are away; every
    client reconnects at once with its Last-Event-ID."""
    replays = server.name.startswith("herald")
    await pool.all("drop", 30)
    await asyncio.sleep(1.0)  # the server notices the resets
    first_missed = publisher.seq + 1
    pub = await publisher.run(max(1.0, plan.storm_events / 0.5), 0.5, "global", lambda i: None)
    target = publisher.seq if replays else -1
    t0 = time.monotonic_ns()
    results = await pool.all(
        "reconnect", 180, t0_ns=t0, target_seq=target, time_limit=120.0, use_last_id=True
    )
    live_max = max(r["live_max_ns"] for r in results) / 1e9
    replayed = sum(r["replayed"] for r in results)
    reconnected = sum(r["reconnected"] for r in results)
    return {
        "clients": held,
        "reconnected": reconnected,
        "failed": sum(r["failed"] for r in results),
        "missed_events": pub.accepted,
        "first_missed_seq": first_missed,
        "replay": replays,
        "all_live_s": live_max,
        "median_live_s": max(r["live_p50_ns"] for r in results) / 1e9,
        "replayed_clients": replayed if replays else None,
        "all_replayed_s": max(r["replayed_max_ns"] for r in results) / 1e9 if replays else None,
    }
