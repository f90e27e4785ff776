#!/usr/bin/env bash
# The Ruby client's test command:  bash clients/ruby/test.sh [minitest args...]
#
# Installs Debian's Ruby (with minitest), ruby-aws-sigv4 and ruby-activesupport (to run the
# documentation's `30.days` forms as written too) when missing, builds the workspace's
# dspy-storage binary (unless DSPY_STORAGE_BIN names one), and runs the minitest suite of
# clients/ruby/test once per backend: each run starts real `dspy-storage serve` processes on free
# ports — embedded (a temporary data directory), and `--backend aws --create` (a unique table and
# bucket, removed afterwards) against the local AWS of the environment (AWS_ENDPOINT_URL, a LocalStack; when
# none is set, scripts/local-aws.sh starts one for the run and stops it after).
#
#   DSPY_STORAGE_RUBY_BACKENDS   backends to run (default: "embedded aws")
#   DSPY_STORAGE_BIN             the dspy-storage binary (default: built with cargo)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$HERE/../.." && pwd -P)"
BACKENDS="${DSPY_STORAGE_RUBY_BACKENDS:-embedded aws}"

log() { printf '[ruby-client] %s\n' "$*" >&2; }

as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

ensure_ruby() {
    local need=()
    command -v ruby >/dev/null 2>&1 && ruby -e 'require "minitest"' 2>/dev/null || need+=(ruby)
    command -v ruby >/dev/null 2>&1 && ruby -e 'require "aws-sigv4"' 2>/dev/null || need+=(ruby-aws-sigv4)
    command -v ruby >/dev/null 2>&1 && ruby -e 'require "active_support"' 2>/dev/null || need+=(ruby-activesupport)
    if ((${#need[@]})); then
        log "installing Debian packages: ${need[*]}"
        # Another run may hold dpkg's lock (two test runs at once): wait for it.
        local apt=(env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 -y -q)
        as_root "${apt[@]}" install "${need[@]}" ||
            { as_root "${apt[@]}" update && as_root "${apt[@]}" install "${need[@]}"; }
    fi
    ruby --version
    ruby -e 'require "minitest"; require "aws-sigv4"; require "active_support"
             puts "minitest #{Minitest::VERSION}, aws-sigv4 #{Aws::Sigv4::VERSION}, activesupport #{ActiveSupport::VERSION::STRING}"'
    export DSPY_STORAGE_RUBY_ACTIVESUPPORT=1
}

ensure_binary() {
    if [[ -n "${DSPY_STORAGE_BIN:-}" ]]; then
        [[ -x "$DSPY_STORAGE_BIN" ]] || { log "DSPY_STORAGE_BIN=$DSPY_STORAGE_BIN is not executable"; exit 1; }
        return
    fi
    log "building dspy-storage (cargo build -p dspy-storage-cli)"
    (cd "$REPO_ROOT" && cargo build -q -p dspy-storage-cli)
    export DSPY_STORAGE_BIN="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/dspy-storage"
}

STARTED_AWS=0
ensure_aws() {
    [[ " $BACKENDS " == *" aws "* ]] || return 0
    if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
        log "no AWS_ENDPOINT_URL: starting the local AWS (scripts/local-aws.sh)"
        bash "$REPO_ROOT/scripts/local-aws.sh" start >/dev/null
        STARTED_AWS=1
        eval "$(bash "$REPO_ROOT/scripts/local-aws.sh" env)"
    fi
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
    export AWS_REGION="${AWS_REGION:-us-east-1}"
}

on_exit() {
    local rc=$?
    if ((STARTED_AWS)); then bash "$REPO_ROOT/scripts/local-aws.sh" stop || true; fi
    exit "$rc"
}
trap on_exit EXIT

ensure_ruby
ensure_binary
ensure_aws

cd "$HERE"
for backend in $BACKENDS; do
    log "minitest on the $backend backend"
    DSPY_STORAGE_TEST_BACKEND="$backend" ruby -Ilib -Itest \
        -e 'Dir[File.join("test", "test_*.rb")].sort.each { |f| require File.expand_path(f) }' -- "$@"
done
