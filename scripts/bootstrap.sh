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

# With the test extra: the producer SDK (clients/python, herald-publisher), editable, with what
# its tests in tests/sdk use (SQLAlchemy, psycopg, asyncpg).
if [[ ",$extras," == *",test,"* ]]; then
  sdk_stamp=".venv/.herald-publisher-installed"
  if [ ! -f "$sdk_stamp" ] || [ clients/python/pyproject.toml -nt "$sdk_stamp" ] \
    || ! .venv/bin/python -c "import herald_publisher" 2>/dev/null; then
    uv pip install --quiet --python .venv/bin/python -e "clients/python[test]"
    touch "$sdk_stamp"
  fi
fi
