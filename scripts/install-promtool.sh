#!/usr/bin/env bash
# promtool, for the tests of the Prometheus alert rules (deploy/prometheus/herald-alerts.yml:
# `promtool check rules` and the unit tests in herald-alerts.test.yml), built from
# Prometheus's public Go module with `go install`, pinned, into
# ~/.cache/herald/promtool-<version>/bin/promtool (HERALD_PROMTOOL_HOME overrides).
# Skipped when already there; the first build takes several minutes (Go's module and
# build caches make the next ones quick). Prints the binary's path.
set -euo pipefail

version="${HERALD_PROMTOOL_VERSION:-v0.316.0}"
dest="${HERALD_PROMTOOL_HOME:-$HOME/.cache/herald/promtool-$version}"
binary="$dest/bin/promtool"
if [ -x "$binary" ] && [ -f "$dest/.complete" ]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: promtool $version cannot be built (the alert-rule tests need it)" >&2
  exit 3
fi

echo "building promtool $version with $(go version | cut -d' ' -f3) into $dest (minutes, once)" >&2
mkdir -p "$dest"
GOBIN="$dest/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go install -trimpath -ldflags "-s -w" "github.com/prometheus/prometheus/cmd/promtool@$version" >&2
"$binary" --version >&2
touch "$dest/.complete"
echo "$binary"
