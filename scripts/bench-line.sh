#!/usr/bin/env bash
# bench-line.sh: the connector benchmark (LINE, or Meta), end to end, in one command.
#
# Usage: scripts/bench-line.sh [--provider line|meta] [--duration SECONDS] [--ref-duration SECONDS]
#                              [--keep]
#   --provider P      which connector: line (default: omnichat-line-sim and
#                     omnichat-connector-line; results in var/bench-line) or meta
#                     (omnichat-graph-sim and omnichat-connector-meta, facebook channels;
#                     results in var/bench-meta)
#   --duration S      seconds of each main phase (SendText, webhook k=1, webhook k=10; default 15)
#   --ref-duration S  seconds of the simulator's raw send reference (default 10)
#   --keep            leave the cluster in var/bench-<provider>/pg running afterwards
#
# Steps: release build -> fresh PostgreSQL cluster in var/bench-line/pg with durable commits ->
# migrations -> runtime grant -> cursor key and vault key (omnichatctl vault-keygen) ->
# omnichat-persistence (--workers 64) -> omnichat-line-sim -> omnichat-connector-line pointed at
# the simulator (--workers 64 --http-threads 64) -> omnichat-bench-line: 8 bots over 4 tenants
# connected with Connector/ConnectChannel, one conversation for each of 256 users made by a
# signed webhook, then SendText at 64 concurrent calls and webhook ingest at 64 concurrent POSTs
# (1 and 10 events per POST), each beside its references (raw pushes straight to the
# simulator; the same persistence calls made directly), exactly-once checks (simulator
# deliveries vs SENT replies; stored rows vs accepted events) and peak RSS ->
# var/bench-<provider>/results.{json,md} -> the "LINE connector" (or "Meta connector") section of
# docs/benchmarks.md. The same program drives both: omnichat-bench-line --provider (a driver per
# provider, tools/bench-line/driver_*.c).
#
# Environment:
#   BENCH_BUILD_DIR   build here with CMake (RelWithDebInfo, -Werror) instead of
#                     scripts/build.sh release (build/)
#   BENCH_SKIP_BUILD  1: use the binaries already in the build directory
#   BENCH_NO_DOC      1: do not touch docs/benchmarks.md
#   BENCH_EXTRA_ARGS  more omnichat-bench-line options, for experiments (e.g. --phases ingest
#                     --ordered-batches); a run with them never touches docs/benchmarks.md
#   BENCH_WRAP_CONNECTOR, BENCH_WRAP_PERSISTENCE
#                     a command prefix for that service, for profiles (e.g. "valgrind
#                     --tool=callgrind"); the hook of --phase-hook finds the services' pids in
#                     BENCH_CONNECTOR_PID and BENCH_PERSISTENCE_PID
# The figures are results, not pass/fail tests: the exit status is 0 whenever the run completed,
# whatever PASS/MISS says. Heavy (about 2 minutes after the build); never part of CI.
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

PROG=bench-line.sh
PROVIDER=line
PGC=(bash "$ROOT/scripts/pg-cluster.sh")
PGBIN=${OMNICHAT_PGBIN:-/usr/lib/postgresql/15/bin}
DURATION=15
REF_DURATION=10
KEEP=0
THREADS=64
TENANTS=4
CHANNELS=8
USERS=256
K=10
CMDLINE="${BENCH_BUILD_DIR:+BENCH_BUILD_DIR=$BENCH_BUILD_DIR }scripts/bench-line.sh${*:+ $*}"

# shellcheck source=scripts/bench-common.sh
source "$ROOT/scripts/bench-common.sh"

