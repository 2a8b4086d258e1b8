"""The peer suite's scenarios, run against one variant in one fresh server:

1. *connect and idle memory*: N streams (each its own user, following one
   resource) opened with their JWTs; RSS per stream 3 s later;
2. *broadcast ladder*: every event to every stream, at rising rates until a
   stage fails (p99 > 1 s, deliveries short, publishes behind);
3. *targeted ladder*: every event to one user (one stream), rising rates;
4. *mix ladder*: 90 % to one user, 9 % to a resource's 10-50 followers, 1 %
   to everyone (:mod:`bench.loadgen.traffic`), rising rates;
5. *publish cost*: events to users with no stream, closed loop, 8 in flight,
   single publishes and then batches; the server's and Redis's CPU per event
   apart, and the harness's own;
6. *restart*: N fresh streams get a few events; the server is stopped
   (SIGTERM, as a deploy does) and started again on the same port; 100
   events are published while the streams are away; every stream reconnects
   at once with its position (Herald: ``Last-Event-ID``; Centrifugo: each
   channel's epoch and offset). Measured: time until every stream is live and
   has every missed event, how many got exactly the 100 (none twice, none
   older), and what the server told each about recovering.

Which scenarios a variant runs: :meth:`bench.peers.variants.Variant.applies`.
Publishing is done by separate processes (:mod:`bench.loadgen.fast_publisher`)
so the harness is not what is measured; each stage reports its CPU.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psutil

from bench.common import STREAM_PATH, ServerProcess, forget, log
from bench.loadgen.fast_publisher import HERALD_BATCH_PATH
from bench.loadgen.pool import Merged, WorkerPool
from bench.loadgen.traffic import Traffic
from bench.peers.plan import PeerPlan
from bench.peers.variants import Servers, Variant
from bench.redis_server import RedisServer
from bench.scenarios import settle

HOST = "127.0.0.1"
Result = dict[str, Any]


@dataclass
class Harness:
    plan: PeerPlan
    servers: Servers
    #: Processes holding the streams, and processes publishing.
    streams: WorkerPool
    publishers: WorkerPool
    redis: RedisServer | None
    #: The next event's sequence number is ``seq + 1``: unique over the whole run.
    seq: int = 0

    async def publish(
        self,
        server: ServerProcess,
        v: Variant,
        traffic: Traffic,
        *,
        rate: float,
        total: int,
        connections: int,
        batch: int = 1,
        parallel: bool = False,
        processes: int | None = None,
    ) -> Result:
        """``total`` events of ``traffic`` at ``rate``/s (0: closed loop) from the publishing
        processes, each taking every P-th; their reports merged."""
        count = processes or self.publishers.size
        handles = self.publishers.handles[:count]
        seq_base = self.seq
        self.seq += total
        start_ns = time.monotonic_ns() + 50_000_000  # every process starts on the same tick
        share = {
            "host": HOST,
            "port": server.port,
            "dialect": v.dialect,
            "token": self.servers.publish_token(v),
            "traffic": traffic.to_json(),
            "connections": connections,
            "rate": rate,
            "total": total,
            "stride": count,
            "start_ns": start_ns,
            "seq_base": seq_base,
            "batch": batch,
            "parallel": parallel,
        }
        budget = (total / rate if rate else 120.0) + 60.0
        reports = await asyncio.gather(
            *(h.call("publish", budget, **share, index=w) for w, h in enumerate(handles))
        )
        merged: Result = {
            key: sum(r[key] for r in reports)
            for key in ("sent", "accepted", "errors", "requests", "global_events", "other_receivers")
        }
        merged["max_lag_ms"] = max(r["max_lag_ms"] for r in reports)
        merged["post_p50_ms"] = statistics.median(r["post_p50_ms"] for r in reports)
        merged["post_max_ms"] = max(r["post_max_ms"] for r in reports)
        merged["elapsed_s"] = max(r["elapsed_s"] for r in reports)
        merged["first_error"] = next((r["first_error"] for r in reports if r["first_error"]), "")
        statuses: dict[str, int] = {}
        for r in reports:
            for k, n in r["statuses"].items():
                statuses[k] = statuses.get(k, 0) + n
        merged["statuses"] = statuses
        merged["seq_lo"], merged["seq_hi"] = seq_base + 1, seq_base + total
        return merged


class Clock:
    """CPU seconds, since it started, of the server, Redis, the stream holders, the publishers
    and the rest of the machine (this coordinator, other tenants, the kernel's softirqs)."""

    def __init__(self, h: Harness, server: ServerProcess) -> None:
        self.h = h
        self.server = server
        self.t0 = time.monotonic()
        self.start = self._read()

    def _read(self) -> tuple[float, float, float, float, float]:
        t = psutil.cpu_times()
        busy = t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)
        return (
            self.server.cpu_seconds(),
            self.h.redis.cpu_seconds() if self.h.redis is not None else 0.0,
            self.h.streams.cpu_seconds(),
            self.h.publishers.cpu_seconds(),
            busy,
        )

    def used(self) -> dict[str, float]:
        now = self._read()
        server, redis_cpu, streams, publishers, machine = (
            b - a for a, b in zip(self.start, now, strict=True)
        )
        return {
            "server": server,
            "redis": redis_cpu,
            "streams": streams,
            "publishers": publishers,
            "others": max(0.0, machine - server - redis_cpu - streams - publishers),
            "wall": time.monotonic() - self.t0,
        }


