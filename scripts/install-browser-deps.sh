#!/usr/bin/env bash
# What the browser tests need: Debian's Chromium (driven by npm playwright-core,
# never a downloaded browser build) and the npm workspace in clients/js.
# Idempotent: installs only what is missing; `npm ci` follows package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)

if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian chromium"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "install-browser-deps: npm (Node.js 20+) is required for the browser tests" >&2
  exit 1
fi

cd clients/js
lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.herald-lock-sha256"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lock_hash" ] && [ -d node_modules/playwright-core ]; then
  exit 0
fi
# PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the browser is Debian's; nothing may download one.
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
echo "$lock_hash" > "$stamp"
