"""``python -m bench.ingest [--quick]``: source → bus ingest, each fetched batch appended together
(``Publishing.offer_many``) against one record at a time (``offer_many_from(Publishing.offer)``).

Sources: Kafka (one topic, one partition; a single-node KRaft broker, the test harness's:
``tests/support/kafka.py``) and the PostgreSQL outbox (``tests/support/postgres.py``). Buses:
``MemoryBus`` and the Redis bus (one shard, ``ShardedBus``) on a redis-server of the bench's
own (``bench.redis_server``).
Each source runs in this process as the gateway wires it (``Publishing(Settings(...), bus)``,
the settings' defaults: Kafka fetches up to 500 records, the outbox claims 100 rows), with the
coalesce throttle off (``coalesce_interval_seconds=0``), over records of the default
catalogue's progress event (``TaskProgressUpdateEvent``: 200 tasks of one user).

The records are in place before a run starts (produced to the topic once, every Kafka run
reading it from the start in a group of its own; inserted into a fresh outbox table per run).
A run is measured from the moment the source holds its partition (Kafka) or listens (outbox)
until ``source.stats.published`` reaches the records: wall time, this process's CPU
(``time.process_time()``: Herald's work, and also the driver's own Kafka/PostgreSQL client
work — aiokafka's fetching and decoding, asyncpg's — and, on Redis, the bus's reader tailing
the log) and redis-server's CPU (``/proc/<pid>/task/*/schedstat``). The Kafka broker's and
PostgreSQL's CPU are kept in the JSON, not counted as the node's.

    python -m bench.ingest [--quick] [--records N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import psutil
from tests.support.kafka import KafkaBroker, kafka_version
from tests.support.postgres import PostgresServer

from bench.common import ROOT, log, run_guarded, save_run, stop_on_signals
from bench.redis_server import RedisServer
from herald.adapter import Adapter, default_mapping
from herald.bus.base import EventBus
from herald.bus.memory import MemoryBus
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from herald.config import Settings
from herald.gateway.publishing import Publishing
from herald.obs.logs import configure_logging
from herald.server.runner import install_event_loop
from herald.sources.incoming import OfferMany
from herald.sources.kafka import KafkaSource, KafkaSourceStats
from herald.sources.outbox import OutboxSource, OutboxSourceStats, create_table

RESULTS = ROOT / "bench" / "results"
SOURCES = ("kafka", "outbox")
BUSES = ("memory", "redis")
PATHS = ("batched", "single")
PATH_LABELS = {"batched": "batched", "single": "one at a time"}
SOURCE_LABELS = {"kafka": "Kafka", "outbox": "outbox"}
TOPIC = "bench-ingest"
#: The warm-up's records (a topic of their own, and outbox tables as large).
WARMUP_TOPIC = "bench-ingest-warmup"
#: The progress records' tasks (all of one user), as the Kafka throttle test produces them.
TASKS = 200
#: Bound on one measured run, and on the whole run (quick, full).
RUN_TIMEOUT = 120.0
MAX_RUN_SECONDS = {"quick": 180, "full": 1200}
#: Other processes' share of a core over a run above which it is taken as disturbed (another
#: job on the machine, which has 2 cores here) and made again, at most :data:`RETRIES` times.
OTHER_LIMIT = 0.25
RETRIES = 2
#: Seconds the whole run may spend waiting for other jobs to quiet down before a run made
#: again (quick, full): a bound, so that a busy machine makes a noisier run, not an endless one.
QUIET_BUDGET = {"quick": 45.0, "full": 240.0}
CPU_NOTE = (
    "node CPU is this process's time.process_time(): Herald's publish path and bus client, and "
    "also the driver's own Kafka/PostgreSQL client work (aiokafka's fetching and decoding, "
    "asyncpg) and, on Redis, the bus's reader tailing the log; redis-server's CPU is apart "
    "(/proc schedstat); the Kafka broker's and PostgreSQL's CPU are in the JSON only"
)


def progress(task: int, value: int) -> dict[str, Any]:
    """The default catalogue's progress record (``TaskProgressUpdateEvent``)."""
    return {"user_id": "u1", "task_id": f"t{task}", "progress": value % 101}


