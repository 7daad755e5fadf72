#!/usr/bin/env bash
# stop.sh: stops what scripts/start.sh started: every service, then the PostgreSQL cluster.
#
# Usage: scripts/stop.sh                  every service in var/run/*.pid, then var/pg
#        scripts/stop.sh --service NAME   just that service (start.sh uses it to restart)
# A service gets SIGTERM, and SIGKILL after OMNICHAT_STOP_TIMEOUT seconds (default 20).
# Only processes whose command line lies in this checkout are signalled, so a stale pid file
# never kills a stranger. Stopping what is not running is not an error.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

RUN=$ROOT/var/run
PG=$ROOT/var/pg
STOP_TIMEOUT=${OMNICHAT_STOP_TIMEOUT:-20}

die() {
    echo "stop.sh: error: $*" >&2
    exit 1
}

alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat%% *} != Z ]]
}

# True when PID's command line names a file of this checkout (binary or script argument).
ours() {
    local pid=$1 arg
    [[ -r /proc/$pid/cmdline ]] || return 1
    while IFS= read -r -d '' arg; do
        [[ $arg == "$ROOT"/* ]] && return 0
    done </proc/"$pid"/cmdline
    return 1
}

stop_service() {
    local name=$1 pidfile=$RUN/$1.pid pid deadline
    if [[ ! -f $pidfile ]]; then
        return 0
    fi
    pid=$(head -n 1 "$pidfile")
    if [[ ! $pid =~ ^[0-9]+$ ]] || ! alive "$pid" || ! ours "$pid"; then
        echo "stop.sh: $name was not running (stale pid file removed)"
        rm -f "$pidfile"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + STOP_TIMEOUT))
    while alive "$pid" && ((SECONDS < deadline)); do
        sleep 0.1
    done
    if alive "$pid"; then
        echo "stop.sh: $name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.2
    fi
    rm -f "$pidfile"
    echo "stop.sh: stopped $name (pid $pid)"
}

if [[ ${1:-} == --service ]]; then
    [[ $# -eq 2 && -n $2 ]] || die "usage: scripts/stop.sh [--service NAME]"
    stop_service "$2"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: scripts/stop.sh [--service NAME]"

# Clients of persistence first: the connectors (which also call the provider simulators), then
# the simulators and anything else, persistence last.
names=()
if [[ -d $RUN ]]; then
    for f in "$RUN"/connector-*.pid; do
        [[ -e $f ]] && names+=("$(basename "$f" .pid)")
    done
    for f in "$RUN"/*.pid; do
        [[ -e $f ]] || continue
        n=$(basename "$f" .pid)
        [[ $n == persistence || $n == connector-* ]] || names+=("$n")
    done
    [[ -e $RUN/persistence.pid ]] && names+=(persistence)
fi
for n in "${names[@]}"; do
    stop_service "$n"
done

if [[ -e $PG ]]; then
    bash "$ROOT/scripts/pg-cluster.sh" stop "$PG"
fi
echo "stop.sh: Omnichat is stopped"
