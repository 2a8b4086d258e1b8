"""Real network partitions: links cut for real, by dropping packets silently (issue 13).

Each part runs in a network namespace of its own with its own address
(``tests/support/netns.py``): the gateway node, Redis, Kafka, PostgreSQL, and a
client. A test cuts one link under traffic, so the packets between the two ends
vanish (no FIN, no RST, no ICMP: what TCP sees of a real partition), keeps it cut,
heals it, and accounts every event as ``tests/reliability/test_faults.py`` does
(``tests.reliability.ledger``): lost (silently, or with the client told
``recovered: false``), duplicated, out of order, and the time until the node is
live again. One test per link:

- node ↔ Redis (the Redis bus): publishes answer 503 ``BUS_UNAVAILABLE`` within
  the Redis timeout while cut; nothing acknowledged is lost; publishing resumes
  after the heal;
- client ↔ node: a client that vanishes without a FIN or an RST; under traffic
  ``TCP_USER_TIMEOUT`` (``HERALD_DEAD_PEER_SECONDS``) drops its stream within
  the bound, and its stream token's lease and its place in the per-user limit
  are free again;
- node ↔ Kafka (the Kafka source): records produced meanwhile are delivered
  after the heal, none lost or repeated, in order per key;
- node ↔ PostgreSQL (the outbox source): rows inserted meanwhile are delivered
  after the heal exactly once, in order.

Quick mode (``make test``) cuts each link once, for 5 s (the outbox's for 30 s:
see ``OUTBOX_CUT_SECONDS``); full mode (``make reliability``) three times, for
60 s. The figures go to ``partitions.json`` (``tests.reliability.mode.write_result``)
and are printed (``pytest -s``); docs/reliability.md, "Partitions", shows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from herald.auth.minting import mint_token
from herald.sources.outbox import create_table
from tests.reliability.client import ResilientClient, running_clients
from tests.reliability.ledger import Ledger, account
from tests.reliability.mode import MODE, pick, write_result
from tests.reliability.traffic import PUBLISH, HttpTraffic, KafkaTraffic, OutboxTraffic
from tests.support.api import wait_until
from tests.support.gateway import SECRET, GatewayProcess
from tests.support.netns import Host, KafkaIn, Network, PostgresIn, RedisIn, network, start_gateway_in

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(150, 1200))]

#: Cuts per link, and how long each lasts (the experiment's length, not a wait for something).
ROUNDS = pick(1, 3)
#: ``HERALD_PARTITION_CUT_SECONDS`` overrides the length (to see how recovery scales with it).
_CUT_OVERRIDE = float(os.environ.get("HERALD_PARTITION_CUT_SECONDS") or 0)
CUT_SECONDS = _CUT_OVERRIDE or pick(5.0, 60.0)
#: The outbox's cut outlasts TCP's retransmission backoff even in quick mode: a statement
#: left waiting on TCP would answer only at the next retransmission, ~20 s after the
#: heal (the outbox source's bug this found: it now bounds its statements).
OUTBOX_CUT_SECONDS = _CUT_OVERRIDE or pick(30.0, 60.0)
USERS = pick(2, 4)
RATE = pick(10.0, 20.0)
#: Every node answers again, and every client receives a new event, within this of a heal.
LIVE_BOUND = 45.0
#: ... and must do so within this, however long the cut (asserted).
LIVE_AFTER_HEAL = 15.0
#: Events each client receives before a cut, and again after the heal.
WARM = pick(5, 20)
REDIS_TIMEOUT = 1.0
#: A publish while Redis is cut off answers within the Redis timeout, plus slack for a
#: second command and a shared machine.
ANSWER_BOUND = 2 * REDIS_TIMEOUT + 1.5
DEAD_PEER_SECONDS = 2.0
HEARTBEAT_SECONDS = 0.5
#: The node notices a silent client within TCP_USER_TIMEOUT plus the retransmission that
#: finds it expired (the backoff doubles from 200 ms) and a heartbeat.
DEAD_PEER_BOUND = DEAD_PEER_SECONDS + 4.0

RESULTS: dict[str, Any] = {}


@pytest.fixture
def net() -> Iterator[Network]:
    with network() as made:
        yield made


@pytest.fixture(scope="module", autouse=True)
def _write_results() -> Iterator[None]:
    yield
    if RESULTS:
        cuts = {"default": CUT_SECONDS, "node-postgres": OUTBOX_CUT_SECONDS}
        write_result("partitions", {"cut_seconds": cuts, "rounds": ROUNDS, "faults": RESULTS})


async def _in_thread(work: Callable[[], Any]) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, work)


@contextlib.asynccontextmanager
async def node_in(host: Host, env: dict[str, str]) -> AsyncIterator[GatewayProcess]:
    node: GatewayProcess = await _in_thread(lambda: start_gateway_in(host, env))
    try:
        yield node
    finally:
        await _in_thread(node.stop)


def node_env(**extra: str) -> dict[str, str]:
    return {
        "HERALD_HEARTBEAT_SECONDS": "1",
        "HERALD_RETRY_MS": "300",
        "HERALD_SHUTDOWN_RETRY_SPREAD_MS": "300",
        "HERALD_COALESCE_INTERVAL_SECONDS": "0",
        **extra,
    }


def users() -> list[str]:
    return [f"user{i}" for i in range(USERS)]


def clients_of(node: GatewayProcess) -> list[ResilientClient]:
    return [
        ResilientClient(
            user, user, mint_token(SECRET, sub=user, ttl_seconds=7200), [node.url], 0, watchdog=5.0
        )
        for user in users()
    ]


def publisher_token() -> str:
    return mint_token(SECRET, sub="partitions", publisher=True, ttl_seconds=7200)


# --- the harness itself: a cut is a silent blackhole, a heal restores the link


async def test_a_cut_link_drops_packets_silently_and_a_heal_restores_it(net: Network) -> None:
    """What the other tests rely on. While cut: a new connection times out (no RST, no
    ICMP error), an established one gets no answer and no error, other links work; healed,
    the established connection carries on (its retransmission gets through)."""
    far, other = net.host("far"), net.host("other")
    redis = RedisIn(far).start()
    bystander = RedisIn(other).start()
    try:
        with socket.create_connection((far.address, redis.port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
            net.cut(net.tester, far)
            sock.sendall(b"PING\r\n")
            sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                sock.recv(64)
            with pytest.raises(TimeoutError):
                socket.create_connection((far.address, redis.port), timeout=1.0)
            with bystander.client() as client:
                assert client.ping()
            healed = time.monotonic()
            net.heal(net.tester, far)
            sock.settimeout(10.0)
            assert sock.recv(64) == b"+PONG\r\n"
            answered = time.monotonic() - healed
            print(f"\nharness: an established connection answered {answered:.2f} s after a heal")
    finally:
        redis.close()
        bystander.close()


# --- node <-> Redis


class RedisAwayHttp(HttpTraffic):
    """HTTP publishing to a node whose Redis is away: every refusal says so, with Retry-After."""

    def check_refusal(self, response: httpx.Response) -> None:
        super().check_refusal(response)
        assert response.json()["code"] == "BUS_UNAVAILABLE", response.text
        assert int(response.headers["retry-after"]) >= 1


async def test_node_cut_from_redis_refuses_promptly_loses_nothing_and_resumes(net: Network) -> None:
    node_host, redis_host = net.host("node"), net.host("redis")
    redis = RedisIn(redis_host)
    await _in_thread(redis.start)
    env = node_env(
        HERALD_BUS="redis",
        HERALD_REDIS_URL=redis.url,
        HERALD_REDIS_TIMEOUT_SECONDS=str(REDIS_TIMEOUT),
    )
    try:
        async with node_in(node_host, env) as node:
            ledger = Ledger()
            # Three publishers at once: each waits for its answers, several are in flight.
            publishers = [
                RedisAwayHttp(lambda: [node.url], publisher_token(), users(), ledger, rate=RATE / 3, seed=i)
                for i in range(3)
            ]

            def during_cut(cut_at: float, healed_at: float) -> dict[str, Any]:
                answers = sorted(a for p in publishers for a in p.answers)
                # Sent while the link was cut (answered before the heal, or after it).
                sent = [a for a in answers if cut_at <= a[0] < healed_at]
                before_heal = [a for a in sent if a[0] + a[1] <= healed_at]
                return {
                    "publishes_while_cut": len(sent),
                    "answered_202_while_cut": sum(1 for a in before_heal if a[2] == 202),
                    "answered_503_while_cut": sum(1 for a in before_heal if a[2] == 503),
                    "broken_while_cut": sum(1 for a in sent if a[2] == 0),
                    "slowest_answer_while_cut_s": round(max((a[1] for a in sent), default=0.0), 3),
                    "first_503_after_cut_s": _first(a[0] + a[1] - cut_at for a in sent if a[2] == 503),
                    "first_202_after_heal_s": _first(
                        a[0] + a[1] - healed_at for a in answers if a[0] >= healed_at and a[2] == 202
                    ),
                }

            rounds = []
            for n in range(ROUNDS):
                clients = clients_of(node)
                async with running_clients(clients):
                    figures = await cut_round(
                        net, node_host, redis_host, clients, ledger, publishers, publishers[0],
                        drain=lambda: _drain_all(publishers), during_cut=during_cut,
                    )  # fmt: skip
                rounds.append(figures)
                print(f"\nnode<->Redis, round {n + 1}: {_line(figures)}")
                assert figures["publishes_while_cut"] >= 2, figures
                assert figures["answered_202_while_cut"] == 0, figures
                assert figures["broken_while_cut"] == 0, figures
                assert figures["slowest_answer_while_cut_s"] <= ANSWER_BOUND, figures
                assert figures["first_202_after_heal_s"] is not None, figures
                assert figures["lost_told"] == 0, "Redis kept its data: nothing may be lost"
                check_round(figures)
            RESULTS["node-redis"] = summary(rounds)
    finally:
        redis.close()


async def _drain_all(publishers: Sequence[HttpTraffic]) -> None:
    for publisher in publishers:
        await publisher.drain()


# --- client <-> node


CLIENT = r"""
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sock = socket.create_connection((host, port))
sock.sendall(f"GET {path} HTTP/1.1\r\nhost: {host}\r\naccept: text/event-stream\r\n\r\n".encode())
while data := sock.recv(65536):
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("event:"):
            print(line, flush=True)
