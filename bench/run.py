"""``python -m bench [--quick]``: Herald against its two baselines, side by side, in one run.

Naming ``centrifugo`` among ``--servers`` (or ``--suite peers``) runs the peer
suite instead (:mod:`bench.peers`): Herald beside Centrifugo and the ceiling on
both engines, the scenarios of issue 18.

For each N, each server is started fresh as a subprocess on a free loopback
port (in its own process group), driven by the same load generator through
the same scenarios (:mod:`bench.scenarios`), and killed. Then a table of
Herald's ratios is printed, and the results are written to
``bench/results/<timestamp>.json``, plots to ``docs/benchmarks/`` and the
tables into ``docs/benchmarks.md``.

Everything this process starts is stopped on the way out, whatever happens:
servers by process group, load-generator workers by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.common import (
    DEFAULT_SERVERS,
    ROOT,
    SERVERS,
    log,
    raise_nofile,
    run_guarded,
    running_server,
    save_run,
    stop_on_signals,
)
from bench.loadgen.pool import WorkerPool
from bench.scenarios import Plan, run_one

RESULTS = ROOT / "bench" / "results"
#: No run may take longer than this, whatever the plan (seconds).
MAX_RUN_SECONDS = {"quick": 15 * 60, "full": 150 * 60}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1,000 / 2,000 and short stages (a few minutes)")
    p.add_argument("--n", type=int, action="append", help="override the connection counts (repeatable)")
    p.add_argument(
        "--servers", default=",".join(DEFAULT_SERVERS), help=f"comma-separated subset of {SERVERS}"
    )
    p.add_argument(
        "--suite",
        choices=("baselines", "peers"),
        help="baselines: the scenarios against sse-starlette and the ceiling; peers: against "
        "Centrifugo (the default when centrifugo is among the servers)",
    )
    p.add_argument("--cores", help="peers: comma-separated cores per server (Herald's workers, GOMAXPROCS)")
    p.add_argument("--engines", help="peers: comma-separated engines, of memory,redis")
    p.add_argument("--scenarios", help="peers: comma-separated, of broadcast,targeted,mix,publish,restart")
    p.add_argument("--targeted-rates", help="peers: comma-separated targeted rates, events/s")
    p.add_argument("--mix-rates", help="peers: comma-separated rates of the mix, events/s")
    p.add_argument("--rates", help="comma-separated broadcast rates, events/s")
    p.add_argument("--stage-seconds", type=float, help="seconds each rate is held")
    p.add_argument("--workers", type=int, help="load-generator processes (default 2)")
    p.add_argument("--repeat", type=int, help="rounds per N, servers interleaved; medians reported")
    p.add_argument("--no-gcwatch", action="store_true", help="do not record the servers' collections")
    p.add_argument("--no-docs", action="store_true", help="write only the JSON results")
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    p.add_argument(
        "--report", type=Path, metavar="JSON", help="run nothing: print and document an earlier run's results"
    )
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    return Plan.from_args(
        args.quick, ns=args.n, rates=args.rates, stage_seconds=args.stage_seconds,
        workers=args.workers, repeat=args.repeat,
    )  # fmt: skip


async def run_all(plan: Plan, servers: list[str], gcwatch: bool) -> list[dict[str, Any]]:
    pool = WorkerPool(plan.workers)
    pool.start()
    results: list[dict[str, Any]] = []
    try:
        for n in plan.ns:
            for round_ in range(plan.repeat):
                for name in servers:
                    log(f"{name}: N={n}" + (f", round {round_ + 1}/{plan.repeat}" if plan.repeat > 1 else ""))
                    with running_server(name, gcwatch=gcwatch) as server:
                        result = await run_one(server, n, plan, pool, round_)
                    result.attribute_collections(server.collections())
                    if result.gc:
                        log(f"  server collections (count, total ms, max ms) by generation: {result.gc}")
                    results.append(result.to_json())
                    await asyncio.sleep(1.0)  # sockets in TIME_WAIT, the machine settles
    finally:
        pool.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        doc = json.loads(args.report.read_text())
        if doc.get("kind") == "peers":
            from bench.peers import report as peers_report

            print(peers_report.table(doc))
            if not args.no_docs:
                for path in peers_report.write_docs(doc, args.report.resolve()):
                    log(f"wrote {path.relative_to(ROOT)}")
            return 0
        print(report.table(doc))
        if not args.no_docs:
            for path in report.write_docs(doc, args.report.resolve()):
                log(f"wrote {path.relative_to(ROOT)}")
        return 0
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            print(f"unknown server {s!r}; choose from {SERVERS}", file=sys.stderr)
            return 2
    if (args.suite or ("peers" if "centrifugo" in servers else "baselines")) == "peers":
        from bench.peers import run as peers

        return peers.main(args, servers)
    if "centrifugo" in servers:
        print("centrifugo runs in the peer suite only (--suite peers)", file=sys.stderr)
        return 2
    plan = make_plan(args)
    mode = "quick" if args.quick else "full"
    raise_nofile()

    stop_on_signals(MAX_RUN_SECONDS[mode])
    started = time.strftime("%Y%m%dT%H%M%S")
    t0 = time.monotonic()
    log(f"bench {mode}: servers {servers}, N {plan.ns}, rates {plan.rates} ev/s, {plan.workers} workers")
    results = run_guarded(run_all(plan, servers, gcwatch=not args.no_gcwatch))
    if results is None:
        return 130
    doc = {
        "mode": mode,
        "started": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": plan.__dict__,
        "machine": report.machine(),
        "command": "python -m bench" + (" --quick" if args.quick else ""),
        "gcwatch": not args.no_gcwatch,
        "argv": sys.argv[1:] if argv is None else argv,
        "results": results,
    }
    out = args.results_dir / f"{started}-{mode}.json"
    save_run(doc, out, report.table(doc), None if args.no_docs else report.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
