"""The Redis primary killed with SIGKILL under traffic, with Redis Sentinel promoting its
replica (issue 13).

Two gateway nodes reach Redis only through three Sentinels
(``HERALD_REDIS_URL=redis+sentinel://…/herald``); a publisher sends user events and global
ticks to both, and every user has two clients ("two tabs") on different nodes that
reconnect as browsers do. The primary is killed under that traffic; the Sentinels promote
the replica; the killed primary is started again (empty) and the Sentinels make it the
new primary's replica. Measured, for asynchronous replication and for
``HERALD_REDIS_MIN_REPLICAS_ACK=1``:

- how long until publishing answers 202 again (from the kill), and how long the
  Sentinels took to promote the replica;
- acknowledged events lost: events answered 202 that the promoted replica's log does not
  hold (asynchronous replication may lose what the replica had not received: counted,
  not asserted; with the replica's acknowledgement, none may be lost);
- per client (``tests.reliability.ledger``): every event it was entitled to either arrived
  or the client was told ``recovered: false`` (0 silent losses), and nothing was
  duplicated, reordered or delivered to someone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import statistics
import time
from typing import Any

import orjson
import pytest

from herald.auth.minting import mint_token
from herald.bus.shard_log import ShardKeys
from herald.bus.sharded import ShardedBus
from herald.cluster.redis_client import RedisConnections
from herald.errors import BusUnavailable
from herald.events.message import build_message, encode_data
from tests.reliability.client import ResilientClient, event_uid, running_clients
from tests.reliability.ledger import Ledger, account
from tests.reliability.mode import pick, write_result
from tests.reliability.traffic import HttpTraffic
from tests.support.api import wait_until
from tests.support.cluster import running_cluster
from tests.support.gateway import SECRET
from tests.support.sentinel import SentinelGroup, running_sentinel_group

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(150, 600))]

NODES = 2
USERS = pick(4, 10)
RATE = pick(30.0, 80.0)
WARMUP = pick(1.5, 8.0)
AFTER = pick(1.5, 8.0)
#: How long the replicas are cut off before the kill, in the lagging cases.
LAG = 0.5
#: Bound on the failover and on publishing again (the Sentinels need about 1 s to agree
#: the primary is down, then elect a leader and promote).
FAILOVER_BOUND = 30.0
#: Bound on every client receiving live events again (a stream closed for a new lifetime
#: comes back after its spread ``retry``, up to about 10 s).
LIVE_BOUND = 40.0


def _users() -> list[str]:
    return [f"user{i}" for i in range(USERS)]


def _env(group: SentinelGroup, replicas_ack: int) -> dict[str, str]:
    return {
        "HERALD_BUS": "redis",
        "HERALD_REDIS_URL": group.url,
        "HERALD_REDIS_PREFIX": f"s{secrets.token_hex(3)}",
        "HERALD_REDIS_TIMEOUT_SECONDS": "0.5",
        "HERALD_REDIS_MIN_REPLICAS_ACK": str(replicas_ack),
        "HERALD_REDIS_REPLICA_ACK_TIMEOUT_SECONDS": "0.25",
        "HERALD_HEARTBEAT_SECONDS": "0.5",
        "HERALD_COALESCE_INTERVAL_SECONDS": "0",
    }


def _logged_uids(group: SentinelGroup, prefix: str) -> set[str]:
    """The harness uids of every event in the promoted replica's channel logs."""
    found: set[str] = set()
    with group.replica.client() as client:
        for key in client.scan_iter(match=f"{prefix}:{{*}}:log", count=1000):
            for _, fields in client.xrange(key):
                data = fields.get(b"data")
                if data is not None:
                    found.add(event_uid(orjson.loads(data)))
    return found