print("EOF", flush=True)
"""


async def test_a_client_cut_off_silently_is_dropped_within_the_bound_and_its_lease_released(
    net: Network,
) -> None:
    """The client's process stays alive, its socket open; it sends nothing more (no FIN, no
    RST). Events keep coming for it, unacknowledged; ``TCP_USER_TIMEOUT`` ends the stream,
    which frees its stream token (one stream per token) and its place under
    ``HERALD_MAX_CONNECTIONS_PER_USER=1``: the same token opens a stream again."""
    node_host, client_host = net.host("node"), net.host("client")
    env = node_env(
        HERALD_DEAD_PEER_SECONDS=str(DEAD_PEER_SECONDS),
        HERALD_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        HERALD_MAX_CONNECTIONS_PER_USER="1",
    )
    async with node_in(node_host, env) as node, httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        rounds: list[dict[str, Any]] = []
        for n in range(ROUNDS):
            user = f"silent{n}"
            jwt = node.token(user)
            minted = (
                await http.post("/api/v1/auth/sse-token", headers={"authorization": f"Bearer {jwt}"})
            ).json()
            client = await asyncio.create_subprocess_exec(
                *client_host.command([sys.executable, "-c", CLIENT, node_host.address, str(node.port),
                                      minted["stream_url"]]),
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert client.stdout is not None
            try:
                line = await asyncio.wait_for(client.stdout.readline(), 10)
                assert line.strip() == b"event: connection.established", line
                assert await _stream_refusal(http, params={"token": minted["token"]}) == (
                    401,
                    "STREAM_TOKEN_IN_USE",
                )
                jwt_headers = {"authorization": f"Bearer {jwt}"}
                assert await _stream_refusal(http, headers=jwt_headers) == (429, "SSE_CONNECTION_LIMIT")

                net.cut(client_host, node_host)
                cut_at = time.monotonic()
                publisher = asyncio.create_task(_publish_to(http, node, user))
                try:
                    await wait_until(
                        lambda: _connections(http, 0),
                        timeout=DEAD_PEER_BOUND + 10,
                        interval=0.05,
                        what="the node to drop the silent client's stream",
                    )
                    dropped = time.monotonic() - cut_at
                    reopened = await _reopen_within(http, minted["token"], timeout=5.0)
                    released = time.monotonic() - cut_at
                finally:
                    publisher.cancel()
                    sent = await asyncio.gather(publisher, return_exceptions=True)
                assert client.returncode is None, "the client process stayed alive: it sent no FIN or RST"
                figures: dict[str, Any] = {
                    "dead_peer_seconds": DEAD_PEER_SECONDS,
                    "stream_dropped_after_cut_s": round(dropped, 3),
                    "token_and_slot_free_after_cut_s": round(released, 3),
                    "events_sent_to_the_silent_client": sent[0] if isinstance(sent[0], int) else None,
                    "reopened_with": reopened,
                    "closed_logged": _closed_reason(node, user),
                }
                rounds.append(figures)
                print(f"\nclient<->node, round {n + 1}: {figures}")
                assert dropped <= DEAD_PEER_BOUND, figures
            finally:
                net.heal(client_host, node_host)
                if client.returncode is None:
                    client.kill()
                await client.wait()
        RESULTS["client-node"] = {
            "rounds": rounds,
            "stream_dropped_after_cut_s": _spread([r["stream_dropped_after_cut_s"] for r in rounds]),
            "token_and_slot_free_after_cut_s": _spread(
                [r["token_and_slot_free_after_cut_s"] for r in rounds]
            ),
        }


async def _stream_refusal(
    http: httpx.AsyncClient, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str | None]:
    async with http.stream("GET", "/api/v1/events/stream", params=params, headers=headers) as response:
        if response.status_code == 200:
            return 200, None
        body = orjson.loads(await response.aread())
        return response.status_code, body.get("code")


async def _connections(http: httpx.AsyncClient, expected: int) -> bool:
    response = await http.get("/api/v1/events/health")
    return bool(response.json()["connections"] == expected)


async def _publish_to(http: httpx.AsyncClient, node: GatewayProcess, user: str) -> int:
    """Events for the silent client, every 100 ms: traffic its peer never acknowledges."""
    headers = {"authorization": f"Bearer {node.publisher_token}"}
    for n in itertools.count():
        body = {"event": "task.created", "scope": "user", "key": user, "data": {"uid": f"s{n}"}}
        response = await http.post(PUBLISH, json=body, headers=headers)
        assert response.status_code == 202, response.text
        try:
            await asyncio.sleep(0.1)
        except asyncio.CancelledError:
            return n + 1
    raise AssertionError("unreachable")


async def _reopen_within(http: httpx.AsyncClient, token: str, *, timeout: float) -> str:
    """Open a stream with the silent client's stream token (the node may still be
    finishing the old stream's close: retry briefly); what the stream opened with."""
    deadline = time.monotonic() + timeout
    while True:
        async with http.stream("GET", "/api/v1/events/stream", params={"token": token}) as response:
            if response.status_code == 200:
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        return line.removeprefix("event: ")
                raise AssertionError("the reopened stream ended before its first event")
            body = orjson.loads(await response.aread())
        if time.monotonic() > deadline:
            raise AssertionError(f"the stream token stayed in use: {response.status_code} {body}")
        await asyncio.sleep(0.05)


