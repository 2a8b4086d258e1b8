"""The atheris (libFuzzer) targets, each in a process of its own: a few seconds each in
``make test``, a minute each under ``make reliability``. A finding makes the process exit
non-zero with the input and its traceback, shown here."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.reliability.atheris_fuzz import TARGETS
from tests.reliability.mode import ROOT, pick, write_result

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(pick(120, 1500))]

#: The quick run covers the targets with the most Python behind them.
QUICK = ("claims", "record")
SECONDS = pick(3, 60)


def test_the_atheris_targets_find_nothing(tmp_path: object) -> None:
    runs = {}
    for name in pick(QUICK, tuple(TARGETS)):
        done = subprocess.run(
            [sys.executable, "-m", "tests.reliability.atheris_fuzz", name, f"-max_total_time={SECONDS}",
             f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
            cwd=ROOT, capture_output=True, text=True, timeout=SECONDS + 120,
        )  # fmt: skip
        assert done.returncode == 0, f"atheris target {name} found:\n{done.stderr[-6000:]}"
        stats = [
            line.removeprefix("stat::").partition(":")
            for line in done.stderr.splitlines()
            if line.startswith("stat::")
        ]
        runs[name] = {key: value.strip() for key, sep, value in stats if sep and value.strip().isdigit()}
        assert int(runs[name]["number_of_executed_units"]) > 0
    write_result("atheris", {"seconds_per_target": SECONDS, "targets": runs})
