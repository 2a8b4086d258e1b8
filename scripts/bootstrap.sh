#!/usr/bin/env bash
# Create .venv and install Herald with the extras named in $HERALD_EXTRAS (default: none).
# Idempotent and quick when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${HERALD_EXTRAS:-}"
python="${PYTHON:-python3}"

if ! command -v uv >/dev/null 2>&1; then
  "$python" -m pip install --quiet --disable-pip-version-check uv || "$python" -m pip install --quiet --user uv
  export PATH="$HOME/.local/bin:$PATH"
fi

if [ ! -x .venv/bin/python ]; then
  uv venv --quiet --python "$python" .venv
fi

spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.herald-installed-$(echo "$extras" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  uv pip install --quiet --python .venv/bin/python -e "$spec"
  touch "$stamp"
fi