# --- one rate stage


async def rate_stage(
    h: Harness, server: ServerProcess, v: Variant, kind: str, traffic: Traffic, rate: float, held: int
) -> Result:
    plan = h.plan
    await h.streams.all("reset", 30)
    total = max(1, round(rate * plan.stage_seconds))
    clock = Clock(h, server)
    pub = await h.publish(server, v, traffic, rate=rate, total=total, connections=plan.publisher_connections)
    wanted = pub["global_events"] * held + pub["other_receivers"]
    deadline = time.monotonic() + plan.drain_seconds
    merged: Merged = await h.streams.stats(hist=False)
    while merged.delivered < wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        merged = await h.streams.stats(hist=False)
    cpu = clock.used()
    merged = await h.streams.stats(hist=True)
    # The schedule's length, or until the last delivery arrived: CPU over that window.
    window = max(total / rate, merged.last_ns / 1e9 - clock.t0, 1e-9)
    p99 = merged.percentile_ms(0.99)
    ok, reason = True, ""
    if pub["errors"] or pub["accepted"] < 0.95 * total:
        ok, reason = False, f"publishes accepted {pub['accepted']}/{total} ({pub['first_error'][:120]})"
    elif pub["max_lag_ms"] > plan.p99_limit_ms:
        ok, reason = False, f"publishes fell {pub['max_lag_ms']:.0f} ms behind the schedule"
    elif wanted and merged.delivered < plan.min_delivered_fraction * wanted:
        ok, reason = False, f"delivered {merged.delivered}/{wanted} within the drain time"
    elif p99 is not None and p99 > plan.p99_limit_ms:
        ok, reason = False, f"p99 {p99:.0f} ms > {plan.p99_limit_ms:.0f} ms"
    elif merged.closed_unexpectedly > max(1.0, 0.01 * held):
        ok, reason = False, f"{merged.closed_unexpectedly} streams closed by the server"
    server_pct = 100 * cpu["server"] / window
    accepted = pub["accepted"]
    stage = {
        "kind": kind,
        "rate": rate,
        "published": accepted,
        "wanted": wanted,
        "delivered": merged.delivered,
        "deliveries_per_s": merged.delivered / window,
        "p50_ms": merged.percentile_ms(0.50),
        "p90_ms": merged.percentile_ms(0.90),
        "p99_ms": p99,
        "max_ms": merged.max_ns / 1e6,
        "server_cpu_pct": server_pct,
        "redis_cpu_pct": 100 * cpu["redis"] / window,
        "streams_cpu_pct": 100 * cpu["streams"] / window,
        "publishers_cpu_pct": 100 * cpu["publishers"] / window,
        "others_cpu_pct": 100 * cpu["others"] / window,
        "server_cpu_us_per_event": 1e6 * cpu["server"] / accepted if accepted else None,
        "server_cpu_us_per_delivery": 1e6 * cpu["server"] / merged.delivered if merged.delivered else None,
        "redis_cpu_us_per_event": 1e6 * cpu["redis"] / accepted if accepted else None,
        "harness_cpu_us_per_publish": 1e6 * cpu["publishers"] / accepted if accepted else None,
        "publish_max_lag_ms": pub["max_lag_ms"],
        "post_p50_ms": pub["post_p50_ms"],
        "closed_unexpectedly": merged.closed_unexpectedly,
        "ok": ok,
        "reason": reason,
    }
    stage["bound"] = bound_by(stage, v.cores, plan.publishers, os.cpu_count() or 1)
    _log_stage(stage)
    return stage


