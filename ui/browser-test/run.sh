#!/usr/bin/env bash
# The dashboard's browser test:  bash ui/browser-test/run.sh
#
# Installs Debian's Chromium when missing (apt-get install chromium) and playwright-core from
# the npm registry (npm ci: the DevTools-protocol client only, no browser download), builds the
# dspy-storage binary (unless DSPY_STORAGE_BIN names one), then runs dashboard.test.mjs with
# node's test runner once per backend: embedded, and aws against the local AWS of the
# environment (AWS_ENDPOINT_URL; when none is set, scripts/local-aws.sh starts one for the run).
# Screenshots: target/ui-screenshots/<backend>/*.png.
#
#   DSPY_STORAGE_UI_BACKENDS   backends to run (default: "embedded aws")
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$HERE/../.." && pwd -P)"
BACKENDS="${DSPY_STORAGE_UI_BACKENDS:-embedded aws}"
TARGET="${CARGO_TARGET_DIR:-$REPO_ROOT/target}"

log() { printf '[dashboard-browser] %s\n' "$*" >&2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v chromium >/dev/null 2>&1; then
    log "installing Debian's chromium"
    apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q)
    as_root "${apt[@]}" install chromium || { as_root "${apt[@]}" update && as_root "${apt[@]}" install chromium; }
fi
chromium --version 2>/dev/null || true
node --version

(cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)

if [[ -z "${DSPY_STORAGE_BIN:-}" ]]; then
    log "building dspy-storage (cargo build -p dspy-storage-cli)"
    (cd "$REPO_ROOT" && cargo build -q -p dspy-storage-cli)
    export DSPY_STORAGE_BIN="$TARGET/debug/dspy-storage"
fi

STARTED_AWS=0
on_exit() {
    local rc=$?
    if ((STARTED_AWS)); then bash "$REPO_ROOT/scripts/local-aws.sh" stop || true; fi
    exit "$rc"
}
trap on_exit EXIT
if [[ " $BACKENDS " == *" aws "* && -z "${AWS_ENDPOINT_URL:-}" ]]; then
    log "no AWS_ENDPOINT_URL: starting the local AWS (scripts/local-aws.sh)"
    bash "$REPO_ROOT/scripts/local-aws.sh" start >/dev/null
    STARTED_AWS=1
    eval "$(bash "$REPO_ROOT/scripts/local-aws.sh" env)"
fi
DSPY_STORAGE_BIN="$(realpath "$DSPY_STORAGE_BIN")"
export DSPY_STORAGE_BIN
export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_REGION="${AWS_REGION:-us-east-1}"
export DSPY_STORAGE_SCREENSHOTS="$TARGET/ui-screenshots"

cd "$HERE"
for backend in $BACKENDS; do
    log "the dashboard in Chromium on the $backend backend"
    DSPY_STORAGE_TEST_BACKEND="$backend" node --test --test-concurrency=1 dashboard.test.mjs
done
log "screenshots: $DSPY_STORAGE_SCREENSHOTS"
