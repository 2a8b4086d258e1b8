"""Render the reliability suite's results into ``docs/reliability.md``.

Each test wrote JSON (``tests.reliability.mode.write_result``); this turns the files
into the tables between the page's ``<!-- reliability:NAME:start/end -->`` markers and
draws the soak's curves, so the page always shows what a run measured, never what
someone typed.

    python -m tests.reliability.report                      # docs/reliability/results (make reliability)
    python -m tests.reliability.report artifacts/reliability # a quick run's results
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tests.reliability.mode import FULL_RESULTS, ROOT

PAGE = ROOT / "docs" / "reliability.md"
PLOT = ROOT / "docs" / "reliability" / "soak.png"


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"


def _provenance(doc: dict[str, Any]) -> str:
    machine = doc["machine"]
    when = doc["finished_at"]
    return f"_{doc['mode']} run, finished {when}, {machine['cpus']} CPUs, Python {machine['python']}._"


def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    align = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(align) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def faults(doc: dict[str, Any]) -> list[str]:
    rows = []
    for p in doc["phases"]:
        refused = p["publish_refusals"]
        cut = f", {refused['http_broken']} cut" if refused["http_broken"] else ""
        rows.append([
            p["fault"],
            f"{p['deliveries_expected']:,}",
            str(p["lost_silent"]),
            str(p["lost_told"]),
            str(p["duplicated"]),
            str(p["out_of_order"]),
            str(p["foreign"]),
            f"{p['clients_told_recovered_false']} / {doc['clients']}",
            _s(p["live_after_fault_s"]["max"]),
            _s(p["all_live_after_restore_s"]),
            f"{refused['http_503']} × 503{cut}",
        ])  # fmt: skip
    rates = doc["rates_per_second"]
    return [
        _provenance(doc),
        "",
        f"{doc['nodes']} nodes on one Redis bus, {doc['clients']} clients (two per user, on different "
        f"nodes), outages of {doc['outage_seconds']:g} s; traffic per second: {rates['http']:g} over HTTP, "
        f"{rates['kafka']:g} from Kafka, {rates['outbox']:g} from the outbox.",
        "",
        *_table(
            [
                "fault",
                "deliveries due",
                "lost silently",
                "lost, client told",
                "duplicated",
                "out of order",
                "foreign",
                "told `recovered: false`",
                "longest wait for a live event",
                "all live after restore",
                "publishes refused",
            ],
            rows,
        ),
    ]


def isolation(docs: list[dict[str, Any]]) -> list[str]:
    rows = [
        [
            d["name"].removeprefix("isolation-"),
            str(d["seed"]),
            str(d["streams"]),
            str(d["reconnects"]),
            str(d["changes"]),
            f"{d['events']:,}",
            f"{d['deliveries']:,}",
            str(d["foreign"]),
            str(d["missing"]),
            str(d["duplicates"]),
            f"{d['refused_403']} streams, {d['refused_keys']} keys, {d['foreign_change_404']} × 404",
        ]
        for d in docs
    ]
    return [
        _provenance(docs[0]),
        "",
        *_table(
            [
                "gateway",
                "seed",
                "streams",
                "reconnects",
                "subscription changes",
                "events",
                "deliveries checked",
                "foreign",
                "missing",
                "duplicated",
                "refusals (expected)",
            ],
            rows,
        ),
    ]


def _attack(name: str, attack: dict[str, Any] | None) -> str:
    if not attack:
        return "none (baseline)"
    if name == "connect-flood":
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(attack["statuses"].items()))
        return f"{attack['connects']:,} connects at {attack['rate_per_s']:,}/s → {statuses}"
    if name == "slowloris":
        return f"held at most {attack['max_lifetime_s']:.2f} s each"
    if name == "never-reading":
        return f"{attack['streams']} streams closed as slow consumers after {attack['closed_after_s']:.2f} s"
    if name == "header-flood":
        return "answered " + ", ".join(f"{k}: {v:,}" for k, v in sorted(attack["outcomes"].items()))
    if "answers" in attack:
        return f"{len(attack['answers'])} kinds × {attack['rounds']:,} rounds, each answered as documented"
    return ""


def abuse(doc: dict[str, Any]) -> list[str]:
    rows = []
    for name, phase in doc["phases"].items():
        m = phase["measured"]
        rows.append([
            name,
            _attack(name, phase.get("attack")),
            str(m["events"]),
            str(m["missing"]),
            str(m["closed_streams"]),
            _ms(m["stream_latency_s"]["p50"]),
            _ms(m["stream_latency_s"]["p90"]),
            _ms(m["publish_latency_s"]["p90"]),
        ])  # fmt: skip
    return [
        _provenance(doc),
        "",
        f"{doc['clients']} well-behaved streams and a publisher; each phase {doc['phase_seconds']:g} s.",
        "",
        *_table(
            [
                "phase",
                "attack and what it got",
                "events",
                "missing",
                "streams closed",
                "stream p50",
                "stream p90",
                "publish p90",
            ],
            rows,
            text_columns=2,
        ),
    ]


def soak(doc: dict[str, Any]) -> list[str]:
    rows = [
        [
            name,
            f"{v['first_third_growth']:,.2f}",
            f"{v['last_third_growth']:,.2f}",
            f"{v['tolerance']:,.2f}",
            "yes" if v["levels_off"] else "**no**",
        ]
        for name, v in doc["verdicts"].items()
    ]
    outcomes = ", ".join(f"{k}: {v:,}" for k, v in sorted(doc["outcomes"].items()))
    lines = [
        _provenance(doc),
        "",
        f"{doc['duration_s']:g} s, {doc['slots']} client slots churning, {doc['publish_rate']:g} events/s "
        f"published ({doc['published']:,} in all, {doc['events_read']:,} deliveries read), replay window "
        f"{doc['replay_window_s']} s, sampled every {doc['sample_every_s']:g} s. Streams: {outcomes}.",
        "",
        *_table(["series", "growth, first third", "growth, last third", "tolerance", "levels off"], rows),
        "",
        "Growth is in the series' own unit (MiB, files, tasks, entries, keys) per third of the run.",
    ]
    if _plot_soak(doc):
        lines += ["", f"![the soak's samples]({PLOT.relative_to(PAGE.parent)})"]
    return lines


def _plot_soak(doc: dict[str, Any]) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PLOT.exists()
    samples = doc["samples"]
    minutes = [s["t"] / 60 for s in samples]
    series: list[tuple[str, Callable[[dict[str, Any]], float]]] = [
        ("RSS MiB", lambda n: n["rss_mib"]),
        ("open files", lambda n: n["fds"]),
        ("loop tasks", lambda n: n["tasks"]),
    ]
    fig, axes = plt.subplots(1, len(series) + 1, figsize=(15, 3.4))
    for ax, (label, value) in zip(axes, series, strict=False):
        for i in range(len(samples[0]["nodes"])):
            ax.plot(minutes, [value(s["nodes"][i]) for s in samples], label=f"node {i}")
        ax.set_title(label)
        ax.set_xlabel("minutes")
        ax.legend(fontsize=7)
    axes[-1].plot(minutes, [s["bus"]["log_entries"] for s in samples], label="log entries")
    axes[-1].plot(minutes, [s["bus"]["redis_keys"] for s in samples], label="Redis keys")
    axes[-1].set_title("the bus")
    axes[-1].set_xlabel("minutes")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT, dpi=90)
    plt.close(fig)
    return True


def fuzzing(doc: dict[str, Any]) -> list[str]:
    rows = [
        [name, f"{int(stats.get('number_of_executed_units', 0)):,}", stats.get("new_units_added", "—")]
        for name, stats in doc["targets"].items()
    ]
    return [
        _provenance(doc),
        "",
        f"Each atheris target ran {doc['seconds_per_target']} s; a finding fails the run.",
        "",
        *_table(["target", "inputs executed", "new coverage units"], rows),
    ]


def sections(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if doc := _load(folder, "faults"):
        out["faults"] = faults(doc)
    found = [d for name in ("isolation-memory", "isolation-cluster") if (d := _load(folder, name))]
    if found:
        out["isolation"] = isolation(found)
    if doc := _load(folder, "protocol-abuse"):
        out["abuse"] = abuse(doc)
    if doc := _load(folder, "soak"):
        out["soak"] = soak(doc)
    if doc := _load(folder, "atheris"):
        out["fuzzing"] = fuzzing(doc)
    return out


def render(page: str, generated: dict[str, list[str]]) -> str:
    for name, lines in generated.items():
        pattern = re.compile(
            rf"(<!-- reliability:{name}:start -->\n).*?(<!-- reliability:{name}:end -->)", re.DOTALL
        )
        if not pattern.search(page):
            raise SystemExit(f"{PAGE} has no reliability:{name} markers")
        body = "\n".join(lines)
        page = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", page)
    return page


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else FULL_RESULTS
    generated = sections(folder)
    if not generated:
        raise SystemExit(f"no results in {folder}")
    PAGE.write_text(render(PAGE.read_text(), generated))
    print(f"rendered {', '.join(generated)} from {folder} into {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
