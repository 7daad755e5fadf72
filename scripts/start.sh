#!/usr/bin/env bash
# start.sh: installs what is missing, builds, and starts the whole Omnichat system on this machine.
#
# Usage: scripts/start.sh      (as root on a fresh Debian 12; rerunning restarts the services)
#
# Steps: Debian packages (scripts/deps.sh) -> release build (build/) -> private PostgreSQL
# cluster in var/pg (scripts/pg-cluster.sh) -> migrations -> runtime grant -> secrets in
# var/secrets (generated once) -> services in the background (logs in var/log, pids in var/run).
# Stop everything with scripts/stop.sh.
#
# Environment (start.sh's own knobs; the services also read OMNICHAT_* variables themselves):
#   PERSISTENCE_GRPC_LISTEN   default 127.0.0.1:50051
#   PERSISTENCE_ADMIN_LISTEN  default 127.0.0.1:8080
#   OMNICHAT_START_TIMEOUT    seconds to wait for each service to listen (default 60)
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

VAR=$ROOT/var
PG=$VAR/pg
RUN=$VAR/run
LOGS=$VAR/log
SECRETS=$VAR/secrets
BIN=$ROOT/build/bin
PGC=(bash "$ROOT/scripts/pg-cluster.sh")
START_TIMEOUT=${OMNICHAT_START_TIMEOUT:-60}
PERSISTENCE_GRPC_LISTEN=${PERSISTENCE_GRPC_LISTEN:-127.0.0.1:50051}
PERSISTENCE_ADMIN_LISTEN=${PERSISTENCE_ADMIN_LISTEN:-127.0.0.1:8080}

SUMMARY=()

step() {
    printf '\n==> %s\n' "$*"
}
die() {
    echo "start.sh: error: $*" >&2
    exit 1
}

# True while PID runs (a zombie that nobody reaped yet counts as gone).
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# The value of a JSON number or string field in one log line (no jq on a minimal machine).
json_field() {
    local line=$1 key=$2
    sed -nE "s/.*\"$key\"[[:space:]]*:[[:space:]]*\"?([^\",}]*)\"?.*/\1/p" <<<"$line" | head -n 1
}

# As root, the cluster runs as the OS user postgres, which must be able to walk into var/pg.
# A checkout under /root (mode 0700) does not allow that: the cluster then lives under
# /var/lib/omnichat and var/pg is a symlink to it. Nothing in the checkout's permissions changes.
ensure_pg_location() {
    mkdir -p "$VAR"
    [[ $(id -u) -eq 0 ]] || return 0
    [[ -L $PG || -d $PG/data ]] && return 0
    if (cd / && runuser -u postgres -- test -x "$VAR"); then
        return 0
    fi
    local alt
    alt=/var/lib/omnichat/pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)
    mkdir -p "$alt"
    chmod 0755 /var/lib/omnichat
    # An empty var/pg left by an earlier failed attempt.
    if [[ -d $PG ]]; then rmdir "$PG" 2>/dev/null || true; fi
    [[ -e $PG ]] && die "$PG exists and the postgres user cannot reach it; remove it or run: chmod o+x on the directories above $ROOT"
    ln -s "$alt" "$PG"
    echo "start.sh: the postgres user cannot enter $ROOT; the cluster lives in $alt (var/pg links there)"
}

# ensure_secret FILE BYTES: BYTES random bytes, base64, mode 0600, made once and never printed.
ensure_secret() {
    local file=$SECRETS/$1 bytes=$2
    (
        umask 077
        mkdir -p "$SECRETS"
        chmod 0700 "$SECRETS"
        if [[ ! -s $file ]]; then
            head -c "$bytes" /dev/urandom | base64 -w 0 >"$file.tmp"
            echo >>"$file.tmp"
            mv -f "$file.tmp" "$file"
            echo "start.sh: generated $file"
        fi
        chmod 0600 "$file"
    )
}

