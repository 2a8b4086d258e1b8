"""``python -m bench.scaling [--quick]``: several Herald nodes on one Redis bus, holding as many
connections as this machine allows, measured per node: the coefficients that
``docs/scaling.md`` extrapolates from (:mod:`bench.scaling_model`).

Each node is ``herald serve --workers 1`` with ``HERALD_BUS=redis`` and lifecycle
events on (presence is part of the plan); one load-generator process per node
holds that node's connections, one distinct user each. Stages, on the same
processes:

1. *connect*: every stream opened (JWT verified, a presence lease each): RSS
   per connection per node, the machine's memory per connection (the kernel's
   socket memory included), Redis commands and memory per connection;
2. *idle*: nothing published: CPU per connection per second (heartbeats, lease
   renewals) per node, Redis commands per second;
3. *nobody*: events to a user with no stream, published through node 1: each
   other node's CPU per event it only reads (the cost every node pays for every
   event in the log), node 1's publish cost, and per event in Redis: commands
   (``INFO commandstats``), CPU, bytes in and out, the log entry's size;
4. *broadcast*: every connection gets each event: CPU per delivery, latency;
5. *mix*: events to random single users plus a broadcast now and then; the
   model's prediction of each node's CPU is checked against the measurement.

Results go to ``bench/results/<timestamp>-scaling-<mode>.json`` and the
figures into ``docs/scaling.md`` (between the ``scaling:measured`` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import redis

from bench import scaling_model
from bench.common import (
    ROOT,
    STREAM_PATH,
    ServerProcess,
    cpu_seconds,
    log,
    mint,
    raise_nofile,
    start_server,
    stop_all,
)
from bench.loadgen.pool import Merged, WorkerPool
from bench.loadgen.publisher import Publisher
from bench.redis_server import RedisServer
from bench.run import RESULTS

HOST = "127.0.0.1"
PREFIX = "scaling"


@dataclass
class Plan:
    nodes: int
    per_node: int
    idle_seconds: float
    stage_seconds: float
    nobody_rate: float
    broadcast_rate: float
    mix_targeted_rate: float
    mix_broadcast_every: float
    #: Events/s appended straight into the log (as by many publishing nodes), for the read cost.
    read_rates: list[float] = field(default_factory=list)

    @classmethod
    def quick(cls) -> Plan:
        return cls(2, 3000, 8.0, 6.0, 200.0, 1.0, 200.0, 5.0, [300.0, 2000.0])

    @classmethod
    def full(cls) -> Plan:
        return cls(4, 15000, 16.0, 10.0, 300.0, 1.0, 300.0, 5.0, [300.0, 1500.0, 5000.0])


@dataclass
class Snapshot:
    t: float
    node_cpu: list[float]
    node_rss: list[int]
    redis_cpu: float
    commands: dict[str, tuple[int, int]]
    net_in: int
    net_out: int
    redis_memory: int
    mem_available: int


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def snapshot(nodes: list[ServerProcess], store: RedisServer, client: redis.Redis) -> Snapshot:
    assert store.proc is not None
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment,unused-ignore]  # typed from redis-py 8
    net: dict[str, Any] = client.info("stats")  # type: ignore[assignment,unused-ignore]  # typed from redis-py 8
    memory: dict[str, Any] = client.info("memory")  # type: ignore[assignment,unused-ignore]  # typed from redis-py 8
    return Snapshot(
        t=time.monotonic(),
        node_cpu=[n.cpu_seconds() for n in nodes],
        node_rss=[n.rss() for n in nodes],
        redis_cpu=cpu_seconds(psutil.Process(store.proc.pid)),
        commands={k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"])) for k, v in stats.items()},
        net_in=int(net["total_net_input_bytes"]),
        net_out=int(net["total_net_output_bytes"]),
        redis_memory=int(memory["used_memory"]),
        mem_available=mem_available(),
    )


@dataclass
class StageResult:
    name: str
    seconds: float
    events: int = 0
    deliveries: int = 0
    node_cpu_s: list[float] = field(default_factory=list)
    node_rss_before: list[int] = field(default_factory=list)
    node_rss: list[int] = field(default_factory=list)
    #: The load generator's RSS (its side of each connection), before and after.
    loadgen_rss: list[int] = field(default_factory=list)
    redis_cpu_s: float = 0.0
    #: Per Redis command in this stage: calls and microseconds inside Redis.
    commands: dict[str, list[int]] = field(default_factory=dict)
    net_in: int = 0
    net_out: int = 0
    redis_memory_delta: int = 0
    mem_available_delta: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    publish_errors: int = 0


def stage_between(name: str, a: Snapshot, b: Snapshot, merged: Merged | None = None) -> StageResult:
    commands = {}
    for cmd, (calls, usec) in b.commands.items():
        before = a.commands.get(cmd, (0, 0))
        if calls - before[0]:
            commands[cmd] = [calls - before[0], usec - before[1]]
    return StageResult(
        name=name,
        seconds=b.t - a.t,
        deliveries=merged.delivered if merged else 0,
        node_cpu_s=[y - x for x, y in zip(a.node_cpu, b.node_cpu, strict=True)],
        node_rss_before=a.node_rss,
        node_rss=b.node_rss,
        redis_cpu_s=b.redis_cpu - a.redis_cpu,
        commands=commands,
        net_in=b.net_in - a.net_in,
        net_out=b.net_out - a.net_out,
        redis_memory_delta=b.redis_memory - a.redis_memory,
        mem_available_delta=a.mem_available - b.mem_available,
        p50_ms=merged.percentile_ms(0.5) if merged else None,
        p99_ms=merged.percentile_ms(0.99) if merged else None,
    )


async def simulate(plan: Plan) -> dict[str, Any]:
    store = RedisServer().start()
    client = store.client()
    env = {
        "HERALD_BUS": "redis",
        "HERALD_REDIS_URL": store.url,
        "HERALD_REDIS_PREFIX": PREFIX,
        "HERALD_LIFECYCLE_EVENTS": "redis",
    }
    nodes: list[ServerProcess] = []
    pool = WorkerPool(plan.nodes)
    publisher: Publisher | None = None
    try:
        for i in range(plan.nodes):
            nodes.append(start_server("herald", gcwatch=False, extra_env=env))
            log(f"node {i + 1} on port {nodes[-1].port}")
        pool.start()
        users = [[f"n{i}-u{j}" for j in range(plan.per_node)] for i in range(plan.nodes)]
        log(f"minting {plan.nodes * plan.per_node:,} tokens")
        specs = [[(u, mint(u)) for u in group] for group in users]
        publisher = Publisher(HOST, nodes[0].port, mint("bench-publisher", publisher=True))
        await publisher.start()
        await asyncio.sleep(1.0)
        stages: list[StageResult] = []

        # 1. connect
        loadgen_before = pool.rss()
        before = snapshot(nodes, store, client)
        t0 = time.monotonic()
        opened = await pool.all(
            "connect",
            600,
            per_worker=[{"specs": specs[i], "port": nodes[i].port} for i in range(plan.nodes)],
            host=HOST,
            path=STREAM_PATH,
            concurrency=128,
            time_limit=max(60.0, plan.per_node / 100),
        )
        connect_s = time.monotonic() - t0
        await asyncio.sleep(3.0)
        after = snapshot(nodes, store, client)
        connect = stage_between("connect", before, after)
        connected = [int(r["ok"]) for r in opened]
        connect.events = sum(connected)
        connect.loadgen_rss = [loadgen_before, pool.rss()]
        stages.append(connect)
        log(
            f"connected {connected} in {connect_s:.1f}s; "
            f"RSS per node {[r // 2**20 for r in after.node_rss]} MiB"
        )

        # 2. idle
        await pool.all("reset", 30)
        a = snapshot(nodes, store, client)
        await asyncio.sleep(plan.idle_seconds)
        b = snapshot(nodes, store, client)
        stages.append(stage_between("idle", a, b))

        # 3. events nobody receives, published through node 1
        async def stage(name: str, rate: float, seconds: float, scope: str, key_of: Any) -> None:
            stages.append(
                await _published(nodes, store, client, pool, publisher, name, rate, seconds, scope, key_of)
            )
            await asyncio.sleep(2.0)

        await stage("nobody", plan.nobody_rate, plan.stage_seconds, "user", lambda i: "nobody")
        # 4. broadcast
        await stage("broadcast", plan.broadcast_rate, plan.stage_seconds, "global", lambda i: None)
        # 5. the mix: single users at random, and a broadcast every few seconds
        everyone = [u for group in users for u in group]
        rng = random.Random(7)
        every = max(1, round(plan.mix_targeted_rate * plan.mix_broadcast_every))

        def mixed(i: int) -> str | None:
            return None if i % every == every - 1 else rng.choice(everyone)

        await stage("mix", plan.mix_targeted_rate, 1.5 * plan.stage_seconds, "mixed", mixed)
        # 6. the read cost at rising rates: events appended straight into the log
        for rate in plan.read_rates:
            a = snapshot(nodes, store, client)
            appended = await asyncio.to_thread(_append_directly, store, rate, plan.stage_seconds)
            await asyncio.sleep(1.0)
            read = stage_between(f"read-{rate:g}", a, snapshot(nodes, store, client))
            read.events = appended
            stages.append(read)
            log(
                f"  read {rate:g}/s: {appended} events, node CPU s {[round(c, 2) for c in read.node_cpu_s]}, "
                f"XREAD calls {read.commands.get('xread', [0])[0]}, Redis CPU {read.redis_cpu_s:.2f}s"
            )
        log_bytes = log_entries = 0
        with contextlib.suppress(redis.RedisError):
            log_bytes = int(client.memory_usage(f"{{{PREFIX}}}:log") or 0)
            log_entries = int(client.xlen(f"{{{PREFIX}}}:log"))
        return {
            "connected": connected,
            "connect_seconds": connect_s,
            "log_bytes": log_bytes,
            "log_entries": log_entries,
            "redis_version": client.info("server")["redis_version"],
            "stages": [asdict(s) for s in stages],
        }
    finally:
        if publisher is not None:
            publisher.close()
        with contextlib.suppress(Exception):
            await pool.all("close", 60)
        pool.stop()
        for node in nodes:
            node.stop()
        store.stop()


async def _published(
    nodes: list[ServerProcess],
    store: RedisServer,
    client: redis.Redis,
    pool: WorkerPool,
    publisher: Publisher,
    name: str,
    rate: float,
    seconds: float,
    scope: str,
    key_of: Any,
) -> StageResult:
    await pool.all("reset", 30)
    a = snapshot(nodes, store, client)
    if scope == "mixed":
        result = await _run_mixed(publisher, rate, seconds, key_of)
    else:
        result = await publisher.run(rate, seconds, scope, key_of)
    await asyncio.sleep(1.5)  # the last deliveries arrive
    merged = await pool.stats(hist=True)
    b = snapshot(nodes, store, client)
    stage = stage_between(name, a, b, merged)
    stage.events = result.accepted
    stage.publish_errors = result.errors
    log(
        f"  {name}: {result.accepted} events, {merged.delivered:,} deliveries, p50/p99 "
        f"{stage.p50_ms}/{stage.p99_ms} ms, node CPU s {[round(c, 2) for c in stage.node_cpu_s]}, "
        f"Redis CPU {stage.redis_cpu_s:.2f}s"
    )
    return stage


def _append_directly(store: RedisServer, rate: float, seconds: float) -> int:
    """Append ``rate`` events/s with the bus's own script, pipelined in 10 ms slices (no
    HTTP, no node's CPU): what many publishing nodes together would add. The events are
    for a user nobody is: a node that reads only its streams' channels never sees them."""
    import msgpack

    from herald.bus import channel_scripts
    from herald.bus.redis_entry import entry_fields
    from herald.bus.shard_log import ShardKeys
    from herald.events.message import build_message, encode_data

    client = store.client()
    script = client.register_script(channel_scripts.APPEND)
    shard_keys = ShardKeys(PREFIX)
    channel = "user:nobody"
    keys = [shard_keys.shard, shard_keys.log(channel), shard_keys.meta(channel)]
    message = build_message(
        event="bench.tick-sent", scope="user", key="nobody", data={"task_id": "t", "progress": 50}
    )
    fields = entry_fields(message, encode_data(message, 65536))
    # One event per call, no idempotency or superseded keys: ARGV as ShardLog.append_many.
    items = msgpack.packb([[channel, 0, 0, *fields]], use_bin_type=False)
    args = ["", 300_000, 100_000, 600_000, 0, 0, shard_keys.notifications, items, 0]
    slice_s = 0.01
    per_slice = rate * slice_s
    start = time.monotonic()
    sent = 0.0
    appended = 0
    while time.monotonic() - start < seconds:
        sent += per_slice
        pipe = client.pipeline(transaction=False)
        for _ in range(int(sent) - appended):
            script(keys=keys, args=args, client=pipe)
        appended += len(pipe.execute())
        pause = start + appended / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    client.close()
    return appended


