"""The peer benchmark's own logic (bench/peers, bench/loadgen): how its clients read Herald's and
Centrifugo's streams and judge a recovery, how its publisher reads answers, who each event is
for, and how the report turns results into ratios. Centrifugo's frames here are the bytes
Centrifugo v6.9.1's ``uni_sse`` sent to a curl client (recorded by hand)."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from bench import centrifugo
from bench.loadgen.client import Audit, CentrifugoClient, SSEClient, Stats
from bench.loadgen.dialects import CentrifugoStreams, HeraldStreams
from bench.loadgen.fast_publisher import CentrifugoPublishing, FastPublisher, HeraldPublishing
from bench.loadgen.traffic import Traffic, resource_of_streams, resource_sizes
from bench.peers import report
from bench.peers.suite import bound_by
from bench.peers.variants import Variant, variants

CONNECT = (
    b'data: {"connect":{"client":"1345","version":"6.9.1 OSS","subs":{'
    b'"user:u1":{"recoverable":true,"epoch":"rHlJ","offset":1,"positioned":true},'
    b'"global:all":{"recoverable":true,"epoch":"sLyr","offset":1,"positioned":true}},'
    b'"expires":true,"ttl":3600,"ping":25,"session":"b56c"}}\n\n'
)
RECOVERED = (
    b'data: {"connect":{"client":"0397","version":"6.9.1 OSS","subs":{'
    b'"global:all":{"recoverable":true,"epoch":"sLyr","publications":[{"data":{"t":7,"s":8},"offset":3}],'
    b'"recovered":true,"offset":2,"positioned":true,"was_recovering":true},'
    b'"user:u1":{"recoverable":true,"epoch":"rHlJ","recovered":true,"offset":2,"positioned":true,'
    b'"was_recovering":true}},'
    b'"expires":true,"ttl":3594,"ping":25,"session":"4bf8"}}\n\n'
)
HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def pub(channel: str, t: int, s: int, offset: int) -> bytes:
    return b'data: {"channel":"%s","pub":{"data":{"t":%d,"s":%d,"x":1},"offset":%d}}\n\n' % (
        channel.encode(),
        t,
        s,
        offset,
    )


def centrifugo_client(audit: Audit | None = None) -> CentrifugoClient:
    return CentrifugoClient(Stats(), b"", ("u1", "token", "doc:r0"), audit=audit)


async def test_centrifugo_client_is_live_on_the_connect_push_and_counts_publications() -> None:
    client = centrifugo_client()
    client.data_received(HEAD + chunk(b"\r\n") + chunk(CONNECT))
    assert client.done.done()
    assert client.done.result() is True
    assert client.positions == {"user:u1": ["rHlJ", 1], "global:all": ["sLyr", 1]}
    assert client.told_recovered is None  # nothing was asked to recover
    client.data_received(chunk(pub("global:all", 5, 11, 2) + pub("user:u1", 6, 12, 2)))
    assert client.stats.delivered == 2
    assert client.last_seq == 12


async def test_centrifugo_positions_follow_publications_only_while_tracking() -> None:
    client = centrifugo_client()
    client.data_received(HEAD + chunk(CONNECT))
    client.data_received(chunk(pub("global:all", 5, 11, 2)))
    assert client.resume()["global:all"] == ["sLyr", 1]  # not tracking: the hot path parses nothing
    client.tracking = True
    client.data_received(chunk(pub("global:all", 5, 12, 3) + pub("user:u1", 6, 13, 4)))
    assert client.resume() == {"global:all": ["sLyr", 3], "user:u1": ["rHlJ", 4]}


async def test_centrifugo_recovered_publications_count_and_move_the_position() -> None:
    audit = Audit(8, 8)
    client = centrifugo_client(audit)
    client.data_received(HEAD + chunk(RECOVERED))
    assert client.told_recovered is True
    assert client.positions["global:all"] == ["sLyr", 3]
    assert client.stats.delivered == 1
    assert audit.exact


async def test_centrifugo_not_recovered_when_any_channel_it_asked_for_was_not() -> None:
    told_no = RECOVERED.replace(b'"recovered":true,', b"", 1)
    client = centrifugo_client()
    client.data_received(HEAD + chunk(told_no))
    assert client.told_recovered is False


async def test_centrifugo_refusal_is_an_error_not_a_stream() -> None:
    client = centrifugo_client()
    client.data_received(HEAD + chunk(b'data: {"disconnect":{"code":3501,"reason":"bad request"}}\n\n'))
    assert client.done.result() is False
    assert client.stats.errors == {"disconnect_3501": 1}


async def test_herald_client_reads_what_the_first_event_says_of_the_replay() -> None:
    for said, expected in ((b"false", False), (b"true", True)):
        client = SSEClient(Stats(), b"", ("u1", "token"))
        client.data_received(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\nretry: 3000\n\n"
            b'id: 5-0\nevent: connection.established\ndata: {"connection_id":"c1","recovered":%s}\n\n'
            b'id: 6-0\nevent: bench.tick-sent\ndata: {"t":1,"s":41,"_scope":"global"}\n\n' % said
        )
        assert client.told_recovered is expected
        assert client.last_id == b"6-0"
        assert client.last_seq == 41


def test_audit_is_exact_only_for_each_missed_event_once() -> None:
    def audit(seqs: list[int]) -> Audit:
        a = Audit(10, 14)
        for s in seqs:
            a.add(s)
        return a

    assert audit([10, 11, 12, 13, 14]).exact
    assert not audit([10, 11, 12, 13]).exact  # one missing
    assert not audit([10, 11, 12, 13, 14, 14]).exact  # one twice
    assert not audit([9, 10, 11, 12, 13, 14]).exact  # an older one again
    assert not audit([10, 10, 12, 13, 14]).exact  # one missing, another twice: the sum tells
    assert audit([9, 10, 11, 12, 13, 14]).before == 1


def test_centrifugo_resume_request_carries_each_channel_position_in_cf_connect() -> None:
    request = CentrifugoStreams().request(
        "127.0.0.1", 8000, ("u1", "tok", "doc:r0"), {"user:u1": ["e1", 4], "global:all": ["e2", 9]}
    )
    line = request.split(b"\r\n", 1)[0].decode()
    assert line.startswith("GET /connection/uni_sse?cf_connect=")
    query = parse_qs(urlsplit(line.split(" ")[1]).query)
    connect = json.loads(query["cf_connect"][0])
    assert connect == {
        "token": "tok",
        "subs": {
            "user:u1": {"recover": True, "epoch": "e1", "offset": 4},
            "global:all": {"recover": True, "epoch": "e2", "offset": 9},
        },
    }
    assert b"Authorization" not in request


def test_herald_request_subscribes_the_resource_and_resumes_from_the_last_id() -> None:
    request = HeraldStreams().request("127.0.0.1", 8000, ("u1", "tok", "doc:r3"), b"17-2")
    assert request.startswith(b"GET /api/v1/events/stream?subscribe=doc:r3 HTTP/1.1\r\n")
    assert b"Authorization: Bearer tok\r\n" in request
    assert b"Last-Event-ID: 17-2\r\n" in request


def test_centrifugo_token_subscribes_the_user_the_resource_and_everyone() -> None:
    import jwt

    claims = jwt.decode(centrifugo.token("u5", "doc:r1"), centrifugo.SECRET, algorithms=["HS256"])
    assert claims["sub"] == "u5"
    assert claims["channels"] == ["user:u5", "global:all", "doc:r1"]


def test_centrifugo_config_has_history_and_recovery_in_every_namespace() -> None:
    conf = centrifugo.config(9000, "redis", "redis://127.0.0.1:7000/0", "p")
    assert conf["uni_sse"] == {"enabled": True}
    assert conf["engine"]["redis"]["address"] == ["redis://127.0.0.1:7000/0"]
    names = {ns["name"] for ns in conf["channel"]["namespaces"]}
    assert names == {"user", "doc", "global"}
    for ns in conf["channel"]["namespaces"]:
        assert ns["force_recovery"] is True
        assert ns["history_size"] >= 1000
    assert "engine" not in centrifugo.config(9000, "memory")
    with pytest.raises(ValueError, match="redis_url"):
        centrifugo.config(9000, "redis")


def test_resources_have_10_to_50_followers_and_cover_every_stream() -> None:
    sizes = resource_sizes(10_000)
    assert sum(sizes) == 10_000
    assert set(sizes) == {10, 20, 30, 40, 50}
    streams = resource_of_streams(10_000)
    assert len(streams) == 10_000
    assert Counter(streams)["r0"] == 10
    assert Counter(streams)["r1"] == 20


def test_the_mix_is_90_9_1_and_counts_its_receivers() -> None:
    traffic = Traffic.of("mix", 10_000)
    scopes = Counter(traffic.target(i)[0] for i in range(20_000))
    assert abs(scopes["user"] / 20_000 - 0.90) < 0.01
    assert abs(scopes["doc"] / 20_000 - 0.09) < 0.01
    assert abs(scopes["global"] / 20_000 - 0.01) < 0.003
    assert traffic.receivers("doc", "r1", 10_000) == 20
    assert traffic.receivers("global", None, 10_000) == 10_000
    assert traffic.receivers("user", "u3", 10_000) == 1
    # A targeted stage reaches every user once per N events.
    assert len({Traffic.of("users", 10_000).target(i)[1] for i in range(10_000)}) == 10_000


def test_publish_bodies_are_the_json_each_server_expects() -> None:
    herald = HeraldPublishing("127.0.0.1", 1, "tok")
    req = herald.single("doc", "r2", b'{"t":1}')
    head, body = req.split(b"\r\n\r\n")
    assert json.loads(body) == {"event": "bench.tick-sent", "scope": "doc", "key": "r2", "data": {"t": 1}}
    assert b"Content-Length: %d" % len(body) in head
    cf = CentrifugoPublishing("127.0.0.1", 1, parallel=True)
    body = cf.batch([("user", "u1", b'{"t":1}'), ("global", None, b'{"t":2}')]).split(b"\r\n\r\n")[1]
    assert json.loads(body) == {
        "commands": [
            {"publish": {"channel": "user:u1", "data": {"t": 1}}},
            {"publish": {"channel": "global:all", "data": {"t": 2}}},
        ],
        "parallel": True,
    }
    assert cf.accepted(200, b'{"replies":[{"publish":{}},{"error":{"code":102}}]}', 2) == 1


class _Answering(asyncio.Protocol):
    """A keep-alive HTTP server that answers Centrifugo's way: small bodies with a length,
    batches in chunks, and closes every third connection's socket after one answer."""

    received: list[bytes]
    opened = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        type(self).opened += 1
        self.number = type(self).opened
        self.buf = b""
        self.answers = 0

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, rest = self.buf.split(b"\r\n\r\n", 1)
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            if len(rest) < length:
                return
            body, self.buf = rest[:length], rest[length:]
            type(self).received.append(body)
            if b'"commands"' in body:
                n = len(json.loads(body)["commands"])
                reply = b'{"replies":[%s]}' % b",".join([b'{"publish":{"offset":1}}'] * n)
                half = len(reply) // 2
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + chunk(reply[:half])
                    + chunk(reply[half:])
                    + b"0\r\n\r\n"
                )
            else:
                reply = b'{"result":{"offset":1}}'
                self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(reply), reply))
            self.answers += 1
            if self.number % 3 == 0:
                self.transport.close()  # a keep-alive connection the server ends


