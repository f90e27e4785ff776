#!/usr/bin/env bash
# The Python client's tests: bash clients/python/test.sh [pytest args...]
#
# Self-contained: creates (once) a venv under ${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}
# with the real dspy (pinned) and pytest, installs the client into it from this checkout (as a
# user would: pip install ./clients/python[aws]), builds the workspace's dspy-storage binary
# (or takes $DSPY_STORAGE_BIN) and runs pytest. The tests start real `dspy-storage serve`
# processes on free ports: embedded, and `--backend aws --create` when AWS_ENDPOINT_URL (a
# LocalStack) is set — required with DSPY_STORAGE_REQUIRE_AWS=1.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/../.." && pwd -P)"
CACHE="${DSPY_STORAGE_CACHE:-$HOME/.cache/dspy-storage}"
VENV="$CACHE/python-client-venv"
DSPY_VERSION=3.4.1

# The venv is shared by every checkout on the machine, and the client is (re)installed into it from
# this one: one run at a time holds it, from the install to the end of pytest (fd 9 stays open
# through the exec below).
mkdir -p "$CACHE"
exec 9>"$CACHE/.python-client.lock"
flock -w 3600 9
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import dspy, pytest, botocore" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    "$VENV/bin/pip" install -q "dspy==$DSPY_VERSION" "pytest>=7"
fi
# The client as a user installs it (not editable), with the aws extra for the SigV4 test.
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$HERE"
"$VENV/bin/pip" install -q "$HERE[aws]"
rm -rf "$HERE/build" "$HERE"/src/*.egg-info

if [[ -z "${DSPY_STORAGE_BIN:-}" ]]; then
    (cd "$ROOT" && cargo build -q -p dspy-storage-cli)
    export DSPY_STORAGE_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/dspy-storage"
fi
"$VENV/bin/python" -c "import dspy, dspy_storage; print('dspy', dspy.__version__, '| dspy_storage', dspy_storage.__version__, dspy_storage.__file__)"
cd "$HERE"
exec "$VENV/bin/python" -m pytest -p no:cacheprovider -q -rs "$@" tests
