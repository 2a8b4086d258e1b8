"""Issue 16's table and plot: Herald's broadcast against the ceiling's, as ratios.

Reads one or more ``bench/results/*-full.json`` of ``python -m bench --servers
herald,ceiling`` (rounds of several files are pooled) and, per N and rate, gives
the medians of the rounds: p99, deliveries/s and server CPU per delivery, with
the issue's targets (p99 ≤ 1.2×, deliveries ≥ 0.8× the ceiling's maximum, CPU
per delivery ≤ 1.3×). ``--plot`` draws the ratios against the rate, one line per N::

    python -m bench.broadcast_ratios bench/results/20261205T104516-full.json --plot
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench.report import PLOTS, fmt, max_sustained

P99_TARGET = 1.2
DELIVERIES_TARGET = 0.8
CPU_TARGET = 1.3

Result = dict[str, Any]
#: Per (N, events/s): the medians of each server and the ratios.
Rows = dict[tuple[int, float], dict[str, float | None]]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def cells(docs: list[Result]) -> Rows:
    """Per (N, rate): the medians over rounds of each server's figures, and the ratios."""
    stages: dict[tuple[str, int, float], list[Result]] = {}
    most: dict[tuple[str, int], list[float]] = {}
    for doc in docs:
        for r in doc["results"]:
            if not r.get("connected"):
                continue
            key = (r["server"], r["n"])
            most.setdefault(key, []).append(max_sustained(r) or 0.0)
            for s in r["broadcast"]:
                stages.setdefault((r["server"], r["n"], s["rate"]), []).append(s)
    out: Rows = {}
    for server, n, rate in sorted(stages):
        if server != "herald" or ("ceiling", n, rate) not in stages:
            continue
        row: dict[str, float | None] = {}
        for name in ("herald", "ceiling"):
            runs = stages[(name, n, rate)]
            row[f"{name}_p99"] = _median([s["p99_ms"] for s in runs if s["p99_ms"] is not None])
            row[f"{name}_deliveries"] = _median([s["deliveries_per_s"] for s in runs])
            row[f"{name}_cpu_us"] = _median(
                [s["server_cpu_us_per_delivery"] for s in runs if s.get("server_cpu_us_per_delivery")]
            )
            row[f"{name}_max"] = _median(most.get((name, n), []))
        row["p99_ratio"] = _ratio(row["herald_p99"], row["ceiling_p99"])
        row["deliveries_ratio"] = _ratio(row["herald_deliveries"], row["ceiling_deliveries"])
        row["cpu_ratio"] = _ratio(row["herald_cpu_us"], row["ceiling_cpu_us"])
        row["max_ratio"] = _ratio(row["herald_max"], row["ceiling_max"])
        row["rounds"] = float(len(stages[("herald", n, rate)]))
        out[(n, rate)] = row
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _x(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}×"


def table(rows: Rows) -> str:
    lines = [
        "| N | events/s | Herald p99 ms | ceiling p99 ms | p99 ratio | deliveries/s ratio "
        "| CPU µs / delivery ratio | max sustained ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (n, rate), row in sorted(rows.items(), key=lambda item: (-item[0][0], item[0][1])):
        lines.append(
            f"| {n:,} | {rate:g} | {fmt(row['herald_p99'], 0)} | {fmt(row['ceiling_p99'], 0)} "
            f"| {_x(row['p99_ratio'])} | {_x(row['deliveries_ratio'])} | {_x(row['cpu_ratio'])} "
            f"| {_x(row['max_ratio'])} |"
        )
    return "\n".join(lines)


def verdicts(rows: Rows) -> list[str]:
    out = []
    for (n, rate), row in sorted(rows.items(), key=lambda item: (-item[0][0], item[0][1])):
        checks = [
            ("p99", row["p99_ratio"], P99_TARGET, True),
            ("CPU", row["cpu_ratio"], CPU_TARGET, True),
            ("max sustained", row["max_ratio"], DELIVERIES_TARGET, False),
        ]
        missed = [
            f"{name} {_x(v)}"
            for name, v, target, at_most in checks
            if v is None or (v > target if at_most else v < target)
        ]
        out.append(f"N={n:,} × {rate:g}/s: " + ("all met" if not missed else "missed " + ", ".join(missed)))
    return out


def plot(rows: Rows, path: Path, before: Rows | None = None) -> Path:
    """The three ratios against the rate, one line per N; ``before``'s dashed, for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2, a3) = plt.subplots(1, 3, figsize=(13, 4))
    colors = ["tab:blue", "tab:orange", "tab:green", "tab:purple"]
    for k, n in enumerate(sorted({n for n, _ in rows})):
        for data, style, label in ((before, "x--", "before"), (rows, "o-", "")):
            if not data:
                continue
            rates = sorted(rate for m, rate in data if m == n)
            for ax, key in ((a1, "p99_ratio"), (a2, "deliveries_ratio"), (a3, "cpu_ratio")):
                values = [data[(n, r)][key] for r in rates]
                ax.plot(rates, values, style, color=colors[k % 4], label=f"N = {n:,} {label}".strip())
    for ax, title, target in (
        (a1, "p99, Herald ÷ ceiling", P99_TARGET),
        (a2, "deliveries/s, Herald ÷ ceiling", DELIVERIES_TARGET),
        (a3, "server CPU per delivery, Herald ÷ ceiling", CPU_TARGET),
    ):
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axhline(target, color="tab:red", lw=0.8, ls=":", label="target")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("broadcast events/s")
        ax.set_ylim(0, max(2.0, ax.get_ylim()[1]))
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", type=Path, help="bench/results/*-full.json files")
    parser.add_argument("--plot", action="store_true", help=f"write {PLOTS}/broadcast-vs-ceiling.png")
    parser.add_argument("--before", nargs="*", type=Path, default=[], help="results to draw dashed")
    args = parser.parse_args()
    rows = cells([json.loads(p.read_text()) for p in args.results])
    before = cells([json.loads(p.read_text()) for p in args.before]) if args.before else None
    print(table(rows))
    print()
    for line in verdicts(rows):
        print(line)
    if args.plot:
        print(plot(rows, PLOTS / "broadcast-vs-ceiling.png", before))


if __name__ == "__main__":
    main()
