"""``python -m bench.tracing_cost [--quick]``: what tracing (D30) costs on publish → delivery.

Three variants of the same work, in one run, rounds interleaved:

``baseline``
    the code before tracing existed (``git archive`` of ``--baseline-ref``: by default the
    parent of the commit that added ``src/herald/obs/tracing.py``, or ``HEAD`` while that is
    not committed), imported in place of the working tree's ``src``;
``off_bare``
    this code with no ``OTEL_EXPORTER_OTLP_*`` endpoint (tracing off: one ``None`` check per
    event on the publish path and one per record on the fan-out), events without a
    ``traceparent``;
``off``
    the same, each event with a producer's ``traceparent`` (parsed, and carried);
``on_unsampled``
    tracing on with ``OTEL_TRACES_SAMPLER=always_off``: spans made but not recorded, none
    exported (the floor of what a sampled-out event costs);
``on``
    this code (``--current-src``, by default the working tree's ``src``) exporting every
    span (the SDK's default sampler: parent-based, always on; its span queue made large
    enough that none is shed, ``OTEL_BSP_MAX_QUEUE_SIZE``) over
    OTLP/HTTP to a real receiver on a loopback socket (``tests/support/otlp.py``, in the
    driver's process, so its decoding is not counted).

Each variant runs in a process of its own: a ``MemoryBus``, a ``ConnectionManager`` with
``--streams`` streams of one user on in-memory sinks (counting bytes), and ``Publishing``
(coalesce throttle off). It publishes ``--events`` events one at a time, each with a
producer's ``traceparent``, each followed by one loop turn (so each is routed and written
on its own, as separate publishes are), and measures the process's CPU time
(``time.process_time()``: every thread, the span exporter's included, and the final flush
of spans still buffered) and wall time. The driver reports medians and the ratios to the
baseline.

    python -m bench.tracing_cost [--quick] [--events N] [--streams S] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import os
import secrets
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import ROOT, log, save_run

RESULTS = ROOT / "bench" / "results"
VARIANTS = ("baseline", "off_bare", "off", "on_unsampled", "on")
#: The variants whose events come with a producer's traceparent (the baseline's cannot).
WITH_TRACEPARENT = ("off", "on_unsampled", "on")
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
CPU_NOTE = (
    "CPU: the measuring process's time.process_time() over the publishes (all its threads: the "
    "span exporter's included, and the flush of the spans still buffered at the end), per event "
    "published; each event reaches every stream. The OTLP receiver runs in the driver, not counted."
)


class CountingSink:
    """A stream's socket that counts what it is handed."""

    __slots__ = ("written",)

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writer(self) -> Callable[[bytes], None]:
        return self.write

    def backlog(self) -> int:
        return 0

    def close(self) -> None:
        return None


async def measure(variant: str, events: int, streams: int) -> dict[str, Any]:
    """One run of ``variant`` in this process (whichever ``herald`` it imports)."""
    from herald.bus.memory import MemoryBus
    from herald.config import Settings
    from herald.events.message import build_message
    from herald.gateway.publishing import Publishing
    from herald.manager.manager import ConnectionManager

    bus = MemoryBus(max_events=10_000)
    manager = ConnectionManager(bus, heartbeat_seconds=3600)
    publishing = Publishing(Settings(jwt_secret="x" * 32, coalesce_interval_seconds=0), bus)
    tracing = None
    if variant.startswith("on"):
        from herald.obs.tracing import from_environment

        tracing = from_environment("bench")
        assert tracing is not None, "the on variant needs OTEL_EXPORTER_OTLP_ENDPOINT"
        publishing.tracing = manager.tracing = tracing
    await manager.start()
    sinks = [CountingSink() for _ in range(streams)]
    for sink in sinks:
        conn = manager.register(
            sink, user_id="u", session_id=None, subscriptions=frozenset(), expires_at=None
        )
        await manager.start_stream(conn, None)
    # The baseline's messages know no traceparent: the others get the producer's.
    traced = "traceparent" in inspect.signature(build_message).parameters
    extra: dict[str, Any] = {"traceparent": TRACEPARENT} if traced and variant in WITH_TRACEPARENT else {}

    async def publish(n: int) -> None:
        message = build_message(
            event="task.progress-updated",
            scope="user",
            key="u",
            data={"task_id": "t1", "progress": n % 101, "message": "drafting"},
            source="http",
            **extra,
        )
        await publishing.publish(message)
        await asyncio.sleep(0)  # the turn ends: the manager writes this event to every stream

    for n in range(min(1000, events)):  # warm-up: caches, the first allocations
        await publish(n)
    written = sum(sink.written for sink in sinks)
    wall, cpu = time.perf_counter(), time.process_time()
    for n in range(events):
        await publish(n)
    if tracing is not None:
        tracing.flush(30_000)  # what is still buffered is part of the cost
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - wall
    written = sum(sink.written for sink in sinks) - written
    await manager.stop()
    if tracing is not None:
        tracing.shutdown()
    return {
        "variant": variant,
        "events": events,
        "streams": streams,
        "cpu_s": round(cpu, 4),
        "wall_s": round(wall, 4),
        "cpu_us_per_event": round(cpu / events * 1e6, 2),
        "events_per_s": round(events / wall),
        "bytes_written": written,
    }


def child_main(variant: str, events: int, streams: int) -> int:
    from herald.server.runner import install_event_loop

    install_event_loop()
    result = asyncio.run(measure(variant, events, streams))
    import herald

    result["herald_from"] = str(Path(herald.__file__).parent)
    print(orjson.dumps(result).decode(), flush=True)
    return 0


