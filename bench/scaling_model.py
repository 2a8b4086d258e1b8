"""The arithmetic of ``docs/scaling.md``: measured coefficients in, a deployment's size out.

Pure functions over the results of :mod:`bench.scaling` (no I/O but
:func:`write_docs`). The model, per Herald process (one worker, one core):

    CPU = E_read × read_us                         every process reads every event of its log
        + D / P × deliver_us                       its share of the deliveries
        + C / P × idle_us                          heartbeats and lease renewals
        + E / P × ingest_us                        its share of the appends (HTTP or a source)

with E events/s into the log, D deliveries/s, C connections, P processes,
and E_read = E / S + the global events when the log is sharded S ways by
scope key (each process reading only the shards of the users it serves).
The first term does not shrink with P: it is what caps a single log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parent.parent / "docs" / "scaling.md"
MiB = 2**20


@dataclass(frozen=True)
class Coefficients:
    nodes: int
    connections: int
    #: Server process RSS per idle stream, and the process's own base.
    rss_kib_per_conn: float
    base_rss_mib: float
    #: The server side's share of the kernel's memory per stream (socket structures, buffers).
    kernel_kib_per_conn: float
    #: Redis memory per connection (its lease, the user's presence) and commands per stream opened.
    redis_bytes_per_conn: float
    redis_calls_per_connect: float
    #: CPU per connection per second with nothing published (heartbeats, lease renewals).
    idle_us_per_conn_s: float
    redis_idle_us_per_conn_s: float
    #: A process's CPU for an event it only reads (no receiver of its own), at the HTTP stage's
    #: low rate (one XREAD per event)...
    read_us: float
    #: ...and its parts, fitted over the read stages: per entry, and per XREAD round trip
    #: (which carries more entries the faster events come).
    read_entry_us: float
    read_call_us: float
    #: The fastest rate appended in the read stages, and the XREADs per second per process then.
    read_top_rate: float
    read_calls_per_s_top: float
    #: The publishing process's CPU per event beyond reading it (HTTP API, validation, append).
    ingest_us: float
    #: CPU per delivery (broadcast; the event read once per process, excluded).
    deliver_us: float
    #: Redis CPU per event: the append, and each reading process's XREAD share.
    redis_append_us: float
    redis_read_us_per_reader: float
    redis_calls_per_event: dict[str, float]
    bytes_in_per_event: float
    bytes_out_per_event_per_reader: float
    log_bytes_per_event: float
    broadcast_p99_ms: float | None
    mix_p99_ms: float | None


def _stage(doc: dict[str, Any], name: str) -> dict[str, Any]:
    for stage in doc["simulation"]["stages"]:
        if stage["name"] == name:
            found: dict[str, Any] = stage
            return found
    raise KeyError(name)


def coefficients(doc: dict[str, Any]) -> Coefficients:
    sim = doc["simulation"]
    connected: list[int] = sim["connected"]
    k = len(connected)
    conns = sum(connected)
    connect, idle, nobody, broadcast = (_stage(doc, n) for n in ("connect", "idle", "nobody", "broadcast"))
    mix = _stage(doc, "mix")
    rss_per_conn = [
        (after - before) / n
        for before, after, n in zip(connect["node_rss_before"], connect["node_rss"], connected, strict=True)
        if n
    ]
    server_rss = sum(connect["node_rss"]) - sum(connect["node_rss_before"])
    loadgen_rss = connect["loadgen_rss"][1] - connect["loadgen_rss"][0] if connect["loadgen_rss"] else 0
    # What the machine gave beyond both processes' RSS is the kernel's, for both ends of each socket.
    kernel = max(0.0, (connect["mem_available_delta"] - server_rss - loadgen_rss) / 2)
    idle_rate = [c / idle["seconds"] for c in idle["node_cpu_s"]]  # CPU s per s, per node

    def busy(stage: dict[str, Any]) -> list[float]:
        """Each node's CPU in a stage beyond its idle rate."""
        return [c - r * stage["seconds"] for c, r in zip(stage["node_cpu_s"], idle_rate, strict=True)]

    events = max(1, nobody["events"])
    readers = busy(nobody)[1:] or busy(nobody)
    read_us = 1e6 * (sum(readers) / len(readers)) / events
    ingest_us = 1e6 * busy(nobody)[0] / events - read_us
    entry_us, call_us, top_rate, top_calls = _fit_reads(doc, idle_rate)
    b_events = max(1, broadcast["events"])
    deliveries = max(1, broadcast["deliveries"])
    deliver_us = 1e6 * (sum(busy(broadcast)) - k * read_us * b_events / 1e6 - ingest_us * b_events / 1e6)
    deliver_us /= deliveries
    # Redis, per event, at the fastest read stage (the lifecycle renewals' share removed).
    top = _stage(doc, f"read-{top_rate:g}") if top_rate else nobody
    top_events = max(1, top["events"])
    usec = _beyond_idle(top, idle, 1)
    calls = _beyond_idle(top, idle, 0)
    inside = sum(usec.values()) or 1
    redis_cpu = top["redis_cpu_s"] - idle["redis_cpu_s"] / idle["seconds"] * top["seconds"]
    scale = 1e6 * redis_cpu / inside  # process CPU per µs of command time (I/O included)
    append_us = scale * (usec.get("evalsha", 0) + usec.get("eval", 0)) / top_events
    read_redis_us = scale * usec.get("xread", 0) / top_events / k
    return Coefficients(
        nodes=k,
        connections=conns,
        rss_kib_per_conn=sum(rss_per_conn) / len(rss_per_conn) / 1024,
        base_rss_mib=sum(connect["node_rss_before"]) / k / MiB,
        kernel_kib_per_conn=kernel / conns / 1024,
        redis_bytes_per_conn=connect["redis_memory_delta"] / conns,
        redis_calls_per_connect=sum(_beyond_idle(connect, idle, 0).values()) / conns,
        idle_us_per_conn_s=1e6 * sum(idle_rate) / conns,
        redis_idle_us_per_conn_s=1e6 * idle["redis_cpu_s"] / idle["seconds"] / conns,
        read_us=read_us,
        read_entry_us=entry_us,
        read_call_us=call_us,
        read_top_rate=top_rate,
        read_calls_per_s_top=top_calls,
        ingest_us=ingest_us,
        deliver_us=deliver_us,
        redis_append_us=append_us,
        redis_read_us_per_reader=read_redis_us,
        redis_calls_per_event={
            cmd: n / top_events for cmd, n in sorted(calls.items()) if n / top_events >= 0.01
        },
        bytes_in_per_event=_net_beyond_idle(top, idle, "net_in") / top_events,
        bytes_out_per_event_per_reader=_net_beyond_idle(top, idle, "net_out") / top_events / k,
        log_bytes_per_event=sim["log_bytes"] / max(1, sim["log_entries"]),
        broadcast_p99_ms=broadcast["p99_ms"],
        mix_p99_ms=mix["p99_ms"],
    )