def _closed_reason(node: GatewayProcess, user: str) -> str | None:
    for entry in node.logs():
        if entry.get("event") == "sse_connection_closed" and entry.get("user_id") == user:
            return str(entry.get("reason"))
    return None


# --- node <-> Kafka


async def test_node_cut_from_kafka_delivers_what_was_produced_meanwhile_once_in_order(net: Network) -> None:
    node_host, kafka_host = net.host("node"), net.host("kafka")
    kafka = KafkaIn(kafka_host)
    await _in_thread(kafka.start)
    topic, partitions = "partitions-events", 2
    try:
        await kafka.create_topics({topic: partitions})
        env = node_env(
            HERALD_KAFKA_BOOTSTRAP=kafka.bootstrap,
            HERALD_KAFKA_TOPICS=topic,
            HERALD_KAFKA_GROUP="partitions",
            HERALD_KAFKA_AUTO_OFFSET_RESET="earliest",
            HERALD_KAFKA_SESSION_TIMEOUT_SECONDS="6",
        )
        async with node_in(node_host, env) as node:
            await wait_until(lambda: _kafka_partitions(node, partitions), timeout=60, interval=0.2,
                             what="the node to own the topic's partitions")  # fmt: skip
            ledger = Ledger()
            http = HttpTraffic(lambda: [node.url], publisher_token(), users(), ledger, rate=1.0)
            records = KafkaTraffic(kafka.bootstrap, topic, users(), ledger, rate=RATE)
            await records.start()

            async def drained() -> None:
                async def done() -> bool:
                    with contextlib.suppress(Exception):
                        ends = await kafka.end_offsets(topic, range(partitions))
                        committed = await kafka.committed("partitions", topic)
                        return all(committed.get(p, -1) >= end for p, end in ends.items())
                    return False

                await wait_until(done, timeout=60, interval=0.25, what="every record committed")

            rounds = []
            try:
                for n in range(ROUNDS):
                    clients = clients_of(node)
                    async with running_clients(clients):
                        figures = await cut_round(
                            net, node_host, kafka_host, clients, ledger, [records], http,
                            drain=drained, key_prefix="k",
                        )  # fmt: skip
                    rounds.append(figures)
                    print(f"\nnode<->Kafka, round {n + 1}: {_line(figures)}")
                    assert figures["lost_told"] == 0, figures
                    check_round(figures)
            finally:
                await records.stop()
            RESULTS["node-kafka"] = summary(rounds)
    finally:
        kafka.close()


