#!/usr/bin/env bash
# The reliability suite in full mode (docs/reliability.md): faults, isolation, protocol abuse,
# fuzzing and the one-hour soak; results into docs/reliability/results/, then the page re-rendered.
# The soak runs beside the rest (it asks only that the series level off, which a busy machine
# does not change; the others bring their own baselines), so the whole takes about an hour.
# Assumes what make test installs (make reliability does that first).
set -euo pipefail
cd "$(dirname "$0")/.."

export HERALD_RELIABILITY=full
mkdir -p artifacts
pytest=(.venv/bin/python -m pytest -p no:cacheprovider -m reliability)

"${pytest[@]}" tests/reliability/test_soak.py >artifacts/reliability-soak.log 2>&1 &
soak=$!
set +e
"${pytest[@]}" tests/reliability --ignore tests/reliability/test_soak.py "$@"
rest=$?
wait "$soak"
soak_status=$?
set -e
echo "== the soak (log: artifacts/reliability-soak.log)"
tail -n 5 artifacts/reliability-soak.log
for status in "$rest" "$soak_status"; do
  if [ "$status" -eq 5 ]; then
    echo "pytest collected no reliability tests: that is a failure" >&2
    exit 1
  fi
done
# Render what was measured even when a test failed: the page then shows the failing figures.
.venv/bin/python -m tests.reliability.report
[ "$rest" -eq 0 ] && [ "$soak_status" -eq 0 ]