async def _run_mixed(publisher: Publisher, rate: float, seconds: float, key_of: Any) -> Any:
    """User events with a global one in between: ``key_of`` answers ``None`` for a broadcast."""
    original = publisher.body

    def body(scope: str, key: str | None, t_ns: int) -> bytes:
        return original("global" if key is None else "user", key, t_ns)

    publisher.body = body  # type: ignore[method-assign]
    try:
        return await publisher.run(rate, seconds, "user", key_of)
    finally:
        publisher.body = original  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 nodes × 3,000 connections")
    p.add_argument("--nodes", type=int)
    p.add_argument(
        "--per-node", type=int, help="connections per node (each node and load generator < 20,000)"
    )
    p.add_argument("--no-docs", action="store_true")
    p.add_argument("--report", metavar="JSON", help="run nothing: document an earlier run")
    p.add_argument(
        "--shard-scaling",
        metavar="JSON",
        help="the sharded bus's per-event costs (default: the newest bench.shard_scaling full run)",
    )
    p.add_argument(
        "--peers", metavar="JSON", help="the publish path's costs (default: the newest bench.peers run)"
    )
    args = p.parse_args(argv)
    if args.report:
        path = Path(args.report).resolve()
        doc = json.loads(path.read_text())
    else:
        plan = Plan.quick() if args.quick else Plan.full()
        if args.nodes:
            plan.nodes = args.nodes
        if args.per_node:
            plan.per_node = args.per_node
        raise_nofile()

        def on_signal(signum: int, _frame: object) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        signal.signal(signal.SIGTERM, on_signal)
        started = time.strftime("%Y%m%dT%H%M%S")
        t0 = time.monotonic()
        log(f"bench scaling: {plan.nodes} nodes × {plan.per_node:,} connections on one Redis bus")
        try:
            sim = asyncio.run(simulate(plan))
        except KeyboardInterrupt as exc:
            log(f"interrupted ({exc})")
            return 130
        finally:
            stop_all()
        from bench import report

        doc = {
            "kind": "scaling",
            "mode": "quick" if args.quick else "full",
            "started": started,
            "duration_s": round(time.monotonic() - t0, 1),
            "plan": asdict(plan),
            "machine": report.machine(),
            "command": "python -m bench.scaling" + (" --quick" if args.quick else ""),
            "simulation": sim,
        }
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{started}-scaling-{doc['mode']}.json"
        path.write_text(json.dumps(doc, indent=1))
        log(f"results: {path.relative_to(ROOT)}")
    measured = scaling_model.coefficients(doc)
    print(scaling_model.coefficients_text(measured))
    print(scaling_model.check_text(doc, measured))
    costs = _shard_costs(args.shard_scaling, args.peers)
    if costs is not None:
        print(scaling_model.sharded_plan_markdown(measured, costs))
    if not args.no_docs:
        written = scaling_model.write_docs(doc, measured, path)
        if costs is not None:
            scaling_model.write_sharded_plan(measured, costs)
        log(f"wrote {written.relative_to(ROOT)}")
    return 0


