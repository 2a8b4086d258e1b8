"""Isolation: a randomized property test against live gateways (one node on the memory
bus, two nodes on Redis, three nodes on three Redis shards) checks every delivery against
a model of who may see what.

Random users with random sessions and resource grants open streams on random nodes,
subscribe (some asking for what they were not granted: refused as a whole, 403),
change subscriptions on live streams through any node (the subscriptions API; some
keys refused, some requests aimed at another user's stream: 404), close and reconnect
with their Last-Event-ID and a new subscription list, while events of every scope
(user, session, global, resource) are published through every node.

The model is cursor-exact. A stream is entitled to an event with cursor ``c`` when
``start < c <= end`` and the event's scope matches the stream's user, session or the
subscriptions in force at ``c``: ``start`` is the cursor it resumed from (or the
position ``connection.established`` named), ``end`` the last cursor it saw (events and
heartbeat ids: a heartbeat's position means everything before it was written), and a
subscription change applies to events after its ``live_from``. A reconnect chains the
next stream's ``start`` to the last one's ``end``, so replays are accounted for.
Zero deliveries outside the model, zero missing inside it, none twice.

``HERALD_ISOLATION_SEED`` replays a run; the seed is in the results.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import httpx
import pytest

from herald.auth.minting import mint_token
from tests.reliability.ledger import cursor_key
from tests.reliability.mode import pick, write_result
from tests.support.api import PUBLISH, publish_pipelined, wait_until
from tests.support.cluster import cluster_env, running_cluster
from tests.support.gateway import SECRET, GatewayProcess, running_gateway
from tests.support.redis import RedisServer, running_redis
from tests.support.sse import Stream, StreamRefused, open_stream

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(180, 1800))]

SEED = int(os.environ.get("HERALD_ISOLATION_SEED", str(int(time.time()))))
USERS = pick(5, 8)
CLIENTS_PER_USER = pick((1, 3), (2, 4))
NOVELS = 6
#: Deliveries each deployment must reach (the full run: 100,000+ over both).
DELIVERIES = pick(6_000, 60_000)
BATCH = pick(60, 150)
EVENT = "test.isolation-probed"
SUBSCRIPTIONS = "/api/v1/events/subscriptions"
NO_LIMITS = {
    "HERALD_CONNECT_RATE_PER_USER": "0",
    "HERALD_CONNECT_RATE_PER_IP": "0",
    "HERALD_MAX_CONNECTIONS_PER_USER": "0",
    "HERALD_HEARTBEAT_SECONDS": "0.3",
}


@dataclass
class Principal:
    user: str
    sid: str
    grants: frozenset[str]
    wildcard: bool
    token: str

    def granted(self, key: str) -> bool:
        return self.wildcard or key in self.grants


@dataclass
class Live:
    """One stream of a client: the model's view of it and what it received."""

    principal: Principal
    stream: Stream
    exits: contextlib.AsyncExitStack
    url: str
    connection_id: str
    start: str
    #: ``(from_cursor, subscriptions)``: the set applies to events after ``from_cursor``.
    timeline: list[tuple[str, frozenset[str]]]
    end: str | None = None

    def subscriptions(self) -> frozenset[str]:
        return self.timeline[-1][1]

    def subscriptions_at(self, cursor: str) -> frozenset[str]:
        key = cursor_key(cursor)
        current = self.timeline[0][1]
        for since, subs in self.timeline:
            if cursor_key(since) < key:
                current = subs
        return current


@dataclass
class Published:
    cursor: str
    scope: str
    key: str | None


@dataclass
class Run:
    nodes: Sequence[GatewayProcess]
    rng: random.Random
    principals: list[Principal] = field(default_factory=list)
    open: list[Live] = field(default_factory=list)
    closed: list[Live] = field(default_factory=list)
    events: list[Published] = field(default_factory=list)
    checks: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("refused_403", "changes", "refused_keys", "foreign_change_404", "reconnects"), 0
        )
    )

    def node(self) -> GatewayProcess:
        return self.rng.choice(list(self.nodes))


def entitled(event: Published, live: Live) -> bool:
    p = live.principal
    if event.scope == "global":
        return True
    if event.scope == "user":
        return event.key == p.user
    if event.scope == "session":
        return event.key == p.sid
    return f"{event.scope}:{event.key}" in live.subscriptions_at(event.cursor)


def _principals(rng: random.Random) -> Iterator[Principal]:
    for u in range(USERS):
        for c in range(rng.randint(*CLIENTS_PER_USER)):
            user, sid = f"iso-u{u}", f"iso-s{u}-{c % 2}"
            wildcard = rng.random() < 0.15
            grants = frozenset(f"novel:{k}" for k in range(NOVELS) if rng.random() < 0.4)
            resources = ["novel:*"] if wildcard else sorted(grants)
            token = mint_token(SECRET, sub=user, sid=sid, resources=resources, ttl_seconds=7200)
            yield Principal(user, sid, grants, wildcard, token)