def baseline_ref(given: str | None) -> str:
    """The commit measured as the baseline: ``given``, else the parent of the commit that
    added tracing, else ``HEAD`` (tracing not committed yet)."""
    if given:
        return given
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "src/herald/obs/tracing.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    return f"{added[-1]}^" if added else "HEAD"


def export_src(ref: str, into: Path) -> str:
    """``src/`` of ``ref`` under ``into``; the commit's full id."""
    commit = subprocess.run(
        ["git", "rev-parse", ref], cwd=ROOT, capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit, "src"],
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def run_child(variant: str, events: int, streams: int, src: Path, otlp_endpoint: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    if variant.startswith("on"):
        env["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_endpoint
        env["OTEL_SERVICE_NAME"] = "herald-bench"
        # Every span exported, none shed by a full queue: the export's whole cost is counted.
        env["OTEL_BSP_MAX_QUEUE_SIZE"] = str(4 * (events + 1000))
    if variant == "on_unsampled":
        env["OTEL_TRACES_SAMPLER"] = "always_off"
    argv = [sys.executable, "-m", "bench.tracing_cost", "--child", variant]
    argv += ["--events", str(events), "--streams", str(streams)]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{variant} run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = orjson.loads(done.stdout.strip().splitlines()[-1])
    return result


def summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    medians: dict[str, dict[str, float]] = {}
    for variant in VARIANTS:
        mine = [run for run in runs if run["variant"] == variant]
        medians[variant] = {
            "cpu_us_per_event": round(statistics.median(run["cpu_us_per_event"] for run in mine), 2),
            "events_per_s": round(statistics.median(run["events_per_s"] for run in mine)),
        }
    base = medians["baseline"]
    for variant in VARIANTS:
        row = medians[variant]
        row["cpu_ratio"] = round(row["cpu_us_per_event"] / base["cpu_us_per_event"], 3)
        row["throughput_ratio"] = round(row["events_per_s"] / base["events_per_s"], 3)
    return medians


def table(doc: dict[str, Any]) -> str:
    plan = doc["plan"]
    lines = [
        f"tracing cost: {plan['events']:,} events x {plan['streams']} streams, {plan['rounds']} rounds "
        f"(medians); baseline {doc['baseline']['commit'][:10]}",
        "",
        "| variant | CPU µs / event | × baseline | events / s | × baseline |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in VARIANTS:
        row = doc["summary"][variant]
        lines.append(
            f"| {variant} | {row['cpu_us_per_event']:.1f} | {row['cpu_ratio']:.3f} "
            f"| {row['events_per_s']:,.0f} | {row['throughput_ratio']:.3f} |"
        )
    spans = doc["spans"]
    lines += ["", f"spans received over OTLP: {spans['received']:,} of {spans['expected']:,} made"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5,000 events, 3 rounds (about a minute)")
    parser.add_argument("--events", type=int, help="events per run (20,000; quick 5,000)")
    parser.add_argument("--streams", type=int, default=100, help="streams receiving each event (100)")
    parser.add_argument("--rounds", type=int, help="rounds of the three variants (5; quick 3)")
    parser.add_argument("--baseline-ref", help="the commit without tracing (default: see the module doc)")
    parser.add_argument(
        "--current-src",
        type=Path,
        default=ROOT / "src",
        help="the src tree measured as off and on (default: the working tree's)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    events = args.events or (5_000 if args.quick else 20_000)
    if args.child:
        return child_main(args.child, events, args.streams)
    from tests.support.otlp import OtlpReceiver

    mode = "quick" if args.quick else "full"
    rounds = args.rounds or (3 if args.quick else 5)
    started = time.strftime("%Y%m%dT%H%M%S")
    t0 = time.monotonic()
    ref = baseline_ref(args.baseline_ref)
    receiver = OtlpReceiver()
    receiver.start()
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="herald-baseline-") as tmp:
            commit = export_src(ref, Path(tmp))
            current = args.current_src.resolve()
            sources = dict.fromkeys(VARIANTS, current)
            sources["baseline"] = Path(tmp) / "src"
            log(f"bench tracing_cost {mode}: {events:,} events x {args.streams} streams, {rounds} rounds")
            for round_ in range(rounds):
                order = list(VARIANTS) if round_ % 2 == 0 else list(reversed(VARIANTS))
                for variant in order:
                    run = run_child(variant, events, args.streams, sources[variant], receiver.endpoint)
                    run["round"] = round_
                    runs.append(run)
                    log(f"round {round_ + 1} {variant}: {run['cpu_us_per_event']} µs CPU/event")
            spans_received = len(receiver.spans)
    finally:
        receiver.stop()
    from bench import report

    on_runs = sum(1 for run in runs if run["variant"] == "on")
    doc: dict[str, Any] = {
        "kind": "tracing-cost",
        "mode": f"tracing-cost-{mode}",
        "started": started,
        "duration_s": round(time.monotonic() - t0, 1),
        "plan": {"events": events, "streams": args.streams, "rounds": rounds, "warmup_events": 1000},
        "baseline": {"ref": ref, "commit": commit},
        "current_src": str(current),
        "spans": {
            # Per event and variant "on": one ingest and one fan-out span, warm-up included.
            "expected": on_runs * 2 * (events + min(1000, events)),
            "received": spans_received,
        },
        "notes": [CPU_NOTE],
        "machine": report.machine(),
        "command": "python -m bench.tracing_cost" + (" --quick" if args.quick else ""),
        "argv": sys.argv[1:],
        "summary": summarize(runs),
        "runs": runs,
        "id": secrets.token_hex(4),
    }
    save_run(doc, args.results_dir / f"{started}-tracing-cost-{mode}.json", table(doc), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