@pytest.mark.parametrize("batch", [1, 25])
async def test_fast_publisher_delivers_every_event_once_across_closed_connections(batch: int) -> None:
    _Answering.received = []
    _Answering.opened = 0
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Answering, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        publisher = FastPublisher(
            "127.0.0.1", port, CentrifugoPublishing("127.0.0.1", port), 4, Traffic.of("mix", 100)
        )
        await publisher.start()
        report_ = await publisher.run(
            rate=0, total=200, index=0, stride=1, start_ns=0, seq_base=1000, batch=batch, drain_s=10
        )
        publisher.close()
    finally:
        server.close()
    assert report_.accepted == 200
    assert report_.errors == 0
    seqs: list[int] = []
    for body in _Answering.received:
        doc: dict[str, Any] = json.loads(body)
        for command in doc.get("commands", [{"publish": doc}]):
            seqs.append(command["publish"]["data"]["s"])
    assert sorted(seqs) == list(range(1001, 1201))  # each once: none lost, none sent twice
    assert _Answering.opened > 4  # the server did close connections; the publisher reopened them
    assert report_.global_events + report_.other_receivers > 0


def test_variants_pair_servers_doing_the_same_job() -> None:
    vs = variants(["herald", "centrifugo", "ceiling"], ["memory", "redis"], [1, 2])
    assert Variant("ceiling", "memory", 1) in vs
    assert all(v.server != "ceiling" or (v.engine, v.cores) == ("memory", 1) for v in vs)
    assert [v.server for v in vs[:3]] == ["herald", "centrifugo", "ceiling"]
    assert not Variant("ceiling", "memory", 1).applies("restart")
    assert not Variant("herald", "redis", 1).applies("broadcast")


