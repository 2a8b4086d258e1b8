"""Memory under hostile readers (issue 13): good streams beside streams that never read.

One Herald node (``herald serve``, memory bus) holds ``N`` well-behaved streams,
read by the load generator, under a broadcast; its good streams' latency is
measured alone first (the baseline), then again with ``N`` more streams opened
by clients that send their request and never read a byte (a small receive
buffer, as a hostile or wedged client would). Reported, in the same run:

- the good streams' p99 with the never-readers beside them, as a ratio of
  their own baseline;
- how long until every never-reading stream is closed (``error.slow-consumer``
  once what it holds passes the slow-consumer budget; the kernel's share is
  capped by ``SO_SNDBUF``, ``HERALD_SOCKET_SEND_BUFFER_BYTES``);
- the node's RSS and the kernel's TCP memory (``/proc/net/sockstat``, the
  whole machine: both ends of every loopback socket) at their peak, against
  the baseline.

    .venv/bin/python -m bench.hostile [--quick] [--n 2000] [--rate 50]

Results: ``bench/results/<timestamp>-hostile-<mode>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    ROOT,
    STREAM_PATH,
    USER_GROUPS,
    ServerProcess,
    log,
    mint,
    raise_nofile,
    save_run,
    start_server,
)
from bench.common import forget as forget_server
from bench.loadgen.pool import WorkerPool
from bench.loadgen.publisher import Publisher
from bench.scenarios import HOST, Plan, Stage, _stage, settle

RESULTS = ROOT / "bench" / "results"
PAGE = 4096


def tcp_memory_bytes() -> int:
    """The kernel's memory for TCP sockets, machine-wide (``/proc/net/sockstat``, pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1]) * PAGE
    return 0


@dataclass
class Result:
    n_good: int
    n_hostile: int
    rate: float
    budget_bytes: int
    #: ``HERALD_SOCKET_SEND_BUFFER_BYTES`` (None: Herald's default, half the budget; 0: the
    #: kernel's autotuning).
    send_buffer_bytes: int | None
    baseline: dict[str, Any]
    with_hostile: dict[str, Any]
    p99_ratio: float | None
    hostile_opened: int
    hostile_closed_after_s: float | None
    rss_baseline_mib: float
    rss_peak_mib: float
    #: Once the never-readers are gone, their sockets too.
    rss_after_mib: float
    #: The same after a second wave of as many never-readers.
    rss_after_second_mib: float
    tcp_mem_baseline_mib: float
    tcp_mem_peak_mib: float


async def open_never_reading(port: int, count: int) -> list[socket.socket]:
    """``count`` streams whose clients send the request and never read."""
    loop = asyncio.get_running_loop()
    opened: list[socket.socket] = []
    tokens = [mint(f"h{i}") for i in range(count)]
    semaphore = asyncio.Semaphore(128)

    async def one(token: str) -> None:
        async with semaphore:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, (HOST, port))
                request = f"GET {STREAM_PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n"
                await loop.sock_sendall(sock, request.encode())
            except OSError:
                sock.close()
                return
            opened.append(sock)

    await asyncio.gather(*(one(t) for t in tokens))
    return opened


async def connections(client: httpx.AsyncClient) -> int:
    """The node's open streams, from its metrics."""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "herald_connections":
            return int(family.samples[0].value)
    raise RuntimeError("the node's metrics have no herald_connections")


def sockets(server: ServerProcess) -> int:
    """The node's TCP sockets, as the kernel lists them (a closed stream's socket may
    linger a few seconds for its last bytes: herald.server.protocol's close timeout)."""
    return len(server.ps.net_connections(kind="tcp"))


async def sockets_back_to(server: ServerProcess, count: int) -> None:
    """Wait (30 s at most) until the node holds no more sockets than ``count``."""
    for _ in range(120):
        if sockets(server) <= count:
            return
        await asyncio.sleep(0.25)