@dataclass
class Run:
    source: str
    bus: str
    path: str
    round: int
    records: int
    wall_s: float
    records_per_s: float
    #: This process's CPU over the run (see :data:`CPU_NOTE`).
    node_cpu_s: float
    node_cpu_us_per_record: float
    redis_cpu_s: float | None
    redis_cpu_us_per_record: float | None
    #: Script calls (EVALSHA) redis-server ran during the run.
    redis_script_calls: int | None
    #: The Kafka broker's or PostgreSQL's CPU over the run (the source's server).
    source_server_cpu_s: float
    #: CPU the machine spent over the run on anything but this process, redis-server and the
    #: source's server (another job on the machine skews the figures: see the log line).
    other_cpu_s: float
    #: ``other_cpu_s`` above :data:`OTHER_LIMIT` of a core: left out of the summary.
    disturbed: bool
    #: Events the bus holds afterwards (a check: the records, none twice).
    appended: int
    duplicates: int


class _Watched:
    """Mixin for a source's stats: ``done`` is set once ``published`` reaches ``target``, so
    a run waits on the condition itself (the sources bump the counter, nobody polls it)."""

    _published: int
    _target: int
    done: asyncio.Event

    def _watch(self, target: int) -> None:
        self._published = 0
        self._target = target
        self.done = asyncio.Event()

    @property
    def published(self) -> int:
        return self._published

    @published.setter
    def published(self, value: int) -> None:
        self._published = value
        if value >= self._target:
            self.done.set()


class _KafkaStats(_Watched, KafkaSourceStats):
    def __init__(self, target: int) -> None:
        self._watch(target)
        super().__init__()


class _OutboxStats(_Watched, OutboxSourceStats):
    def __init__(self, target: int) -> None:
        self._watch(target)
        super().__init__()


class Servers:
    """The stores of one bench run, started before the event loop and closed after it."""

    def __init__(self) -> None:
        self.redis = RedisServer()
        self.kafka = KafkaBroker()
        self.postgres = PostgresServer()

    def start(self) -> Servers:
        log("starting redis-server, Kafka (KRaft) and PostgreSQL")
        self.redis.start()
        self.kafka.start()
        self.postgres.start()
        return self

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.redis.stop()
        with contextlib.suppress(Exception):
            self.kafka.close()
        with contextlib.suppress(Exception):
            self.postgres.close()

    def kafka_cpu(self) -> float:
        process = self.kafka.process
        return _process_cpu(psutil.Process(process.pid)) if process is not None else 0.0

    def postgres_cpu(self) -> float:
        """The postmaster and its children alive at the reading (the source's backend among
        them; a short-lived one, e.g. an autovacuum worker, that ends between readings is
        missed)."""
        pid = int((self.postgres.data / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        total = 0.0
        for process in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                total += _process_cpu(process)
        return total

    def script_calls(self) -> int:
        with self.redis.client() as client:
            stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment,unused-ignore]  # typed from redis-py 8
        return sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_evalsha"))


def _process_cpu(process: psutil.Process) -> float:
    """User + system CPU of the whole process, its ended threads included (``/proc/<pid>/stat``,
    in clock ticks). The per-thread ``schedstat`` sum of ``bench.common.cpu_seconds`` drops a
    thread's time when the thread ends: the JVM's come and go, and the sum went backwards."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _machine_busy() -> float:
    """CPU seconds every core of the machine spent busy so far (``/proc/stat``)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0))


