"""``python -m bench.profile``: where a server's stream path spends its time under load.

Starts one server (Herald by default), opens N streams, broadcasts at a
fixed rate and samples the server with py-spy meanwhile (``--native`` adds
C frames); or, with ``--scenario connect``, samples while the N streams
open. Writes the collapsed stacks (flamegraph input) to
``bench/results/raw/`` and prints the functions with the most samples, by
self time and by total time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import ROOT, STREAM_PATH, USER_GROUPS, mint, raise_nofile, running_server, stop_all, user_of
from bench.loadgen.pool import WorkerPool
from bench.loadgen.publisher import Publisher

RAW = ROOT / "bench" / "results" / "raw"


def summarize(collapsed: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    out = [f"{samples} samples", "", "self time:"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "total time (function and its callees):"]
    out += [f"  {100 * n / samples:5.1f}%  {f}" for f, n in total.most_common(top)]
    return "\n".join(out)


async def _record(
    pyspy: str, pid: int, out: Path, seconds: float, native: bool
) -> asyncio.subprocess.Process:
    cmd = [pyspy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    cmd += ["--format", "raw", "-o", str(out)]
    if native:
        cmd.append("--native")
    spy = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.sleep(0.5)
    return spy


async def _finish(spy: asyncio.subprocess.Process, wait_s: float, early: bool) -> None:
    try:
        if early and spy.returncode is None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it has on SIGINT
        await asyncio.wait_for(spy.wait(), timeout=wait_s)
    finally:
        if spy.returncode is None:
            spy.kill()
            await spy.wait()


async def drive(server_name: str, scenario: str, n: int, rate: float, seconds: float, native: bool) -> Path:
    RAW.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    pool = WorkerPool(2)
    pool.start()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    out = RAW / f"profile-{server_name}-{scenario}-{n}-{rate:g}-{stamp}.txt"
    try:
        with running_server(server_name, gcwatch=False) as server:
            tokens = {f"u{g}": mint(f"u{g}") for g in range(USER_GROUPS)}
            specs = [(user_of(i), tokens[user_of(i)]) for i in range(n)]
            if scenario == "connect":
                spy = await _record(pyspy, server.pid, out, 600, native)
                t0 = time.monotonic()
                opened = await pool.connect(
                    "127.0.0.1", server.port, STREAM_PATH, specs, 256, max(60.0, n / 50)
                )
                took = time.monotonic() - t0
                await _finish(spy, 30, early=True)
                print(
                    f"{opened['ok']} streams open in {took:.2f} s ({opened['ok'] / took:.0f}/s)", flush=True
                )
            else:
                opened = await pool.connect(
                    "127.0.0.1", server.port, STREAM_PATH, specs, 256, max(60.0, n / 50)
                )
                print(f"{opened['ok']} streams open", flush=True)
                publisher = Publisher("127.0.0.1", server.port, mint("p", publisher=True))
                await publisher.start()
                await asyncio.sleep(1)
                spy = await _record(pyspy, server.pid, out, seconds, native)
                try:
                    result = await publisher.run(rate, seconds, "global", lambda i: None)
                    stats = await pool.stats()
                    print(
                        f"published {result.accepted}, delivered {stats.delivered}, "
                        f"p50 {stats.percentile_ms(0.5)} ms, p99 {stats.percentile_ms(0.99)} ms",
                        flush=True,
                    )
                finally:
                    await _finish(spy, seconds + 30, early=False)
                publisher.close()
            await pool.all("close", 60)
    finally:
        pool.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--server", default="herald", choices=["herald", "sse_starlette", "ceiling"])
    p.add_argument("--scenario", default="broadcast", choices=["broadcast", "connect"])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--rate", type=float, default=10.0, help="broadcast events/s")
    p.add_argument("--seconds", type=float, default=15.0)
    p.add_argument("--native", action="store_true", help="include C frames")
    args = p.parse_args(argv)
    raise_nofile()
    try:
        collapsed = asyncio.run(
            drive(args.server, args.scenario, args.n, args.rate, args.seconds, args.native)
        )
    finally:
        stop_all()
    print(f"collapsed stacks: {collapsed.relative_to(ROOT)}")
    print(summarize(collapsed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