while [[ $# -gt 0 ]]; do
    case $1 in
    --duration | --ref-duration)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ && $2 -ge 1 && $2 -le 600 ]] ||
            die "$1 needs a number of seconds (1..600)"
        if [[ $1 == --duration ]]; then DURATION=$2; else REF_DURATION=$2; fi
        shift 2
        ;;
    --keep)
        KEEP=1
        shift
        ;;
    --provider)
        [[ $# -ge 2 && ($2 == line || $2 == meta) ]] || die "--provider needs line or meta"
        PROVIDER=$2
        shift 2
        ;;
    -h | --help)
        sed -n '3,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

OUT=$ROOT/var/bench-$PROVIDER
PG=$OUT/pg
if [[ $PROVIDER == line ]]; then
    SIM=line-sim
    CONN=connector-line
    SECTION="LINE connector"
    NOTES=line-notes
else
    SIM=graph-sim
    CONN=connector-meta
    SECTION="Meta connector"
    NOTES=meta-notes
fi

# Processes this script started, stopped in reverse order on exit (by pid, never by name).
PIDS=()
stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${PIDS[i]}"
    done
    if ((KEEP == 0)) && [[ -f $PG/data/PG_VERSION ]]; then
        "${PGC[@]}" stop "$PG" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME LOGFILE BINARY ARGS...: starts a service in the background and waits for its
# {"msg":"listening",...} log line, which it leaves in LISTEN_LINE.
LISTEN_LINE=
start() {
    local name=$1 log=$2 pid
    shift 2
    : >"$log"
    "$@" </dev/null >"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    LISTEN_LINE=
    for _ in $(seq 300); do
        LISTEN_LINE=$(grep -m 1 -E '"msg"[[:space:]]*:[[:space:]]*"listening"' "$log" || true)
        [[ -n $LISTEN_LINE ]] && break
        kill -0 "$pid" 2>/dev/null || {
            tail -n 20 "$log" >&2
            die "$name exited during start-up (see $log)"
        }
        sleep 0.1
    done
    [[ -n $LISTEN_LINE ]] || die "$name did not report listening (see $log)"
    LAST_PID=$pid
}
json_num() {
    sed -nE "s/.*\"$2\"[[:space:]]*:[[:space:]]*([0-9]+).*/\1/p" <<<"$1" | head -n 1
}

for tool in cmake gcc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh as root first"
done
[[ -x $PGBIN/psql ]] || die "psql not found in $PGBIN (scripts/deps.sh)"

step "build (release)"
TARGETS=(omnichat-persistence "omnichat-$CONN" "omnichat-$SIM" omnichatctl omnichat-bench-line)
if [[ -n ${BENCH_BUILD_DIR:-} ]]; then
    BUILD=$(realpath -m -- "$BENCH_BUILD_DIR")
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOMNICHAT_WERROR=ON \
            -DOMNICHAT_SANITIZE=OFF >/dev/null
        cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}"
    fi
else
    BUILD=$ROOT/build
    [[ ${BENCH_SKIP_BUILD:-0} == 1 ]] || bash "$ROOT/scripts/build.sh" release
fi
BIN=$BUILD/bin
for t in "${TARGETS[@]}"; do
    [[ -x $BIN/$t ]] || die "$BIN/$t not found (did the build succeed?)"
done
grep -q 'RelWithDebInfo\|Release' "$BUILD/CMakeCache.txt" 2>/dev/null ||
    die "$BUILD is not a release build"
if grep -q '^OMNICHAT_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
    die "$BUILD is a sanitizer build; benchmarks need a release build"
fi

step "database (fresh cluster in $PG)"
mkdir -p "$OUT"
bench_fresh_cluster "$PG" "$BIN/omnichat-persistence"
psql_super() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$SUPER_DSN" "$@"; }

step "secrets"
(
    umask 077
    head -c 32 /dev/urandom | base64 -w 0 >"$OUT/cursor.key"
    # Meta signs webhooks with the app's secret, and checks the subscription's verify token.
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/app.secret"
    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OUT/verify.token"
    {
        echo "# Omnichat vault keys (docs/vault.md), for the benchmark only."
        "$BIN/omnichatctl" vault-keygen --key-id "bench-line-$(date -u +%Y%m%d)"
    } >"$OUT/vault.key"
) || die "could not make the keys"

step "services"
PST_FLAGS=(--workers 64)
if [[ $PROVIDER == line ]]; then
    SIM_FLAGS=(--threads 64 --max-requests 2000000 --max-record-mb 2048)
else
    SIM_FLAGS=(--threads 64 --max-requests 2000000)
fi
CONN_FLAGS=(--workers 64 --http-threads 64)
read -r -a WRAP_PST <<<"${BENCH_WRAP_PERSISTENCE:-}"
read -r -a WRAP_CONN <<<"${BENCH_WRAP_CONNECTOR:-}"
start persistence "$OUT/persistence.log" "${WRAP_PST[@]}" "$BIN/omnichat-persistence" serve \
    --database-url "$APP_DSN" --cursor-key-file "$OUT/cursor.key" \
    --grpc-listen 127.0.0.1:0 --admin-listen '' --log-level info "${PST_FLAGS[@]}"
