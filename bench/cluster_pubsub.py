"""What a Redis Cluster would cost the sharded bus, against standalone primaries (D28).

The sharded bus runs over a list of standalone Redis primaries. A Cluster URL
would need its notices on Redis's pub/sub and its scripts through a cluster
client; this measures both on this machine, in one run:

- **Redis CPU per notice**, with one subscriber: ``PUBLISH`` on one standalone
  Redis; ``PUBLISH`` on a three-primary Cluster (classic pub/sub: every node
  forwards every message over the cluster bus); ``SPUBLISH`` on the same
  Cluster (sharded pub/sub, Redis 7: only the node owning the channel's slot).
- **Client CPU per script call** (``EVALSHA`` with one key, 8 in flight, as the
  append path calls it): redis-py's asyncio ``Redis`` on a standalone server
  against its asyncio ``RedisCluster`` (slot routing per command).

    .venv/bin/python -m bench.cluster_pubsub [--quick]

Results: ``bench/results/<timestamp>-cluster-pubsub-<mode>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import redis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from bench.common import ROOT, free_port, log, save_run
from bench.redis_server import HOST, RedisServer

RESULTS = ROOT / "bench" / "results"
PAYLOAD = b"x" * 300
SCRIPT = "return redis.call('INCR', KEYS[1])"


def cluster_port() -> int:
    """A free port whose cluster-bus port (10,000 above: Redis refuses to start without it)
    exists and is free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with contextlib.suppress(OSError), socket.socket() as sock:
            sock.bind((HOST, port + 10_000))
            return port


