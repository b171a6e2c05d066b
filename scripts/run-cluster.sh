#!/usr/bin/env bash
# A local cluster on loopback: redis-server, nx-27017 (MongoDB wire protocol),
# a persister and two gateway nodes in --dev mode (demo users and client). Installs redis-server and nx-27017 if
# missing. Ctrl-C stops everything.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_nx

STATE="$ROOT/.local/cluster"
REDIS_PORT="${REDIS_PORT:-6390}"
MONGO_PORT="${MONGO_PORT:-27027}"
export JWT_SECRET="${JWT_SECRET:-$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')}"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export MONGODB_URL="mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true"
export RUST_LOG="${RUST_LOG:-info}"

echo "==> building (release)"
cargo build --release --locked -p chat-gateway -p chat-persister

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

start_stores "$STATE" "$REDIS_PORT" "$MONGO_PORT" always

NODE_ID=persister-1 PERSISTER_ADDR=127.0.0.1:9091 target/release/chat-persister &
pids+=($!)
NODE_ID=gateway-a GATEWAY_ADDR=127.0.0.1:8080 target/release/chat-gateway --dev &
pids+=($!)
NODE_ID=gateway-b GATEWAY_ADDR=127.0.0.1:8081 target/release/chat-gateway --dev &
pids+=($!)

token() { # sub role: an HS256 token valid for a day
  python3 - "$1" "$2" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
body = b64(json.dumps({"sub": sys.argv[1], "role": sys.argv[2], "exp": int(time.time()) + 86400}).encode())
sig = hmac.new(os.environ["JWT_SECRET"].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
print(f"{head}.{body}.{b64(sig)}")
PY
}

cat <<MSG

Local cluster running (--dev: demo users, /dev/token, demo client):
  open        http://127.0.0.1:8080/  and  http://127.0.0.1:8081/  (one tab per demo user)
  gateway A   http://127.0.0.1:8080   (ws://127.0.0.1:8080/ws)
  gateway B   http://127.0.0.1:8081   (ws://127.0.0.1:8081/ws)
  persister   http://127.0.0.1:9091/metrics
  redis       $REDIS_URL   mongodb  $MONGODB_URL

Tokens (valid 24 h):
  service  $(token booking-app service)
  patient  $(token patient-1 patient)
  doctor   $(token doctor-1 doctor)

Create a chat:  curl -s -X POST http://127.0.0.1:8080/api/chats -H "Authorization: Bearer <service token>" \\
                  -H 'content-type: application/json' \\
                  -d '{"appointment_id":"a1","patient_id":"patient-1","doctor_id":"doctor-1"}'
Ctrl-C stops everything.
MSG
wait