async def _kafka_partitions(node: GatewayProcess, expected: int) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as http:
        with contextlib.suppress(httpx.HTTPError, KeyError):
            health = (await http.get(node.url + "/api/v1/events/health")).json()
            return bool(health["sources"]["kafka"]["partitions"] == expected)
    return False


# --- node <-> PostgreSQL


async def test_node_cut_from_postgres_delivers_rows_inserted_meanwhile_once_in_order(net: Network) -> None:
    node_host, pg_host = net.host("node"), net.host("postgres")
    postgres = PostgresIn(pg_host)
    await _in_thread(postgres.start)
    table = "partitions_outbox"
    try:
        connection = await asyncpg.connect(postgres.dsn, timeout=10)
        try:
            await create_table(connection, table)
        finally:
            await connection.close()
        env = node_env(
            HERALD_OUTBOX_DSN=postgres.dsn, HERALD_OUTBOX_TABLE=table, HERALD_OUTBOX_POLL_SECONDS="1"
        )
        async with node_in(node_host, env) as node:
            await wait_until(
                lambda: _ready(node), timeout=30, interval=0.1, what="the outbox poller listening"
            )
            ledger = Ledger()
            http = HttpTraffic(lambda: [node.url], publisher_token(), users(), ledger, rate=1.0)
            rows = OutboxTraffic(postgres.dsn, table, users(), ledger, rate=RATE)

            async def drained() -> None:
                async def done() -> bool:
                    with contextlib.suppress(Exception):
                        db = await asyncpg.connect(postgres.dsn, timeout=2)
                        try:
                            pending = await db.fetchval(
                                f"SELECT count(*) FROM {table} WHERE status = 'pending'"  # noqa: S608
                            )
                        finally:
                            await db.close()
                        return bool(pending == 0)
                    return False

                await wait_until(done, timeout=60, interval=0.25, what="no outbox row pending")

            rounds = []
            for n in range(ROUNDS):
                clients = clients_of(node)
                async with running_clients(clients):
                    figures = await cut_round(net, node_host, pg_host, clients, ledger, [rows], http,
                                              drain=drained, key_prefix="o",
                                              cut_seconds=OUTBOX_CUT_SECONDS)  # fmt: skip
                rounds.append(figures)
                print(f"\nnode<->PostgreSQL, round {n + 1}: {_line(figures)}")
                assert figures["lost_told"] == 0, figures
                check_round(figures)
            RESULTS["node-postgres"] = summary(rounds)
    finally:
        postgres.close()


