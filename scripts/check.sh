#!/usr/bin/env bash
# Static checks: formatting, lint, types, layer contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
dirs=(src tests); [ -d bench ] && dirs+=(bench)
"$bin/ruff" format --check "${dirs[@]}"
"$bin/ruff" check "${dirs[@]}"
"$bin/mypy"
"$bin/lint-imports"