async def _open(run: Run, p: Principal, after: str | None) -> Live | None:
    """Open a stream (resuming after ``after``); ``None`` when refused as the model predicts."""
    wanted = sorted(run.rng.sample([f"novel:{k}" for k in range(NOVELS)], run.rng.randint(0, 3)))
    if run.rng.random() > 0.2:  # mostly ask only for what was granted
        wanted = [k for k in wanted if p.granted(k)]
    node = run.node()
    exits = contextlib.AsyncExitStack()
    refusal: StreamRefused | None = None
    try:
        stream = await exits.enter_async_context(
            open_stream(node.url, token=p.token, subscribe=",".join(wanted) or None, last_event_id=after)
        )
    except StreamRefused as refused:
        refusal = refused
    if refusal is not None:
        assert refusal.status == 403, refusal.body
        assert sorted(refusal.body["refused"]) == sorted(k for k in wanted if not p.granted(k))
        run.checks["refused_403"] += 1
        return None
    assert all(p.granted(k) for k in wanted), f"{wanted} opened for grants {p.grants}"
    hello = await stream.next(timeout=10)
    assert hello.event == "connection.established"
    data = hello.json()
    assert sorted(data["subscriptions"]) == wanted
    if after is not None:
        assert data["recovered"] is True, data
    start = after if after is not None else hello.id
    assert start is not None
    return Live(p, stream, exits, node.url, data["connection_id"], start, [(start, frozenset(wanted))])


async def _change(run: Run, http: httpx.AsyncClient, live: Live) -> None:
    p = live.principal
    candidates = [f"novel:{k}" for k in range(NOVELS)]
    add = sorted(set(run.rng.sample(candidates, run.rng.randint(0, 2))) - live.subscriptions())
    remove = sorted(
        run.rng.sample(sorted(live.subscriptions()), min(len(live.subscriptions()), run.rng.randint(0, 1)))
    )
    body = {"connection_id": live.connection_id, "add": add, "remove": remove}
    if run.rng.random() < 0.1:
        # Someone else's stream: never found, never changed.
        other = next((o for o in run.principals if o.user != p.user), None)
        if other is not None:
            answer = await http.post(run.node().url + SUBSCRIPTIONS, json=body,
                                     headers={"authorization": f"Bearer {other.token}"})  # fmt: skip
            assert answer.status_code == 404, answer.text
            run.checks["foreign_change_404"] += 1
    answer = await http.post(run.node().url + SUBSCRIPTIONS, json=body,
                             headers={"authorization": f"Bearer {p.token}"})  # fmt: skip
    assert answer.status_code == 200, answer.text
    result = answer.json()
    refused = {r["key"] for r in result["refused"]}
    assert refused == {k for k in add if not p.granted(k)}, (result, p)
    expected = (live.subscriptions() | {k for k in add if p.granted(k)}) - set(remove)
    assert set(result["subscriptions"]) == expected, (result, expected)
    live.timeline.append((result["live_from"], frozenset(expected)))
    run.checks["changes"] += 1
    run.checks["refused_keys"] += len(refused)


async def _close(live: Live) -> str:
    end = live.stream.last_event_id
    await live.exits.aclose()
    assert end is not None
    live.end = end
    return end


async def _publish_batch(run: Run) -> None:
    bodies = []
    scopes = []
    for _ in range(BATCH):
        roll = run.rng.random()
        if roll < 0.15:
            scope, key = "global", None
        elif roll < 0.45:
            scope, key = "user", f"iso-u{run.rng.randrange(USERS + 1)}"  # one user never connects
        elif roll < 0.65:
            scope, key = "session", f"iso-s{run.rng.randrange(USERS)}-{run.rng.randrange(2)}"
        else:
            scope, key = "novel", str(run.rng.randrange(NOVELS + 1))
        bodies.append(
            {"event": EVENT, "scope": scope, "key": key, "data": {"n": len(run.events) + len(bodies)}}
        )
        scopes.append((scope, key))
    cursors = await publish_pipelined(run.node(), bodies)
    run.events.extend(Published(c, s, k) for c, (s, k) in zip(cursors, scopes, strict=True))


