"""Quick or full: how hard the reliability suite pushes, and where its results go.

``make test`` runs the suite in quick mode (CI's budget: a few minutes in all);
``make reliability`` sets ``HERALD_RELIABILITY=full`` (the one-hour soak, 100,000+
isolation deliveries, more clients per fault). Each test writes what it measured
as JSON: full runs into ``docs/reliability/results/`` (committed, rendered into
``docs/reliability.md`` by ``python -m tests.reliability.report``), quick runs
into ``artifacts/reliability/`` (ignored by git).
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, TypeVar

import orjson

ROOT = Path(__file__).resolve().parents[2]
MODE = os.environ.get("HERALD_RELIABILITY", "quick")
FULL = MODE == "full"
FULL_RESULTS = ROOT / "docs" / "reliability" / "results"
QUICK_RESULTS = ROOT / "artifacts" / "reliability"

T = TypeVar("T")


def pick(quick: T, full: T) -> T:
    """The quick value in CI, the full one under ``make reliability``."""
    return full if FULL else quick


def results_dir() -> Path:
    return FULL_RESULTS if FULL else QUICK_RESULTS


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """``payload`` with the mode, the time and the machine, as ``<results>/<name>.json``."""
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {
        "name": name,
        "mode": MODE,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.system()},
        **payload,
    }
    path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path