def start_cluster(stack: ExitStack, nodes: int = 3) -> list[RedisServer]:
    options = ("--cluster-enabled", "yes", "--cluster-node-timeout", "5000")
    servers = [
        stack.enter_context(_running(RedisServer(*options, port=cluster_port()))) for _ in range(nodes)
    ]
    subprocess.run(
        ["redis-cli", "--cluster", "create", *(f"{HOST}:{s.port}" for s in servers),
         "--cluster-replicas", "0", "--cluster-yes"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = []
        for server in servers:
            with server.client() as client:
                states.append(client.execute_command("CLUSTER", "INFO").decode())
        if all("cluster_state:ok" in state for state in states):
            return servers
        time.sleep(0.1)
    raise RuntimeError("the cluster did not become ok")


class _running:
    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def __enter__(self) -> RedisServer:
        return self.server.start()

    def __exit__(self, *_: object) -> None:
        self.server.stop()


def owner(servers: list[RedisServer], channel: str) -> RedisServer:
    """The node owning ``channel``'s slot."""
    with servers[0].client() as client:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", channel))
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                port = int(primary[1])
                return next(s for s in servers if s.port == port)
    raise RuntimeError("no owner")


async def notices(publish_to: RedisServer, listen_on: RedisServer, sharded: bool, count: int) -> None:
    """``count`` messages published to one channel, pipelined by 100, and received by one
    subscriber."""
    channel = "herald:n:{user:alice}"
    listener = Redis(host=HOST, port=listen_on.port)
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await (pubsub.ssubscribe(channel) if sharded else pubsub.subscribe(channel))
    received = 0

    async def listen() -> None:
        nonlocal received
        deadline = time.monotonic() + 60
        while received < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {received} of {count} notices arrived")
            # None also stands for a confirmation it skipped.
            if await pubsub.get_message(timeout=1) is not None:
                received += 1

    reading = asyncio.create_task(listen())
    publisher = Redis(host=HOST, port=publish_to.port)
    command = "SPUBLISH" if sharded else "PUBLISH"
    for start in range(0, count, 100):
        pipe = publisher.pipeline(transaction=False)
        for _ in range(min(100, count - start)):
            pipe.execute_command(command, channel, PAYLOAD)
        await pipe.execute()
    await reading
    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
    await listener.aclose()
    await publisher.aclose()


def forwarded(server: RedisServer) -> int:
    """Pub/sub messages this Cluster node received over the cluster bus (0 standalone)."""
    with server.client() as client:
        if not client.info("cluster").get("cluster_enabled"):
            return 0
        info = client.execute_command("CLUSTER", "INFO").decode()
    fields = dict(line.split(":", 1) for line in info.split() if ":" in line)
    return sum(
        int(fields.get(f"cluster_stats_messages_{kind}_received", 0)) for kind in ("publish", "publishshard")
    )


def notice_case(name: str, servers: list[RedisServer], run: Any, count: int) -> dict[str, Any]:
    before = [s.cpu_seconds() for s in servers]
    bus_before = [forwarded(s) for s in servers]
    asyncio.run(run)
    after = [s.cpu_seconds() for s in servers]
    bus_after = [forwarded(s) for s in servers]
    per_node = [round((b - a) / count * 1e6, 2) for a, b in zip(before, after, strict=True)]
    relayed = [b - a for a, b in zip(bus_before, bus_after, strict=True)]
    log(f"{name}: Redis µs per notice per node {per_node}; received over the cluster bus {relayed}")
    return {
        "case": name,
        "notices": count,
        "redis_us_per_notice_per_node": per_node,
        "total": sum(per_node),
        "cluster_bus_received_per_node": relayed,
    }


async def script_calls(client: Redis | RedisCluster, count: int, in_flight: int = 8) -> float:
    """Client CPU µs per ``EVALSHA`` (one key each, keys over every slot)."""
    sha = await client.script_load(SCRIPT)
    await client.evalsha(sha, 1, "warm")

    async def worker(w: int) -> None:
        for i in range(w, count, in_flight):
            await client.evalsha(sha, 1, f"herald:{{user:{i}}}:seq")

    started = time.process_time()
    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    return (time.process_time() - started) / count * 1e6


def client_case(name: str, make: Any, count: int) -> dict[str, Any]:
    async def run() -> float:
        client = make()
        if isinstance(client, RedisCluster):
            await client.initialize()
        try:
            return await script_calls(client, count)
        finally:
            await client.aclose()

    us = asyncio.run(run())
    log(f"{name}: client CPU µs per EVALSHA {us:.1f}")
    return {"case": name, "calls": count, "client_cpu_us_per_call": round(us, 1)}


def table(doc: dict[str, Any]) -> str:
    lines = [
        "| notices, one subscriber | Redis µs per notice, each node | all nodes | forwarded over the cluster "
        "bus, each node |",
        "|---|---|---:|---|",
    ]
    for r in doc["notices"]:
        cpu = ", ".join(str(v) for v in r["redis_us_per_notice_per_node"])
        relayed = ", ".join(str(v) for v in r["cluster_bus_received_per_node"])
        lines.append(f"| {r['case']} | {cpu} | {r['total']:.2f} | {relayed} |")
    lines += ["", "| script calls (EVALSHA, 8 in flight) | client CPU µs per call |", "|---|---:|"]
    for r in doc["clients"]:
        lines.append(f"| {r['case']} | {r['client_cpu_us_per_call']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cluster_pubsub", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer messages and calls")
    args = p.parse_args(argv)
    count, calls = (10_000, 5_000) if args.quick else (50_000, 20_000)
    started = time.strftime("%Y%m%dT%H%M%S")
    with ExitStack() as stack:
        single = stack.enter_context(_running(RedisServer()))
        cluster = start_cluster(stack)
        home = owner(cluster, "herald:n:{user:alice}")
        elsewhere = next(s for s in cluster if s is not home)
        found = [
            notice_case("standalone, PUBLISH", [single], notices(single, single, False, count), count),
            notice_case("cluster of 3, PUBLISH", cluster, notices(elsewhere, home, False, count), count),
            notice_case("cluster of 3, SPUBLISH", cluster, notices(home, home, True, count), count),
        ]
        clients = [
            client_case("standalone, redis.asyncio.Redis", lambda: Redis(host=HOST, port=single.port), calls),
            client_case(
                "cluster of 3, redis.asyncio.RedisCluster",
                lambda: RedisCluster(host=HOST, port=cluster[0].port),
                calls,
            ),
        ]
        with single.client() as client:
            version = client.info("server")["redis_version"]
    doc: dict[str, Any] = {
        "kind": "cluster-pubsub",
        "mode": "quick" if args.quick else "full",
        "started": started,
        "redis_version": version,
        "redis_py": redis.__version__,
        "notices": found,
        "clients": clients,
    }
    save_run(doc, RESULTS / f"{started}-cluster-pubsub-{doc['mode']}.json", table(doc), None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
