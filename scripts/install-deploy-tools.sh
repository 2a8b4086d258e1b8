#!/usr/bin/env bash
# The tools the deployment kits' tests use (tests/integration/test_deploy_kits.py), built
# from public Go modules with the machine's Go, pinned, into ~/.cache/herald/deploy-tools
# (HERALD_DEPLOY_TOOLS overrides):
#   helm        helm.sh/helm/v4, to lint and render deploy/helm/herald
#   k8s-check   scripts/k8s-check: the rendered manifests decoded strictly into the
#               Kubernetes API's Go types (k8s.io/api), no cluster needed
# Skipped when already there; the first build takes minutes (Go's caches keep the next quick).
set -euo pipefail

helm_version="${HERALD_HELM_VERSION:-v4.3.2}"
dest="${HERALD_DEPLOY_TOOLS:-$HOME/.cache/herald/deploy-tools}"
here="$(cd "$(dirname "$0")" && pwd)"
check_sum="$(cat "$here/k8s-check/main.go" "$here/k8s-check/go.mod" "$here/k8s-check/go.sum" | sha256sum | cut -c1-16)"
if ! command -v go >/dev/null 2>&1; then
  echo "Go is not installed: helm and k8s-check cannot be built (the deployment kits' tests need them)" >&2
  exit 3
fi
mkdir -p "$dest/bin"
if [ ! -f "$dest/.helm-$helm_version" ]; then
  echo "building helm $helm_version with $(go version | cut -d' ' -f3) (minutes, once)" >&2
  GOBIN="$dest/bin" CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go install -trimpath -ldflags "-s -w" "helm.sh/helm/v4/cmd/helm@$helm_version" >&2
  "$dest/bin/helm" version >&2
  touch "$dest/.helm-$helm_version"
fi
if [ ! -f "$dest/.k8s-check-$check_sum" ]; then
  echo "building k8s-check" >&2
  (cd "$here/k8s-check" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -o "$dest/bin/k8s-check" .) >&2
  touch "$dest/.k8s-check-$check_sum"
fi
echo "$dest/bin"