async def _drive(run: Run) -> dict[str, int]:
    run.principals = list(_principals(run.rng))
    async with httpx.AsyncClient(timeout=10.0) as http:
        for p in run.principals:
            live = await _open(run, p, None)
            if live is not None:
                run.open.append(live)
        delivered = 0
        while delivered < DELIVERIES:
            await _publish_batch(run)
            for _ in range(run.rng.randint(1, 4)):
                roll = run.rng.random()
                if roll < 0.45 and run.open:
                    await _change(run, http, run.rng.choice(run.open))
                elif roll < 0.85 and run.open:
                    live = run.open.pop(run.rng.randrange(len(run.open)))
                    end = await _close(live)
                    run.closed.append(live)
                    again = await _open(run, live.principal, end)
                    run.checks["reconnects"] += 1
                    if again is not None:
                        run.open.append(again)
                    else:
                        # Refused for asking too much: come back with what it had.
                        again = await _reopen(run, live.principal, end)
                        run.open.append(again)
                else:
                    p = run.rng.choice(run.principals)
                    fresh = await _open(run, p, None)
                    if fresh is not None:
                        run.open.append(fresh)
            delivered = sum(len(_received(live)) for live in [*run.open, *run.closed])
        # The end: a global marker every open stream must receive; then all streams close.
        marker = await _publish_marker(run)
        for live in run.open:
            await wait_until(lambda live=live: live.stream.last_event_id is not None
                             and cursor_key(live.stream.last_event_id) >= cursor_key(marker),
                             timeout=20, what="the final marker")  # fmt: skip
            await _close(live)
            live.end = marker
        run.closed.extend(run.open)
        run.open.clear()
    return _verify(run)


async def _reopen(run: Run, p: Principal, after: str) -> Live:
    for _ in range(20):
        live = await _open(run, p, after)
        if live is not None:
            return live
    raise AssertionError("could not reopen a stream with granted subscriptions")


async def _publish_marker(run: Run) -> str:
    async with httpx.AsyncClient(timeout=10.0) as http:
        node = run.node()
        body = {"event": EVENT, "scope": "global", "key": None, "data": {"marker": True}}
        answer = await http.post(node.url + PUBLISH, json=body,
                                 headers={"authorization": f"Bearer {node.publisher_token}"})  # fmt: skip
        assert answer.status_code == 202, answer.text
        cursor: str = answer.json()["id"]
    run.events.append(Published(cursor, "global", None))
    return cursor


def _received(live: Live) -> list[str]:
    return [e.id or "" for e in live.stream.events if e.event == EVENT]


def _verify(run: Run) -> dict[str, int]:
    foreign = missing = twice = deliveries = 0
    problems: list[str] = []
    for live in run.closed:
        assert live.end is not None
        got = _received(live)
        deliveries += len(got)
        twice += len(got) - len(set(got))
        lo, hi = cursor_key(live.start), cursor_key(live.end)
        expected = {e.cursor for e in run.events if lo < cursor_key(e.cursor) <= hi and entitled(e, live)}
        extra = set(got) - expected
        lost = expected - set(got)
        foreign += len(extra)
        missing += len(lost)
        if (extra or lost) and len(problems) < 5:
            problems.append(f"{live.principal.user}/{live.principal.sid} on {live.url}: "
                            f"foreign {sorted(extra)[:3]}, missing {sorted(lost)[:3]}")  # fmt: skip
    assert not problems, f"seed {SEED}: " + "; ".join(problems)
    assert twice == 0
    return {"deliveries": deliveries, "foreign": foreign, "missing": missing, "duplicates": twice,
            "streams": len(run.closed), "events": len(run.events), **run.checks}  # fmt: skip


async def test_isolation_on_one_node_with_the_memory_bus() -> None:
    with running_gateway(NO_LIMITS) as node:
        summary = await _drive(Run([node], random.Random(SEED)))
    _record("isolation-memory", summary)


async def test_isolation_across_two_nodes_on_redis(redis_server: RedisServer) -> None:
    with running_cluster(2, cluster_env(redis_server, **NO_LIMITS)) as nodes:
        summary = await _drive(Run(nodes, random.Random(SEED + 1)))
    _record("isolation-cluster", summary)


async def test_isolation_across_three_nodes_on_three_redis_shards(redis_server: RedisServer) -> None:
    """The sharded bus (D28): each node reads only its streams' channels, over three shards."""
    with contextlib.ExitStack() as stack:
        shards = [stack.enter_context(running_redis()) for _ in range(3)]
        env = cluster_env(redis_server, **NO_LIMITS, HERALD_REDIS_SHARDS=",".join(s.url for s in shards))
        nodes = stack.enter_context(running_cluster(3, env))
        summary = await _drive(Run(nodes, random.Random(SEED + 2)))
    _record("isolation-shards", summary)


def _record(name: str, summary: dict[str, int]) -> None:
    write_result(name, {"seed": SEED, **summary})
    assert summary["deliveries"] >= DELIVERIES
    assert summary["foreign"] == summary["missing"] == summary["duplicates"] == 0
    assert summary["changes"] > 0
    assert summary["reconnects"] > 0