def _beyond_idle(stage: dict[str, Any], idle: dict[str, Any], field: int) -> dict[str, float]:
    """A stage's Redis calls (``field`` 0) or µs (1) per command, less the idle stage's rate."""
    out = {}
    for cmd, values in stage["commands"].items():
        rate = idle["commands"].get(cmd, [0, 0])[field] / idle["seconds"]
        out[cmd] = max(0.0, values[field] - rate * stage["seconds"])
    return out


def _net_beyond_idle(stage: dict[str, Any], idle: dict[str, Any], name: str) -> float:
    return max(0.0, float(stage[name] - idle[name] / idle["seconds"] * stage["seconds"]))


def _fit_reads(doc: dict[str, Any], idle_rate: list[float]) -> tuple[float, float, float, float]:
    """Least squares over the read stages of ``CPU = entry_us × events + call_us × XREADs``
    per reading process; (entry_us, call_us, the top rate, XREADs per second per process there)."""
    stages = [s for s in doc["simulation"]["stages"] if s["name"].startswith("read-") and s["events"]]
    if not stages:
        return 0.0, 0.0, 0.0, 0.0
    k = len(idle_rate)
    rows = []
    for stage in stages:
        xreads = stage["commands"].get("xread", [0, 0])[0] / k
        for cpu, rate in zip(stage["node_cpu_s"], idle_rate, strict=True):
            rows.append((stage["events"], xreads, (cpu - rate * stage["seconds"]) * 1e6))
    sxx = sum(e * e for e, _, _ in rows)
    sxy = sum(e * c for e, c, _ in rows)
    syy = sum(c * c for _, c, _ in rows)
    sxz = sum(e * z for e, _, z in rows)
    syz = sum(c * z for _, c, z in rows)
    det = sxx * syy - sxy * sxy
    entry, call = ((syy * sxz - sxy * syz) / det, (sxx * syz - sxy * sxz) / det) if det else (0.0, 0.0)
    top = max(stages, key=lambda s: s["events"] / s["seconds"])
    rate = float(top["name"].removeprefix("read-"))
    calls_per_s = top["commands"].get("xread", [0, 0])[0] / k / top["seconds"]
    return max(0.0, entry), max(0.0, call), rate, calls_per_s


