# Shared by scripts/test.sh and scripts/run-cluster.sh: installs what the
# project needs on a fresh Debian machine (redis-server from apt, nx-27017 in
# a project-local virtualenv) and nothing else.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NX_VERSION="0.8.1"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_redis() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "==> installing redis-server (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq redis-server >/dev/null
  fi
}

ensure_nx() {
  if [ ! -x "$ROOT/.venv/bin/nx-27017" ]; then
    echo "==> installing nx-27017 $NX_VERSION (MongoDB wire protocol over SQLite) into .venv"
    python3 -m venv "$ROOT/.venv"
    "$ROOT/.venv/bin/pip" install -q "nx-27017==$NX_VERSION"
  fi
}

ensure_browser() {
  if [ ! -x /usr/bin/chromium ] || ! fc-list 2>/dev/null | grep -qi dejavu; then
    echo "==> installing chromium and a font (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "==> installing nodejs and npm (apt)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq nodejs npm >/dev/null
  fi
}

# Waits (up to 10 s) until something listens on loopback PORT.
wait_port() {
  local _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1 after 10 s" >&2
  return 1
}

# The two stores of a local cluster, shared by scripts/run-cluster.sh and
# loadtest/bench-cluster.sh: redis-server (AOF, `appendfsync` FSYNC) and
# nx-27017 on loopback, their files under STATE. Returns once both listen;
# their pids are appended to the caller's `pids` array (which its EXIT trap
# kills) and left in REDIS_PID and MONGO_PID.
#   start_stores STATE REDIS_PORT MONGO_PORT FSYNC
start_stores() {
  local state="$1" redis_port="$2" mongo_port="$3" fsync="$4"
  mkdir -p "$state/redis" "$state/mongo"
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$state/redis" \
    --appendonly yes --appendfsync "$fsync" --save "" >"$state/redis.log" 2>&1 &
  REDIS_PID=$!
  pids+=("$REDIS_PID")
  "$ROOT/.venv/bin/nx-27017" --host 127.0.0.1 -p "$mongo_port" --data-dir "$state/mongo" \
    --log-file "$state/mongo.log" --pid-file "$state/mongo.pid" >/dev/null 2>&1 &
  MONGO_PID=$!
  pids+=("$MONGO_PID")
  wait_port "$redis_port"
  wait_port "$mongo_port"
}
