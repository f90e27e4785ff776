#!/usr/bin/env bash
# THE test command of dspy-storage:  bash scripts/test.sh [extra cargo test args...]
#
# The local AWS is LocalStack: unless AWS_ENDPOINT_URL already names one (then it is used and
# none is started), scripts/local-aws.sh installs and starts one (free port, own state dir) and
# it is stopped on any exit. Every AWS_ENDPOINT_URL_* variable is unset: the AWS tests reach
# S3, DynamoDB, KMS, EventBridge, SQS and Secrets Manager through AWS_ENDPOINT_URL alone.
# Then, stopping at the first failure:
#   cargo fmt --all -- --check
#   cargo clippy --workspace --all-targets -- -D warnings
#   python3 scripts/check-modules.py   (no import circle between the modules of core and functions)
#   bash scripts/check-infra.sh        (cfn-lint, sam validate --lint)
#   bash scripts/build-lambdas.sh      (cargo lambda build --release --arm64, sizes printed)
#   cargo test --workspace [extra args]
#   bash clients/python/test.sh        (the Python client's pytest suite, both backends)
#   bash clients/ruby/test.sh          (Ruby client: minitest on the embedded and the aws backend)
#   bash ui/browser-test/run.sh        (the dashboard in headless Chromium, both backends)
#   cargo run -p dspy-storage-bench -- --quick   (benchmark smoke: prints the table, asserts no time)
# AWS tests are required to run (DSPY_STORAGE_REQUIRE_AWS=1): they fail instead of skipping, and
# each one that runs is counted (DSPY_STORAGE_AWS_TEST_LOG); the counts are printed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$(pwd -P)"
LOCAL_AWS=(bash "$REPO_ROOT/scripts/local-aws.sh")

TOTAL_START=$SECONDS
OWN_AWS=0
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
    if ((OWN_AWS)); then
        banner "stopping LocalStack"
        "${LOCAL_AWS[@]}" stop
    fi
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
    OWN_AWS=1
    local attempt
    for attempt in 1 2 3; do
        "${LOCAL_AWS[@]}" start && return 0
        echo "[test] LocalStack did not start (attempt $attempt); retrying in 5 s" >&2
        "${LOCAL_AWS[@]}" stop
        sleep 5
    done
    return 1
}

AWS_TEST_LOG="$REPO_ROOT/target/aws-tests.log"
# How many AWS tests ran (and were not skipped) in a step: one line per test and gate call in
# the log, counted once per test.
CARGO_FILTERED=$# # extra cargo test args may select no AWS test
count_aws_tests() { # label pattern [may-be-zero]
    local n
    n="$(grep -E "$2" "$AWS_TEST_LOG" 2>/dev/null | cut -f1,2 | sort -u | wc -l)"
    printf '== AWS tests that ran against %s (%s): %d\n' "$AWS_ENDPOINT_URL" "$1" "$n"
    ((n > 0 || ${3:-0})) || { echo "no AWS test ran in $1" >&2; return 1; }
}

step "toolchain (rustfmt, clippy)" ensure_components
if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    banner "local AWS: AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL is set; using it, starting none"
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
    export AWS_REGION="${AWS_REGION:-us-east-1}" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"
else
    step "LocalStack (scripts/local-aws.sh start)" start_local_aws
    eval "$("${LOCAL_AWS[@]}" env)"
fi
# One endpoint for every service, as a user's LocalStack is reached.
for var in $(compgen -e | grep '^AWS_ENDPOINT_URL_' || true); do unset "$var"; done
export DSPY_STORAGE_REQUIRE_AWS=1 DSPY_STORAGE_AWS_TEST_LOG="$AWS_TEST_LOG"
mkdir -p "$REPO_ROOT/target"
rm -f "$AWS_TEST_LOG"
env | grep -E '^(AWS_ENDPOINT_URL|AWS_REGION|DSPY_STORAGE_REQUIRE_AWS)' | sort
printf 'AWS_ENDPOINT_URL_* variables set: %d (every service through AWS_ENDPOINT_URL)\n' \
    "$(compgen -e | grep -c '^AWS_ENDPOINT_URL_' || true)"
printf 'LocalStack at %s: %s\n' "$AWS_ENDPOINT_URL" \
    "$("${LOCAL_AWS[@]}" version "$AWS_ENDPOINT_URL" 2>/dev/null || echo "no /_localstack/health answer (not a LocalStack?)")"

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
step "no import circle (scripts/check-modules.py)" python3 scripts/check-modules.py
step "infra lint (cfn-lint, sam validate)" bash scripts/check-infra.sh
step "cargo lambda build --release --arm64 (six functions)" bash scripts/build-lambdas.sh
step "cargo test" cargo test --workspace "$@"
count_aws_tests "cargo test" '^[^\t]+\t' "$CARGO_FILTERED"
# ---- Python client (clients/python): pytest against real `serve` processes, both backends ----
step "python client (pytest, embedded + aws)" bash clients/python/test.sh
count_aws_tests "python client" '^python-client'
# --- Ruby client (clients/ruby): installs Debian's ruby if missing, runs its minitest suite against
# --- a real `dspy-storage serve`, embedded and --backend aws on the LocalStack above.
step "Ruby client (minitest, embedded + aws)" bash clients/ruby/test.sh
count_aws_tests "Ruby client" '^ruby-client'
# --- The dashboard in a real browser: Debian's Chromium (installed when missing) driven over the
# --- DevTools protocol (playwright-core from npm), against `serve`, embedded and --backend aws.
step "dashboard in Chromium (embedded + aws)" bash ui/browser-test/run.sh
count_aws_tests "dashboard browser test" '^dashboard-browser'
step "benchmarks (--quick)" cargo run -q -p dspy-storage-bench -- --quick
