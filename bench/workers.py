"""``python -m bench.workers [--quick]``: Herald on one worker against Herald on N workers.

The same load generator drives ``herald serve --workers 1`` and ``herald serve
--workers N`` (N: this machine's cores unless ``--server-workers``) through the
same scenarios (:mod:`bench.scenarios`), one fresh server per N and round,
side by side in one run. With the memory bus, N workers share the embedded
log (a private redis-server), which the figures include: CPU and RSS are
summed over the supervisor, the workers and that Redis.

Results go to ``bench/results/<timestamp>-workers-<mode>.json``, a plot to
``docs/benchmarks/`` and a table of N ÷ 1 ratios into ``docs/benchmarks.md``
(between the ``bench:workers-<mode>`` markers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from bench import report
from bench.common import (
    HERALD_WORKERS,
    ROOT,
    log,
    raise_nofile,
    run_guarded,
    running_server,
    save_run,
    stop_on_signals,
)
from bench.loadgen.pool import WorkerPool
from bench.run import MAX_RUN_SECONDS, RESULTS
from bench.scenarios import Plan, run_one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 2,000 and short stages (a few minutes)")
    p.add_argument("--n", type=int, action="append", help="override the connection counts (repeatable)")
    p.add_argument(
        "--server-workers", type=int, help="Herald's workers in the N-worker variant (default: cores)"
    )
    p.add_argument("--rates", help="comma-separated broadcast rates, events/s")
    p.add_argument("--stage-seconds", type=float, help="seconds each rate is held")
    p.add_argument("--loadgen", type=int, help="load-generator processes (default 2)")
    p.add_argument("--repeat", type=int, help="rounds per N, variants interleaved; medians reported")
    p.add_argument("--no-docs", action="store_true", help="write only the JSON results")
    p.add_argument(
        "--report", metavar="JSON", help="run nothing: print and document an earlier run's results"
    )
    return p.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    return Plan.from_args(
        args.quick, ns=args.n or ([2000] if args.quick else [5000, 10000]), rates=args.rates,
        stage_seconds=args.stage_seconds, workers=args.loadgen, repeat=args.repeat,
    )  # fmt: skip


async def run_all(plan: Plan, workers: int) -> list[dict[str, Any]]:
    pool = WorkerPool(plan.workers)
    pool.start()
    results: list[dict[str, Any]] = []
    try:
        for n in plan.ns:
            for round_ in range(plan.repeat):
                for name, count in (("herald", 1), (HERALD_WORKERS, workers)):
                    log(f"{name} ({count} worker{'s' if count > 1 else ''}): N={n}, round {round_ + 1}")
                    with running_server(name, gcwatch=name == "herald", workers=count) as server:
                        result = await run_one(server, n, plan, pool, round_)
                    result.attribute_collections(server.collections())
                    entry = result.to_json()
                    entry["server_workers"] = count
                    results.append(entry)
                    await asyncio.sleep(1.0)
    finally:
        pool.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        from pathlib import Path

        path = Path(args.report)
        doc = json.loads(path.read_text())
        print(report.workers_table(doc))
        if not args.no_docs:
            for written in report.write_docs(doc, path.resolve()):
                log(f"wrote {written.relative_to(ROOT)}")
        return 0
    from herald.server.supervisor import available_cpus

    plan = make_plan(args)
    workers = args.server_workers or available_cpus()
    mode = "workers-quick" if args.quick else "workers-full"
    raise_nofile()

    stop_on_signals(MAX_RUN_SECONDS["quick" if args.quick else "full"])
    started = time.strftime("%Y%m%dT%H%M%S")
    t0 = time.monotonic()
    log(f"bench {mode}: Herald on 1 vs {workers} workers, N {plan.ns}, rates {plan.rates} ev/s")
    results = run_guarded(run_all(plan, workers))
    if results is None:
        return 130
    doc = {
        "kind": "workers",
        "mode": mode,
        "started": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": plan.__dict__,
        "server_workers": workers,
        "machine": report.machine(),
        "command": "python -m bench.workers" + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:] if argv is None else argv,
        "results": results,
    }
    out = RESULTS / f"{started}-{mode}.json"
    save_run(doc, out, report.workers_table(doc), None if args.no_docs else report.write_docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