async def _ready(node: GatewayProcess) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as http:
        with contextlib.suppress(httpx.HTTPError):
            return bool((await http.get(node.url + "/api/v1/events/health/ready")).json()["ready"])
    return False


# --- one round: traffic, cut, heal, account


async def cut_round(
    net: Network,
    a: Host,
    b: Host,
    clients: Sequence[ResilientClient],
    ledger: Ledger,
    traffic: Sequence[Any],
    http: HttpTraffic,
    *,
    drain: Callable[[], Awaitable[None]],
    during_cut: Callable[[float, float], dict[str, Any]] | None = None,
    key_prefix: str | None = None,
    cut_seconds: float = CUT_SECONDS,
) -> dict[str, Any]:
    """Traffic until every client receives; the link ``a``-``b`` cut for ``cut_seconds``;
    healed; traffic until every client receives an event sent after the cut began; then
    everything drained, a marker through, and each client's events accounted."""
    await wait_until(lambda: all(c.connects for c in clients), timeout=30, what="clients connected")
    first_uid = len(ledger.meant_for)
    marks = {c.name: (len(c.deliveries), len(c.connects)) for c in clients}
    stop = asyncio.Event()
    loops = [asyncio.create_task(t.run(stop)) for t in traffic]
    healed = False
    try:
        await wait_until(lambda: all(len(c.deliveries) >= marks[c.name][0] + WARM for c in clients),
                         timeout=30, interval=0.05, what="every client receiving before the cut")  # fmt: skip
        net.cut(a, b)
        fault_at = time.monotonic()
        await asyncio.sleep(cut_seconds)  # how long the link stays cut (the experiment's length)
        net.heal(a, b)
        healed = True
        healed_at = time.monotonic()

        def live_again(client: ResilientClient) -> bool:
            return any(
                ledger.accepted[d.uid].started >= fault_at
                for d in client.deliveries[marks[client.name][0] :]
                if d.uid in ledger.accepted
            )

        await wait_until(lambda: all(live_again(c) for c in clients), timeout=LIVE_BOUND, interval=0.05,
                         what="every client live again after the heal")  # fmt: skip
        all_live = time.monotonic() - healed_at

        def after_heal(client: ResilientClient) -> int:
            return sum(
                1
                for d in client.deliveries[marks[client.name][0] :]
                if d.uid in ledger.accepted and ledger.accepted[d.uid].started >= healed_at
            )

        # Traffic after the recovery too, before the round is accounted.
        await wait_until(lambda: all(after_heal(c) >= WARM for c in clients), timeout=30, interval=0.05,
                         what="every client receiving events sent after the heal")  # fmt: skip
    finally:
        if not healed:
            net.heal(a, b)
        stop.set()
        await asyncio.gather(*loops)
    await drain()
    await http.drain()
    marker = await http.marker()
    await wait_until(
        lambda: all(c.has(marker) for c in clients), timeout=30, what="the marker at every client"
    )
    caught_up = time.monotonic() - healed_at
    phase_uids = list(ledger.meant_for)[first_uid:]
    outcomes = [
        account(
            c.name, c.user, ledger, phase_uids, c.deliveries[marks[c.name][0] :], c.connects,
            first_connect=marks[c.name][1], fault_at=fault_at, restored_at=healed_at,
            ignore=frozenset({marker}),
        )
        for c in clients
    ]  # fmt: skip
    # Order per key: each client is one user (one key); its events in the order produced.
    order_breaks = 0
    if key_prefix is not None:
        for c in clients:
            seq = [int(d.uid[len(key_prefix) :]) for d in c.deliveries[marks[c.name][0] :]
                   if d.uid.startswith(key_prefix) and d.uid[len(key_prefix) :].isdigit()]  # fmt: skip
            order_breaks += sum(1 for x, y in itertools.pairwise(seq) if y <= x)
    # The backlog: events acknowledged while cut, delivered after the heal.
    backlog = [
        d.at - healed_at
        for c in clients
        for d in c.deliveries[marks[c.name][0] :]
        if d.uid in ledger.accepted and fault_at <= ledger.accepted[d.uid].acked <= healed_at
    ]
    accepted = [u for u in phase_uids if u in ledger.accepted and u != marker]
    figures = {
        "cut_s": cut_seconds,
        "published": len(accepted),
        "acknowledged_while_cut": sum(
            1 for u in accepted if fault_at <= ledger.accepted[u].acked <= healed_at
        ),
        "deliveries_expected": sum(o.expected for o in outcomes),
        "lost_silent": sum(o.lost_silent for o in outcomes),
        "lost_told": sum(o.lost_told for o in outcomes),
        "duplicated": sum(o.duplicated + o.duplicated_across_reset for o in outcomes),
        "out_of_order": sum(o.out_of_order for o in outcomes),
        "key_order_breaks": order_breaks,
        "foreign": sum(o.foreign for o in outcomes),
        "told_recovered_false": sum(1 for o in outcomes if o.connects_not_recovered),
        "stream_reconnects": sum(o.connects_recovered + o.connects_not_recovered for o in outcomes),
        "live_after_heal_s": _spread(
            [o.live_after_restore for o in outcomes if o.live_after_restore is not None]
        ),
        "all_live_after_heal_s": round(all_live, 3),
        "backlog_delivered_after_heal_s": round(max(backlog), 3) if backlog else None,
        "drained_after_heal_s": round(caught_up, 3),
    }
    if during_cut is not None:
        figures.update(during_cut(fault_at, healed_at))
    return figures


