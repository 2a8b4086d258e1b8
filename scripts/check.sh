#!/usr/bin/env bash
# Static checks: formatting, lint, types, layer contracts.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
dirs=(src tests clients/python examples); [ -d bench ] && dirs+=(bench)
"$bin/ruff" format --check "${dirs[@]}"
"$bin/ruff" check "${dirs[@]}"
"$bin/mypy"
(cd clients/python && "../../$bin/mypy")  # the producer SDK, strict, on its own config
"$bin/lint-imports"