PST_PID=$LAST_PID
PST_PORT=$(json_num "$LISTEN_LINE" grpc_port)
[[ -n $PST_PORT ]] || die "persistence did not report its port"

start "$SIM" "$OUT/$SIM.log" "$BIN/omnichat-$SIM" --listen 127.0.0.1:0 \
    --log-level info "${SIM_FLAGS[@]}"
SIM_PID=$LAST_PID
SIM_PORT=$(json_num "$LISTEN_LINE" port)
[[ -n $SIM_PORT ]] || die "$SIM did not report its port"
SIM_URL=http://127.0.0.1:$SIM_PORT

if [[ $PROVIDER == line ]]; then
    PROVIDER_FLAGS=(--line-api-base "$SIM_URL")
    BENCH_PROVIDER=(--provider line)
else
    PROVIDER_FLAGS=(--meta-api-base "$SIM_URL" --app-secret-file "$OUT/app.secret"
        --verify-token-file "$OUT/verify.token")
    BENCH_PROVIDER=(--provider meta --app-secret-file "$OUT/app.secret")
fi
start "$CONN" "$OUT/$CONN.log" "${WRAP_CONN[@]}" "$BIN/omnichat-$CONN" \
    --grpc-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --persistence-target "127.0.0.1:$PST_PORT" "${PROVIDER_FLAGS[@]}" \
    --vault-key-file "$OUT/vault.key" --log-level info "${CONN_FLAGS[@]}"
CONN_PID=$LAST_PID
CONN_GRPC=$(json_num "$LISTEN_LINE" grpc_port)
CONN_HTTP=$(json_num "$LISTEN_LINE" http_port)
[[ -n $CONN_GRPC && -n $CONN_HTTP ]] || die "the connector did not report its ports"
echo "$PROG: persistence pid $PST_PID (127.0.0.1:$PST_PORT), $SIM pid $SIM_PID ($SIM_URL)," \
    "connector pid $CONN_PID (gRPC 127.0.0.1:$CONN_GRPC, HTTP 127.0.0.1:$CONN_HTTP)"
FLAGS="omnichat-persistence ${PST_FLAGS[*]}; omnichat-$SIM ${SIM_FLAGS[*]}; omnichat-$CONN ${CONN_FLAGS[*]} (other flags at their defaults; logs at info)"

step "benchmark"
PM_PID=$(head -n 1 "$PG/data/postmaster.pid")
read -r load1 _ </proc/loadavg
if awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    echo "$PROG: warning: load average $load1 on $(nproc) cores before the benchmark:" \
        "other processes will slow the figures down (the report shows their CPU share)" >&2
fi
read -r -a EXTRA <<<"${BENCH_EXTRA_ARGS:-}"
export BENCH_CONNECTOR_PID=$CONN_PID BENCH_PERSISTENCE_PID=$PST_PID
"$BIN/omnichat-bench-line" --connector "127.0.0.1:$CONN_GRPC" --persistence "127.0.0.1:$PST_PORT" \
    --webhook-base "http://127.0.0.1:$CONN_HTTP" --sim-base "$SIM_URL" --super-dsn "$SUPER_DSN" \
    --connector-pid "$CONN_PID" --persistence-pid "$PST_PID" --sim-pid "$SIM_PID" \
    --postgres-pid "$PM_PID" --duration "$DURATION" --ref-duration "$REF_DURATION" \
    --threads "$THREADS" --tenants "$TENANTS" --channels "$CHANNELS" --users "$USERS" --k "$K" \
    --out-dir "$OUT" --flags "$FLAGS" "${BENCH_PROVIDER[@]}" "${EXTRA[@]}" ||
    die "the benchmark program failed"

for svc in persistence "$CONN" "$SIM"; do
    if grep -q '"level":"error"' "$OUT/$svc.log"; then
        echo "$PROG: $svc logged errors during the run (see $OUT/$svc.log)" >&2
    fi
done

