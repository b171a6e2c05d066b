#!/usr/bin/env bash
# The cluster benchmark of loadtest/README.md, reproducible on any Linux box:
# a fresh redis-server, nx-27017 (MongoDB wire protocol), one persister and two
# gateway nodes (release builds, loopback), then
#   1. redis-benchmark PUBLISH against that Redis (the ceiling of one Redis
#      doing nothing but PUBLISH, same machine, same run);
#   2. chat-loadtest chat at each rate given, across both gateways, with the
#      CPU time every process spent on it (utime + stime from /proc/PID/stat,
#      before and after, children included) per delivered message — and so how
#      many cores a given rate needs;
#   3. the persister's MongoDB round trips per 1000 persisted messages, from its
#      own /metrics (chat_mongo_commands_total / chat_persister_messages_written_total).
#
#   loadtest/bench-cluster.sh [RATE ...]        (default: 2000 5000 10000)
#
# Environment: PAIRS (default 100), DURATION (s, default 20), AOF (default
# "everysec"; "always" makes every ack wait for an fsync), SHARDS (REDIS_SHARDS,
# default 1), PERSISTER (default 1; 0 = no persister: the delivery path alone,
# gateways + Redis — chat creation still uses MongoDB), TARGET_RATE (default
# 30000: the rate the cores-needed line is computed for), BUILD (default 1; 0 =
# use the release binaries already built). Everything it starts
# is stopped on exit; its files live under .local/bench/.
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
PERSISTER="${PERSISTER:-1}"
TARGET_RATE="${TARGET_RATE:-30000}"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"

ensure_redis
ensure_nx
if [ "${BUILD:-1}" != 0 ]; then
  echo "==> building (release)"
  cargo build --release --locked -p chat-gateway -p chat-persister -p chat-loadtest
fi

STATE="$ROOT/.local/bench"
rm -rf "$STATE"
mkdir -p "$STATE"
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

start_stores "$STATE" "$REDIS_PORT" "$MONGO_PORT" "$AOF"
# name → pid of every process whose CPU is counted (the generator is added per run).
declare -A PROC=([redis-server]="$REDIS_PID" [nx-27017]="$MONGO_PID")
ready=(8180 8181)
if [ "$PERSISTER" != 0 ]; then
  NODE_ID=bench-p PERSISTER_ADDR=127.0.0.1:9191 "$BIN/chat-persister" &
  pids+=($!); PROC[persister]=$!; ready+=(9191)
fi
NODE_ID=bench-a GATEWAY_ADDR=127.0.0.1:8180 "$BIN/chat-gateway" &
pids+=($!); PROC[gateway-a]=$!
NODE_ID=bench-b GATEWAY_ADDR=127.0.0.1:8181 "$BIN/chat-gateway" &
pids+=($!); PROC[gateway-b]=$!
for port in "${ready[@]}"; do
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

# utime+stime+cutime+cstime (clock ticks) of one /proc/PID/stat line; the
# fields are counted after "(comm) ", which may itself contain spaces.
stat_ticks() { sed 's/^.*) //' | awk '{print $12 + $13 + $14 + $15}'; }

# CPU ticks of PID and of its descendants alive now (reaped ones are in
# their parent's cutime/cstime).
cpu_ticks() {
  local total=0 p t
  for p in $(ps -e -o pid=,ppid= | awk -v root="$1" '
      { parent[$1] = $2 } END {
        keep[root] = 1
        do { grown = 0
          for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; grown = 1 }
        } while (grown)
        for (p in keep) print p }'); do
    t=$(stat_ticks <"/proc/$p/stat" 2>/dev/null) || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}

