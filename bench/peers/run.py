"""Run the peer suite (``python -m bench --servers herald,centrifugo,ceiling``): build or find
Centrifugo, start the run's redis-server, interleave the variants round by round, write
``bench/results/<timestamp>-peers-<mode>.json`` and the "Against Centrifugo" section."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench import centrifugo
from bench import report as base_report
from bench.common import log, raise_nofile, run_guarded, save_run, stop_on_signals
from bench.loadgen.pool import WorkerPool
from bench.peers import report
from bench.peers.plan import PeerPlan
from bench.peers.suite import Harness, run_variant
from bench.peers.variants import PEER_SERVERS, Servers, variants
from bench.redis_server import RedisServer

#: No run may take longer than this (seconds).
MAX_RUN_SECONDS = {"quick": 15 * 60, "full": 150 * 60}


def make_plan(args: argparse.Namespace) -> PeerPlan:
    plan = PeerPlan.quick() if args.quick else PeerPlan.full()
    if args.n:
        plan.n = args.n[0]
    if args.repeat:
        plan.rounds = args.repeat
    if args.stage_seconds:
        plan.stage_seconds = args.stage_seconds
    if args.rates:
        plan.broadcast_rates = _floats(args.rates)
    if args.targeted_rates:
        plan.targeted_rates = _floats(args.targeted_rates)
    if args.mix_rates:
        plan.mix_rates = _floats(args.mix_rates)
    if args.cores:
        plan.cores = [int(c) for c in args.cores.split(",")]
    if args.engines:
        plan.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    if args.scenarios:
        plan.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if args.workers:
        plan.loadgen = args.workers
    return plan


def _floats(raw: str) -> list[float]:
    return [float(r) for r in raw.split(",") if r.strip()]


async def run_all(plan: PeerPlan, servers: Servers, names: list[str], redis: RedisServer | None) -> list[Any]:
    streams = WorkerPool(plan.loadgen)
    publishers = WorkerPool(plan.publishers)
    streams.start()
    publishers.start()
    h = Harness(plan, servers, streams, publishers, redis)
    results: list[Any] = []
    try:
        for round_ in range(plan.rounds):
            for v in variants(names, plan.engines, plan.cores):
                log(f"{v.label}: N={plan.n}, round {round_ + 1}/{plan.rounds}")
                results.append(await run_variant(h, v, round_))
                await asyncio.sleep(1.0)  # sockets in TIME_WAIT, the machine settles
    finally:
        streams.stop()
        publishers.stop()
    return results


def main(args: argparse.Namespace, names: list[str]) -> int:
    mode = "quick" if args.quick else "full"
    plan = make_plan(args)
    unknown = [s for s in names if s not in PEER_SERVERS]
    if unknown:
        print(f"the peer suite runs {PEER_SERVERS}, not {unknown}", file=sys.stderr)
        return 2
    notes: list[str] = []
    binary: Path | None = None
    if "centrifugo" in names:
        binary, why = centrifugo.binary()
        if binary is None:
            notes.append(f"Centrifugo left out: {why}")
            log(notes[-1])
            names = [s for s in names if s != "centrifugo"]
    redis: RedisServer | None = None
    if "redis" in plan.engines:
        if shutil.which("redis-server") is None:
            notes.append("the Redis engines left out: redis-server is not installed")
            log(notes[-1])
            plan.engines = [e for e in plan.engines if e != "redis"]
        else:
            redis = RedisServer().start()
    raise_nofile()

    stop_on_signals(MAX_RUN_SECONDS[mode])
    started = time.strftime("%Y%m%dT%H%M%S")
    t0 = time.monotonic()
    log(
        f"bench peers {mode}: servers {names}, engines {plan.engines}, cores {plan.cores}, N {plan.n}, "
        f"{plan.rounds} round(s)"
    )
    versions: dict[str, Any] = {}
    if binary is not None:
        versions["centrifugo"] = centrifugo.version(binary)
    if redis is not None:
        with redis.client() as client:
            versions["redis"] = client.info("server")["redis_version"]
    results = run_guarded(
        run_all(plan, Servers(binary, redis), names, redis), *([redis.stop] if redis else [])
    )
    if results is None:
        return 130
    doc = {
        "kind": "peers",
        "mode": f"peers-{mode}",
        "started": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": plan.__dict__,
        "servers": names,
        "versions": versions,
        "centrifugo_config": centrifugo.config(8000, "memory"),
        "notes": notes,
        "machine": base_report.machine(),
        "command": "python -m bench --servers "
        + ",".join(args.servers.split(","))
        + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:],
        "results": results,
    }
    out = args.results_dir / f"{started}-peers-{mode}.json"
    save_run(doc, out, report.table(doc), None if args.no_docs else report.write_docs)
    return 0
