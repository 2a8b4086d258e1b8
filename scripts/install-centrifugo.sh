#!/usr/bin/env bash
# Centrifugo for the peer benchmarks (make bench-peers, python -m bench --servers ...,centrifugo):
# built from its public Go module with `go install`, pinned, into
# ~/.cache/herald/centrifugo-<version>/bin/centrifugo (HERALD_CENTRIFUGO_HOME overrides).
# Skipped when already there. Without Go it says so and exits 3: the bench then runs the others.
set -euo pipefail

version="${HERALD_CENTRIFUGO_VERSION:-v6.9.1}"
dest="${HERALD_CENTRIFUGO_HOME:-$HOME/.cache/herald/centrifugo-$version}"
binary="$dest/bin/centrifugo"
if [ -x "$binary" ] && [ -f "$dest/.complete" ]; then
  echo "$binary"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: Centrifugo $version cannot be built (install Go 1.24+ to compare with it)" >&2
  exit 3
fi

echo "building Centrifugo $version with $(go version | cut -d' ' -f3) into $dest (a few minutes, once)" >&2
mkdir -p "$dest"
# GOFLAGS=-mod=mod: the module's own go.sum pins every dependency; CGO off gives the
# static binary Centrifugo's releases ship.
GOBIN="$dest/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go install -trimpath -ldflags "-s -w -X github.com/centrifugal/centrifugo/v6/internal/build.Version=${version#v}" \
  "github.com/centrifugal/centrifugo/v6@$version" >&2
"$binary" version >&2
touch "$dest/.complete"
echo "$binary"
