"""The peer suite's results as tables of ratios (Herald ÷ Centrifugo), a plot, and the
generated part of docs/benchmarks.md's "Against Centrifugo" (between the
``bench:peers-<mode>`` markers)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import ROOT
from bench.peers.suite import HARNESS_SATURATED_PCT
from bench.report import DOC, PLOTS, fmt, replace_section

Result = dict[str, Any]
Metric = Callable[[Result], float | None]
SHORT = {"herald": "Herald", "centrifugo": "Centrifugo", "ceiling": "ceiling"}


# --- figures of one variant's result


def _ok(stages: list[Result] | None) -> list[Result]:
    return [s for s in stages or [] if s["ok"]]


def highest_rate(kind: str) -> Metric:
    def f(r: Result) -> float | None:
        held = _ok(r.get(kind))
        return max((s["rate"] for s in held), default=None)

    f.aggregate = min  # type: ignore[attr-defined]  # a rate of the ladder, held in every round
    return f


def highest_deliveries(kind: str) -> Metric:
    def f(r: Result) -> float | None:
        held = _ok(r.get(kind))
        return max((s["deliveries_per_s"] for s in held), default=None)

    return f


def at_rate(kind: str, rate: float, field: str) -> Metric:
    def f(r: Result) -> float | None:
        for s in r.get(kind) or []:
            if s["rate"] == rate:
                value: float | None = s.get(field)
                return value
        return None

    return f


def publish(mode: str, field: str) -> Metric:
    def f(r: Result) -> float | None:
        p = (r.get("publish") or {}).get(mode) or {}
        value: float | None = p.get(field) if p.get("supported") else None
        return value

    return f


def best_batch(field: str) -> Metric:
    """Centrifugo's batch at its best (parallel or not); Herald's only batch."""

    def f(r: Result) -> float | None:
        values = [
            v for v in (publish("batch", field)(r), publish("batch_parallel", field)(r)) if v is not None
        ]
        return min(values, default=None)

    return f


def restart(field: str) -> Metric:
    def f(r: Result) -> float | None:
        value = (r.get("restart") or {}).get(field)
        if isinstance(value, bool):
            return float(value)
        return value

    return f


def all_exact_s(r: Result) -> float | None:
    rs = r.get("restart") or {}
    return rs.get("all_got_newest_s") if rs.get("all_exact") else None


def field_of(name: str, scale: float = 1.0) -> Metric:
    def f(r: Result) -> float | None:
        value = r.get(name)
        return None if value is None else value * scale

    return f


# --- grouping and medians


def groups(doc: Result) -> list[tuple[str, int]]:
    seen: list[tuple[str, int]] = []
    for r in doc["results"]:
        key = (r["engine"], r["cores"])
        if key not in seen:
            seen.append(key)
    return seen


def rounds(doc: Result, server: str, engine: str, cores: int) -> list[Result]:
    return [
        r
        for r in doc["results"]
        if r["server"] == server and r["engine"] == engine and r["cores"] == cores and not r.get("error")
    ]


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def value(doc: Result, server: str, engine: str, cores: int, metric: Metric) -> float | None:
    """The metric over the rounds: their median, or the metric's own ``aggregate``."""
    values = [metric(r) for r in rounds(doc, server, engine, cores)]
    aggregate = getattr(metric, "aggregate", None)
    if aggregate is None:
        return median(values)
    present = [v for v in values if v is not None]
    return aggregate(present) if present and len(present) == len(values) else None


def common_rate(doc: Result, engine: str, cores: int, kind: str) -> float | None:
    """The highest rate every round of Herald and of Centrifugo held."""
    tops = [
        highest_rate(kind)(r)
        for server in ("herald", "centrifugo")
        for r in rounds(doc, server, engine, cores)
    ]
    if not tops or any(t is None for t in tops):
        return None
    return min(t for t in tops if t is not None)


# --- the rows of a group's table: (label, metric, higher is better)