# --- the record -------------------------------------------------------------------------------
# The section lives between "<!-- analysis:begin: LINE connector" and "<!-- analysis:end: LINE
# connector" lines: scripts/bench-persistence.sh rewrites docs/benchmarks.md but carries every
# "<!-- analysis:begin ... <!-- analysis:end" block over, so each benchmark keeps the other's
# section. Hand-written notes between "<!-- line-notes:begin" and "<!-- line-notes:end" survive
# this script's own regeneration.
if [[ ${BENCH_NO_DOC:-0} != 1 && -z ${BENCH_EXTRA_ARGS:-}${BENCH_WRAP_CONNECTOR:-}${BENCH_WRAP_PERSISTENCE:-} ]]; then
    step "docs/benchmarks.md"
    DOC=$ROOT/docs/benchmarks.md
    model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
    mem_gb=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
    pgver=$(psql_super -At -c 'SHOW server_version')
    durable=$(psql_super -At -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                                   FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit',
                                   'full_page_writes', 'shared_buffers', 'max_wal_size',
                                   'wal_sync_method', 'max_connections', 'commit_delay')")
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && echo " (with uncommitted changes)" || true)
    section=$OUT/section.md
    {
        echo "<!-- analysis:begin: $SECTION (written by scripts/bench-line.sh; edit only between the $NOTES markers) -->"
        cat <<EOF
## $SECTION

Figures of the last run of the $SECTION benchmark. They are results, not tests: a MISS is
reported here as measured, never hidden. Regenerate this section with the one command below
(about 2 minutes after the build; it rewrites only this section).

\`\`\`
$CMDLINE
\`\`\`

What it does: a release build; a fresh PostgreSQL cluster in \`var/bench-$PROVIDER/pg\` (durable
commits); the migrations and the runtime grant; a vault key from \`omnichatctl vault-keygen\`;
\`omnichat-persistence\`, \`omnichat-$SIM\` and \`omnichat-$CONN\` (pointed at the
simulator); then \`omnichat-bench-line --provider $PROVIDER\`, which connects $CHANNELS channels of $TENANTS tenants through
\`Connector/ConnectChannel\`, makes one conversation for each of $USERS users with a signed
webhook, and runs each phase with $THREADS blocking callers: SendText (unique idempotency keys,
over the conversations), signed webhook POSTs with 1 and $K message events (libcurl,
keep-alive, unique message ids), and beside them the references: pushes straight to the
simulator (the provider-side ceiling) and the same persistence calls without the connector
(CreateOutbound+CompleteOutbound pairs as SendText makes them; PersistInbound with the
webhook's batches), each as many calls as the main phase made. Afterwards it matches the
simulator's delivery log to the SENT replies, and every stored event to the POST that carried it.
Raw figures: \`var/bench-$PROVIDER/results.json\`.

### Machine

| | |
|---|---|
| Date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| CPU | ${model:-unknown}, $(nproc) cores |
| RAM | $mem_gb GiB |
| Kernel | $(uname -sr) |
| OS | $(. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-unknown}") |
| PostgreSQL | $pgver ($durable) |
| Build | RelWithDebInfo (-O2 -g), commit $commit$dirty |
| Services | $FLAGS |

Client, connector, persistence, simulator and PostgreSQL share the same cores; the client's own
CPU use is part of every figure.

EOF
        cat "$OUT/results.md"
        if [[ -f $DOC ]] && grep -q "^<!-- $NOTES:begin" "$DOC"; then
            echo
            sed -n "/^<!-- $NOTES:begin/,/^<!-- $NOTES:end/p" "$DOC"
        fi
        echo "<!-- analysis:end: $SECTION -->"
    } >"$section"
    if [[ -f $DOC ]] && grep -q "^<!-- analysis:begin: $SECTION" "$DOC"; then
        # Replace the old section in place; everything else stays as it is.
        awk -v sec="$section" -v begin="<!-- analysis:begin: $SECTION" -v end="<!-- analysis:end: $SECTION" '
            index($0, begin) == 1 { while ((getline l < sec) > 0) print l; skip = 1; next }
            skip && index($0, end) == 1 { skip = 0; next }
            !skip { print }
        ' "$DOC" >"$DOC.line.tmp"
    else
        { [[ -f $DOC ]] && cat "$DOC" && echo; cat "$section"; } >"$DOC.line.tmp"
    fi
    mv -f "$DOC.line.tmp" "$DOC"
    echo "$PROG: wrote the $SECTION section of docs/benchmarks.md"
fi
echo "$PROG: results in $OUT/results.json and $OUT/results.md"
