"""``python -m bench.shard_scaling [--quick]``: what a node spends receiving events, as nodes are
added, on one Redis and on three shards (docs/architecture.md, D28; issue 12).

1, 2 and 4 Herald nodes, each holding streams of users of its own (one stream per user), on
three real Redis shards (``HERALD_REDIS_SHARDS``) or on one Redis (``HERALD_REDIS_URL``
alone: one shard). Every user gets events at the same rate, appended straight into the bus by
this process with the bus's own code (no node publishes, so a node's CPU is what it spends
*receiving*). A node reads its own users' channels only, so its CPU should not grow with the
nodes. (Before D28 became the only Redis bus, the single log's nodes each read every event:
1.00 → 2.49 → 2.23× from 1 to 4 nodes, docs/scaling.md.)

Reported per (bus, nodes): each node's CPU (% of a core) and µs per event it delivered, the
ratio to one node, the deliveries against the events due, and Redis's CPU per event (per
shard on the sharded bus). Results: ``bench/results/<timestamp>-shard-scaling-<mode>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench.common import (
    STREAM_PATH,
    cpu_seconds,
    log,
    mint,
    raise_nofile,
    save_run,
    start_server,
    stop_all,
)
from bench.redis_server import RedisServer
from bench.run import RESULTS
from herald.bus.base import Append
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from herald.events.message import build_message, encode_data

SHARDS = 3


@dataclass
class Plan:
    nodes: tuple[int, ...]
    users_per_node: int
    events_per_user_s: float
    seconds: float

    @classmethod
    def quick(cls) -> Plan:
        return cls(nodes=(1, 2, 4), users_per_node=100, events_per_user_s=4.0, seconds=6.0)

    @classmethod
    def full(cls) -> Plan:
        return cls(nodes=(1, 2, 4), users_per_node=250, events_per_user_s=4.0, seconds=15.0)


class Holder:
    """One stream per user, read and counted (``event: task.created`` blocks)."""

    def __init__(self, streams: int) -> None:
        self.delivered = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.ready = 0
        self.streams = streams
        #: Set once every stream got its ``connection.established``.
        self.all_ready = asyncio.Event()

    async def hold(self, port: int, user: str) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        token = mint(user)
        writer.write(
            f"GET {STREAM_PATH} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\n\r\n".encode()
        )
        marker = b"event: task.created"
        tail = b""
        try:
            first = True
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                if first and b"connection.established" in chunk:
                    self.ready += 1
                    first = False
                    if self.ready == self.streams:
                        self.all_ready.set()
                data = tail + chunk
                self.delivered += data.count(marker)
                tail = data[-len(marker) :]
        finally:
            writer.close()

    def start(self, port: int, users: list[str]) -> None:
        self.tasks += [asyncio.create_task(self.hold(port, u)) for u in users]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()


async def run_case(
    plan: Plan, sharded: bool, count: int, shards: list[RedisServer], store: RedisServer
) -> dict[str, Any]:
    prefix = f"ss{time.monotonic_ns() % 10**8}"
    env = {
        "HERALD_BUS": "redis",
        "HERALD_REDIS_URL": store.url,
        "HERALD_REDIS_PREFIX": prefix,
        "HERALD_COALESCE_INTERVAL_SECONDS": "0",
        "HERALD_HEARTBEAT_SECONDS": "15",
    }
    if sharded:
        env["HERALD_REDIS_SHARDS"] = ",".join(s.url for s in shards)
    nodes = [start_server("herald", gcwatch=False, extra_env=env) for _ in range(count)]
    users = [[f"n{i}-u{j}" for j in range(plan.users_per_node)] for i in range(count)]
    holder = Holder(count * plan.users_per_node)
    connections: list[RedisConnections] = []
    try:
        for node, mine in zip(nodes, users, strict=True):
            holder.start(node.port, mine)
        await asyncio.wait_for(holder.all_ready.wait(), 60)
        if sharded:
            connections = [RedisConnections(s.url) for s in shards]
            bus: Any = ShardedBus(connections, keys=ShardKeys(prefix))
        else:
            connections = [RedisConnections(store.url)]
            bus = ShardedBus(connections, keys=ShardKeys(prefix))
        everyone = [u for mine in users for u in mine]
        rate = len(everyone) * plan.events_per_user_s
        stores = shards if sharded else [store]

        async def publish(seconds: float) -> int:
            sent, start, n = 0, time.monotonic(), 0
            while (elapsed := time.monotonic() - start) < seconds:
                due = int(elapsed * rate) - sent
                if due > 0:
                    batch = []
                    for _ in range(min(due, 500)):
                        message = build_message(
                            event="task.created", scope="user", key=everyone[n % len(everyone)], data={"n": n}
                        )
                        batch.append(Append(message, encode_data(message, 65536)))
                        n += 1
                    await bus.append_many(batch)
                    sent += len(batch)
                else:
                    await asyncio.sleep(0.005)
            return sent

        await publish(2.0)  # warm: every channel subscribed, caches filled
        await asyncio.sleep(1.0)
        before_nodes = [cpu_seconds(n.ps) for n in nodes]
        before_redis = [s.cpu_seconds() for s in stores]
        before_delivered = holder.delivered
        t0 = time.monotonic()
        sent = await publish(plan.seconds)
        await asyncio.sleep(1.0)  # the last deliveries
        wall = time.monotonic() - t0
        node_cpu = [cpu_seconds(n.ps) - b for n, b in zip(nodes, before_nodes, strict=True)]
        redis_cpu = [s.cpu_seconds() - b for s, b in zip(stores, before_redis, strict=True)]
        delivered = holder.delivered - before_delivered
    finally:
        await holder.stop()
        for c in connections:
            await c.aclose()
        for node in nodes:
            node.stop()
    per_node_events = sent / count
    return {
        "bus": "three shards" if sharded else "one redis",
        "nodes": count,
        "events": sent,
        "delivered": delivered,
        "node_cpu_pct": [round(100 * c / wall, 2) for c in node_cpu],
        "node_cpu_us_per_own_event": round(1e6 * (sum(node_cpu) / count) / per_node_events, 1),
        "redis_cpu_us_per_event": [round(1e6 * c / sent, 2) for c in redis_cpu],
        "wall_s": round(wall, 2),
    }


async def simulate(plan: Plan) -> list[dict[str, Any]]:
    shards = [RedisServer().start() for _ in range(SHARDS)]
    store = RedisServer().start()
    results = []
    try:
        for sharded in (False, True):
            for count in plan.nodes:
                log(f"{'three shards' if sharded else 'one redis'}: {count} node(s)")
                result = await run_case(plan, sharded, count, shards, store)
                log(f"  {result}")
                results.append(result)
    finally:
        for s in [*shards, store]:
            s.stop()
    return results


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| bus | nodes | events | delivered | node CPU % (each) | node µs per own event | ratio to 1 node "
        "| Redis µs per event (each) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base: dict[str, float] = {}
    for r in results:
        base.setdefault(r["bus"], r["node_cpu_us_per_own_event"])
        ratio = r["node_cpu_us_per_own_event"] / base[r["bus"]]
        lines.append(
            f"| {r['bus']} | {r['nodes']} | {r['events']:,} | {r['delivered']:,} | "
            f"{', '.join(str(c) for c in r['node_cpu_pct'])} | {r['node_cpu_us_per_own_event']} | "
            f"{ratio:.2f}× | {', '.join(str(c) for c in r['redis_cpu_us_per_event'])} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.shard_scaling", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="100 users per node, 6 s per case")
    args = p.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan.full()
    raise_nofile()
    mode = "quick" if args.quick else "full"
    started = time.strftime("%Y%m%dT%H%M%S")
    try:
        results = asyncio.run(simulate(plan))
    finally:
        stop_all()
    doc = {"started": started, "mode": mode, "plan": plan.__dict__, "shards": SHARDS, "results": results}
    save_run(doc, RESULTS / f"{started}-shard-scaling-{mode}.json", table(results), None)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