def read_us_at(k: Coefficients, events_per_s: float) -> float:
    """A process's CPU per event it reads, at ``events_per_s``: an XREAD per event while
    events come slower than the XREADs per second measured at the fastest read stage;
    faster, no more XREADs per second than there, each carrying more entries."""
    if not k.read_top_rate:
        return k.read_us
    calls_per_event = min(1.0, k.read_calls_per_s_top / max(events_per_s, 1e-9))
    return k.read_entry_us + k.read_call_us * calls_per_event


# --- the event mix and the load it makes


@dataclass(frozen=True)
class Mix:
    """Per connected user (one stream each) per second, and global broadcasts per second."""

    user_events: float = 0.05
    resource_events: float = 0.01
    resource_receivers: float = 3.0
    broadcasts: float = 1 / 60


def load(connections: int, mix: Mix) -> tuple[float, float, float]:
    """(events/s into the log, of which global, deliveries/s)."""
    scoped = connections * (mix.user_events + mix.resource_events)
    deliveries = connections * (
        mix.user_events + mix.resource_events * mix.resource_receivers + mix.broadcasts
    )
    return scoped + mix.broadcasts, mix.broadcasts, deliveries


@dataclass(frozen=True)
class Sizing:
    connections: int
    shards: int
    events_per_s: float
    deliveries_per_s: float
    #: CPU (cores) every process spends reading its log, whatever P is.
    read_cores_per_process: float
    feasible: bool
    processes: int = 0
    machines: int = 0
    cores: int = 0
    memory_gib_per_machine: float = 0.0
    redis_cores_per_shard: float = 0.0
    redis_out_mib_s_per_shard: float = 0.0
    redis_memory_gib_per_shard: float = 0.0
    kafka_partitions: int = 0
    limit: str = ""


def size(
    connections: int,
    mix: Mix,
    k: Coefficients,
    *,
    shards: int = 1,
    cores_per_machine: int = 8,
    target: float = 0.6,
    max_conns_per_process: int = 20_000,
    window_seconds: float = 300.0,
    kernel_kib_floor: float = 8.0,
) -> Sizing:
    """Processes (one core each, at most ``target`` busy), machines, Redis and Kafka for
    ``connections`` at ``mix``, with the log sharded ``shards`` ways by scope key."""
    events, global_events, deliveries = load(connections, mix)
    shard_events = (events - global_events) / shards + global_events
    read = shard_events * read_us_at(k, shard_events) / 1e6
    base = Sizing(connections, shards, events, deliveries, read, feasible=read < target)
    if not base.feasible:
        return Sizing(
            **{**base.__dict__, "limit": f"every process reads {read:.2f} cores of events > {target:.0%}"}
        )
    spread = (deliveries * k.deliver_us + connections * k.idle_us_per_conn_s + events * k.ingest_us) / 1e6
    by_cpu = math.ceil(spread / (target - read))
    by_conns = math.ceil(connections / max_conns_per_process)
    processes = max(by_cpu, by_conns, shards)
    machines = math.ceil(processes / cores_per_machine)
    memory = _memory_per_machine(k, connections, processes, machines, kernel_kib_floor)
    # Each shard: its events appended once and read by the processes serving its users.
    readers = max(1.0, processes / shards)
    redis_cpu = (
        shard_events * (k.redis_append_us + readers * k.redis_read_us_per_reader)
        + connections / shards * k.redis_idle_us_per_conn_s
    ) / 1e6
    out = shard_events * readers * k.bytes_out_per_event_per_reader / MiB
    redis_memory = (
        window_seconds * shard_events * k.log_bytes_per_event + connections / shards * k.redis_bytes_per_conn
    ) / 2**30
    return Sizing(
        **{
            **base.__dict__,
            "processes": processes,
            "machines": machines,
            "cores": machines * cores_per_machine,
            "memory_gib_per_machine": memory,
            "redis_cores_per_shard": redis_cpu,
            "redis_out_mib_s_per_shard": out,
            "redis_memory_gib_per_shard": redis_memory,
            # A partition per 1,000 events/s: each partition's consumer far below the ~10,900
            # records/s one node took from Kafka (docs/architecture.md, D14).
            "kafka_partitions": max(12, math.ceil(events / 1000)),
            "limit": "connections per process" if by_conns >= by_cpu else "CPU",
        }
    )


