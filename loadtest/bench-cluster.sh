#!/usr/bin/env bash
# The cluster benchmark of loadtest/README.md, reproducible on any Linux box:
# a fresh redis-server, nx-27017 (MongoDB wire protocol), one persister and two
# gateway nodes (release builds, loopback), then
#   1. redis-benchmark -t publish against that Redis (the ceiling of one Redis
#      doing nothing but PUBLISH, same machine, same run);
#   2. chat-loadtest chat at each rate given, across both gateways;
#   3. the persister's MongoDB round trips per 1000 persisted messages, from its
#      own /metrics (chat_mongo_commands_total / chat_persister_messages_written_total).
#
#   loadtest/bench-cluster.sh [RATE ...]        (default: 2000 5000 10000)
#
# Environment: PAIRS (default 100), DURATION (s, default 20), AOF (default
# "everysec"; "always" makes every ack wait for an fsync), SHARDS (REDIS_SHARDS,
# default 1). Everything it starts is stopped on exit; its files live under
# .local/bench/.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib.sh"
cd "$ROOT"

RATES=("${@:-2000 5000 10000}")
# shellcheck disable=SC2206
RATES=(${RATES[*]})
PAIRS="${PAIRS:-100}"
DURATION="${DURATION:-20}"
AOF="${AOF:-everysec}"
SHARDS="${SHARDS:-1}"

ensure_redis
ensure_nx
echo "==> building (release)"
cargo build --release --locked -p chat-gateway -p chat-persister -p chat-loadtest

STATE="$ROOT/.local/bench"
rm -rf "$STATE"
mkdir -p "$STATE/redis" "$STATE/mongo"
REDIS_PORT=6391
MONGO_PORT=27028
export JWT_SECRET="bench-secret-0123456789abcdef0123"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
export MONGODB_URL="mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true"
export REDIS_SHARDS="$SHARDS"
export RUST_LOG=warn
# Each user sends RATE/(2·PAIRS) per second: lift the per-user limit.
export SEND_RATE_PER_SECOND=100000 SEND_BURST=100000
ulimit -n "$(ulimit -Hn)"

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$STATE/redis" \
  --appendonly yes --appendfsync "$AOF" --save "" >"$STATE/redis.log" 2>&1 &
pids+=($!)
"$ROOT/.venv/bin/nx-27017" --host 127.0.0.1 -p "$MONGO_PORT" --data-dir "$STATE/mongo" \
  --log-file "$STATE/mongo.log" --pid-file "$STATE/mongo.pid" >/dev/null 2>&1 &
pids+=($!)
for port in "$REDIS_PORT" "$MONGO_PORT"; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done

NODE_ID=bench-p PERSISTER_ADDR=127.0.0.1:9191 target/release/chat-persister &
pids+=($!)
NODE_ID=bench-a GATEWAY_ADDR=127.0.0.1:8180 target/release/chat-gateway &
pids+=($!)
NODE_ID=bench-b GATEWAY_ADDR=127.0.0.1:8181 target/release/chat-gateway &
pids+=($!)
for port in 8180 8181 9191; do
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
done

echo "==> machine: $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
# (redis-benchmark 7.0 has no built-in `-t publish` test: the same command, spelled out.)
PAYLOAD="$(head -c 32 /dev/zero | od -An -tx1 | tr -d ' \n')"
for pipeline in 1 16; do
  echo "==> redis-benchmark PUBLISH (same Redis, 50 clients, 64-byte payload, pipeline $pipeline)"
  redis-benchmark -p "$REDIS_PORT" -n 500000 -c 50 -P "$pipeline" -q PUBLISH chat:bench "$PAYLOAD" \
    | tr '\r' '\n' | tail -n 1
done

metric() { # port name → value summed over label sets
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m"({|$)" {s += $2} END {printf "%d\n", s}'
}

for rate in "${RATES[@]}"; do
  echo "==> chat-loadtest chat -p $PAIRS -r $rate -d $DURATION (gateways 8180 + 8181)"
  cmd_before=$(metric 9191 chat_mongo_commands_total)
  written_before=$(metric 9191 chat_persister_messages_written_total)
  target/release/chat-loadtest --gateway 127.0.0.1:8180,127.0.0.1:8181 \
    --max-duration $((DURATION + 60)) chat -p "$PAIRS" -r "$rate" -d "$DURATION" || true
  # Let the persister catch up before counting: until nothing new is
  # written for 3 s (at most 2 min).
  last=-1; still=0
  for _ in $(seq 1 120); do
    now=$(metric 9191 chat_persister_messages_written_total)
    if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
    [ "$still" -ge 3 ] && break
    last=$now; sleep 1
  done
  cmds=$(( $(metric 9191 chat_mongo_commands_total) - cmd_before ))
  written=$(( $(metric 9191 chat_persister_messages_written_total) - written_before ))
  if [ "$written" -gt 0 ]; then
    echo "    persister: $written messages written in $cmds MongoDB round trips = $(( cmds * 1000 / written )) per 1000 messages"
  fi
done