TCK=$(getconf CLK_TCK)
for rate in "${RATES[@]}"; do
  echo "==> chat-loadtest chat -p $PAIRS -r $rate -d $DURATION (gateways 8180 + 8181$([ "$PERSISTER" = 0 ] && echo ', no persister'))"
  echo "    load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$PERSISTER" != 0 ]; then
    cmd_before=$(metric 9191 chat_mongo_commands_total)
    written_before=$(metric 9191 chat_persister_messages_written_total)
  fi
  declare -A before=()
  for name in "${!PROC[@]}"; do before[$name]=$(cpu_ticks "${PROC[$name]}"); done
  started=$(python3 -c "import time; print(time.time())")
  # The generator in a subshell that reads its own cutime/cstime once the
  # generator has exited and been reaped: the generator's whole CPU time.
  (
    "$BIN/chat-loadtest" --json --gateway 127.0.0.1:8180,127.0.0.1:8181 \
      --max-duration $((DURATION + 60)) chat -p "$PAIRS" -r "$rate" -d "$DURATION" \
      >"$STATE/run-$rate.json" || true
    read -r line </proc/"$BASHPID"/stat
    echo "$line" | stat_ticks >"$STATE/generator-$rate.ticks"
  )
  python3 - "$STATE/run-$rate.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "error" in r:
    print(f"    generator failed: {r['error']}"); sys.exit()
a, d = r["ack_latency"], r["delivery_latency"]
print(f"    sent/acked/delivered {r['sent']}/{r['acked']}/{r['delivered']}, "
      f"{r['delivered_per_second']:.0f} delivered/s, errors {r['errors']} {r['error_kinds'] or ''}")
print(f"    ack p50/p99 {a['p50_ms']:.1f}/{a['p99_ms']:.1f} ms, delivery p50/p99 "
      f"{d['p50_ms']:.1f}/{d['p99_ms']:.1f} ms, generator lag max {r['max_send_lag_ms']:.0f} ms")
PY
  if [ "$PERSISTER" != 0 ]; then
    # Let the persister catch up before counting: until nothing new is
    # written for 3 s (at most 2 min). Its CPU (and MongoDB's) is counted
    # until then.
    last=-1; still=0
    for _ in $(seq 1 120); do
      now=$(metric 9191 chat_persister_messages_written_total)
      if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; fi
      [ "$still" -ge 3 ] && break
      last=$now; sleep 1
    done
  fi
  elapsed=$(python3 -c "import time; print(time.time() - $started)")
  delivered=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("delivered", 0))' "$STATE/run-$rate.json")
  {
    for name in "${!PROC[@]}"; do
      echo "$name $(( $(cpu_ticks "${PROC[$name]}") - before[$name] ))"
    done
    echo "generator $(cat "$STATE/generator-$rate.ticks")"
  } | python3 -c '
import sys
tck, delivered, elapsed, target = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
rows = [(n, int(t) / tck) for n, t in (l.split() for l in sys.stdin)]
order = ["gateway-a", "gateway-b", "redis-server", "persister", "nx-27017", "generator"]
rows.sort(key=lambda r: order.index(r[0]) if r[0] in order else len(order))
print(f"    CPU over {elapsed:.1f} s (send + drain + persister catch-up), {delivered} delivered:")
print("    | process | CPU s | % of one core | CPU µs per delivered msg |")
print("    |---|---|---|---|")
total = 0.0
for name, secs in rows:
    per = secs * 1e6 / delivered if delivered else float("nan")
    total += per if delivered else 0
    print(f"    | {name} | {secs:.2f} | {100 * secs / elapsed:.0f} | {per:.0f} |")
print(f"    | all | {sum(s for _, s in rows):.2f} | {100 * sum(s for _, s in rows) / elapsed:.0f} | {total:.0f} |")
if delivered:
    print(f"    => {target} msg/s at this CPU cost needs {total * target / 1e6:.1f} cores (this machine has 2)")
' "$TCK" "$delivered" "$elapsed" "$TARGET_RATE"
  if [ "$PERSISTER" != 0 ]; then
    cmds=$(( $(metric 9191 chat_mongo_commands_total) - cmd_before ))
    written=$(( $(metric 9191 chat_persister_messages_written_total) - written_before ))
    if [ "$written" -gt 0 ]; then
      echo "    persister: $written messages written in $cmds MongoDB round trips = $(( cmds * 1000 / written )) per 1000 messages"
    fi
  fi
done