def _shard_costs(shard_path: str | None, peers_path: str | None) -> scaling_model.ShardCosts | None:
    shard_file = Path(shard_path) if shard_path else _newest("*-shard-scaling-full.json")
    peers_file = Path(peers_path) if peers_path else _newest("*-peers-*.json", _publishes_on_redis)
    if shard_file is None or peers_file is None:
        return None
    peers = json.loads(peers_file.read_text())
    if not _publishes_on_redis(peers):
        return None
    source = f"`{shard_file.relative_to(ROOT)}`, `{peers_file.relative_to(ROOT)}`"
    return scaling_model.shard_costs(json.loads(shard_file.read_text()), peers, source)


def _newest(pattern: str, wanted: Any = None) -> Path | None:
    """The newest result matching ``pattern`` (and, given ``wanted``, whose JSON it accepts)."""
    for path in sorted(RESULTS.glob(pattern), reverse=True):
        if wanted is None or wanted(json.loads(path.read_text())):
            return path
    return None


def _publishes_on_redis(peers: dict[str, Any]) -> bool:
    """A peers run that measured Herald's publishing on one worker of the Redis bus."""
    return any(
        (r["server"], r["engine"], r["cores"]) == ("herald", "redis", 1) and "publish" in r
        for r in peers.get("results", [])
    )


if __name__ == "__main__":
    sys.exit(main())