def _stage(rate: float, ok: bool, us: float, p99: float = 5.0) -> dict[str, Any]:
    """A stage as ``rate_stage`` records it, what limited it included."""
    stage: dict[str, Any] = {
        "rate": rate,
        "ok": ok,
        "server_cpu_us_per_event": us,
        "server_cpu_us_per_delivery": us,
        "p99_ms": p99,
        "deliveries_per_s": rate,
        "redis_cpu_us_per_event": None,
        "server_cpu_pct": 95.0,
        "streams_cpu_pct": 10.0,
        "publishers_cpu_pct": 20.0,
    }
    stage["bound"] = bound_by(stage, 1, publishers=2, cpus=2)
    return stage


def _result(server: str, round_: int, targeted: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "server": server,
        "engine": "memory",
        "cores": 1,
        "round": round_,
        "n": 100,
        "rss_per_conn_bytes": 2048.0 if server == "herald" else 61_440.0,
        "connect_rate": 5000.0,
        "idle_cpu_pct": 1.0,
        "targeted": targeted,
    }


def test_report_compares_at_the_highest_rate_both_held_with_medians_of_rounds() -> None:
    doc = {
        "plan": {
            "broadcast_rates": [10],
            "targeted_rates": [250, 500, 1000],
            "mix_rates": [],
            "publishers": 2,
            "batch_size": 100,
        },
        "results": [
            _result("herald", 0, [_stage(250, True, 600), _stage(500, True, 500), _stage(1000, False, 400)]),
            _result("herald", 1, [_stage(250, True, 640), _stage(500, True, 520), _stage(1000, False, 410)]),
            _result(
                "centrifugo", 0, [_stage(250, True, 200), _stage(500, True, 200), _stage(1000, True, 190)]
            ),
            _result(
                "centrifugo", 1, [_stage(250, True, 220), _stage(500, True, 260), _stage(1000, True, 180)]
            ),
        ],
    }
    assert report.common_rate(doc, "memory", 1, "targeted") == 500
    text = report.table(doc)
    assert "| targeted: highest rate held (events/s) | 500.0 | 1,000 | 0.50× | Centrifugo |" in text
    # At 500/s: Herald's median 510 µs, Centrifugo's 230 µs.
    assert (
        "| targeted: server CPU µs per event at 500 events/s | 510.0 | 230.0 | 2.22× | Centrifugo |" in text
    )
    assert "| idle RSS per stream (KiB) | 2.0 | 60.0 | 0.03× | Herald |" in text
    # Herald lost 1,000/s with the harness at 10-20 % of a core: the server's limit.
    assert "| targeted: what ended the ladder | server | top reached | | |" in text


