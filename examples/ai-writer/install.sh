#!/usr/bin/env bash
# What the AI Writer example needs (`make example` runs it, then run.py), idempotent and quick
# when nothing changed:
#   - .venv with Herald (scripts/bootstrap.sh), the producer SDK (clients/python) and the
#     example's Python packages: SQLAlchemy's asyncio extension, aiosqlite (the SQLite
#     fallback), uvicorn;
#   - the npm workspace in clients/js (where @herald/client and @herald/react live), then this
#     example's page: npm ci in web/ and its build into web/dist.
# Needs Python 3.11+ and Node.js 20+ (npm). PostgreSQL is used when installed, not installed here.
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/bootstrap.sh
command -v uv >/dev/null 2>&1 || export PATH="$HOME/.local/bin:$PATH"
stamp=.venv/.ai-writer-installed
if [ ! -f "$stamp" ] || [ clients/python/pyproject.toml -nt "$stamp" ] \
  || ! .venv/bin/python -c "import herald_publisher, aiosqlite, uvicorn, sqlalchemy.ext.asyncio" 2>/dev/null; then
  uv pip install --quiet --python .venv/bin/python -e "clients/python[sqlalchemy]" \
    "sqlalchemy[asyncio]>=2.0" "aiosqlite>=0.20" "uvicorn>=0.32"
  touch "$stamp"
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "examples/ai-writer: npm (Node.js 20+) is needed to build the page" >&2
  exit 1
fi
# `npm ci` where package-lock.json changed since the last one (the stamp holds its hash).
npm_ci() {
  local lock_hash stamp="$1/node_modules/.herald-lock-sha256"
  lock_hash="$(sha256sum "$1/package-lock.json" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_hash" ]; then
    (cd "$1" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_hash" > "$stamp"
  fi
}
npm_ci clients/js
npm_ci examples/ai-writer/web
(cd examples/ai-writer/web && npm run --silent build)