async def simulate(n: int, rate: float, seconds: float, budget: int, send_buffer: int | None) -> Result:
    plan = Plan.quick()
    plan.stage_seconds = seconds
    plan.drain_seconds = 5.0
    plan.p99_limit_ms = 5000.0
    env = {"HERALD_SLOW_CONSUMER_BYTES": str(budget)}
    if send_buffer is not None:
        env["HERALD_SOCKET_SEND_BUFFER_BYTES"] = str(send_buffer)
    server = start_server("herald", gcwatch=False, extra_env=env)
    pool = WorkerPool(2)
    pool.start()
    publisher = Publisher(HOST, server.port, mint("bench-publisher", publisher=True))
    hostile: list[socket.socket] = []
    metrics = httpx.AsyncClient(base_url=f"http://{HOST}:{server.port}", timeout=10)
    try:
        await publisher.start()
        tokens = {f"u{g}": mint(f"u{g}") for g in range(USER_GROUPS)}
        specs = [(f"u{i % USER_GROUPS}", tokens[f"u{i % USER_GROUPS}"]) for i in range(n)]
        opened = await pool.connect(HOST, server.port, STREAM_PATH, specs, 256, time_limit=120)
        good = int(opened["ok"])
        log(f"hostile: {good} good streams")
        await asyncio.sleep(2.0)
        rss0, tcp0 = server.rss(), tcp_memory_bytes()
        baseline: Stage = await _stage(
            server, pool, publisher, plan, "broadcast", rate, good, "global", lambda i: None
        )
        log(f"  baseline: p99 {baseline.p99_ms} ms, {baseline.deliveries_per_s:.0f} deliveries/s")
        await settle(pool, good)

        quiet_sockets = sockets(server)
        hostile = await open_never_reading(server.port, n)
        log(f"  {len(hostile)} never-reading streams opened")
        opened_at = time.monotonic()
        peak_rss, peak_tcp = server.rss(), tcp_memory_bytes()
        closed_after: float | None = None

        async def watch() -> None:
            nonlocal peak_rss, peak_tcp, closed_after
            while True:
                peak_rss = max(peak_rss, server.rss())
                peak_tcp = max(peak_tcp, tcp_memory_bytes())
                if closed_after is None and await connections(metrics) <= good:
                    closed_after = time.monotonic() - opened_at
                await asyncio.sleep(0.25)

        watcher = asyncio.create_task(watch())
        try:
            loaded = await _stage(
                server, pool, publisher, plan, "broadcast", rate, good, "global", lambda i: None
            )
            log(f"  with never-readers: p99 {loaded.p99_ms} ms, {loaded.deliveries_per_s:.0f} deliveries/s")
            deadline = time.monotonic() + 60
            while closed_after is None and time.monotonic() < deadline:
                await publisher.run(rate, 1.0, "global", lambda i: None)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await sockets_back_to(server, quiet_sockets)
        rss_after = server.rss()
        # A second wave: memory the first one left is either reused (the allocator kept it)
        # or added to (something of theirs is still held).
        for sock in hostile:
            sock.close()
        hostile = await open_never_reading(server.port, n)
        deadline = time.monotonic() + 60
        while await connections(metrics) > good and time.monotonic() < deadline:
            await publisher.run(rate, 1.0, "global", lambda i: None)
        await sockets_back_to(server, quiet_sockets)
        rss_second = server.rss()
        log(
            f"  RSS after the first wave {rss_after / 2**20:.0f} MiB, "
            f"after a second {rss_second / 2**20:.0f} MiB"
        )
        ratio = loaded.p99_ms / baseline.p99_ms if loaded.p99_ms is not None and baseline.p99_ms else None
        return Result(
            n_good=good,
            n_hostile=n,
            rate=rate,
            budget_bytes=budget,
            send_buffer_bytes=send_buffer,
            baseline=asdict(baseline),
            with_hostile=asdict(loaded),
            p99_ratio=ratio,
            hostile_opened=len(hostile),
            hostile_closed_after_s=closed_after,
            rss_baseline_mib=rss0 / 2**20,
            rss_peak_mib=peak_rss / 2**20,
            rss_after_mib=rss_after / 2**20,
            rss_after_second_mib=rss_second / 2**20,
            tcp_mem_baseline_mib=tcp0 / 2**20,
            tcp_mem_peak_mib=peak_tcp / 2**20,
        )
    finally:
        for sock in hostile:
            sock.close()
        publisher.close()
        await metrics.aclose()
        with contextlib.suppress(Exception):
            await pool.all("close", 30)
        pool.stop()
        forget_server(server.proc)


def table(r: dict[str, Any]) -> str:
    closed = r["hostile_closed_after_s"]
    return "\n".join(
        [
            "| measure | baseline (good streams alone) | with the never-readers | ratio |",
            "|---|---:|---:|---:|",
            f"| good streams' p99 (ms) | {r['baseline']['p99_ms']:.1f} | {r['with_hostile']['p99_ms']:.1f} "
            f"| {r['p99_ratio']:.2f}× |",
            f"| node RSS (MiB, peak) | {r['rss_baseline_mib']:.0f} | {r['rss_peak_mib']:.0f} | "
            f"{r['rss_peak_mib'] / r['rss_baseline_mib']:.2f}× |",
            f"| node RSS once they are gone (MiB) | | {r['rss_after_mib']:.0f} | "
            f"{r['rss_after_mib'] / r['rss_baseline_mib']:.2f}× |",
            f"| … and after a second wave of as many (MiB) | | {r['rss_after_second_mib']:.0f} | "
            f"{r['rss_after_second_mib'] / r['rss_baseline_mib']:.2f}× |",
            f"| kernel TCP memory, machine (MiB, peak) | {r['tcp_mem_baseline_mib']:.1f} | "
            f"{r['tcp_mem_peak_mib']:.1f} | |",
            f"| never-reading streams all closed after (s) | | "
            f"{'not within the run' if closed is None else f'{closed:.1f}'} | |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hostile", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="500 + 500 streams, short stages")
    p.add_argument("--n", type=int, help="good streams, and as many never-reading ones (default 2,000)")
    p.add_argument("--rate", type=float, default=50.0, help="broadcast events/s")
    p.add_argument("--budget", type=int, default=64 * 1024, help="HERALD_SLOW_CONSUMER_BYTES")
    p.add_argument(
        "--send-buffer", type=int, help="HERALD_SOCKET_SEND_BUFFER_BYTES (default: Herald's; 0: autotuning)"
    )
    args = p.parse_args(argv)
    n = args.n or (500 if args.quick else 2000)
    raise_nofile()
    started = time.strftime("%Y%m%dT%H%M%S")
    result = asyncio.run(simulate(n, args.rate, 3.0 if args.quick else 8.0, args.budget, args.send_buffer))
    doc: dict[str, Any] = {
        "kind": "hostile",
        "mode": "quick" if args.quick else "full",
        "started": started,
        "command": "python -m bench.hostile " + " ".join(argv if argv is not None else sys.argv[1:]),
        "result": asdict(result),
    }
    save_run(doc, RESULTS / f"{started}-hostile-{doc['mode']}.json", table(doc["result"]), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
