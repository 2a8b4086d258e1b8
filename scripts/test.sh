#!/usr/bin/env bash
# Every test: static checks, then pytest over unit, contract, integration and browser tests.
# Assumes scripts/install-system-deps.sh, bootstrap.sh and install-browser-deps.sh ran (make test does).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== static checks"
scripts/check.sh

echo "== pytest"
set +e
.venv/bin/python -m pytest -p no:cacheprovider "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure" >&2
  exit 1
fi
exit "$status"
