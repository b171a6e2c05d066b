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