def rows(doc: Result, engine: str, cores: int) -> list[tuple[str, Metric, bool]]:
    plan = doc["plan"]
    out: list[tuple[str, Metric, bool]] = [
        ("idle RSS per stream (KiB)", field_of("rss_per_conn_bytes", 1 / 1024), False),
        ("idle CPU, N streams open (% of a core)", field_of("idle_cpu_pct"), False),
        ("new streams/s (JWT verified)", field_of("connect_rate"), True),
    ]
    if any(r.get("broadcast") for r in doc["results"] if r["engine"] == engine and r["cores"] == cores):
        top = common_rate(doc, engine, cores, "broadcast")
        low = 10.0 if 10.0 in plan["broadcast_rates"] else plan["broadcast_rates"][0]
        out += [
            ("broadcast: highest rate held (events/s)", highest_rate("broadcast"), True),
            ("broadcast: most deliveries/s held", highest_deliveries("broadcast"), True),
            (f"broadcast: p99 at {low:g} events/s (ms)", at_rate("broadcast", low, "p99_ms"), False),
            (
                f"broadcast: server CPU µs per delivery at {low:g} events/s",
                at_rate("broadcast", low, "server_cpu_us_per_delivery"),
                False,
            ),
        ]
        if top is not None and top != low:
            out += [
                (f"broadcast: p99 at {top:g} events/s (ms)", at_rate("broadcast", top, "p99_ms"), False),
                (
                    f"broadcast: server CPU µs per delivery at {top:g} events/s",
                    at_rate("broadcast", top, "server_cpu_us_per_delivery"),
                    False,
                ),
            ]
    if any(r.get("targeted") for r in doc["results"] if r["engine"] == engine and r["cores"] == cores):
        top = common_rate(doc, engine, cores, "targeted")
        first = plan["targeted_rates"][0]
        out += [
            ("targeted: highest rate held (events/s)", highest_rate("targeted"), True),
            (
                f"targeted: server CPU µs per event at {first:g} events/s",
                at_rate("targeted", first, "server_cpu_us_per_event"),
                False,
            ),
        ]
        if engine == "redis":
            out.append(
                (
                    f"targeted: Redis CPU µs per event at {first:g} events/s",
                    at_rate("targeted", first, "redis_cpu_us_per_event"),
                    False,
                )
            )
        if top is not None and top != first:
            out += [
                (
                    f"targeted: server CPU µs per event at {top:g} events/s",
                    at_rate("targeted", top, "server_cpu_us_per_event"),
                    False,
                ),
                (f"targeted: p99 at {top:g} events/s (ms)", at_rate("targeted", top, "p99_ms"), False),
            ]
    if any(r.get("mix") for r in doc["results"] if r["engine"] == engine and r["cores"] == cores):
        top = common_rate(doc, engine, cores, "mix")
        out.append(("mix: highest rate held (events/s)", highest_rate("mix"), True))
        if top is not None:
            out += [
                (
                    f"mix: server CPU µs per event at {top:g} events/s",
                    at_rate("mix", top, "server_cpu_us_per_event"),
                    False,
                ),
                (
                    f"mix: server CPU µs per delivery at {top:g} events/s",
                    at_rate("mix", top, "server_cpu_us_per_delivery"),
                    False,
                ),
                (f"mix: p99 at {top:g} events/s (ms)", at_rate("mix", top, "p99_ms"), False),
            ]
    if any(r.get("publish") for r in doc["results"] if r["engine"] == engine and r["cores"] == cores):
        out += [
            ("publish, single: server CPU µs per event", publish("single", "server_cpu_us_per_event"), False),
            ("publish, single: events/s (8 in flight)", publish("single", "events_per_s"), True),
            (
                f"publish, batches of {plan['batch_size']}: server CPU µs per event",
                best_batch("server_cpu_us_per_event"),
                False,
            ),
        ]
        if engine == "redis":
            out += [
                (
                    "publish, single: Redis CPU µs per event",
                    publish("single", "redis_cpu_us_per_event"),
                    False,
                ),
                (
                    f"publish, batches of {plan['batch_size']}: Redis CPU µs per event",
                    best_batch("redis_cpu_us_per_event"),
                    False,
                ),
            ]
    if any(r.get("restart") for r in doc["results"] if r["engine"] == engine and r["cores"] == cores):
        out += [
            ("restart: every stream live again (s)", restart("all_live_s"), False),
            ("restart: every stream has every missed event, once (s)", all_exact_s, False),
            ("restart: streams with exactly the missed events", restart("exact"), True),
            ("restart: streams told they were not recovered", restart("told_not_recovered"), False),
        ]
    return out


def _ratio(h: float | None, c: float | None) -> str:
    if h is None or c is None or c == 0:
        return "—"
    return f"{h / c:.2f}×"


