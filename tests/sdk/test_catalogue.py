"""The SDK's catalogue models: generated from the gateway's, kept current, and free of Herald."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from herald_publisher import EVENTS, Event
from herald_publisher.catalogue import TaskFailed, TaskProgressUpdated

from herald.events.catalogue import CATALOGUE

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "clients" / "python" / "scripts" / "generate_models.py"


def test_the_generated_models_are_current() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


def test_every_catalogue_event_has_a_model_with_the_gateways_fields() -> None:
    assert list(EVENTS) == list(CATALOGUE)
    for name, model in EVENTS.items():
        assert model.herald_event == name
        assert set(model.model_fields) == set(CATALOGUE[name].model_fields), name


def test_the_sdk_imports_nothing_of_herald() -> None:
    code = (
        "import sys, herald_publisher; print(sorted(m for m in sys.modules if m.split('.')[0] == 'herald'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_model_carries_the_catalogues_routing() -> None:
    event = Event.build(TaskProgressUpdated(task_id="t1", progress=40), key="alice")
    assert (event.event, event.scope, event.key, event.coalesce, event.priority) == (
        "task.progress-updated",
        "user",
        "alice",
        "task:t1",
        None,
    )
    failed = Event.build(TaskFailed(code="X", message="m", correlation_id="t1"), key="alice")
    assert (failed.event, failed.priority, failed.data["level"]) == ("error.task-failed", "high", "error")
    assert (
        len(
            {
                Event.build(TaskProgressUpdated(task_id="t", progress=1), key="a").idempotency_key
                for _ in range(3)
            }
        )
        == 3
    )