def test_without_go_the_centrifugo_build_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without Go the install script exits 3; the bench then says why and runs the others."""
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "bash").symlink_to(shutil.which("bash") or "/bin/bash")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setenv("HERALD_CENTRIFUGO_HOME", str(tmp_path / "centrifugo"))
    path, why = centrifugo.binary()
    assert path is None
    assert "Go is not installed" in why


def test_unquote_roundtrip_of_cf_connect() -> None:
    request = CentrifugoStreams().request("h", 1, ("u", "a+b/c", ""), None)
    target = request.split(b" ")[1].decode()
    assert json.loads(unquote(target.split("cf_connect=")[1])) == {"token": "a+b/c"}


@pytest.mark.parametrize(
    ("server", "streams", "publishers", "others", "cores", "expected"),
    [
        (98.0, 40.0, 30.0, 0.0, 1, "server"),  # the harness had room: the server fell behind
        (40.0, 40.0, 30.0, 0.0, 1, "server"),  # even with CPU to spare (a stall is the server's)
        (50.0, 99.0, 30.0, 0.0, 1, "harness"),  # the stream holders were the limit
        (50.0, 40.0, 185.0, 0.0, 1, "harness"),  # every publisher was busy
        (95.0, 100.0, 30.0, 0.0, 1, "machine"),  # both: two cores shared by server and harness
        (120.0, 100.0, 30.0, 0.0, 2, "harness"),  # a 2-core server at 60 % had room
        (120.0, 74.0, 3.0, 0.0, 2, "machine"),  # a 2-core server cannot get 2 cores beside the harness
        (60.0, 40.0, 10.0, 90.0, 1, "machine"),  # someone else took the machine
    ],
)
def test_a_lost_stage_says_what_limited_it(
    server: float, streams: float, publishers: float, others: float, cores: int, expected: str
) -> None:

    stage = {
        "ok": False,
        "server_cpu_pct": server,
        "streams_cpu_pct": streams,
        "publishers_cpu_pct": publishers,
        "others_cpu_pct": others,
        "redis_cpu_pct": 0.0,
    }
    assert bound_by(stage, cores, publishers=2, cpus=2) == expected
    assert bound_by({**stage, "ok": True}, cores, publishers=2, cpus=2) == ""
