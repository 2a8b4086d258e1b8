#!/usr/bin/env bash
# Debian packages the tests talk to for real (or only those named as arguments, e.g.
# `scripts/install-system-deps.sh redis-server` for the peer benchmarks). Installs only what is missing.
set -euo pipefail

packages=(chromium redis-server postgresql nginx-light libnginx-mod-http-js iproute2 nftables systemd)
[ $# -gt 0 ] && packages=("$@")
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

sudo_cmd=()
[ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
echo "installing Debian packages: ${missing[*]}"
"${sudo_cmd[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