@pytest.mark.parametrize(
    ("replicas_ack", "lagging"),
    [(0, False), (0, True), (1, True)],
    ids=["async", "async-lagging", "replica-ack-lagging"],
)
async def test_a_killed_primary_is_followed_to_the_promoted_replica(replicas_ack: int, lagging: bool) -> None:
    """``lagging``: the replicas are cut off ``LAG`` seconds before the kill (what the
    primary acknowledged in that time is not on them). With ``replicas_ack``, two replicas:
    the one not promoted replicates the new primary, so publishing can be acknowledged
    again without waiting for the old primary to come back."""
    ledger = Ledger()
    replicas = 2 if replicas_ack else 1
    with running_sentinel_group(3, replicas=replicas, down_after_ms=1000, failover_timeout_ms=3000) as group:
        env = _env(group, replicas_ack)
        with running_cluster(NODES, env) as nodes:
            urls = [n.url for n in nodes]
            clients = []
            for i, user in enumerate(_users()):
                token = mint_token(SECRET, sub=user, ttl_seconds=3600)
                for tab in range(2):
                    node = (i + tab) % NODES
                    clients.append(ResilientClient(f"{user}/{tab}", user, token, urls, node, watchdog=5.0))
            publisher = mint_token(SECRET, sub="reliability", publisher=True, ttl_seconds=3600)
            http = HttpTraffic(lambda: urls, publisher, _users(), ledger, rate=RATE)
            async with running_clients(clients):
                await wait_until(
                    lambda: all(c.connects for c in clients), timeout=30, what="clients connected"
                )
                stop = asyncio.Event()
                traffic = asyncio.create_task(http.run(stop))
                try:
                    await asyncio.sleep(WARMUP)  # steady traffic before the kill (the experiment's length)
                    before = [p.acked - p.started for p in ledger.accepted.values()]
                    if lagging:
                        group.cut_replicas()
                        await asyncio.sleep(LAG)  # traffic the replicas miss (the experiment's length)
                    killed_at = time.monotonic()
                    group.kill_primary()
                    if lagging:
                        group.resume_replicas()
                    loop = asyncio.get_running_loop()
                    promoted_after = await loop.run_in_executor(None, group.wait_promoted, FAILOVER_BOUND)
                    # The old primary comes back empty; the Sentinels make it the new one's replica.
                    await loop.run_in_executor(None, group.primary.start)

                    def published_again() -> bool:
                        return any(p.started >= killed_at for p in ledger.accepted.values())

                    await wait_until(published_again, timeout=FAILOVER_BOUND, interval=0.02,
                                     what="publishing answered 202 again")  # fmt: skip
                    again_after = min(p.acked for p in ledger.accepted.values() if p.started >= killed_at)

                    # A stream told to come back (``recovered: false``) does so after a spread
                    # ``retry``; it is not replayed what was published before it returned.
                    def live_again(client: ResilientClient) -> bool:
                        return any(
                            ledger.accepted[d.uid].started >= again_after
                            for d in client.deliveries
                            if d.uid in ledger.accepted
                        )

                    await wait_until(lambda: all(live_again(c) for c in clients), timeout=LIVE_BOUND,
                                     interval=0.05, what="every client live again")  # fmt: skip
                    all_live_after = time.monotonic() - killed_at
                    await asyncio.sleep(AFTER)  # traffic after the failover (the experiment's length)
                finally:
                    stop.set()
                    await traffic
                await http.drain()
                marker = await http.marker()
                with contextlib.suppress(AssertionError):
                    await wait_until(
                        lambda: all(c.has(marker) for c in clients), timeout=30, what="the marker"
                    )
                marker_missing = [c.name for c in clients if not c.has(marker)]
            logged = await asyncio.get_running_loop().run_in_executor(
                None, _logged_uids, group, env["HERALD_REDIS_PREFIX"]
            )
            sentinel_logs = group.logs()
            ports = {"primary": group.primary.port, "replicas": [r.port for r in group.replicas]}

    uids = list(ledger.meant_for)
    outcomes = [
        account(
            c.name, c.user, ledger, uids, c.deliveries, c.connects,
            first_connect=0, fault_at=killed_at, restored_at=killed_at + promoted_after,
            ignore=frozenset({marker}),
        )
        for c in clients
    ]  # fmt: skip
    acked_lost = sorted(u for u, p in ledger.accepted.items() if u not in logged and u != marker)
    acked_before_kill = sum(1 for p in ledger.accepted.values() if p.acked < killed_at)
    summary: dict[str, Any] = {
        "replicas_ack": replicas_ack,
        "replicas": replicas,
        "lagging_seconds": LAG if lagging else 0,
        "nodes": NODES,
        "clients": len(clients),
        "rate_per_second": RATE,
        "published_acknowledged": len(ledger.accepted),
        "acknowledged_before_kill": acked_before_kill,
        "publish_p50_ms_before_kill": round(1000 * statistics.median(before), 2) if before else None,
        "promoted_after_s": round(promoted_after, 3),
        "publishing_again_after_s": round(again_after - killed_at, 3),
        "all_clients_live_after_s": round(all_live_after, 3),
        "publish_refusals": {"http_503": http.refused, "http_broken": http.broken},
        "acknowledged_lost": len(acked_lost),
        "acknowledged_lost_uids": acked_lost[:20],
        "deliveries_expected": sum(o.expected for o in outcomes),
        "lost_silent": sum(o.lost_silent for o in outcomes),
        "lost_told": sum(o.lost_told for o in outcomes),
        "duplicated": sum(o.duplicated for o in outcomes),
        "duplicated_across_reset": sum(o.duplicated_across_reset for o in outcomes),
        "out_of_order": sum(o.out_of_order for o in outcomes),
        "foreign": sum(o.foreign for o in outcomes),
        # After their first connect: told that a reconnect could not resume exactly.
        "clients_told_recovered_false": sum(
            1 for c in clients if any(not k.recovered and k.sent_cursor is not None for k in c.connects)
        ),
        "reconnects": sum(len(c.connects) - 1 for c in clients),
        "marker_missing": marker_missing,
    }
    name = "sentinel-" + ("replica-ack" if replicas_ack else "async") + ("-lagging" if lagging else "")
    write_result(name, summary)
    shown = {k: v for k, v in summary.items() if k != "acknowledged_lost_uids"}
    print(f"\n{name}: {orjson.dumps(shown).decode()}")

    problems = [
        f"{key}: {summary[key]}"
        for key in ("lost_silent", "duplicated", "out_of_order", "foreign")
        if summary[key]
    ]
    if marker_missing:
        problems.append(f"the end marker never reached {marker_missing}")
    if summary["deliveries_expected"] == 0:
        problems.append("no traffic")
    if replicas_ack and acked_lost:
        # "Acknowledged" means "on the replica": the promoted replica holds every one.
        problems.append(f"{len(acked_lost)} acknowledged events lost: {acked_lost[:5]}")
    if problems:
        print(f"\nservers: {ports}\n{sentinel_logs}")
    assert not problems, problems