#: A part of the harness using this much of a core (%) was the limit, or near it.
HARNESS_SATURATED_PCT = 90.0


def bound_by(stage: Result, cores: int, publishers: int, cpus: int) -> str:
    """What limited a lost stage (``""`` for one that held):

    - ``harness``: the stream holders, or every publisher, near a full core while the
      server had CPU to spare;
    - ``machine``: the harness near its limit and the server too, or the whole machine busy
      (on two cores a two-core server and the harness compete for them);
    - ``server``: otherwise: the server used most of the cores it was given, or fell behind
      with the harness and the machine having room.
    """
    if stage["ok"]:
        return ""
    harness = (
        stage["streams_cpu_pct"] >= HARNESS_SATURATED_PCT
        or stage["publishers_cpu_pct"] >= HARNESS_SATURATED_PCT * publishers
    )
    server = stage["server_cpu_pct"] >= 75 * cores
    if harness:
        return "machine" if server else "harness"
    if server:
        return "server"
    busy = sum(stage.get(k) or 0.0 for k in ("server_cpu_pct", "redis_cpu_pct", "streams_cpu_pct",
                                              "publishers_cpu_pct", "others_cpu_pct"))  # fmt: skip
    return "machine" if busy >= HARNESS_SATURATED_PCT * cpus else "server"


def _log_stage(s: Result) -> None:
    p = "—" if s["p99_ms"] is None else f"{s['p50_ms']:.1f}/{s['p99_ms']:.1f}"
    us = s["server_cpu_us_per_event"]
    log(
        f"  {s['kind']:9} {s['rate']:>6g} ev/s: {s['deliveries_per_s']:>9.0f} deliveries/s, p50/p99 {p} ms, "
        f"server CPU {s['server_cpu_pct']:.0f}% ({us or 0:.0f} µs/event), redis {s['redis_cpu_pct']:.0f}%, "
        f"streams {s['streams_cpu_pct']:.0f}%, publishers {s['publishers_cpu_pct']:.0f}%, "
        f"others {s['others_cpu_pct']:.0f}%"
        + ("" if s["ok"] else f"  FAILED: {s['reason']} (bound: {s['bound']})")
    )


async def ladder(
    h: Harness, server: ServerProcess, v: Variant, kind: str, rates: list[float], held: int, receivers: int
) -> list[Result]:
    """Rising rates until one fails; ``receivers``: deliveries per event, to bound the ladder."""
    traffic = Traffic.of({"broadcast": "global", "targeted": "users"}.get(kind, kind), h.plan.n)
    out: list[Result] = []
    for rate in rates:
        if rate * receivers > h.plan.max_deliveries_per_s:
            break
        stage = await rate_stage(h, server, v, kind, traffic, rate, held)
        out.append(stage)
        if not server.alive():
            raise RuntimeError("server died")
        if not stage["ok"]:
            break
        await asyncio.sleep(1.0)
    await settle(h.streams, held)
    await quiet(server)
    return out


# --- publish cost


