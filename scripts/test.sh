#!/usr/bin/env bash
# Every test: static checks, the TypeScript client's checks and unit tests, then pytest over
# unit, contract, integration and browser tests.
# Assumes scripts/install-system-deps.sh, bootstrap.sh and install-browser-deps.sh ran (make test does).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== static checks"
scripts/check.sh

echo "== TypeScript client: generated types current, typecheck, unit tests (vitest), bundle current"
.venv/bin/herald schema --typescript --check --output clients/js/packages/client/src/generated/events.ts
(cd clients/js && npm run --silent typecheck && npm test --silent && npm run --silent build:check)

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