# start_service NAME BINARY ARGS...: (re)starts one service in the background and waits until its
# log has the JSON line {"msg":"listening",...}. Sets LISTEN_LINE to that line.
# Log: var/log/NAME.log (the previous run's log is kept as NAME.log.1); pid: var/run/NAME.pid.
LISTEN_LINE=
start_service() {
    local name=$1 bin=$2 log pidfile pid deadline
    shift 2
    [[ -x $bin ]] || die "$bin not found or not executable (did the build succeed?)"
    log=$LOGS/$name.log
    pidfile=$RUN/$name.pid
    mkdir -p "$LOGS" "$RUN"
    bash "$ROOT/scripts/stop.sh" --service "$name"
    [[ -f $log ]] && mv -f "$log" "$log.1"
    : >"$log"

    # setsid: own session, so a closing terminal or the caller's Ctrl-C does not reach it.
    setsid nohup "$bin" "$@" </dev/null >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$pidfile"

    deadline=$((SECONDS + START_TIMEOUT))
    LISTEN_LINE=
    while :; do
        LISTEN_LINE=$(grep -m 1 -E '"msg"[[:space:]]*:[[:space:]]*"listening"' "$log" || true)
        [[ -n $LISTEN_LINE ]] && break
        if ! alive "$pid"; then
            wait "$pid" 2>/dev/null || true
            rm -f "$pidfile"
            echo "--- last lines of $log ---" >&2
            tail -n 25 "$log" >&2
            die "$name exited during start-up (see $log)"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- last lines of $log ---" >&2
            tail -n 25 "$log" >&2
            bash "$ROOT/scripts/stop.sh" --service "$name" || true
            die "$name did not report listening within ${START_TIMEOUT}s (see $log)"
        fi
        sleep 0.2
    done
    echo "start.sh: $name is running (pid $pid)"
}

host_of() {
    local listen=$1
    printf '%s' "${listen%:*}"
}

step "packages"
bash "$ROOT/scripts/deps.sh"

step "build (release)"
bash "$ROOT/scripts/build.sh" release

step "database"
ensure_pg_location
"${PGC[@]}" init "$PG"
"$BIN/omnichat-persistence" migrate --database-url "$("${PGC[@]}" dsn "$PG" owner)" ||
    die "migrations failed"
"${PGC[@]}" grant "$PG"

step "secrets"
ensure_secret cursor.key 32

step "services"
start_service persistence "$BIN/omnichat-persistence" \
    --database-url "$("${PGC[@]}" dsn "$PG" app)" \
    --cursor-key-file "$SECRETS/cursor.key" \
    --grpc-listen "$PERSISTENCE_GRPC_LISTEN" \
    --admin-listen "$PERSISTENCE_ADMIN_LISTEN"
grpc_port=$(json_field "$LISTEN_LINE" grpc_port)
admin_port=$(json_field "$LISTEN_LINE" admin_port)
SUMMARY+=(
    "persistence   gRPC   $(host_of "$PERSISTENCE_GRPC_LISTEN"):${grpc_port:-?}  (omnichat.persistence.v1.Persistence, grpc.health.v1.Health)"
    "              admin  http://$(host_of "$PERSISTENCE_ADMIN_LISTEN"):${admin_port:-?}/  (/healthz, /metrics)"
    "              log    $LOGS/persistence.log   pid $(cat "$RUN/persistence.pid")"
)
# Later services (connectors, provider simulators) are one start_service call each.

printf '\nOmnichat is running.\n\n'
printf '  %s\n' "${SUMMARY[@]}"
printf '  %s\n' \
    "postgresql    $("${PGC[@]}" dsn "$PG" owner)" \
    "              log $PG/postgres.log; psql \"\$(scripts/pg-cluster.sh dsn var/pg owner)\"" \
    "secrets       $SECRETS (mode 0600, never printed)"
printf '\n  API descriptor set: %s\n' "$ROOT/build/omnichat.protoset"
printf '  Stop everything:    %s\n' "$ROOT/scripts/stop.sh"
printf '  Run every test:     %s\n\n' "$ROOT/scripts/test.sh"
