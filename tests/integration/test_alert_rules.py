"""``deploy/prometheus/herald-alerts.yml``: valid rules (``promtool check rules``), each alert
firing on synthetic series and none on a healthy node (``promtool test rules`` with
``herald-alerts.test.yml``), and every metric an expression reads exported by a real
node, so that renaming a metric breaks this test rather than silence an alert.

promtool is built from Prometheus's Go module by ``scripts/install-promtool.sh``
(``make install-test``); the test runs the script, which returns at once when it is built."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.api import Api
from tests.support.metrics import exported_names, herald_names

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "herald-alerts.yml"
RULE_TESTS = RULES.with_name("herald-alerts.test.yml")
#: The alerts issue 14 asks for, by what they watch.
EXPECTED = {
    "HeraldDeliveryLatencyHigh": "herald_publish_to_write_seconds_bucket",
    "HeraldSourceLagHigh": "herald_source_lag",
    "HeraldCanaryStale": "herald_canary_staleness_seconds",
    "HeraldCanaryLatencyHigh": "herald_canary_latency_seconds_bucket",
    "HeraldSlowConsumerClosesHigh": "herald_slow_consumer_closes_total",
    "HeraldNodeNotReady": "herald_backend_up",
    "HeraldNodeDrainingLong": "herald_draining",
}


def promtool() -> str:
    built = subprocess.run(
        [str(ROOT / "scripts" / "install-promtool.sh")],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert built.returncode == 0, f"promtool could not be built:\n{built.stderr[-4000:]}"
    return built.stdout.strip().splitlines()[-1]


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules_and_fires_each_alert_on_synthetic_series() -> None:
    binary = promtool()
    check = subprocess.run(
        [binary, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(rules())} rules found" in check.stdout
    unit = subprocess.run(
        [binary, "test", "rules", RULE_TESTS.name],
        cwd=RULE_TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unit.returncode == 0, unit.stdout + unit.stderr
    # Every alert has a case where it fires (and, in the healthy case, one where it does not).
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"] for case in cases for check in case["alert_rule_test"] if check.get("exp_alerts")
    }
    quiet = {check["alertname"] for check in cases[0]["alert_rule_test"] if not check.get("exp_alerts")}
    names = {rule["alert"] for rule in rules()}
    assert fired == names
    assert quiet == names


async def test_every_alert_reads_metrics_a_node_exports(api: Api) -> None:
    exported = exported_names((await api.client.get("/metrics")).text)
    by_name = {rule["alert"]: rule for rule in rules()}
    assert set(by_name) == set(EXPECTED)
    for name, rule in by_name.items():
        used = herald_names(rule["expr"])
        assert used, f"{name} reads no Herald metric"
        assert used <= exported, f"{name} reads metrics no node exports: {sorted(used - exported)}"
        assert EXPECTED[name] in used, name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        assert rule["annotations"]["description"], name
        assert "for" in rule, name