async def produce(broker: KafkaBroker, topic: str, records: int) -> None:
    """``records`` progress records into partition 0, in batches (as fast as the client goes)."""
    async with broker.producer() as producer:
        batch = producer.create_batch()
        for i in range(records):
            value = orjson.dumps({"event_type": "TaskProgressUpdateEvent", **progress(i % TASKS, i // TASKS)})
            if batch.append(key=None, value=value, timestamp=None) is None:
                await producer.send_batch(batch, topic, partition=0)
                batch = producer.create_batch()
                batch.append(key=None, value=value, timestamp=None)
        await producer.send_batch(batch, topic, partition=0)
        await producer.flush()


async def fill_outbox(dsn: str, table: str, records: int) -> None:
    """A fresh outbox table holding ``records`` pending rows (one statement)."""
    connection = await asyncpg.connect(dsn)
    try:
        await create_table(connection, table)
        await connection.execute(
            f"INSERT INTO {table} (event_type, payload) "  # noqa: S608
            "SELECT 'TaskProgressUpdateEvent', jsonb_build_object("
            "'user_id', 'u1', 'task_id', 't' || (n % $2), 'progress', (n / $2) % 101) "
            "FROM generate_series(0, $1 - 1) AS n",
            records,
            TASKS,
        )
        await connection.execute(f"ANALYZE {table}")
    finally:
        await connection.close()


async def drop_outbox(dsn: str, table: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(f"DROP TABLE IF EXISTS {table}")
    finally:
        await connection.close()


class Bench:
    def __init__(self, servers: Servers, records: int) -> None:
        self.servers = servers
        self.records = records
        self.settings = Settings(jwt_secret="x" * 32, coalesce_interval_seconds=0)
        self.adapter = Adapter(default_mapping())

    async def bus(
        self, kind: str
    ) -> tuple[EventBus, Callable[[], Awaitable[int]], Callable[[], Awaitable[None]]]:
        """A fresh bus of ``kind``, started; how many events it holds; how to close it."""
        settings = self.settings
        if kind == "memory":
            memory = MemoryBus(
                window_seconds=settings.replay_window_seconds,
                max_events=max(settings.replay_max_events, self.records),
                idempotency_window_seconds=settings.idempotency_window_seconds,
            )
            await memory.start()

            async def held() -> int:
                return len(memory)

            return memory, held, memory.stop
        connections = RedisConnections(
            self.servers.redis.url, timeout=settings.redis_timeout_seconds, name="herald:bench-ingest"
        )
        keys = ShardKeys(f"bench-ingest-{secrets.token_hex(4)}")
        bus = ShardedBus(
            [connections],
            keys=keys,
            window_seconds=settings.replay_window_seconds,
            max_events_per_channel=max(settings.replay_max_events, self.records),
            idempotency_window_seconds=settings.idempotency_window_seconds,
        )
        await bus.start()

        async def length() -> int:
            """The records held over every channel's stream."""
            total = 0
            async for key in connections.commands.scan_iter(match=f"{keys.prefix}:*:log", count=1000):
                total += int(await connections.commands.xlen(key))
            return total

        async def close() -> None:
            await bus.stop()
            await connections.commands.flushall()
            await connections.aclose()

        return bus, length, close

    async def run(
        self, source_kind: str, bus_kind: str, path: str, round_: int, records: int, topic: str = TOPIC
    ) -> Run:
        bus, held, close_bus = await self.bus(bus_kind)
        publishing = Publishing(self.settings, bus)
        offer_many: OfferMany | None = publishing.offer_many if path == "batched" else None
        table = f"bench_outbox_{secrets.token_hex(4)}"
        source: KafkaSource | OutboxSource
        stats: _KafkaStats | _OutboxStats
        started: asyncio.Event
        if source_kind == "kafka":
            kafka = KafkaSource(
                publishing.offer,
                self.adapter,
                bootstrap=self.servers.kafka.bootstrap,
                topics=[topic],
                group=f"bench-ingest-{secrets.token_hex(4)}",
                auto_offset_reset="earliest",
                commit_interval_seconds=self.settings.kafka_commit_interval_seconds,
                max_batch=self.settings.kafka_max_batch,
                session_timeout_seconds=self.settings.kafka_session_timeout_seconds,
                offer_many=offer_many,
            )
            kafka.stats = stats = _KafkaStats(records)
            source, started, server_cpu = kafka, kafka.assigned, self.servers.kafka_cpu
        else:
            await fill_outbox(self.servers.postgres.dsn, table, records)
            outbox = OutboxSource(
                publishing.offer,
                self.adapter,
                dsn=self.servers.postgres.dsn,
                table=table,
                batch=self.settings.outbox_batch,
                poll_seconds=self.settings.outbox_poll_seconds,
                retention_seconds=self.settings.outbox_retention_seconds,
                offer_many=offer_many,
            )
            outbox.stats = stats = _OutboxStats(records)
            source, started, server_cpu = outbox, outbox.listening, self.servers.postgres_cpu
        on_redis = bus_kind == "redis"
        gc.collect()
        try:
            await source.start()
            async with asyncio.timeout(RUN_TIMEOUT):
                await started.wait()
            calls0 = self.servers.script_calls() if on_redis else 0
            redis0 = self.servers.redis.cpu_seconds() if on_redis else 0.0
            server0, busy0 = server_cpu(), _machine_busy()
            cpu0, t0 = time.process_time(), time.perf_counter()
            try:
                async with asyncio.timeout(RUN_TIMEOUT):
                    await stats.done.wait()
            except TimeoutError:
                raise RuntimeError(f"{source_kind} → {bus_kind} ({path}): {stats.as_dict()}") from None
            t1, cpu1 = time.perf_counter(), time.process_time()
            busy1, server1 = _machine_busy(), server_cpu()
            redis1 = self.servers.redis.cpu_seconds() if on_redis else 0.0
            calls1 = self.servers.script_calls() if on_redis else 0
        finally:
            await source.stop()
        appended = await held()
        await close_bus()
        if source_kind == "outbox":
            await drop_outbox(self.servers.postgres.dsn, table)
        wall, node = t1 - t0, cpu1 - cpu0
        redis_cpu = redis1 - redis0 if on_redis else None
        other = (busy1 - busy0) - node - (redis_cpu or 0.0) - (server1 - server0)
        return Run(
            source=source_kind,
            bus=bus_kind,
            path=path,
            round=round_,
            records=records,
            wall_s=round(wall, 4),
            records_per_s=round(records / wall, 1),
            node_cpu_s=round(node, 4),
            node_cpu_us_per_record=round(node / records * 1e6, 2),
            redis_cpu_s=round(redis_cpu, 4) if redis_cpu is not None else None,
            redis_cpu_us_per_record=round(redis_cpu / records * 1e6, 2) if redis_cpu is not None else None,
            redis_script_calls=calls1 - calls0 if on_redis else None,
            source_server_cpu_s=round(server1 - server0, 4),
            other_cpu_s=round(other, 3),
            disturbed=other / wall > OTHER_LIMIT,
            appended=appended,
            duplicates=stats.duplicates,
        )


class QuietWait:
    """Before a run made again: wait until other processes leave the cores alone (what the
    machine spends while none of ours works is theirs), within a budget for the whole run."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    async def __call__(self) -> None:
        window = 1.0
        if self.budget <= 0:
            return
        while self.budget > 0:
            busy0 = _machine_busy()
            await asyncio.sleep(window)  # between runs: nothing measured meanwhile
            self.budget -= window
            if (_machine_busy() - busy0) / window < OTHER_LIMIT:
                return
        log("the budget for waiting on other processes is spent: runs go on without waiting")


async def run_all(servers: Servers, records: int, rounds: int, warmup: int, quiet: QuietWait) -> list[Run]:
    configure_logging("warning", "console")
    await servers.kafka.create_topics({TOPIC: 1, WARMUP_TOPIC: 1})
    produced = time.perf_counter()
    await produce(servers.kafka, TOPIC, records)
    log(f"{records:,} records produced to {TOPIC} in {time.perf_counter() - produced:.1f} s")
    await produce(servers.kafka, WARMUP_TOPIC, warmup)
    bench = Bench(servers, records)
    # Warm-up, unrecorded: every combination once on a few records (imports, the scripts
    # loaded into redis-server, the broker's and PostgreSQL's caches).
    for source in SOURCES:
        for bus in BUSES:
            for path in PATHS:
                await bench.run(source, bus, path, 0, warmup, WARMUP_TOPIC)
    log("warmed up")
    runs: list[Run] = []
    for round_ in range(1, rounds + 1):
        # Alternate which path goes first, so drift over the run does not favour one.
        paths = PATHS if round_ % 2 else PATHS[::-1]
        for source in SOURCES:
            for bus in BUSES:
                for path in paths:
                    for attempt in range(1 + RETRIES):
                        if attempt:
                            await quiet()
                        run = await bench.run(source, bus, path, round_, records)
                        runs.append(run)
                        _log_run(run, again=attempt < RETRIES)
                        if run.appended != records or run.duplicates:
                            raise RuntimeError(
                                f"the bus holds {run.appended} events, {run.duplicates} duplicates"
                            )
                        if not run.disturbed:
                            break
    return runs


def _log_run(run: Run, *, again: bool) -> None:
    redis = (
        f", redis-server {run.redis_cpu_us_per_record:.1f} µs/record, {run.redis_script_calls:,} script calls"
        if run.redis_cpu_us_per_record is not None and run.redis_script_calls is not None
        else ""
    )
    other = run.other_cpu_s / run.wall_s
    log(
        f"round {run.round} {run.source:6} → {run.bus:6} {PATH_LABELS[run.path]:13}: "
        f"{run.records_per_s:9,.0f} records/s, node {run.node_cpu_us_per_record:6.1f} µs/record{redis}"
        + (f" — other processes took {other:.0%} of a core: disturbed" if run.disturbed else "")
        + (", run again" if run.disturbed and again else "")
    )


def summarize(runs: list[Run]) -> list[dict[str, Any]]:
    """Per (source, bus, path) the medians over rounds, disturbed runs left out (unless every
    run was); per (source, bus) batched ÷ one at a time."""
    out: list[dict[str, Any]] = []
    for source in SOURCES:
        for bus in BUSES:
            medians: dict[str, dict[str, float | None]] = {}
            for path in PATHS:
                mine = [r for r in runs if (r.source, r.bus, r.path) == (source, bus, path)]
                mine = [r for r in mine if not r.disturbed] or mine
                medians[path] = {
                    "records_per_s": statistics.median(r.records_per_s for r in mine),
                    "node_cpu_us_per_record": statistics.median(r.node_cpu_us_per_record for r in mine),
                    "redis_cpu_us_per_record": (
                        statistics.median(r.redis_cpu_us_per_record or 0.0 for r in mine)
                        if bus == "redis"
                        else None
                    ),
                    "runs": len(mine),
                    "other_cpu_cores": statistics.median(r.other_cpu_s / r.wall_s for r in mine),
                    "redis_script_calls_per_record": (
                        statistics.median((r.redis_script_calls or 0) / r.records for r in mine)
                        if bus == "redis"
                        else None
                    ),
                }
            ratio: dict[str, float | None] = {}
            for key in medians["batched"]:
                if key in ("runs", "other_cpu_cores"):
                    continue
                batched, single = medians["batched"][key], medians["single"][key]
                ratio[key] = round(batched / single, 3) if batched is not None and single else None
            out.append({"source": source, "bus": bus, **medians, "batched_over_single": ratio})
    return out


def _disturbed_note(runs: list[Run]) -> str:
    disturbed = [r for r in runs if r.disturbed]
    note = (
        f"{len(disturbed)} run(s) disturbed (other processes took more than {OTHER_LIMIT:.0%} of a "
        "core: another job on the machine) were made again and are left out of the medians"
    )
    only = sorted(
        {f"{r.source} → {r.bus} {PATH_LABELS[r.path]}" for r in disturbed if _all_disturbed(runs, r)}
    )
    if only:
        note += f"; every run of {', '.join(only)} was disturbed, and its medians are over those"
    return note


def _all_disturbed(runs: list[Run], run: Run) -> bool:
    return all(r.disturbed for r in runs if (r.source, r.bus, r.path) == (run.source, run.bus, run.path))


def table(doc: dict[str, Any]) -> str:
    def num(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:,.{digits}f}"

    def times(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}×"

    lines = [
        f"Source → bus ingest, {doc['plan']['records']:,} progress records, coalesce throttle off; "
        f"medians of {doc['plan']['rounds']} round(s). Node CPU: {CPU_NOTE}. {doc['notes'][1]}.",
        "",
        "| source → bus | path | records/s | node CPU µs/record | redis-server CPU µs/record |",
        "|---|---|---:|---:|---:|",
    ]
    for row in doc["summary"]:
        name = f"{SOURCE_LABELS[row['source']]} → {row['bus']}"
        for path in PATHS:
            m = row[path]
            lines.append(
                f"| {name} | {PATH_LABELS[path]} | {num(m['records_per_s'], 0)} | "
                f"{num(m['node_cpu_us_per_record'])} | {num(m['redis_cpu_us_per_record'])} |"
            )
        r = row["batched_over_single"]
        lines.append(
            f"| {name} | **batched ÷ one at a time** | **{times(r['records_per_s'])}** | "
            f"**{times(r['node_cpu_us_per_record'])}** | {times(r['redis_cpu_us_per_record'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 records, 3 rounds (about a minute)")
    parser.add_argument("--records", type=int, help="records per run (20,000; quick 5,000)")
    parser.add_argument("--rounds", type=int, help="rounds of every run (5; quick 3)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    records = args.records or (5_000 if args.quick else 20_000)
    rounds = args.rounds or (3 if args.quick else 5)
    warmup = min(records, 2_000)
    install_event_loop()  # uvloop, as herald serve runs
    stop_on_signals(MAX_RUN_SECONDS[mode])
    started = time.strftime("%Y%m%dT%H%M%S")
    t0 = time.monotonic()
    servers = Servers()
    try:
        servers.start()
    except BaseException:
        servers.close()
        raise
    with servers.redis.client() as client:
        redis_version = client.info("server")["redis_version"]
    postgres_version = (servers.postgres.data / "PG_VERSION").read_text().strip()
    log(f"bench ingest {mode}: {records:,} records per run, {rounds} round(s)")
    from bench import report

    machine = report.machine()  # the commit measured, before anyone commits meanwhile
    machine["src_uncommitted"] = subprocess.run(
        ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True, timeout=10
    ).stdout.split("\n")[:-1]
    quiet = QuietWait(QUIET_BUDGET[mode])
    runs = run_guarded(run_all(servers, records, rounds, warmup, quiet), servers.close)
    if runs is None:
        return 130
    settings = Settings(jwt_secret="x" * 32)
    doc: dict[str, Any] = {
        "kind": "ingest",
        "mode": f"ingest-{mode}",
        "started": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": {
            "records": records,
            "rounds": rounds,
            "warmup_records": warmup,
            "tasks": TASKS,
            "kafka_max_batch": settings.kafka_max_batch,
            "outbox_batch": settings.outbox_batch,
            "coalesce_interval_seconds": 0,
            "event_loop": "uvloop",
            "disturbed_above_cores": OTHER_LIMIT,
            "retries": RETRIES,
            "quiet_wait_budget_s": QUIET_BUDGET[mode],
        },
        "versions": {"redis": redis_version, "kafka": kafka_version(), "postgres": postgres_version},
        "notes": [CPU_NOTE, _disturbed_note(runs)],
        "machine": machine,
        "command": "python -m bench.ingest" + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:],
        "summary": summarize(runs),
        "runs": [asdict(run) for run in runs],
    }
    save_run(doc, args.results_dir / f"{started}-ingest-{mode}.json", table(doc), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