def check_round(figures: dict[str, Any]) -> None:
    """What no partition may cause: silent loss, duplicates, reordering, foreign events."""
    assert figures["deliveries_expected"] > 0, figures
    assert figures["lost_silent"] == 0, figures
    assert figures["duplicated"] == 0, figures
    assert figures["out_of_order"] == 0, figures
    assert figures["key_order_breaks"] == 0, figures
    assert figures["foreign"] == 0, figures
    assert figures["all_live_after_heal_s"] <= LIVE_AFTER_HEAL, figures
    if figures["lost_told"]:
        assert figures["told_recovered_false"] > 0, figures


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    def total(key: str) -> int:
        return sum(int(r[key]) for r in rounds)

    return {
        "mode": MODE,
        "rounds": rounds,
        "deliveries_expected": total("deliveries_expected"),
        "lost_silent": total("lost_silent"),
        "lost_told": total("lost_told"),
        "duplicated": total("duplicated"),
        "out_of_order": total("out_of_order") + total("key_order_breaks"),
        "all_live_after_heal_s": _spread([r["all_live_after_heal_s"] for r in rounds]),
    }


def _first(values: Iterable[float]) -> float | None:
    found = list(values)
    return round(min(found), 3) if found else None


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"min": None, "p50": None, "max": None}
    return {
        "min": round(min(values), 3),
        "p50": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def _line(figures: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in figures.items())