def _ahead(h: float | None, c: float | None, higher_better: bool) -> str:
    if h is None or c is None or h == c:
        return ""
    return "Herald" if (h > c) == higher_better else "Centrifugo"


def group_title(doc: Result, engine: str, cores: int) -> str:
    herald = f"{cores} worker{'s' if cores > 1 else ''}, {'memory' if engine == 'memory' else 'Redis'} bus"
    cf = f"GOMAXPROCS={cores}, {engine} engine"
    ceiling = (
        ", the ceiling beside them" if engine == "memory" and cores == 1 and _has(doc, "ceiling") else ""
    )
    plural = "s" if cores > 1 else ""
    return f"{engine.capitalize()} engine, {cores} core{plural} (Herald {herald}; Centrifugo {cf}{ceiling})"


def _has(doc: Result, server: str) -> bool:
    return any(r["server"] == server for r in doc["results"])


def group_table(doc: Result, engine: str, cores: int) -> list[str]:
    servers = [s for s in ("herald", "centrifugo", "ceiling") if rounds(doc, s, engine, cores)]
    head = "| metric | " + " | ".join(SHORT[s] for s in servers) + " | Herald ÷ Centrifugo | ahead |"
    lines = [head, "|---|" + "---:|" * len(servers) + "---:|---|"]
    for label, metric, higher in rows(doc, engine, cores):
        values = {s: value(doc, s, engine, cores, metric) for s in servers}
        h, c = values.get("herald"), values.get("centrifugo")
        if all(v is None for v in values.values()):
            continue
        cells = " | ".join(fmt(values[s]) for s in servers)
        lines.append(f"| {label} | {cells} | {_ratio(h, c)} | {_ahead(h, c, higher)} |")
        if label.endswith("highest rate held (events/s)"):
            kind = label.split(":")[0]
            ended = {
                s: "/".join(sorted({ended_by(kind, doc)(r) for r in rounds(doc, s, engine, cores)}))
                for s in servers
            }
            lines.append(
                f"| {kind}: what ended the ladder | " + " | ".join(ended[s] for s in servers) + " | | |"
            )
    return lines


SCENARIOS = (
    ("streams", "Streams: opening and holding N"),
    ("broadcast", "Broadcast ladder: every event to every stream"),
    ("targeted", "Targeted ladder: every event to one user"),
    ("mix", "The mix: 90 % to one user, 9 % to a resource's followers, 1 % to everyone"),
    ("publish", "Publish cost: events to users with no stream"),
    ("restart", "Restart: 100 events missed, every stream back at once"),
)


def _scenario_of(label: str) -> tuple[str, str]:
    """(scenario, the label without it): ``broadcast: p99 …`` → (broadcast, p99 …)."""
    for key, _ in SCENARIOS[1:]:
        for sep in (": ", ", "):
            if label.startswith(key + sep):
                return key, label[len(key) + len(sep) :]
    return "streams", label


def scenario_tables(doc: Result) -> list[str]:
    """One table per scenario, a row per (engine and cores, metric): what the issue asks the
    page to show, Herald ÷ Centrifugo in every row."""
    by_scenario: dict[str, list[str]] = {key: [] for key, _ in SCENARIOS}
    for engine, cores in groups(doc):
        where = f"{engine} · {cores}"
        for label, metric, higher in rows(doc, engine, cores):
            values = {s: value(doc, s, engine, cores, metric) for s in ("herald", "centrifugo", "ceiling")}
            if all(v is None for v in values.values()):
                continue
            key, name = _scenario_of(label)
            h, c = values["herald"], values["centrifugo"]
            ceiling = fmt(values["ceiling"]) if rounds(doc, "ceiling", engine, cores) else ""
            cells = f"{fmt(h)} | {fmt(c)} | {ceiling} | {_ratio(h, c)} | {_ahead(h, c, higher)}"
            by_scenario[key].append(f"| {where} | {name} | {cells} |")
            if name == "highest rate held (events/s)":
                ended = [
                    "/".join(sorted({ended_by(key, doc)(r) for r in rounds(doc, s, engine, cores)}))
                    for s in ("herald", "centrifugo", "ceiling")
                ]
                by_scenario[key].append(f"| {where} | what ended the ladder | {' | '.join(ended)} | | |")
    out: list[str] = []
    for key, title in SCENARIOS:
        if not by_scenario[key]:
            continue
        out += [
            f"*{title}*",
            "",
            "| engine · cores | metric | Herald | Centrifugo | ceiling | Herald ÷ Centrifugo | ahead |",
            "|---|---|---:|---:|---:|---:|---|",
            *by_scenario[key],
            "",
        ]
    return out


