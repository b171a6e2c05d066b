#!/usr/bin/env bash
# Browser tests of the demo client: Debian Chromium driven by playwright-core,
# against a real standalone gateway (`--dev`) on a free port. The restart test
# kills the server with SIGKILL and starts it again on the same port and data
# directory (CHAT_RESTART_CMD). Screenshots go to test-artifacts/.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

STATE="${BROWSER_STATE:-$ROOT/.local/browser}"

start_server() { # port data_dir
  GATEWAY_ADDR="127.0.0.1:$1" DATA_DIR="$2" RUST_LOG=warn \
    "$ROOT/target/debug/chat-gateway" --dev >>"$STATE/server.log" 2>&1 &
  echo $! >"$STATE/pid"
  disown
  for _ in $(seq 1 200); do
    curl -fs "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "gateway did not become ready; see $STATE/server.log" >&2
  return 1
}

if [ "${1:-}" = "--restart" ]; then
  kill -9 "$(cat "$STATE/pid")" 2>/dev/null || true
  while kill -0 "$(cat "$STATE/pid")" 2>/dev/null; do sleep 0.05; done
  start_server "$(cat "$STATE/port")" "$STATE/data"
  exit 0
fi

ensure_browser
rm -rf "$STATE" && mkdir -p "$STATE/data" "$ROOT/test-artifacts"
cargo build --locked -q -p chat-gateway
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "$port" >"$STATE/port"
trap 'kill -9 "$(cat "$STATE/pid")" 2>/dev/null || true' EXIT
start_server "$port" "$STATE/data"

echo "==> browser tests (chromium + playwright-core) against http://127.0.0.1:$port"
(cd gateway/web/tests && npm ci --no-audit --no-fund --silent)
CHAT_URL="http://127.0.0.1:$port" \
ARTIFACTS_DIR="$ROOT/test-artifacts" \
CHAT_RESTART_CMD="$ROOT/scripts/browser-tests.sh --restart" \
BROWSER_STATE="$STATE" \
  node --test --test-concurrency=1 gateway/web/tests/