async def test_waiting_for_the_replica_costs_a_round_trip_and_refuses_what_it_does_not_acknowledge() -> None:
    """The price of ``HERALD_REDIS_MIN_REPLICAS_ACK=1``, one append at a time (each its own
    round trip, as a lone publish is): the append's latency with and without ``WAIT``. And
    a replica that does not answer (frozen) turns appends into ``BusUnavailable`` with
    reason ``not_replicated`` within the wait, never a hang; it is taken once it is back."""
    appends = pick(300, 2000)
    latencies: dict[str, dict[str, float]] = {}
    with running_sentinel_group(1, replicas=1) as group:
        for replicas_ack in (0, 1):
            bus = ShardedBus(
                [RedisConnections(group.url, timeout=0.5)],
                keys=ShardKeys(f"cost{secrets.token_hex(3)}"),
                owns_connections=True,
                min_replicas_ack=replicas_ack,
                replica_ack_timeout_seconds=0.25,
            )
            await bus.start()
            try:
                took = []
                for n in range(appends):
                    message = build_message(event="task.created", scope="user", key="u", data={"n": n})
                    started = time.perf_counter()
                    await bus.append(message, encode_data(message, 65536))
                    took.append(time.perf_counter() - started)
                took.sort()
                latencies["replica-ack" if replicas_ack else "async"] = {
                    "p50_ms": round(1000 * took[len(took) // 2], 3),
                    "p99_ms": round(1000 * took[int(len(took) * 0.99)], 3),
                }
                if replicas_ack:
                    message = build_message(event="task.created", scope="user", key="u", data={"n": -1})
                    group.replicas[0].pause()
                    try:
                        started = time.monotonic()
                        with pytest.raises(BusUnavailable) as refused:
                            await bus.append(message, encode_data(message, 65536), idempotency_key="late")
                        refused_after = time.monotonic() - started
                    finally:
                        group.replicas[0].resume()
                    assert refused.value.detail == {"reason": "not_replicated"}
                    assert refused_after < 0.5, "refused within the wait, not the command bound"
                    again = await bus.append(message, encode_data(message, 65536), idempotency_key="late")
                    assert again.duplicate, "sent again, the idempotency key finds the first"
            finally:
                await bus.stop()
    write_result("sentinel-replica-ack-cost", {"appends": appends, "append_latency": latencies})
    print(f"\nappend latency, one at a time: {latencies}")
