#!/usr/bin/env bash
# Times the README's first command as a new user meets it: a fresh clone of this checkout's HEAD,
# an empty cargo registry cache (CARGO_HOME: the crates.io index and every crate are downloaded)
# and an empty target dir, until `/health` answers. Prints the seconds and the load average.
#
#   bash scripts/first-run.sh [runs]        (default 3 runs; prints each and the median)
#
# Needs git, curl, awk and network access to crates.io. Work dirs under ${TMPDIR:-/tmp}, removed after.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
RUNS="${1:-3}"
PORT="${DSPY_STORAGE_FIRST_RUN_PORT:-18099}"
times=()
for i in $(seq 1 "$RUNS"); do
    work="$(mktemp -d "${TMPDIR:-/tmp}/dspy-first-run.XXXXXX")"
    git clone -q "$REPO" "$work/repo"
    mkdir -p "$work/cargo-home"
    load="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo '?')"
    start=$(date +%s.%N)
    (cd "$work/repo" && CARGO_HOME="$work/cargo-home" DSPY_STORAGE_ADDR="127.0.0.1:$PORT" \
        DSPY_STORAGE_DATA_DIR="$work/data" \
        exec cargo run --profile local -p dspy-storage-cli -- serve) >"$work/out.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "run $i: the command ended before /health answered:" >&2
            tail -20 "$work/out.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN {print b - a}')
    pkill -P "$pid" 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    printf 'run %d: /health after %.0f s (load average at start: %s)\n' "$i" "$secs" "$load"
    times+=("$secs")
    rm -rf "$work"
done
printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median of %d runs: %.0f s\n", NR, (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'
