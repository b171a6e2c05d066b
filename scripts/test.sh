#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then
# formatting, lints and every test (unit, property and black-box against real
# redis-server and nx-27017 processes that the tests start themselves), then
# the demo client's browser tests (Chromium + playwright-core), smoke runs
# of the k6 scripts, and the offline checks of deploy/ and k8s/.
# Set MONGODB_URL to run the MongoDB-backed tests against a real MongoDB too.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_redis
ensure_nx

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --workspace --locked
echo "==> browser tests"
"$ROOT/scripts/browser-tests.sh"
echo "==> k6 smoke runs"
"$ROOT/scripts/k6-smoke.sh" --quiet
echo "==> deploy and Kubernetes checks"
"$ROOT/scripts/deploy-checks.sh"
