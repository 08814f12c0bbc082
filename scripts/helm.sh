#!/usr/bin/env bash
# Helm for the chart checks, built from source and cached (docs/deploy.md).
#
#   scripts/helm.sh              print the path of the pinned helm binary, building it once when missing
#   scripts/helm.sh sync-rules   copy service/rules/files/*.yaml into the chart's files/rules/
#   scripts/helm.sh -- ARGS…     run the pinned helm with ARGS
#
# The binary goes to .cache/bin (git-ignored); Go's own module and build caches stay where Go keeps them.
set -euo pipefail

HELM_VERSION="v3.22.0" # bump here; the proxy must know it: go list -m -versions helm.sh/helm/v3
HELM_MODULE="helm.sh/helm/v3"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
GOBIN_DIR="$ROOT/.cache/bin"
HELM_BIN="$GOBIN_DIR/helm"
CHART_RULES="$ROOT/deploy/helm/oligocds/files/rules"
PACKAGE_RULES="$ROOT/service/rules/files"

die() { echo "helm.sh: $*" >&2; exit 1; }

# `go version -m` reads the module version the binary was built from, so a bumped pin triggers a rebuild.
is_pinned() {
  [[ -x "$HELM_BIN" ]] && go version -m "$HELM_BIN" 2>/dev/null | grep -Eq "^\s+mod\s+$HELM_MODULE\s+$HELM_VERSION(\s|$)"
}

# Release builds stamp the version and the Kubernetes version of the client-go they link (Helm's Makefile);
# without the stamp `helm template` and `helm lint` would assume Kubernetes 1.20.
ldflags() {
  local gomod client_go major minor
  gomod="$(go mod download -json "$HELM_MODULE@$HELM_VERSION" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')"
  [[ -f "$gomod" ]] || die "go mod download $HELM_MODULE@$HELM_VERSION gave no go.mod"
  client_go="$(awk '$1 == "k8s.io/client-go" { sub(/^v/, "", $2); print $2; exit }' "$gomod")"
  [[ -n "$client_go" ]] || die "no k8s.io/client-go in $gomod"
  major=$(( ${client_go%%.*} + 1 ))
  minor="$(echo "$client_go" | cut -d. -f2)"
  printf '%s ' "-s -w" \
    "-X $HELM_MODULE/internal/version.version=$HELM_VERSION" \
    "-X $HELM_MODULE/internal/version.gitTreeState=clean" \
    "-X $HELM_MODULE/pkg/lint/rules.k8sVersionMajor=$major" \
    "-X $HELM_MODULE/pkg/lint/rules.k8sVersionMinor=$minor" \
    "-X $HELM_MODULE/pkg/chartutil.k8sVersionMajor=$major" \
    "-X $HELM_MODULE/pkg/chartutil.k8sVersionMinor=$minor"
}

build() {
  command -v go >/dev/null || die "Go is needed to build helm $HELM_VERSION (https://go.dev/dl/)"
  echo "helm.sh: building helm $HELM_VERSION into $GOBIN_DIR (once; takes a few minutes)" >&2
  mkdir -p "$GOBIN_DIR"
  GOBIN="$GOBIN_DIR" CGO_ENABLED=0 go install -trimpath -ldflags "$(ldflags)" "$HELM_MODULE/cmd/helm@$HELM_VERSION" >&2
  is_pinned || die "built $HELM_BIN but it does not report $HELM_MODULE $HELM_VERSION"
}

helm_path() {
  is_pinned || build
  echo "$HELM_BIN"
}

sync_rules() {
  mkdir -p "$CHART_RULES"
  rm -f "$CHART_RULES"/*.yaml
  cp "$PACKAGE_RULES"/*.yaml "$CHART_RULES"/
  echo "helm.sh: copied $(find "$PACKAGE_RULES" -maxdepth 1 -name '*.yaml' | wc -l) rule files to $CHART_RULES" >&2
}

case "${1:-path}" in
  path) helm_path ;;
  sync-rules) sync_rules ;;
  --) shift; exec "$(helm_path)" "$@" ;;
  -h | --help | help) sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" ;;
  *) die "unknown command '$1' (path, sync-rules, -- ARGS…, help)" ;;
esac
