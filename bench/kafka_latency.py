"""Kafka → browser latency, side by side with HTTP publish → browser: one server, the same streams.

One ``herald serve`` (memory bus) consumes a fresh topic of a single-node Kafka
(the test harness's broker: ``tests/support/kafka.py``) through a mapping rule
that keeps the benchmark's fields (``bench.tick-sent``, global). The load
generator holds N streams. At each rate, events are published over HTTP (the
harness's publisher), then the same number produced to Kafka (aiokafka, acks
from all replicas, one at a time on a schedule). Both carry ``t``, the
``time.monotonic_ns()`` the schedule gives them (comparable across processes):
a client's latency is its receive time minus that, so the Kafka figure
includes the produce, the broker, the consumer's fetch, the mapping and the
append — everything between a service emitting and a browser reading.

    python -m bench.kafka_latency [--quick] [--n 1000] [--rates 10,50] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.gateway import GatewayProcess, start_gateway
from tests.support.kafka import KafkaBroker

from bench.common import EVENT_NAME, ROOT, SECRET, STREAM_PATH, USER_GROUPS, mint, raise_nofile, user_of
from bench.loadgen.pool import Merged, WorkerPool
from bench.loadgen.publisher import Publisher

HOST = "127.0.0.1"
TOPIC = "bench-domain-events"
#: Bound on waiting for the Kafka source (assignment, warm-up records).
_WAIT_SECONDS = 60.0
_PAD = "drafting chapter 12: the harbour at night"
MAPPING = f"""
format = 1
extends = "default"

[rules.BenchTickEvent]
event = "{EVENT_NAME}"
scope = "global"
fields = ["t", "s", "p"]
"""


@dataclass
class PathStage:
    path: str
    rate: float
    events: int
    wanted: int
    delivered: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float


async def _produce(broker: KafkaBroker, rate: float, seconds: float, first: int) -> int:
    """Produce ``rate`` records a second for ``seconds``, each stamped with its scheduled time."""
    loop = asyncio.get_running_loop()
    total = max(1, round(rate * seconds))
    start_ns = time.monotonic_ns()
    start = loop.time()
    async with broker.producer() as producer:
        sent = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            scheduled = start_ns + int(i * 1e9 / rate)
            value = b'{"event_type":"BenchTickEvent","t":%d,"s":%d,"p":"%s"}' % (
                scheduled,
                first + i,
                _PAD.encode(),
            )
            sent.append(await producer.send(TOPIC, value))
        await asyncio.gather(*sent)
    return total


async def _measure(
    pool: WorkerPool, path: str, rate: float, events: int, held: int, drain: float
) -> PathStage:
    wanted = events * held
    deadline = time.monotonic() + drain
    merged: Merged = await pool.stats(hist=False)
    while merged.delivered < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        merged = await pool.stats(hist=False)
    merged = await pool.stats(hist=True)
    return PathStage(
        path=path,
        rate=rate,
        events=events,
        wanted=wanted,
        delivered=merged.delivered,
        p50_ms=merged.percentile_ms(0.50),
        p90_ms=merged.percentile_ms(0.90),
        p99_ms=merged.percentile_ms(0.99),
        max_ms=merged.max_ns / 1e6,
    )


async def _kafka_source_until(gateway: GatewayProcess, what: str, holds: Any) -> None:
    """Poll the gateway's health until ``holds(sources.kafka)``; bounded."""
    import httpx

    async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
        deadline = time.monotonic() + _WAIT_SECONDS
        while time.monotonic() < deadline:
            health = (await client.get("/api/v1/events/health")).json()
            if holds(health.get("sources", {}).get("kafka", {})):
                return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"the Kafka source: {what}")