def _herald_has_batch(port: int, token: str) -> bool:
    """Whether Herald answers its batch endpoint (issue 12 adds it) with anything but 404/405."""
    req = urllib.request.Request(
        f"http://{HOST}:{port}{HERALD_BATCH_PATH}",
        data=b'{"events":[]}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5):  # noqa: S310 (http://127.0.0.1 only)
            return True
    except urllib.error.HTTPError as exc:
        return exc.code not in (404, 405)
    except OSError:
        return False


#: A server is quiet when it spends less than this share of a core ...
QUIET_CPU_FRACTION = 0.10  # idle, 10,000 streams cost up to 5 % (heartbeats, timers)
#: ... over a window this long (seconds).
QUIET_WINDOW_S = 0.5


async def quiet(server: ServerProcess, limit_s: float = 30.0) -> float:
    """Wait (bounded) until the server has worked off what the last stage left (a lost stage's
    backlog, collections of its garbage), so that none of it is charged to what is measured
    next; the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = server.cpu_seconds()
        await asyncio.sleep(QUIET_WINDOW_S)
        if server.cpu_seconds() - before < QUIET_CPU_FRACTION * QUIET_WINDOW_S:
            break
    return time.monotonic() - t0


async def publish_cost(h: Harness, server: ServerProcess, v: Variant) -> Result:
    plan = h.plan
    nobody = Traffic.of("nobody", plan.n)
    out: Result = {}
    for mode in ("single", "batch", "batch_parallel"):
        batch = 1 if mode == "single" else plan.batch_size
        if mode == "batch_parallel" and v.server != "centrifugo":
            continue  # an option of Centrifugo's batch API only
        if mode == "batch":
            if v.server == "ceiling":
                out[mode] = {"supported": False, "note": "the ceiling has no batch endpoint"}
                continue
            if v.server == "herald" and not _herald_has_batch(server.port, h.servers.publish_token(v)):
                out[mode] = {"supported": False, "note": f"Herald has no {HERALD_BATCH_PATH} yet (issue 12)"}
                log(f"  publish {mode}: {out[mode]['note']}")
                continue
        total = plan.publish_events if batch == 1 else plan.batch_events
        per_process = max(1, plan.publish_in_flight // h.publishers.size) if batch == 1 else 1
        waited = await quiet(server)
        clock = Clock(h, server)
        pub = await h.publish(
            server, v, nobody, rate=0, total=total, connections=per_process, batch=batch,
            parallel=mode == "batch_parallel",
        )  # fmt: skip
        cpu = clock.used()
        accepted = pub["accepted"]
        result = {
            "supported": True,
            "batch": batch,
            "in_flight": per_process * h.publishers.size,
            "events": total,
            "accepted": accepted,
            "errors": pub["errors"],
            "first_error": pub["first_error"],
            "events_per_s": accepted / pub["elapsed_s"] if pub["elapsed_s"] else 0.0,
            "server_cpu_us_per_event": 1e6 * cpu["server"] / accepted if accepted else None,
            "redis_cpu_us_per_event": 1e6 * cpu["redis"] / accepted if accepted else None,
            "harness_cpu_us_per_event": 1e6 * cpu["publishers"] / accepted if accepted else None,
            "server_cpu_pct": 100 * cpu["server"] / cpu["wall"],
            "publishers_cpu_pct": 100 * cpu["publishers"] / cpu["wall"],
            "post_p50_ms": pub["post_p50_ms"],
            "quiet_wait_s": waited,
        }
        out[mode] = result
        us = {k: result[f"{k}_cpu_us_per_event"] or 0.0 for k in ("server", "redis", "harness")}
        log(
            f"  publish {mode:6}: {accepted}/{total} in {pub['elapsed_s']:.2f}s "
            f"({result['events_per_s']:.0f}/s), server {us['server']:.1f} µs/event, "
            f"redis {us['redis']:.1f} µs, harness {us['harness']:.1f} µs"
            + (f", errors {pub['errors']}: {pub['first_error'][:100]}" if pub["errors"] else "")
        )
    return out


# --- connect, idle memory


async def open_streams(
    h: Harness, server: ServerProcess, v: Variant, n: int, time_limit: float | None = None
) -> dict[str, Any]:
    specs = h.servers.specs(v, n)
    t0 = time.monotonic()
    opened = await h.streams.connect(
        HOST,
        server.port,
        STREAM_PATH,
        list(specs),
        h.plan.connect_concurrency,
        time_limit=time_limit or max(60.0, n / 50),
        dialect=v.dialect,
    )
    opened["seconds"] = time.monotonic() - t0
    return opened


async def warm_up(h: Harness, server: ServerProcess, v: Variant) -> None:
    """First requests import and compile what a server loads lazily."""
    await open_streams(h, server, v, 20, time_limit=30)
    await h.publish(server, v, Traffic.of("global", 20), rate=40, total=20, connections=2, processes=1)
    await h.streams.all("close", 30)
    await asyncio.sleep(1.5)


# --- restart


async def restart(h: Harness, server: ServerProcess, v: Variant) -> tuple[Result, ServerProcess]:
    """Stop the server with its streams open, start it again, publish while they are away,
    and let them all reconnect at once with where they were."""
    plan = h.plan
    await h.streams.all("close", 60)
    opened = await open_streams(h, server, v, plan.n)
    await h.streams.all("track", 30, on=True)
    held = opened["ok"]
    everyone = Traffic.of("global", plan.n)
    await h.streams.all("reset", 30)
    # One process, one connection: the events enter in the order of their numbers, so a
    # stream's newest number is also its position in the server's order (what the audit of
    # "exactly what it missed" needs; concurrent publishes could enter out of order).
    before = await h.publish(server, v, everyone, rate=100, total=10, connections=1, processes=1)
    first = before["seq_lo"]
    # Every stream should have all ten before the server stops; those that have not are
    # counted (and are owed them by the replay: each audit starts after what it had).
    t_wait = time.monotonic()
    behind = held
    while time.monotonic() < t_wait + PRE_RESTART_WAIT_S:
        behind = sum(await h.streams.all("behind", 30, seq=before["seq_hi"]))
        if not behind:
            break
        await asyncio.sleep(0.1)
    pre_wait_s = time.monotonic() - t_wait
    history = centrifugo_history(server.port) if v.server == "centrifugo" and behind else None
    await h.streams.all("expect_close", 30)
    port = server.port
    t_stop = time.monotonic()
    server.stop()
    stopped_s = time.monotonic() - t_stop
    await h.streams.all("drop", 30)  # whatever the server did not close itself
    t_start = time.monotonic()
    server = h.servers.start(v, port=port)
    started_s = time.monotonic() - t_start
    missed = await h.publish(
        server,
        v,
        everyone,
        rate=max(50.0, plan.restart_events / 0.5),
        total=plan.restart_events,
        connections=1,
        processes=1,
    )
    hi = missed["seq_hi"]
    t0 = time.monotonic_ns()
    results = await h.streams.all(
        "reconnect",
        240,
        t0_ns=t0,
        target_seq=hi,
        time_limit=180.0,
        use_last_id=True,
        port=port,
        audit=(first, hi),
    )

    def total(key: str) -> int:
        return int(sum(r.get(key, 0) for r in results))

    reconnected = total("reconnected")
    exact = total("exact")
    out: Result = {
        "streams": held,
        "before_restart_delivered": before["accepted"],
        # Streams still without the last of the ten when the server stopped, after a wait.
        "behind_at_stop": behind,
        "pre_restart_wait_s": pre_wait_s,
        "history_at_stop": history,
        "stop_s": stopped_s,
        "start_s": started_s,
        "missed_events": missed["accepted"],
        # Events each stream had not received when the server stopped, summed: the restart's
        # events, and any of the ten before it that had not reached a stream yet.
        "missed_per_stream_total": total("missed"),
        "missed_publish_errors": missed["errors"],
        "reconnected": reconnected,
        "failed": total("failed"),
        "all_live_s": max(r["live_max_ns"] for r in results) / 1e9,
        "median_live_s": max(r["live_p50_ns"] for r in results) / 1e9,
        "got_newest": total("replayed"),
        "all_got_newest_s": max(r["replayed_max_ns"] for r in results) / 1e9 if total("replayed") else None,
        "exact": exact,
        "all_exact": exact == held and held > 0,
        "missing_clients": total("missing_clients"),
        "received_in_range": total("received_in_range"),
        "received_before_range": total("received_before_range"),
        "told_recovered": total("told_recovered"),
        "told_not_recovered": total("told_not_recovered"),
        "told_nothing": total("told_nothing"),
        "errors": _merge_errors(results),
        "inexact_samples": [x for r in results for x in r.get("inexact_samples", [])][:10],
    }
    log(
        f"  restart: {reconnected}/{held} back in {out['all_live_s']:.2f}s; exact {exact}/{held} "
        f"(every missed event once: {out['all_exact']}, newest in {out['all_got_newest_s'] or 0:.2f}s); "
        f"told recovered {out['told_recovered']}, not recovered {out['told_not_recovered']}, "
        f"nothing {out['told_nothing']}; older events again {out['received_before_range']}; "
        f"{behind} streams behind when it stopped ({pre_wait_s:.1f}s wait)"
    )
    return out, server


#: How long the restart waits for its ten first events to reach every stream.
PRE_RESTART_WAIT_S = 15.0


def centrifugo_history(port: int) -> list[list[int]] | None:
    """The offsets and sequence numbers of ``global:all``'s last publications, from
    Centrifugo's history API: evidence when a stream is behind as the server stops."""
    from bench.loadgen.fast_publisher import CENTRIFUGO_API_KEY

    req = urllib.request.Request(
        f"http://{HOST}:{port}/api/history",
        data=json.dumps({"channel": "global:all", "limit": 20, "reverse": True}).encode(),
        headers={"X-API-Key": CENTRIFUGO_API_KEY, "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 (http://127.0.0.1 only)
            pubs = json.loads(r.read())["result"].get("publications", [])
    except (OSError, ValueError, KeyError):
        return None
    return [[p.get("offset", 0), p["data"]["s"]] for p in pubs]


def _merge_errors(results: list[Result]) -> dict[str, int]:
    errors: dict[str, int] = {}
    for r in results:
        for k, n in r.get("errors", {}).items():
            errors[k] = errors.get(k, 0) + n
    return errors


# --- one variant


async def run_variant(h: Harness, v: Variant, round_: int) -> Result:
    plan = h.plan
    result: Result = {"server": v.server, "engine": v.engine, "cores": v.cores, "round": round_, "n": plan.n}
    if h.redis is not None and v.engine == "redis":
        with h.redis.client() as client:
            client.flushall()
    server = h.servers.start(v)
    try:
        await warm_up(h, server, v)
        result["rss_before"] = server.rss()
        opened = await open_streams(h, server, v, plan.n)
        held = opened["ok"]
        result.update(
            connected=held,
            connect_failed=opened["failed"],
            connect_errors=opened["errors"],
            connect_seconds=opened["seconds"],
            connect_rate=held / opened["seconds"] if opened["seconds"] else 0.0,
        )
        idle = Clock(h, server)
        await asyncio.sleep(3.0)
        # What N open streams cost with nothing published: heartbeats, timers, collections.
        spent = idle.used()
        result["idle_cpu_pct"] = 100 * spent["server"] / spent["wall"]
        result["rss_after"] = server.rss()
        result["rss_per_conn_bytes"] = (result["rss_after"] - result["rss_before"]) / held if held else None
        log(
            f"  {v.label}: {held} streams in {opened['seconds']:.2f}s, failed {opened['failed']} "
            f"{opened['errors'] or ''}; idle RSS {(result['rss_per_conn_bytes'] or 0) / 1024:.1f} "
            f"KiB/stream, idle CPU {result['idle_cpu_pct']:.1f} %"
        )
        if not held:
            result["error"] = "no stream could be opened"
            return result
        if "broadcast" in plan.scenarios and v.applies("broadcast"):
            result["broadcast"] = await ladder(h, server, v, "broadcast", plan.broadcast_rates, held, held)
        if "targeted" in plan.scenarios and v.applies("targeted"):
            result["targeted"] = await ladder(h, server, v, "targeted", plan.targeted_rates, held, 1)
        if "mix" in plan.scenarios and v.applies("mix"):
            # 1 % of the events reach everyone: about held / 100 + 3 deliveries per event.
            result["mix"] = await ladder(h, server, v, "mix", plan.mix_rates, held, held // 100 + 3)
        if "publish" in plan.scenarios and v.applies("publish"):
            result["publish"] = await publish_cost(h, server, v)
        if "restart" in plan.scenarios and v.applies("restart"):
            result["restart"], server = await restart(h, server, v)
    except Exception as exc:  # one variant's failure must not stop the others
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"  {v.label} failed: {result['error']}")
    finally:
        try:
            await h.streams.all("close", 60)
        except Exception as exc:
            log(f"  closing the streams failed: {exc}")
        result["server_log_tail"] = server.stderr_tail[-10:]
        forget(server.proc)
    return result
