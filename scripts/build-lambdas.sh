#!/usr/bin/env bash
# Builds the six Lambda functions for AWS (provided.al2023, arm64) with cargo-lambda, prints each
# bootstrap's size and fails when one is over the 10 MB budget (10,000,000 bytes):
#
#   bash scripts/build-lambdas.sh            # cargo lambda build --release --arm64 (all six)
#
# What the build links and how it optimises is set once, in the workspace Cargo.toml under
# [workspace.metadata.lambda.build] (so `sam build`, which runs cargo lambda itself, gets the same):
# the functions package alone (core without its `embedded` feature: no SQLite) and the release
# profile with opt-level "z", fat LTO, one codegen unit and panic = "abort" (a handler that panics
# ends the process; Lambda fails that invocation and starts a new instance).
#
# cargo-lambda (and the zig it links with) lives in its own venv,
# ${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}/lambda-venv, created on first use; the
# aarch64-unknown-linux-gnu target is added through rustup. Output: target/lambda/<fn>/bootstrap,
# the layout `sam build` and `sam deploy` expect (see infra/README.md).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}"
VENV="$CACHE/lambda-venv"
FUNCTIONS=(store load query trend cleanup backup)

# Installs into the shared cache (and rustup's) are serialised: two test runs at once on one machine.
mkdir -p "$CACHE"
exec 9>"$CACHE/.install.lock"
flock -w 1800 9
if [[ ! -x "$VENV/bin/cargo-lambda" ]]; then
    echo "== installing cargo-lambda (and ziglang) into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check cargo-lambda
fi
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx aarch64-unknown-linux-gnu ||
        rustup target add aarch64-unknown-linux-gnu
fi
exec 9>&-
export PATH="$VENV/bin:$PATH"
echo "== $(cargo-lambda lambda --version 2>/dev/null || cargo lambda --version)"

bins=()
for f in "${FUNCTIONS[@]}"; do bins+=(--bin "$f"); done
start=$SECONDS
cargo lambda build --release --arm64 -p dspy-storage-functions "${bins[@]}"
echo "== built in $((SECONDS - start)) s"

python3 - "${FUNCTIONS[@]}" <<'PY'
import os, struct, sys
BUDGET = 10_000_000
over = []
print("\n| function | arm64 bootstrap (bytes) | MiB |\n|---|---:|---:|")
for f in sys.argv[1:]:
    path = os.path.join(os.environ.get("CARGO_TARGET_DIR") or "target", "lambda", f, "bootstrap")
    with open(path, "rb") as fh:
        head = fh.read(20)
    machine = struct.unpack_from("<H", head, 18)[0]
    if head[:4] != b"\x7fELF" or machine != 183:  # EM_AARCH64
        sys.exit(f"{path} is not an arm64 ELF (e_machine={machine})")
    size = os.path.getsize(path)
    print(f"| {f} | {size} | {size / 1048576:.1f} |")
    if size > BUDGET:
        over.append(f"{f} ({size} bytes)")
if over:
    sys.exit(f"over the {BUDGET}-byte Lambda size budget: {', '.join(over)}")
PY
