#!/usr/bin/env bash
# The reliability suite in full mode (docs/reliability.md): faults, isolation, protocol abuse,
# fuzzing and the one-hour soak; results into docs/reliability/results/, then the page re-rendered.
# Assumes what make test installs (make reliability does that first).
set -euo pipefail
cd "$(dirname "$0")/.."

export HERALD_RELIABILITY=full
set +e
.venv/bin/python -m pytest -p no:cacheprovider -m reliability tests/reliability "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no reliability tests: that is a failure" >&2
  exit 1
fi
# Render what was measured even when a test failed: the page then shows the failing figures.
.venv/bin/python -m tests.reliability.report
exit "$status"
