#!/usr/bin/env bash
# THE test command of dspy-storage:  bash scripts/test.sh [extra cargo test args...]
#
# Starts a local AWS (DynamoDB Local + moto_server, see scripts/local-aws.sh), stops it on any exit,
# and runs, stopping at the first failure:
#   cargo fmt --all -- --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   bash scripts/check-infra.sh        (cfn-lint, sam validate --lint)
#   bash scripts/build-lambdas.sh      (cargo lambda build --release --arm64, sizes printed)
#   cargo test --workspace [extra args]
#   bash clients/python/test.sh        (the Python client's pytest suite, both backends)
#   bash clients/ruby/test.sh          (Ruby client: minitest on the embedded and the aws backend)
#   cargo run -p dspy-storage-bench -- --quick   (benchmark smoke: prints the table, asserts no time)
# AWS tests are required to run (DSPY_STORAGE_REQUIRE_AWS=1): they fail instead of skipping.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd -P)"
LOCAL_AWS=(bash "$REPO_ROOT/scripts/local-aws.sh")

TOTAL_START=$SECONDS
STEP_NAME=""
STEP_START=0

banner() {
    printf '\n==================================================================\n'
    printf '== %s\n' "$*"
    printf '==================================================================\n'
}

step() { # title cmd...
    STEP_NAME=$1
    shift
    banner "$STEP_NAME"
    printf '$ %s\n' "$*"
    STEP_START=$SECONDS
    "$@"
    printf '== %s: ok (%d s)\n' "$STEP_NAME" "$((SECONDS - STEP_START))"
    STEP_NAME=""
}

on_exit() {
    local rc=$?
    set +e
    if [[ -n "$STEP_NAME" ]]; then
        printf '\n== %s: FAILED (exit %d, after %d s)\n' "$STEP_NAME" "$rc" "$((SECONDS - STEP_START))" >&2
    fi
    banner "stopping local AWS"
    "${LOCAL_AWS[@]}" stop
    if ((rc == 0)); then
        printf '\n== all steps passed in %d s\n' "$((SECONDS - TOTAL_START))"
    else
        printf '\n== FAILED (exit %d) after %d s\n' "$rc" "$((SECONDS - TOTAL_START))" >&2
    fi
    exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ensure_components() {
    local missing=()
    cargo fmt --version >/dev/null 2>&1 || missing+=(rustfmt)
    cargo clippy --version >/dev/null 2>&1 || missing+=(clippy)
    if ((${#missing[@]})); then
        command -v rustup >/dev/null 2>&1 ||
            { echo "cargo ${missing[*]} missing and rustup not found; install them" >&2; return 1; }
        rustup component add "${missing[@]}"
    fi
    cargo --version
    cargo fmt --version
    cargo clippy --version
}

start_local_aws() {
    # Leftovers of an earlier run from this checkout (killed with SIGKILL, or started by hand).
    "${LOCAL_AWS[@]}" stop
    # A server can die during startup (seen once: DynamoDB Local exiting at once, log empty);
    # try again before giving up.
    local attempt
    for attempt in 1 2 3; do
        "${LOCAL_AWS[@]}" start && return 0
        echo "[test] local AWS did not start (attempt $attempt); retrying in 5 s" >&2
        "${LOCAL_AWS[@]}" stop
        sleep 5
    done
    return 1
}

step "toolchain (rustfmt, clippy)" ensure_components
step "local AWS (DynamoDB Local + moto)" start_local_aws

eval "$("${LOCAL_AWS[@]}" env)"
export DSPY_STORAGE_REQUIRE_AWS=1
env | grep -E '^(AWS_ENDPOINT_URL|AWS_REGION|DSPY_STORAGE_REQUIRE_AWS)' | sort

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "infra lint (cfn-lint, sam validate)" bash scripts/check-infra.sh
step "cargo lambda build --release --arm64 (six functions)" bash scripts/build-lambdas.sh
step "cargo test" cargo test --workspace "$@"
# ---- Python client (clients/python): pytest against real `serve` processes, both backends ----
step "python client (pytest, embedded + aws)" bash clients/python/test.sh

# --- Ruby client (clients/ruby): installs Debian's ruby if missing, runs its minitest suite against
# --- a real `dspy-storage serve`, embedded and --backend aws on the local AWS started above.
step "Ruby client (minitest, embedded + aws)" bash clients/ruby/test.sh
step "benchmarks (--quick)" cargo run -q -p dspy-storage-bench -- --quick