def _memory_per_machine(
    k: Coefficients, connections: int, processes: int, machines: int, kernel_kib_floor: float
) -> float:
    """GiB per machine: its processes' base and their streams. The kernel's share is read
    from the machine's free memory, which other processes move: never less than
    ``kernel_kib_floor`` per stream."""
    per_conn_kib = k.rss_kib_per_conn + max(k.kernel_kib_per_conn, kernel_kib_floor)
    return (
        processes / machines * (k.base_rss_mib * MiB + connections / processes * per_conn_kib * 1024) / 2**30
    )


def shards_needed(
    connections: int, mix: Mix, k: Coefficients, *, target: float = 0.6, read_share: float = 0.25
) -> int:
    """The fewest shards that keep each process's reading under ``read_share`` of ``target``."""
    shards = 1
    while shards < 4096:
        if (
            size(connections, mix, k, shards=shards, target=target).read_cores_per_process
            <= read_share * target
        ):
            return shards
        shards *= 2
    return shards


# --- text


def _f(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "—"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def coefficients_text(k: Coefficients) -> str:
    rows = coefficient_rows(k)
    return "\n".join(f"  {name:62} {value}" for name, value in rows)


def coefficient_rows(k: Coefficients) -> list[tuple[str, str]]:
    calls = ", ".join(f"{cmd} {_f(n, 2)}" for cmd, n in k.redis_calls_per_event.items())
    return [
        ("simulated", f"{k.nodes} nodes, {k.connections:,} connections on one Redis"),
        ("RSS per idle stream (server process)", f"{_f(k.rss_kib_per_conn, 2)} KiB"),
        ("kernel memory per stream, server side (estimate)", f"{_f(k.kernel_kib_per_conn, 2)} KiB"),
        ("process base RSS", f"{_f(k.base_rss_mib)} MiB"),
        ("Redis memory per connection (lease + presence)", f"{_f(k.redis_bytes_per_conn)} bytes"),
        ("Redis calls per stream opened", _f(k.redis_calls_per_connect, 2)),
        ("CPU per connection per second, idle (heartbeat, renewals)", f"{_f(k.idle_us_per_conn_s, 2)} µs"),
        ("Redis CPU per connection per second, idle", f"{_f(k.redis_idle_us_per_conn_s, 3)} µs"),
        ("CPU per event a process only reads, one XREAD each (HTTP stage)", f"{_f(k.read_us)} µs"),
        ("… per entry read (fit over the read stages)", f"{_f(k.read_entry_us)} µs"),
        ("… per XREAD round trip (fit over the read stages)", f"{_f(k.read_call_us)} µs"),
        (
            f"… at {_f(k.read_top_rate)} events/s appended: XREADs per second per process",
            _f(k.read_calls_per_s_top),
        ),
        ("CPU per event published over HTTP, beyond reading it", f"{_f(k.ingest_us)} µs"),
        ("CPU per delivery", f"{_f(k.deliver_us, 2)} µs"),
        ("Redis CPU per event: the append", f"{_f(k.redis_append_us)} µs"),
        ("Redis CPU per event per reading process", f"{_f(k.redis_read_us_per_reader)} µs"),
        ("Redis calls per event (INFO commandstats)", calls),
        ("bytes into Redis per event", _f(k.bytes_in_per_event, 0)),
        ("bytes out of Redis per event per reading process", _f(k.bytes_out_per_event_per_reader, 0)),
        ("log bytes per event held (MEMORY USAGE ÷ XLEN)", _f(k.log_bytes_per_event, 0)),
        ("p99, broadcast stage", f"{_f(k.broadcast_p99_ms)} ms"),
        ("p99, mix stage", f"{_f(k.mix_p99_ms)} ms"),
    ]


def check(doc: dict[str, Any], k: Coefficients) -> list[tuple[int, float, float]]:
    """Each node's CPU in the mix stage: (node, predicted s, measured s)."""
    mix, idle = _stage(doc, "mix"), _stage(doc, "idle")
    connected = doc["simulation"]["connected"]
    total = sum(connected)
    events, deliveries = mix["events"], mix["deliveries"]
    out = []
    for i, (cpu, n) in enumerate(zip(mix["node_cpu_s"], connected, strict=True)):
        predicted = idle["node_cpu_s"][i] / idle["seconds"] * mix["seconds"]
        predicted += events * read_us_at(k, events / mix["seconds"]) / 1e6
        predicted += deliveries * n / total * k.deliver_us / 1e6
        if i == 0:
            predicted += events * k.ingest_us / 1e6
        out.append((i + 1, predicted, cpu))
    return out


def check_text(doc: dict[str, Any], k: Coefficients) -> str:
    lines = ["the model against the mix stage (CPU seconds per node):"]
    for node, predicted, measured in check(doc, k):
        lines.append(
            f"  node {node}: predicted {predicted:.2f}, measured {measured:.2f} ({measured / predicted:.2f}×)"
        )
    return "\n".join(lines)


def plan_rows(k: Coefficients, mix: Mix) -> list[Sizing]:
    rows = []
    for connections in (100_000, 1_000_000):
        rows.append(size(connections, mix, k))
        shards = shards_needed(connections, mix, k)
        if shards > 1:
            rows.append(size(connections, mix, k, shards=shards))
    return rows


def _markdown(doc: dict[str, Any], k: Coefficients, json_path: Path) -> tuple[str, str]:
    m = doc["machine"]
    plan = doc["plan"]
    measured = [
        f"Command: `{doc['command']}`; raw results: `{json_path.relative_to(DOC.parent.parent)}`; "
        f"Herald at commit `{m.get('herald_commit', '?')}`; {m.get('logical_cpus')} logical CPUs "
        f"({m.get('cpu')}), Linux {m.get('kernel')}; Redis {doc['simulation'].get('redis_version')}. "
        f"{plan['nodes']} nodes × {plan['per_node']:,} connections (one user each), lifecycle events on.",
        "",
        "| coefficient | measured |",
        "|---|---:|",
        *(f"| {name} | {value} |" for name, value in coefficient_rows(k)),
        "",
        "The model (per node: idle + every event read + its share of deliveries + publishing) "
        "against the mix stage:",
        "",
        "| node | predicted CPU s | measured CPU s | measured ÷ predicted |",
        "|---:|---:|---:|---:|",
        *(f"| {n} | {p:.2f} | {c:.2f} | {c / p:.2f}× |" for n, p, c in check(doc, k)),
        "",
    ]
    mix = Mix()
    header = (
        "| connections | log shards | events/s | deliveries/s | read cores per process | processes (cores) "
        "| 8-core machines | memory per machine | Redis cores per shard | Redis out per shard | "
        "Redis memory per shard | Kafka partitions | limited by |"
    )
    planned = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for s in plan_rows(k, mix):
        if not s.feasible:
            planned.append(
                f"| {s.connections:,} | {s.shards} | {_f(s.events_per_s)} | {_f(s.deliveries_per_s)} | "
                f"{_f(s.read_cores_per_process, 2)} | — | — | — | — | — | — | — | **{s.limit}** |"
            )
            continue
        planned.append(
            f"| {s.connections:,} | {s.shards} | {_f(s.events_per_s)} | {_f(s.deliveries_per_s)} | "
            f"{_f(s.read_cores_per_process, 2)} | {s.processes:,} | {s.machines} | "
            f"{_f(s.memory_gib_per_machine, 2)} GiB | {_f(s.redis_cores_per_shard, 2)} | "
            f"{_f(s.redis_out_mib_s_per_shard)} MiB/s | {_f(s.redis_memory_gib_per_shard, 2)} GiB | "
            f"{s.kafka_partitions} | {s.limit} |"
        )
    planned.append("")
    return "\n".join(measured), "\n".join(planned)


def write_docs(doc: dict[str, Any], k: Coefficients, json_path: Path) -> Path:
    measured, planned = _markdown(doc, k, json_path)
    text = DOC.read_text()
    for name, body in (("measured", measured), ("plan", planned)):
        start, end = f"<!-- scaling:{name}:start -->", f"<!-- scaling:{name}:end -->"
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = f"{before}{start}\n{body}\n{end}{after}"
    DOC.write_text(text)
    return DOC


# --- the sharded bus (D28): each process receives only what its own streams follow


@dataclass(frozen=True)
class ShardCosts:
    """What the sharded bus costs per event, from ``bench.shard_scaling`` (and the publish
    path from ``bench.peers``), measured after issue 12."""

    source: str
    #: A process's CPU per event its own streams receive (one stream each): the notice, the
    #: merge across shards, the delivery; the worst over 1, 2 and 4 nodes on several shards.
    receive_us: float
    #: Redis CPU per event over the whole deployment (append, notice, probes), worst case.
    redis_us_per_event: float
    #: The publishing process's CPU per event: single HTTP publishes, and batches of 100.
    ingest_single_us: float
    ingest_batch_us: float
    #: Redis memory per channel active within the window (its first listpack node, D28).
    channel_bytes: float = 4.5 * 1024


def shard_costs(shard_doc: dict[str, Any], peers_doc: dict[str, Any], source: str) -> ShardCosts:
    sharded = [r for r in shard_doc["results"] if r["bus"] != "one redis"]
    publish = next(
        r["publish"]
        for r in peers_doc["results"]
        if (r["server"], r["engine"], r["cores"]) == ("herald", "redis", 1)
    )
    return ShardCosts(
        source=source,
        receive_us=max(r["node_cpu_us_per_own_event"] for r in sharded),
        redis_us_per_event=max(sum(r["redis_cpu_us_per_event"]) for r in sharded),
        ingest_single_us=publish["single"]["server_cpu_us_per_event"],
        ingest_batch_us=publish["batch"]["server_cpu_us_per_event"],
    )


@dataclass(frozen=True)
class ShardedSizing:
    connections: int
    events_per_s: float
    deliveries_per_s: float
    #: The events a process's own streams receive per second, and what receiving them costs.
    received_per_process: float
    processes: int
    machines: int
    memory_gib_per_machine: float
    shards: int
    redis_cores_per_shard: float
    redis_memory_gib_per_shard: float
    kafka_partitions: int
    #: Cores the whole deployment spends: receiving, delivering, idle, ingest.
    cores_receive: float
    cores_deliver: float
    cores_idle: float
    cores_ingest: float
    limit: str


def size_sharded(
    connections: int,
    mix: Mix,
    k: Coefficients,
    s: ShardCosts,
    *,
    batched: bool = False,
    cores_per_machine: int = 8,
    target: float = 0.6,
    redis_target: float = 0.6,
    max_conns_per_process: int = 20_000,
    kernel_kib_floor: float = 8.0,
) -> ShardedSizing:
    """Processes and shards for ``connections`` at ``mix`` on the sharded bus: a process
    receives an event once if any of its streams follows the event's channel (a user's
    events on one process, a resource's on up to ``resource_receivers``, the global ones
    on every process), and every shard stays under ``redis_target`` of a core."""
    events, global_events, deliveries = load(connections, mix)
    ingest_us = s.ingest_batch_us if batched else s.ingest_single_us
    # Receiving: the delivery inside ``receive_us`` is counted with the deliveries.
    receive_us = max(0.0, s.receive_us - k.deliver_us)
    scoped_receptions = connections * (mix.user_events + mix.resource_events * mix.resource_receivers)
    spread = (
        scoped_receptions * receive_us
        + deliveries * k.deliver_us
        + connections * k.idle_us_per_conn_s
        + events * ingest_us
    ) / 1e6
    fixed = global_events * receive_us / 1e6  # every process receives every global event
    by_cpu = math.ceil(spread / (target - fixed))
    by_conns = math.ceil(connections / max_conns_per_process)
    processes = max(by_cpu, by_conns)
    machines = math.ceil(processes / cores_per_machine)
    memory = _memory_per_machine(k, connections, processes, machines, kernel_kib_floor)
    redis_cores = (events * s.redis_us_per_event + connections * k.redis_idle_us_per_conn_s) / 1e6
    shards = max(1, math.ceil(redis_cores / redis_target))
    # Channels active within the window: every user's (an event every 20 s on average) and
    # the resources' (one per user, as many as users at this mix), plus leases and presence.
    channels = 2 * connections
    redis_memory = (channels * s.channel_bytes + connections * k.redis_bytes_per_conn) / shards / 2**30
    return ShardedSizing(
        connections=connections,
        events_per_s=events,
        deliveries_per_s=deliveries,
        received_per_process=scoped_receptions / processes + global_events,
        processes=processes,
        machines=machines,
        memory_gib_per_machine=memory,
        shards=shards,
        redis_cores_per_shard=redis_cores / shards,
        redis_memory_gib_per_shard=redis_memory,
        kafka_partitions=max(12, math.ceil(events / 1000)),
        cores_receive=(scoped_receptions + global_events * processes) * receive_us / 1e6,
        cores_deliver=deliveries * k.deliver_us / 1e6,
        cores_idle=connections * k.idle_us_per_conn_s / 1e6,
        cores_ingest=events * ingest_us / 1e6,
        limit="connections per process" if by_conns >= by_cpu else "CPU",
    )


def sharded_plan_markdown(k: Coefficients, s: ShardCosts, mix: Mix | None = None) -> str:
    mix = mix or Mix()
    lines = [
        f"Per-event costs: {s.source}. A process receives {s.receive_us:.0f} µs per event its streams "
        f"follow (delivery included); Redis {s.redis_us_per_event:.0f} µs per event over the shards; "
        f"ingest {s.ingest_single_us:.0f} µs per single publish, {s.ingest_batch_us:.1f} µs per event "
        "in batches of 100. Idle, delivery and memory per stream as measured above.",
        "",
        "| connections | publishing | events/s | deliveries/s | received per process /s | processes (cores) "
        "| 8-core machines | memory per machine | Redis shards | Redis cores per shard | Redis memory per "
        "shard | cores: receive / deliver / idle / ingest | limited by |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for connections in (100_000, 1_000_000):
        for batched in (False, True):
            z = size_sharded(connections, mix, k, s, batched=batched)
            lines.append(
                f"| {connections:,} | {'batches of 100' if batched else 'single'} | {_f(z.events_per_s)} | "
                f"{_f(z.deliveries_per_s)} | {_f(z.received_per_process)} | {z.processes:,} | {z.machines} | "
                f"{_f(z.memory_gib_per_machine, 2)} GiB | {z.shards} | {_f(z.redis_cores_per_shard, 2)} | "
                f"{_f(z.redis_memory_gib_per_shard, 2)} GiB | {_f(z.cores_receive)} / "
                f"{_f(z.cores_deliver)} / {_f(z.cores_idle)} / {_f(z.cores_ingest)} | {z.limit} |"
            )
    return "\n".join([*lines, ""])


def write_sharded_plan(k: Coefficients, s: ShardCosts) -> Path:
    text = DOC.read_text()
    start, end = "<!-- scaling:sharded:start -->", "<!-- scaling:sharded:end -->"
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    DOC.write_text(f"{before}{start}\n{sharded_plan_markdown(k, s)}\n{end}{after}")
    return DOC
