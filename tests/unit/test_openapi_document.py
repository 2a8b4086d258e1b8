"""docs/openapi.json is what the code serves (regenerate: herald openapi > docs/openapi.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_committed_openapi_document_is_current() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "herald", "openapi"], check=True, capture_output=True, text=True
    ).stdout
    assert json.loads(generated) == json.loads(DOC.read_text()), (
        "docs/openapi.json is stale: run `herald openapi > docs/openapi.json`"
    )


def test_every_operation_documents_its_errors() -> None:
    document = json.loads(DOC.read_text())
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if "operations" in operation.get("tags", []):
                continue  # health, liveness, readiness, metrics: unauthenticated by design
            assert "401" in operation["responses"], f"{method.upper()} {path} documents no 401"
