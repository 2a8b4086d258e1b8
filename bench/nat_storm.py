"""An office behind one NAT reconnecting after a deploy (issue 13): the per-address limit.

One Herald node (``herald serve``, memory bus) with the given per-address connect
limit (``HERALD_CONNECT_RATE_PER_IP``, ``HERALD_CONNECT_BURST_PER_IP``). ``N``
clients, each its own user, all from 127.0.0.1, open their streams (the first
storm), then the node is stopped (SIGTERM: every stream gets a ``retry:``
jittered over ``SHUTDOWN_RETRY_SPREAD_MS``) and started again on the same port
(the second storm). Each client behaves as the TypeScript client does: it comes
back after the server's ``retry:``, retries a refused connection after 250 ms,
and after a 429 waits exactly its ``Retry-After``. Reported per limit:

- when every stream is back, from the stop, against the retry spread's end;
- the 429s, the clients refused at all, and those refused again when they came
  back after their ``Retry-After`` ("refused longer than its Retry-After");
- the longest any one client spent refused.

    .venv/bin/python -m bench.nat_storm [--n 5000] [--limits 20:200,500:5000]

Results: ``bench/results/<timestamp>-nat-storm.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import ROOT, STREAM_PATH, log, mint, raise_nofile, save_run, start_server
from bench.scenarios import HOST

RESULTS = ROOT / "bench" / "results"
#: The server's ``retry:`` when nothing else was said (HERALD_RETRY_MS).
_RETRY = re.compile(rb"retry: (\d+)")
#: A client's wait before trying again when the port refuses (the node is restarting).
_REFUSED_WAIT = 0.25


@dataclass
class Client:
    token: str
    #: Retry-After values of the 429s it got, in order.
    retry_afters: list[float] = field(default_factory=list)
    #: 429s right after it had waited a Retry-After.
    refused_again: int = 0
    #: Seconds from its first attempt to its stream, for the last storm.
    refused_for: float = 0.0
    back_at: float | None = None
    retry_ms: int | None = None
    #: The open stream's writer: a writer that is dropped closes its connection.
    writer: asyncio.StreamWriter | None = None


async def attempt(port: int, client: Client) -> tuple[int, float, asyncio.StreamReader | None]:
    """One request: the status, its Retry-After, and the open stream when it is 200."""
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
    except OSError:
        return 0, _REFUSED_WAIT, None
    request = f"GET {STREAM_PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {client.token}\r\n\r\n"
    writer.write(request.encode())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, OSError):
        writer.close()
        return 0, _REFUSED_WAIT, None
    status = int(head[9:12])
    if status == 200:
        client.writer = writer
        return status, 0.0, reader
    retry_after = _REFUSED_WAIT
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"retry-after:"):
            retry_after = float(line.split(b":", 1)[1])
    writer.close()
    return status, retry_after, None


async def open_until_admitted(port: int, client: Client) -> asyncio.StreamReader:
    started = time.monotonic()
    waited_retry_after = False
    while True:
        status, wait, reader = await attempt(port, client)
        if reader is not None:
            client.refused_for = time.monotonic() - started
            return reader
        if status == 429:
            client.retry_afters.append(wait)
            if waited_retry_after:
                client.refused_again += 1
            waited_retry_after = True
        else:
            waited_retry_after = False
        await asyncio.sleep(wait)


async def hold(reader: asyncio.StreamReader, client: Client) -> None:
    """Read the stream until the server ends it, keeping its last ``retry:``."""
    with contextlib.suppress(OSError):
        while chunk := await reader.read(65536):
            for match in _RETRY.finditer(chunk):
                client.retry_ms = int(match.group(1))


@dataclass
class Storm:
    all_back_s: float
    refusals: int
    clients_refused: int
    refused_again: int
    longest_refused_s: float
    max_retry_after_s: float


def storm_of(clients: list[Client], since: float) -> Storm:
    backs = [c.back_at for c in clients if c.back_at is not None]
    return Storm(
        all_back_s=round(max(backs) - since, 2) if len(backs) == len(clients) else float("nan"),
        refusals=sum(len(c.retry_afters) for c in clients),
        clients_refused=sum(1 for c in clients if c.retry_afters),
        refused_again=sum(c.refused_again for c in clients),
        longest_refused_s=round(max(c.refused_for for c in clients), 2),
        max_retry_after_s=max((max(c.retry_afters) for c in clients if c.retry_afters), default=0.0),
    )


async def run_one(n: int, rate: float, burst: int, spread_ms: int, retry_ms: int) -> dict[str, Any]:
    env = {
        "HERALD_CONNECT_RATE_PER_IP": str(rate),
        "HERALD_CONNECT_BURST_PER_IP": str(burst),
        "HERALD_SHUTDOWN_RETRY_SPREAD_MS": str(spread_ms),
        "HERALD_RETRY_MS": str(retry_ms),
    }
    server = start_server("herald", gcwatch=False, extra_env=env)
    port = server.port
    clients = [Client(mint(f"office-{i}")) for i in range(n)]
    try:
        started = time.monotonic()

        async def first(client: Client) -> asyncio.StreamReader:
            reader = await open_until_admitted(port, client)
            client.back_at = time.monotonic()
            return reader

        readers = await asyncio.wait_for(asyncio.gather(*(first(c) for c in clients)), 600)
        opening = storm_of(clients, started)
        log(f"  {rate}/s burst {burst}: {n} opened in {opening.all_back_s} s, {opening.refusals} refusals")
        for client in clients:
            client.retry_afters, client.refused_again, client.back_at = [], 0, None

        async def again(client: Client, reader: asyncio.StreamReader) -> None:
            await hold(reader, client)
            await asyncio.sleep((client.retry_ms or retry_ms) / 1000)
            await open_until_admitted(port, client)
            client.back_at = time.monotonic()

        holding = [asyncio.ensure_future(again(c, r)) for c, r in zip(clients, readers, strict=True)]
        stopped = time.monotonic()
        await asyncio.to_thread(server.stop)
        server = await asyncio.to_thread(start_server, "herald", gcwatch=False, extra_env=env, port=port)
        restarted_s = time.monotonic() - stopped
        await asyncio.wait_for(asyncio.gather(*holding), 600)
        restart = storm_of(clients, stopped)
        log(
            f"  restart: all back in {restart.all_back_s} s, {restart.refusals} refusals, "
            f"{restart.refused_again} refused again"
        )
        return {
            "rate_per_ip": rate,
            "burst_per_ip": burst,
            "opening": asdict(opening),
            "restart": asdict(restart),
            "node_down_s": round(restarted_s, 2),
            "spread_ends_s": (retry_ms + spread_ms) / 1000,
        }
    finally:
        server.stop()


def parse_limits(text: str) -> list[tuple[float, int]]:
    pairs = []
    for item in text.split(","):
        rate, _, burst = item.partition(":")
        pairs.append((float(rate), int(burst)))
    return pairs


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results = []
    for rate, burst in parse_limits(args.limits):
        log(f"nat storm: {args.n} clients from one address, {rate}/s burst {burst}")
        results.append(await run_one(args.n, rate, burst, args.spread_ms, args.retry_ms))
    return {"n": args.n, "spread_ms": args.spread_ms, "retry_ms": args.retry_ms, "results": results}


def table(doc: dict[str, Any]) -> str:
    rows = [
        "| per address | first storm: all open (s) | 429s | restart: all back (s) | 429s | clients refused "
        "| refused again after Retry-After | longest refused (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["results"]:
        o, s = r["opening"], r["restart"]
        rows.append(
            f"| {r['rate_per_ip']:g}/s, burst {r['burst_per_ip']} | {o['all_back_s']} | {o['refusals']} "
            f"| {s['all_back_s']} (spread ends {r['spread_ends_s']:g}) | {s['refusals']} "
            f"| {s['clients_refused']} | {s['refused_again']} | {s['longest_refused_s']} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.nat_storm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--limits", default="20:200,500:5000", help="rate:burst per address, comma-separated")
    parser.add_argument("--spread-ms", type=int, default=10_000, help="HERALD_SHUTDOWN_RETRY_SPREAD_MS")
    parser.add_argument("--retry-ms", type=int, default=3000, help="HERALD_RETRY_MS")
    args = parser.parse_args(argv)
    raise_nofile()
    started = time.strftime("%Y%m%dT%H%M%S")
    doc = {
        "kind": "nat-storm",
        "started": started,
        "command": "python -m bench.nat_storm " + " ".join(argv if argv is not None else sys.argv[1:]),
        **asyncio.run(main_async(args)),
    }
    save_run(doc, RESULTS / f"{started}-nat-storm.json", table(doc), None)


if __name__ == "__main__":
    main()