def table(doc: Result) -> str:
    out: list[str] = []
    for engine, cores in groups(doc):
        out.append(group_title(doc, engine, cores))
        out.extend(group_table(doc, engine, cores))
        out.append("")
    return "\n".join(out)


# --- details


def stage_rows(doc: Result) -> list[str]:
    lines = [
        "| variant | round | scenario | events/s | deliveries/s | p50 ms | p99 ms | server CPU % | µs/event "
        "| µs/delivery | Redis CPU % | streams CPU % | publishers CPU % | other CPU % | result |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        label = f"{SHORT[r['server']]} · {r['engine']} · {r['cores']}"
        for kind in ("broadcast", "targeted", "mix"):
            for s in r.get(kind) or []:
                result = "ok" if s["ok"] else f"{s['reason']} (bound: {s['bound']})"
                lines.append(
                    f"| {label} | {r['round'] + 1} | {kind} | {s['rate']:g} | {fmt(s['deliveries_per_s'])} "
                    f"| {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['server_cpu_pct'])} "
                    f"| {fmt(s['server_cpu_us_per_event'])} | {fmt(s['server_cpu_us_per_delivery'])} "
                    f"| {fmt(s['redis_cpu_pct'])} | {fmt(s['streams_cpu_pct'])} "
                    f"| {fmt(s['publishers_cpu_pct'])} | {fmt(s['others_cpu_pct'])} | {result} |"
                )
    return lines


def publish_rows(doc: Result) -> list[str]:
    lines = [
        "| variant | round | mode | in flight | events | events/s | server µs/event | Redis µs/event "
        "| harness µs/event | errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in doc["results"]:
        label = f"{SHORT[r['server']]} · {r['engine']} · {r['cores']}"
        for mode, p in (r.get("publish") or {}).items():
            if not p.get("supported"):
                lines.append(f"| {label} | {r['round'] + 1} | {mode} | | | | | | | {p.get('note', '')} |")
                continue
            err = f"{p['errors']}: {p['first_error'][:60]}" if p["errors"] else "0"
            lines.append(
                f"| {label} | {r['round'] + 1} | {mode} | {p['in_flight']} | {p['events']} "
                f"| {fmt(p['events_per_s'])} | {fmt(p['server_cpu_us_per_event'])} "
                f"| {fmt(p['redis_cpu_us_per_event'])} | {fmt(p['harness_cpu_us_per_event'])} | {err} |"
            )
    return lines


def restart_rows(doc: Result) -> list[str]:
    lines = [
        "| variant | round | streams | back (s) | exact | newest everywhere (s) | missing some | older again "
        "| told recovered | told not | told nothing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["results"]:
        rs = r.get("restart")
        if not rs:
            continue
        label = f"{SHORT[r['server']]} · {r['engine']} · {r['cores']}"
        lines.append(
            f"| {label} | {r['round'] + 1} | {rs['streams']} | {fmt(rs['all_live_s'], 2)} | {rs['exact']} "
            f"| {fmt(rs['all_got_newest_s'], 2)} | {rs['missing_clients']} | {rs['received_before_range']} "
            f"| {rs['told_recovered']} | {rs['told_not_recovered']} | {rs['told_nothing']} |"
        )
    return lines


def harness(doc: Result) -> list[str]:
    """The harness's own cost per publish, its limit, and the stages it (not a server) lost."""
    per_publish = [
        s["harness_cpu_us_per_publish"]
        for r in doc["results"]
        for kind in ("targeted",)
        for s in r.get(kind) or []
        if s.get("harness_cpu_us_per_publish") and s["rate"] >= 500
    ]
    closed = [
        p["harness_cpu_us_per_event"]
        for r in doc["results"]
        if r["server"] == "centrifugo"
        for mode, p in (r.get("publish") or {}).items()
        if mode == "single" and p.get("supported")
    ]
    bound_list = [
        f"{SHORT[r['server']]} · {r['engine']} · {r['cores']} {kind} {s['rate']:g}/s ({s['bound']})"
        for r in doc["results"]
        for kind in ("broadcast", "targeted", "mix")
        for s in r.get(kind) or []
        if s["bound"] in ("harness", "machine")
    ]
    plan = doc["plan"]
    lines = [
        f"The harness: {plan['publishers']} publishing processes ({plan['publisher_connections']} "
        f"connections each in the rate stages) and {plan['loadgen']} processes holding the streams."
    ]
    if per_publish:
        us = statistics.median(per_publish)
        lines.append(
            f"Publishing cost the harness a median {us:.0f} µs of CPU per event in the targeted stages "
            f"at 500 events/s and above: about {1e6 / us:,.0f} publishes/s per core it is given"
            + (
                f"; closed loop against Centrifugo, {statistics.median(closed):.0f} µs "
                f"({1e6 / statistics.median(closed):,.0f}/s per core)."
                if closed
                else "."
            )
        )
    lines.append(
        "Stages lost with the harness near its limit (the stream holders or the publishers at "
        f"{HARNESS_SATURATED_PCT:.0f} % of a core or more: *harness* when the server had CPU to spare, "
        "*machine* when it had not either), which say where this machine ran out rather than the server: "
        + ("; ".join(bound_list) if bound_list else "none")
        + "."
    )
    return lines


def ended_by(kind: str, doc: Result) -> Callable[[Result], str]:
    """What ended one variant's ladder: the server, the harness, the machine, or its top."""

    def f(r: Result) -> str:
        stages = r.get(kind) or []
        if not stages:
            return ""
        last = stages[-1]
        return "top reached" if last["ok"] else last["bound"]

    return f


# --- plot


COLOURS = {"herald": "tab:blue", "centrifugo": "tab:orange", "ceiling": "tab:gray"}


def curve(
    doc: Result, server: str, engine: str, cores: int, kind: str, field: str
) -> list[tuple[float, float]]:
    """(rate, the median over the rounds that ran it) of one variant's ladder."""
    by_rate: dict[float, list[float]] = {}
    for r in rounds(doc, server, engine, cores):
        for s in r.get(kind) or []:
            if s.get(field) is not None:
                by_rate.setdefault(s["rate"], []).append(s[field])
    return [(rate, statistics.median(vs)) for rate, vs in sorted(by_rate.items())]


def plot(doc: Result) -> Path | None:
    """Four panels: the three ladders (medians over the rounds; the last point of a line is
    the stage that ended it) and the publish cost per event, single and batched."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return None
    panels = [
        ("broadcast", "p99_ms", "broadcast to every stream: p99 (ms)"),
        ("targeted", "server_cpu_us_per_event", "targeted (one user): server CPU µs per event"),
        ("mix", "p99_ms", "the mix (90 % user, 9 % resource, 1 % all): p99 (ms)"),
    ]
    fig, grid = plt.subplots(2, 2, figsize=(14, 9))
    axes = list(grid.flat)
    present = sorted({(r["server"], r["engine"], r["cores"]) for r in doc["results"] if not r.get("error")})
    for ax, (kind, field, title) in zip(axes, panels, strict=False):
        for server, engine, cores in present:
            points = curve(doc, server, engine, cores, kind, field)
            if not points:
                continue
            ax.plot(
                [x for x, _ in points],
                [y for _, y in points],
                linestyle="-" if cores == 1 else "--",
                marker="o" if engine == "memory" else "s",
                color=COLOURS.get(server),
                label=f"{SHORT[server]} · {engine} · {cores}c",
                markersize=4,
                alpha=0.85,
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("events/s")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    ax = axes[3]
    xs: list[float] = []
    ys: list[float] = []
    colours: list[str] = []
    ticks: list[tuple[float, str]] = []
    x = 0.0
    modes = (
        ("single", publish("single", "server_cpu_us_per_event")),
        ("batch", best_batch("server_cpu_us_per_event")),
    )
    for engine, cores in sorted({(e, c) for _, e, c in present}):
        for mode, metric in modes:
            group = [
                (server, v)
                for server in ("herald", "centrifugo", "ceiling")
                if (server, engine, cores) in present
                and (v := value(doc, server, engine, cores, metric)) is not None
            ]
            if not group:
                continue
            for i, (server, v) in enumerate(group):
                xs.append(x + i)
                ys.append(v)
                colours.append(COLOURS[server])
            ticks.append((x + (len(group) - 1) / 2, f"{engine} {cores}c\n{mode}"))
            x += len(group) + 1
    ax.bar(xs, ys, color=colours)
    ax.set_xticks([t for t, _ in ticks], [label for _, label in ticks], fontsize=7)
    ax.set_yscale("log")
    ax.set_title("publish: server CPU µs per event (single, or in batches of 100)", fontsize=10)
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(
        handles=[Patch(color=COLOURS[s]) for s in ("herald", "centrifugo", "ceiling")],
        labels=[SHORT[s] for s in ("herald", "centrifugo", "ceiling")],
        fontsize=7,
    )
    fig.suptitle(
        f"Herald beside Centrifugo, N = {doc['plan']['n']:,} streams ({doc['started']}, "
        f"{doc['plan']['rounds']} round{'s, medians' if doc['plan']['rounds'] > 1 else ''})"
    )
    fig.tight_layout()
    PLOTS.mkdir(parents=True, exist_ok=True)
    path = PLOTS / f"{doc['mode']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the page


def markdown(doc: Result, json_path: Path, png: Path | None) -> str:
    plan = doc["plan"]
    m = doc["machine"]
    rel = json_path.relative_to(ROOT) if json_path.is_relative_to(ROOT) else json_path
    commit = m.get("herald_commit", "?") + (
        " with uncommitted changes in `src/herald`" if m.get("herald_dirty") else ""
    )
    versions = ", ".join(f"{k} {v}" for k, v in doc.get("versions", {}).items())
    lines = [
        f"### {doc['mode']} run, {doc['started']} ({doc['duration_s']:.0f} s, "
        f"{plan['rounds']} round{'s: medians, a rate held the lower round' if plan['rounds'] > 1 else ''})",
        "",
        f"Command: `{doc['command']}`; raw results: `{rel}`; Herald at commit `{commit}`; {versions}.",
        f"Plan: N = {plan['n']:,} streams (each its own user, following one of "
        f"{len(_sizes(plan['n']))} resources); broadcast {_rates(plan['broadcast_rates'])}, targeted "
        f"{_rates(plan['targeted_rates'])}, mix {_rates(plan['mix_rates'])} events/s, "
        f"{plan['stage_seconds']:g} s each (drain {plan['drain_seconds']:g} s); publish cost "
        f"{plan['publish_events']:,} single events ({plan['publish_in_flight']} in flight) and "
        f"{plan['batch_events']:,} in batches of {plan['batch_size']}; restart with "
        f"{plan['restart_events']} events missed.",
        f"Machine: {m.get('cpu', '?')}, {m.get('logical_cpus', '?')} logical CPUs, "
        f"Linux {m.get('kernel', '?')}, Python {m.get('python', '?')}.",
    ]
    for note in doc.get("notes", []):
        lines.append(f"Note: {note}.")
    lines.append("")
    lines += ["Variants:", ""]
    lines += [f"- {engine} · {cores}: {group_title(doc, engine, cores)}" for engine, cores in groups(doc)]
    lines += ["", *scenario_tables(doc)]
    lines += harness(doc)
    lines += [
        "",
        "<details><summary>every stage</summary>",
        "",
        *stage_rows(doc),
        "",
        *publish_rows(doc),
        "",
        *restart_rows(doc),
        "",
        "</details>",
        "",
    ]
    failed = [r for r in doc["results"] if r.get("error")]
    for r in failed:
        lines.append(
            f"- {SHORT[r['server']]} · {r['engine']} · {r['cores']}, round {r['round'] + 1}, "
            f"failed: {r['error']}"
        )
    if png is not None:
        lines += ["", f"![{doc['mode']}](benchmarks/{png.name})", ""]
    return "\n".join(lines)


def _sizes(n: int) -> tuple[int, ...]:
    from bench.loadgen.traffic import resource_sizes

    return resource_sizes(n)


def _rates(rates: list[float]) -> str:
    return ", ".join(f"{r:g}" for r in rates)


def write_docs(doc: Result, json_path: Path) -> list[Path]:
    png = plot(doc)
    DOC.write_text(replace_section(DOC.read_text(), doc["mode"], markdown(doc, json_path, png)))
    return [p for p in (png, DOC) if p is not None]
