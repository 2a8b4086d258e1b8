"""Faults under steady traffic: real processes killed for real.

Three gateway nodes share a Redis bus (append-only file, so "with its data" means
what Redis acknowledged); a Kafka broker and a PostgreSQL outbox feed them; HTTP
publishers send user events and global ticks to every node. Clients (two per user,
on different nodes) reconnect like browsers and record what they receive. Each
phase injects one fault, restores it, lets traffic run, drains the sources, and
publishes a marker every client must receive; then each client's phase is
accounted (``tests.reliability.ledger``): events lost (and whether the client was
told ``recovered: false``), duplicated, out of order, never meant for it, and the
time until it received an event published after the fault.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import pytest

from herald.auth.minting import mint_token
from tests.reliability.client import ResilientClient, running_clients
from tests.reliability.ledger import ClientOutcome, Ledger, account
from tests.reliability.mode import FULL, pick, write_result
from tests.reliability.stack import Stack, closing
from tests.reliability.traffic import HttpTraffic, KafkaTraffic, OutboxTraffic
from tests.support.api import wait_until
from tests.support.gateway import SECRET

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(420, 1500))]

NODES = 3
USERS = pick(4, 12)
HTTP_RATE = pick(25.0, 60.0)
KAFKA_RATE = pick(10.0, 25.0)
OUTBOX_RATE = pick(6.0, 15.0)
WARMUP = pick(2.0, 8.0)
OUTAGE = pick(3.0, 8.0)
AFTER = pick(2.0, 8.0)
LIVE_BOUND = 60.0


@dataclass
class Phase:
    name: str
    fault: Callable[[Stack], Awaitable[None]]
    restore: Callable[[Stack], Awaitable[None]]
    #: Whether losing events is unavoidable (then every affected client must be told).
    loss_allowed: bool = False


async def _in_thread(work: Callable[[], Any]) -> None:
    await asyncio.get_running_loop().run_in_executor(None, work)


async def _kill_node(stack: Stack) -> None:
    stack.kill_node(0)


async def _restart_node(stack: Stack) -> None:
    await stack.restart_node(0)


async def _kill_kafka(stack: Stack) -> None:
    await _in_thread(stack.kafka.kill)


async def _start_kafka(stack: Stack) -> None:
    await _in_thread(stack.kafka.start)


async def _kill_postgres(stack: Stack) -> None:
    await _in_thread(stack.postgres.kill)


async def _start_postgres(stack: Stack) -> None:
    await _in_thread(stack.postgres.start)


async def _stall_redis(stack: Stack) -> None:
    stack.redis.pause()


async def _resume_redis(stack: Stack) -> None:
    stack.redis.resume()


async def _kill_redis(stack: Stack) -> None:
    stack.redis.kill()


async def _start_redis(stack: Stack) -> None:
    await _in_thread(stack.redis.start)


async def _start_redis_empty(stack: Stack) -> None:
    stack.redis.wipe()
    await _in_thread(stack.redis.start)


PHASES = [
    Phase("gateway node kill -9", _kill_node, _restart_node),
    Phase("Kafka broker kill -9", _kill_kafka, _start_kafka),
    Phase("PostgreSQL kill -9", _kill_postgres, _start_postgres),
    Phase("Redis stall (SIGSTOP) > heartbeat", _stall_redis, _resume_redis),
    Phase("Redis kill -9, restart with data (AOF)", _kill_redis, _start_redis),
    Phase("Redis kill -9, restart empty", _kill_redis, _start_redis_empty, loss_allowed=True),
]


def _users() -> list[str]:
    return [f"user{i}" for i in range(USERS)]


def _clients(stack: Stack) -> list[ResilientClient]:
    clients = []
    for i, user in enumerate(_users()):
        token = mint_token(SECRET, sub=user, ttl_seconds=7200)
        # Two clients per user ("two tabs"), on two different nodes.
        for tab in range(2):
            node = (i + tab) % NODES
            clients.append(ResilientClient(f"{user}/{tab}", user, token, stack.all_urls, node, watchdog=5.0))
    return clients


async def test_faults_under_traffic_lose_duplicate_and_reorder_nothing() -> None:
    ledger = Ledger()
    report: list[dict[str, Any]] = []
    failures: list[str] = []
    with closing(Stack(NODES)) as stack:
        await stack.start()
        clients = _clients(stack)
        publisher_token = mint_token(SECRET, sub="reliability", publisher=True, ttl_seconds=7200)
        http = HttpTraffic(lambda: stack.urls, publisher_token, _users(), ledger, rate=HTTP_RATE)
        kafka = KafkaTraffic(stack.kafka.bootstrap, stack.topic, _users(), ledger, rate=KAFKA_RATE)
        outbox = OutboxTraffic(stack.postgres.dsn, stack.table, _users(), ledger, rate=OUTBOX_RATE)
        await kafka.start()
        try:
            async with running_clients(clients):
                await wait_until(
                    lambda: all(c.connects for c in clients), timeout=30, what="clients connected"
                )
                for phase in PHASES:
                    summary = await _run_phase(phase, stack, clients, ledger, http, kafka, outbox)
                    report.append(summary)
                    failures.extend(_verdict(phase, summary))
        finally:
            await kafka.stop()
    write_result(
        "faults",
        {
            "nodes": NODES,
            "clients": len(clients),
            "rates_per_second": {"http": HTTP_RATE, "kafka": KAFKA_RATE, "outbox": OUTBOX_RATE},
            "outage_seconds": OUTAGE,
            "phases": report,
        },
    )
    assert not failures, "\n".join(failures)


async def _run_phase(
    phase: Phase,
    stack: Stack,
    clients: list[ResilientClient],
    ledger: Ledger,
    http: HttpTraffic,
    kafka: KafkaTraffic,
    outbox: OutboxTraffic,
) -> dict[str, Any]:
    marks = {c.name: (len(c.deliveries), len(c.connects)) for c in clients}
    first_uid = len(ledger.meant_for)
    counters = (http.refused, http.broken, kafka.failed, outbox.failed)
    stop = asyncio.Event()
    loops = [asyncio.create_task(t.run(stop)) for t in (http, kafka, outbox)]
    try:
        await asyncio.sleep(WARMUP)  # steady traffic before the fault (the experiment's length)
        fault_at = time.monotonic()
        await phase.fault(stack)
        await asyncio.sleep(OUTAGE)  # how long the part stays down (the experiment's length)
        await phase.restore(stack)
        restored_at = time.monotonic()

        def live_again(client: ResilientClient) -> bool:
            return any(
                ledger.accepted[d.uid].started >= restored_at
                for d in client.deliveries[marks[client.name][0] :]
                if d.uid in ledger.accepted
            )

        live_wait_failed = None
        try:
            await wait_until(lambda: all(live_again(c) for c in clients), timeout=LIVE_BOUND,
                             interval=0.05, what="every client live again")  # fmt: skip
        except AssertionError as exc:
            live_wait_failed = str(exc)
        all_live = time.monotonic() - restored_at
        await asyncio.sleep(AFTER)  # traffic after the recovery (the experiment's length)
    finally:
        stop.set()
        await asyncio.gather(*loops)
    await http.drain()
    await stack.wait_sources()
    await stack.drained()
    marker = await http.marker()
    marker_missing: list[str] = []
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: all(c.has(marker) for c in clients), timeout=30, what="the marker")
    marker_missing = [c.name for c in clients if not c.has(marker)]

    phase_uids = list(ledger.meant_for)[first_uid:]
    outcomes: list[ClientOutcome] = []
    for c in clients:
        deliveries, connects = marks[c.name]
        outcomes.append(
            account(
                c.name, c.user, ledger, phase_uids, c.deliveries[deliveries:], c.connects,
                first_connect=connects, fault_at=fault_at, restored_at=restored_at,
                ignore=frozenset({marker}),
            )
        )  # fmt: skip
    lives = [o.live_after_fault for o in outcomes if o.live_after_fault is not None]
    restores = [o.live_after_restore for o in outcomes if o.live_after_restore is not None]
    accepted = [ledger.accepted[u] for u in phase_uids if u in ledger.accepted]
    return {
        "fault": phase.name,
        "published": {s: sum(1 for p in accepted if p.source == s) for s in ("http", "kafka", "outbox")},
        "publish_refusals": {
            "http_503": http.refused - counters[0],
            "http_broken": http.broken - counters[1],
            "kafka_failed": kafka.failed - counters[2],
            "outbox_failed": outbox.failed - counters[3],
        },
        "deliveries_expected": sum(o.expected for o in outcomes),
        "lost_silent": sum(o.lost_silent for o in outcomes),
        "lost_told": sum(o.lost_told for o in outcomes),
        "lost_acked_before_fault": sum(o.lost_acked_before_fault for o in outcomes),
        "duplicated": sum(o.duplicated for o in outcomes),
        "duplicated_across_reset": sum(o.duplicated_across_reset for o in outcomes),
        "out_of_order": sum(o.out_of_order for o in outcomes),
        "foreign": sum(o.foreign for o in outcomes),
        "live_after_fault_s": _spread(lives),
        "live_after_restore_s": _spread(restores),
        "all_live_after_restore_s": round(all_live, 3),
        "live_wait_failed": live_wait_failed,
        "marker_missing": marker_missing,
        "connects": {
            "recovered_true": sum(o.connects_recovered for o in outcomes),
            "recovered_false": sum(o.connects_not_recovered for o in outcomes),
            "replay_miss": sorted({m for o in outcomes for m in o.replay_misses}),
        },
        "clients_told_recovered_false": sum(1 for o in outcomes if o.connects_not_recovered),
        "clients_with_loss": sum(1 for o in outcomes if o.lost_silent or o.lost_told),
        "per_client": [asdict(o) for o in outcomes] if FULL else [],
        "unacknowledged_delivered": sum(o.unacknowledged for o in outcomes),
    }


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "max": None}
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _verdict(phase: Phase, s: dict[str, Any]) -> list[str]:
    problems = []
    name = phase.name
    if s["lost_silent"]:
        problems.append(f"{name}: {s['lost_silent']} events lost without telling the client")
    if s["lost_told"] and not phase.loss_allowed:
        problems.append(f"{name}: {s['lost_told']} events lost (clients told) where nothing may be lost")
    if s["duplicated"]:
        problems.append(f"{name}: {s['duplicated']} duplicate deliveries")
    if s["duplicated_across_reset"] and not phase.loss_allowed:
        problems.append(f"{name}: {s['duplicated_across_reset']} duplicates across a reset")
    if s["out_of_order"]:
        problems.append(f"{name}: {s['out_of_order']} deliveries out of order")
    if s["foreign"]:
        problems.append(f"{name}: {s['foreign']} deliveries to a client not entitled to them")
    if s["live_wait_failed"]:
        problems.append(f"{name}: {s['live_wait_failed']}")
    if s["marker_missing"]:
        problems.append(f"{name}: the end marker never reached {s['marker_missing']}")
    if phase.loss_allowed and s["clients_told_recovered_false"] == 0:
        problems.append(f"{name}: no client was told recovered:false")
    if s["deliveries_expected"] == 0:
        problems.append(f"{name}: no traffic")
    return problems
