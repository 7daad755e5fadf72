#!/usr/bin/env bash
# chaos.sh: runs the hostile scenarios against fresh systems and prints one table (never in CI).
#
# Usage: scripts/chaos.sh [--quick]
#   Installs what the runs need (scripts/deps.sh, plus h2load from nghttp2-client), builds the
#   release binaries, then runs, each on its own PostgreSQL cluster and services:
#   1. tests/chaos/chaos.py: PersistInbound, signed LINE webhooks and SendText under load across
#      a PostgreSQL fast and immediate restart and a SIGKILL of each service; every key checked
#      afterwards for loss and duplicates, after every unacknowledged call was retried with the
#      same key; time to recover and calls failed after the broken part was back;
#   2. scripts/grpc-memory.py bodies: peak and settled RSS of persistence under 16 concurrent
#      8 MiB hostile PersistInbound bodies;
#   3. scripts/grpc-memory.py storms: RSS after 45 storms of 1,000 connections (h2load);
#   4. tests/chaos/http_slow_clients.py: signed webhook latency with 2,000 slow connections open.
#   --quick: shorter phases and fewer rounds (a smoke run of the script itself, minutes).
#   Logs: var/chaos/*.log. Exit 1 when anything acknowledged was lost or stored twice, or a
#   part could not run. Figures of the last full run on record: docs/reliability.md.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

quick=0
case ${1:-} in
"") ;;
--quick) quick=1 ;;
*)
    echo "usage: scripts/chaos.sh [--quick]" >&2
    exit 2
    ;;
esac

bash scripts/deps.sh >/dev/null || exit 1
if ! command -v h2load >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get -y -q install --no-install-recommends nghttp2-client \
        >/dev/null || {
        apt-get -q update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get -y -q install \
            --no-install-recommends nghttp2-client >/dev/null
    } || exit 1
fi
bash scripts/build.sh release >/dev/null || exit 1

OUT=$ROOT/var/chaos
mkdir -p "$OUT"
export OMNICHAT_BIN_DIR=$ROOT/build/bin PYTHONDONTWRITEBYTECODE=1
PY=/usr/bin/python3
failed=0

if ((quick)); then
    chaos_args=(--warm 1 --after 2 --callers 8)
    bodies_args=(--concurrent 4 --mib 2)
    storm_args=(--rounds 3 --clients 200 --requests 2000)
    slow_args=(--slow 300 --duration 8)
else
    chaos_args=()
    bodies_args=()
    storm_args=()
    slow_args=()
fi

run() { # run NAME CMD...: output to var/chaos/NAME.log and the terminal
    local name=$1
    shift
    echo "chaos.sh: $name ..." >&2
    "$@" </dev/null 2>&1 | tee "$OUT/$name.log"
    return "${PIPESTATUS[0]}"
}

run data-path "$PY" tests/chaos/chaos.py --json "$OUT/data-path.json" "${chaos_args[@]}" ||
    failed=1
run bodies "$PY" scripts/grpc-memory.py bodies "${bodies_args[@]}" || failed=1
run storms "$PY" scripts/grpc-memory.py storms "${storm_args[@]}" || failed=1
run slow-clients "$PY" tests/chaos/http_slow_clients.py "${slow_args[@]}" || failed=1

echo
echo "## chaos.sh summary ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(uname -r))"
echo
sed -n '/^| scenario/,$p' "$OUT/data-path.log"
echo
echo "| hostile input | figure |"
echo "|---|---|"
printf '| %s | %s |\n' "16 x 8 MiB PersistInbound bodies" \
    "$(grep -h '^RESULT bodies' "$OUT/bodies.log" | sed 's/^RESULT bodies [^:]*: //')"
printf '| %s | %s |\n' "connection storms (h2load)" \
    "$(grep -h '^RESULT storms' "$OUT/storms.log" | sed 's/^RESULT storms //')"
printf '| %s | %s |\n' "signed webhooks, slow connections open" \
    "$(grep -h '^latency:' "$OUT/slow-clients.log" | sed 's/^latency: //'); $(grep -h '^target' \
        "$OUT/slow-clients.log")"
exit "$failed"