async def run(
    n: int, rates: list[float], seconds: float, workers: int = 2, drain: float = 5.0
) -> dict[str, Any]:
    """Both paths at each rate; the figures as JSON-ready dicts."""
    broker = KafkaBroker().start()
    mapping = Path(tempfile.mkdtemp(prefix="herald-bench-")) / "mapping.toml"
    mapping.write_text(MAPPING)
    gateway: GatewayProcess | None = None
    pool = WorkerPool(workers)
    stages: list[PathStage] = []
    try:
        await broker.create_topics({TOPIC: 1})
        gateway = start_gateway(
            {
                "HERALD_JWT_SECRET": SECRET,
                "HERALD_LOG_LEVEL": "warning",
                "HERALD_KAFKA_BOOTSTRAP": broker.bootstrap,
                "HERALD_KAFKA_TOPICS": TOPIC,
                "HERALD_KAFKA_GROUP": "bench",
                "HERALD_MAPPING_FILE": str(mapping),
                "HERALD_MAX_CONNECTIONS_PER_USER": "0",
                "HERALD_MAX_CLIENTS": "0",
                "HERALD_CONNECT_RATE_PER_USER": "0",
                "HERALD_CONNECT_RATE_PER_IP": "0",
            }
        )
        await _kafka_source_until(gateway, "no partition assigned", lambda k: k.get("partitions", 0) > 0)
        pool.start()
        tokens = {f"u{g}": mint(f"u{g}") for g in range(USER_GROUPS)}
        specs = [(user_of(i), tokens[user_of(i)]) for i in range(n)]
        opened = await pool.connect(HOST, gateway.port, STREAM_PATH, specs, 256, time_limit=max(60.0, n / 50))
        held = int(opened["ok"])
        publisher = Publisher(HOST, gateway.port, mint("bench-publisher", publisher=True))
        await publisher.start()
        try:
            # Warm-up: both paths once, unmeasured.
            await publisher.run(20, 0.5, "global", lambda i: None)
            produced = await _produce(broker, 20, 0.5, 0)
            await _kafka_source_until(
                gateway, "records not handled", lambda k: k.get("received", 0) >= produced
            )
            await asyncio.sleep(1.0)
            for rate in rates:
                await pool.all("reset", 30)
                pub = await publisher.run(rate, seconds, "global", lambda i: None)
                stages.append(await _measure(pool, "http", rate, pub.accepted, held, drain))
                await asyncio.sleep(0.5)
                await pool.all("reset", 30)
                events = await _produce(broker, rate, seconds, produced)
                produced += events
                stages.append(await _measure(pool, "kafka", rate, events, held, drain))
                for stage in stages[-2:]:
                    _log(stage)
                await asyncio.sleep(0.5)
        finally:
            publisher.close()
            await pool.all("close", 60)
    finally:
        pool.stop()
        if gateway is not None:
            gateway.stop()
        broker.close()
    return {"n": n, "streams": held, "seconds": seconds, "stages": [asdict(s) for s in stages]}


def _log(s: PathStage) -> None:
    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:.1f}"

    print(
        f"  {s.path:5} {s.rate:>5g} ev/s: delivered {s.delivered}/{s.wanted}, "
        f"p50 {ms(s.p50_ms)} ms, p90 {ms(s.p90_ms)} ms, p99 {ms(s.p99_ms)} ms, max {s.max_ms:.0f} ms",
        file=sys.stderr,
        flush=True,
    )


def table(doc: dict[str, Any]) -> str:
    """Markdown: each rate, HTTP beside Kafka."""
    lines = [
        f"Kafka → browser beside HTTP → browser, {doc['streams']} streams, every event to all of them "
        f"({doc['seconds']:g} s per rate):",
        "",
        "| rate (ev/s) | path | delivered | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in doc["stages"]:
        cells = [f"{s[k]:.1f}" if s[k] is not None else "—" for k in ("p50_ms", "p90_ms", "p99_ms")]
        lines.append(
            f"| {s['rate']:g} | {s['path']} | {s['delivered']}/{s['wanted']} | {' | '.join(cells)} | "
            f"{s['max_ms']:.0f} |"
        )
    return "\n".join(lines)


DOC = ROOT / "docs" / "benchmarks.md"
_START, _END = "<!-- bench:kafka:start -->", "<!-- bench:kafka:end -->"


def write_doc(doc: dict[str, Any], json_path: Path) -> Path:
    """The table into docs/benchmarks.md, between this scenario's markers."""
    where = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    body = (
        "## Kafka → browser beside HTTP → browser\n\n"
        f"`python -m bench.kafka_latency{' --quick' if doc.get('quick') else ''}` "
        f"(results: `{where}`): a single-node Kafka 4.1 (KRaft) on this machine, one "
        "`herald serve` (memory bus) consuming one partition, the load generator's streams. "
        "Latency is from the moment the producer's schedule stamps an event (HTTP: the POST; "
        "Kafka: the produce) to the moment a client reads it.\n\n" + table(doc)
    )
    text = DOC.read_text()
    if _START in text and _END in text:
        before, rest = text.split(_START, 1)
        _, after = rest.split(_END, 1)
        text = f"{before}{_START}\n{body}\n{_END}{after}"
    else:
        text = f"{text.rstrip()}\n\n{_START}\n{body}\n{_END}\n"
    DOC.write_text(text)
    return DOC


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_latency", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=500, 10 and 50 ev/s, 4 s each")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rates", default="10,50,100")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-docs", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args(argv)
    n, rates, seconds = args.n, [float(r) for r in args.rates.split(",")], args.seconds
    if args.quick:
        n, rates, seconds = 500, [10.0, 50.0], 4.0
    raise_nofile()
    started = time.strftime("%Y%m%dT%H%M%S")
    doc = asyncio.run(run(n, rates, seconds))
    doc["started"] = started
    doc["quick"] = args.quick
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"{started}-kafka-latency.json"
    out.write_text(json.dumps(doc, indent=1))
    print(table(doc))
    print(f"results: {out}", file=sys.stderr)
    if not args.no_docs:
        print(f"wrote {write_doc(doc, out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
