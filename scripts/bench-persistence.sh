#!/usr/bin/env bash
# bench-persistence.sh: the persistence benchmark, end to end, in one command.
#
# Usage: scripts/bench-persistence.sh [--duration SECONDS] [--keep]
#   --duration S  seconds of each timed write phase (default 10; list phases take S/2, >= 3)
#   --keep        leave the cluster in var/bench/pg running afterwards (default: stop it)
#
# Steps: release build -> fresh PostgreSQL cluster in var/bench/pg with durable commits ->
# migrations -> runtime grant -> seed (20 tenants, 19,500 conversations, ~1.02M messages, one
# conversation of 200,000, one tenant of 10,000 conversations) -> omnichat-persistence
# (--workers 64) -> omnichat-bench-persistence (PersistInbound new/duplicate at 1, 8, 64 beside
# pgbench on the same concurrency; ListMessages first/deep pages; ListConversations; service
# peak RSS; reference SQL through libpq) -> var/bench/results.{json,md} -> docs/benchmarks.md.
#
# Environment:
#   BENCH_BUILD_DIR   build here with CMake (RelWithDebInfo, -Werror) instead of
#                     scripts/build.sh release (build/)
#   BENCH_SKIP_BUILD  1: use the binaries already in the build directory
#   BENCH_NO_DOC      1: do not rewrite docs/benchmarks.md
# The figures are results, not pass/fail tests: the exit status is 0 whenever the run completed,
# whatever PASS/MISS says. Heavy: about 5 minutes and 2.5 GB of disk; never part of CI.
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

PROG=bench-persistence.sh
BENCH=$ROOT/var/bench
PG=$BENCH/pg
PGC=(bash "$ROOT/scripts/pg-cluster.sh")
PGBIN=${OMNICHAT_PGBIN:-/usr/lib/postgresql/15/bin}
DURATION=10
KEEP=0
CMDLINE="${BENCH_BUILD_DIR:+BENCH_BUILD_DIR=$BENCH_BUILD_DIR }scripts/bench-persistence.sh${*:+ $*}"

# shellcheck source=scripts/bench-common.sh
source "$ROOT/scripts/bench-common.sh"

while [[ $# -gt 0 ]]; do
    case $1 in
    --duration)
        [[ $# -ge 2 && $2 =~ ^[0-9]+$ && $2 -ge 1 && $2 -le 600 ]] ||
            die "--duration needs a number of seconds (1..600)"
        DURATION=$2
        shift 2
        ;;
    --keep)
        KEEP=1
        shift
        ;;
    -h | --help)
        sed -n '3,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# Seed shape. The issue asks for >= 1,000,000 messages, >= 10,000 conversations, 20 tenants,
# one conversation of >= 200,000 messages; tenant 1 is the inbox of 10,000 conversations.
TENANTS=20
BIG_TENANT_CONVS=10000
OTHER_CONVS=500
BIG_TENANT_AVG=40 # messages per conversation, on average (1 .. 2*avg-1)
OTHER_AVG=44
BIG_CONV_MSGS=200000

SERVICE_PID=
cleanup() {
    local rc=$?
    if [[ -n $SERVICE_PID ]] && kill -0 "$SERVICE_PID" 2>/dev/null; then
        kill -TERM "$SERVICE_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$SERVICE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVICE_PID" 2>/dev/null || true
        wait "$SERVICE_PID" 2>/dev/null || true
    fi
    if ((KEEP == 0)) && [[ -f $PG/data/PG_VERSION ]]; then
        "${PGC[@]}" stop "$PG" >/dev/null 2>&1 || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in cmake gcc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh as root first"
done
[[ -x $PGBIN/pgbench && -x $PGBIN/psql ]] || die "pgbench/psql not found in $PGBIN (scripts/deps.sh)"

step "build (release)"
if [[ -n ${BENCH_BUILD_DIR:-} ]]; then
    BUILD=$(realpath -m -- "$BENCH_BUILD_DIR")
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOMNICHAT_WERROR=ON \
            -DOMNICHAT_SANITIZE=OFF >/dev/null
        cmake --build "$BUILD" -j "$(nproc)" --target omnichat-persistence omnichat-bench-persistence
    fi
else
    BUILD=$ROOT/build
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        if [[ -f $ROOT/scripts/build.sh ]]; then
            bash "$ROOT/scripts/build.sh" release
        else
            cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOMNICHAT_WERROR=ON
            cmake --build "$BUILD" -j "$(nproc)"
        fi
    fi
fi
SVC=$BUILD/bin/omnichat-persistence
BENCHBIN=$BUILD/bin/omnichat-bench-persistence
[[ -x $SVC ]] || die "$SVC not found (did the build succeed?)"
[[ -x $BENCHBIN ]] || die "$BENCHBIN not found (did the build succeed?)"
grep -Eq '^CMAKE_BUILD_TYPE:STRING=(RelWithDebInfo|Release)$' "$BUILD/CMakeCache.txt" 2>/dev/null ||
    die "$BUILD is not a release build"
if grep -q '^OMNICHAT_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
    die "$BUILD is a sanitizer build; benchmarks need a release build"
fi

step "database (fresh cluster in $PG)"
mkdir -p "$BENCH"
bench_fresh_cluster "$PG" "$SVC"
psql_super() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$SUPER_DSN" "$@"; }
psql_owner() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$OWNER_DSN" "$@"; }

step "seed"
seed_start=$SECONDS
# Everything is made by SQL as the owner (who bypasses row-level security). Ids are derived from
# names (md5), so the bench program and pgbench scripts can compute them too.
psql_owner -v tenants=$TENANTS -v big_tenant_convs=$BIG_TENANT_CONVS -v other_convs=$OTHER_CONVS \
    -v big_tenant_avg=$BIG_TENANT_AVG -v other_avg=$OTHER_AVG -v big_conv_msgs=$BIG_CONV_MSGS <<'SQL'
SET client_min_messages = warning;
CREATE SCHEMA bench;

-- A UUIDv7 for a given time (48-bit milliseconds, version 7, random rest), like the service's.
CREATE FUNCTION bench.uuid7(ts timestamptz) RETURNS uuid LANGUAGE sql VOLATILE AS $$
  SELECT (lpad(to_hex(floor(extract(epoch FROM ts) * 1000)::bigint), 12, '0') || '7'
          || substr(replace(gen_random_uuid()::text, '-', ''), 14))::uuid $$;

-- Message text of about 100 bytes.
CREATE FUNCTION bench.msg_text(k int, n int, i int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
  SELECT (ARRAY['Hi, I ordered a pair of running shoes last week and the tracking page still shows nothing.',
                'Thanks for the quick answer! Could you also tell me whether the store opens on Sunday?',
                'We have received your request and an agent will reply within one business day.',
                'The package arrived but the box was damaged; I attached a photo of the label for you.',
                'Is it possible to change the delivery address to my office? It is on the same street.',
                'Your refund has been issued and should appear on your statement within five days.',
                'Could I get the invoice as a PDF? Our accounting team needs it before the month ends.',
                'Sure, I have updated the reservation for two people on Friday at seven in the evening.'])
         [1 + (i + n) % 8] || ' #' || k || '-' || n || '-' || i $$;

CREATE TABLE bench.seed_tenants AS
SELECT k, md5('omnichat-bench-tenant-' || k)::uuid AS tenant_id,
       md5('omnichat-bench-line-' || k)::uuid AS line_id,
       md5('omnichat-bench-fb-' || k)::uuid AS fb_id,
       CASE WHEN k = 1 THEN :big_tenant_convs ELSE :other_convs END AS nconv,
       CASE WHEN k = 1 THEN :big_tenant_avg ELSE :other_avg END AS avg_msgs
  FROM generate_series(1, :tenants) k;

-- Two channel accounts per tenant: a LINE bot and a Facebook Page.
INSERT INTO omnichat.channel_accounts (tenant_id, id, channel_type, external_account_id,
                                       display_name, last_success_at, created_at, updated_at)
SELECT tenant_id, line_id, 'line', 'U' || md5('bench-line-' || k), 'Bench LINE ' || k,
       now(), now() - interval '2 years', now() - interval '2 years' FROM bench.seed_tenants
UNION ALL
SELECT tenant_id, fb_id, 'facebook', (100000000000000 + k)::text, 'Bench Page ' || k,
       now(), now() - interval '2 years', now() - interval '2 years' FROM bench.seed_tenants;
-- Their webhook routes, as RegisterChannelAccount would have claimed them (0006).
INSERT INTO omnichat.webhook_routes (channel_type, external_account_id, tenant_id,
                                     channel_account_id, created_at)
SELECT channel_type, external_account_id, tenant_id, id, created_at
  FROM omnichat.channel_accounts;

-- One contact per conversation. Conversation n of tenant k: LINE when n is even (thread = the
-- user id), Messenger when odd (thread = "page_id:psid"). nmsg messages, one every `step`,
-- the newest at end_ts (the last 60 days). Tenant 2's conversation 1 is the big one: 200,000
-- messages, one every 100 s, up to an hour ago.
CREATE TABLE bench.seed_convs AS
SELECT t.k, c AS n, t.tenant_id,
       md5('omnichat-bench-conv-' || t.k || '-' || c)::uuid AS id,
       md5('omnichat-bench-contact-' || t.k || '-' || c)::uuid AS contact_id,
       CASE WHEN c % 2 = 0 THEN t.line_id ELSE t.fb_id END AS account_id,
       CASE WHEN c % 2 = 0 THEN 'line' ELSE 'facebook' END AS channel_type,
       CASE WHEN c % 2 = 0 THEN 'U' || md5('bench-user-' || t.k || '-' || c)
            ELSE (200000000000000 + t.k * 1000000 + c)::text END AS external_user_id,
       CASE WHEN t.k = 2 AND c = 1 THEN :big_conv_msgs
            ELSE 1 + abs(hashtext(t.k || ':' || c)) % (2 * t.avg_msgs - 1) END AS nmsg,
       CASE WHEN t.k = 2 AND c = 1 THEN date_trunc('second', now()) - interval '1 hour'
            ELSE date_trunc('second', now())
                 - (3600 + abs(hashtext('end' || t.k || ':' || c)) % (60 * 86400)) * interval '1 second'
       END AS end_ts,
       CASE WHEN t.k = 2 AND c = 1 THEN interval '100 seconds'
            ELSE (30 + abs(hashtext('step' || t.k || ':' || c)) % 7200) * interval '1 second' END AS step
  FROM bench.seed_tenants t, generate_series(1, t.nconv) c;
ALTER TABLE bench.seed_convs ADD PRIMARY KEY (k, n);

INSERT INTO omnichat.contacts (tenant_id, id, channel_account_id, external_user_id, display_name,
                               avatar_url, profile, created_at, updated_at)
SELECT tenant_id, contact_id, account_id, external_user_id, 'Customer ' || k || '-' || n,
       CASE WHEN channel_type = 'line'
            THEN 'https://profile.line-scdn.net/0h' || md5(external_user_id) ELSE '' END,
       '{"language":"en"}', end_ts - nmsg * step - interval '1 minute',
       end_ts - nmsg * step - interval '1 minute'
  FROM bench.seed_convs;

INSERT INTO omnichat.conversations (tenant_id, id, channel_account_id, channel_type, thread_key,
                                    contact_id, last_message_at, last_activity_at,
                                    last_message_preview, message_count, created_at, updated_at)
SELECT tenant_id, id, account_id, channel_type,
       CASE WHEN channel_type = 'line' THEN external_user_id
            ELSE (100000000000000 + k)::text || ':' || external_user_id END,
       contact_id, end_ts, end_ts, left(bench.msg_text(k, n, nmsg), 200), nmsg,
       end_ts - nmsg * step - interval '1 minute', end_ts
  FROM bench.seed_convs;
SQL

# Messages: two sessions (one per core), each inserting every other message of every
# conversation. Two thirds inbound (from the contact), one third outbound (an agent's reply).
seed_messages() {
    psql_owner -v part="$1" <<'SQL'
SET client_min_messages = warning;
INSERT INTO omnichat.messages (tenant_id, id, channel_account_id, conversation_id, contact_id,
                               direction, idempotency_key, external_message_id, sender_type,
                               sender_id, sender_display_name, content_type, content_text,
                               status, attempts, channel_timestamp, created_at, updated_at)
SELECT c.tenant_id, bench.uuid7(x.ts), c.account_id, c.id, c.contact_id,
       CASE WHEN x.inbound THEN 'inbound' ELSE 'outbound' END,
       CASE WHEN x.inbound THEN 'm' ELSE 'o' END || c.k || '-' || c.n || '-' || i,
       CASE WHEN x.inbound THEN 'm' ELSE 'x' END || c.k || '-' || c.n || '-' || i,
       CASE WHEN x.inbound THEN 'contact' ELSE 'agent' END,
       CASE WHEN x.inbound THEN c.external_user_id ELSE 'agent-' || (i % 7) END,
       CASE WHEN x.inbound THEN 'Customer ' || c.k || '-' || c.n ELSE 'Agent ' || (i % 7) END,
       'text', bench.msg_text(c.k, c.n, i),
       CASE WHEN x.inbound THEN 'received' ELSE 'sent' END,
       CASE WHEN x.inbound THEN 0 ELSE 1 END,
       x.ts, x.ts + interval '150 milliseconds', x.ts + interval '150 milliseconds'
  FROM bench.seed_convs c
 CROSS JOIN LATERAL generate_series(1, c.nmsg) i
 CROSS JOIN LATERAL (SELECT c.end_ts - (c.nmsg - i) * c.step AS ts, i % 3 <> 0 AS inbound) x
 WHERE i % 2 = :part;
SQL
}
seed_messages 0 &
p0=$!
seed_messages 1 &
p1=$!
wait "$p0" || die "seeding messages failed"
wait "$p1" || die "seeding messages failed"

# pgbench's table: shaped like omnichat.messages (columns, defaults, checks, the same indexes
# and unique key; no foreign keys, no row-level security), holding a copy of the same rows so
# its indexes are as deep as the service's.
psql_owner <<'SQL'
SET client_min_messages = warning;
SET maintenance_work_mem = '512MB';
CREATE TABLE bench.bench_messages
    (LIKE omnichat.messages INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO bench.bench_messages SELECT * FROM omnichat.messages;
ALTER TABLE bench.bench_messages ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE bench.bench_messages
    ADD UNIQUE (tenant_id, channel_account_id, direction, idempotency_key);
CREATE INDEX ON bench.bench_messages (tenant_id, conversation_id, channel_timestamp, id);
CREATE INDEX ON bench.bench_messages (next_attempt_at)
    WHERE direction = 'outbound' AND status IN ('pending', 'unknown');
CREATE INDEX ON bench.bench_messages (tenant_id, channel_account_id, external_message_id)
    WHERE external_message_id IS NOT NULL;
VACUUM (ANALYZE) omnichat.channel_accounts, omnichat.contacts, omnichat.conversations,
    omnichat.messages, bench.bench_messages, bench.seed_convs, bench.seed_tenants;
SQL
psql_super -c CHECKPOINT
read -r n_msg n_conv n_tenant big_conv big_tenant_convs < <(psql_owner -At -F ' ' <<'SQL'
SELECT (SELECT count(*) FROM omnichat.messages),
       (SELECT count(*) FROM omnichat.conversations),
       (SELECT count(DISTINCT tenant_id) FROM omnichat.conversations),
       (SELECT max(message_count) FROM omnichat.conversations),
       (SELECT max(n) FROM (SELECT count(*) AS n FROM omnichat.conversations GROUP BY tenant_id) x)
SQL
)
echo "$PROG: seeded $n_msg messages, $n_conv conversations, $n_tenant tenants;" \
    "biggest conversation $big_conv messages, biggest inbox $big_tenant_convs conversations" \
    "in $((SECONDS - seed_start)) s"
((n_msg >= 1000000 && n_conv >= 10000 && n_tenant >= 20 && big_conv >= 200000 &&
    big_tenant_convs >= 10000)) || die "the seed is smaller than the issue asks for"

step "service"
(
    umask 077
    head -c 32 /dev/urandom | base64 -w 0 >"$BENCH/cursor.key"
)
SVC_LOG=$BENCH/persistence.log
: >"$SVC_LOG"
"$SVC" serve --database-url "$APP_DSN" --workers 64 --grpc-listen 127.0.0.1:0 --admin-listen '' \
    --cursor-key-file "$BENCH/cursor.key" --log-level info >"$SVC_LOG" 2>&1 </dev/null &
SERVICE_PID=$!
port=
for _ in $(seq 300); do
    line=$(grep -m 1 -E '"msg"[[:space:]]*:[[:space:]]*"listening"' "$SVC_LOG" || true)
    if [[ -n $line ]]; then
        port=$(sed -nE 's/.*"grpc_port"[[:space:]]*:[[:space:]]*([0-9]+).*/\1/p' <<<"$line")
        break
    fi
    kill -0 "$SERVICE_PID" 2>/dev/null || {
        tail -n 20 "$SVC_LOG" >&2
        die "the service exited during start-up (see $SVC_LOG)"
    }
    sleep 0.1
done
[[ -n $port ]] || die "the service did not report listening (see $SVC_LOG)"
echo "$PROG: omnichat-persistence pid $SERVICE_PID on 127.0.0.1:$port (64 workers)"

step "benchmark"
pm_pid=$(head -n 1 "$PG/data/postmaster.pid")
read -r load1 _ </proc/loadavg
if awk -v l="$load1" -v n="$(nproc)" 'BEGIN { exit !(l > n / 2) }'; then
    echo "$PROG: warning: load average $load1 on $(nproc) cores before the benchmark:" \
        "other processes will slow the figures down (the report shows their CPU share)" >&2
fi
"$BENCHBIN" --target "127.0.0.1:$port" --service-pid "$SERVICE_PID" --postgres-pid "$pm_pid" \
    --owner-dsn "$OWNER_DSN" --app-dsn "$APP_DSN" --super-dsn "$SUPER_DSN" \
    --pgbench "$PGBIN/pgbench" --duration "$DURATION" --out-dir "$BENCH" ||
    die "the benchmark program failed"

if grep -q '"level":"error"' "$SVC_LOG"; then
    echo "$PROG: the service logged errors during the run (see $SVC_LOG)" >&2
fi

# --- the record -------------------------------------------------------------------------------
if [[ ${BENCH_NO_DOC:-0} != 1 ]]; then
    step "docs/benchmarks.md"
    model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
    mem_gb=$(awk '/^MemTotal:/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
    pgver=$(psql_owner -At -c 'SHOW server_version')
    durable=$(psql_owner -At -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                                   FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit',
                                   'full_page_writes', 'shared_buffers', 'max_wal_size',
                                   'wal_sync_method', 'max_connections')")
    # Read-only git: --no-optional-locks keeps status from refreshing the index.
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=
    if git --no-optional-locks -C "$ROOT" status --porcelain 2>/dev/null | grep -q .; then
        dirty=" (with uncommitted changes)"
    fi
    os=$(sed -n 's/^PRETTY_NAME="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release 2>/dev/null || true)
    {
        cat <<EOF
# Benchmarks

Figures of the last run of the persistence benchmark. They are results, not tests: a MISS is
reported here as measured, never hidden. The run below was made with this command (about 5
minutes plus the build; it rewrites this file except the analysis at the end):

\`\`\`
$CMDLINE
\`\`\`

\`scripts/bench-persistence.sh\` builds with \`scripts/build.sh release\` (into \`build/\`);
\`BENCH_BUILD_DIR=dir\` builds and runs from another build directory instead, and
\`--duration S\` changes the length of each write phase (default 10 s). Not part of CI.

What it does: a release build; a fresh PostgreSQL cluster in \`var/bench/pg\` (durable commits);
the migrations; a seed made by SQL as the owner role; \`omnichat-persistence --workers 64\`; then
\`omnichat-bench-persistence\`, which drives the service over gRPC with blocking calls from N
threads, runs pgbench at the same concurrency against a table shaped like \`omnichat.messages\`,
times the service's read statements directly through libpq (the reference rows), and samples
the service's memory from \`/proc\`. Raw figures: \`var/bench/results.json\`.

## Machine

| | |
|---|---|
| Date | $(date -u '+%Y-%m-%d %H:%M UTC') |
| CPU | ${model:-unknown}, $(nproc) cores |
| RAM | $mem_gb GiB |
| Kernel | $(uname -sr) |
| OS | ${os:-unknown} |
| PostgreSQL | $pgver ($durable) |
| Build | RelWithDebInfo (-O2 -g), commit $commit$dirty |
| Seed | $n_msg messages, $n_conv conversations, $n_tenant tenants; biggest conversation $big_conv messages; biggest inbox $big_tenant_convs conversations |

Client, service and PostgreSQL share the same cores, as they would on a small node; the client's
own CPU use is part of every figure.

EOF
        cat "$BENCH/results.md"
        # The hand-written analysis between these markers survives regeneration.
        if [[ -f $ROOT/docs/benchmarks.md ]] &&
            grep -q '^<!-- analysis:begin' "$ROOT/docs/benchmarks.md"; then
            echo
            sed -n '/^<!-- analysis:begin/,/^<!-- analysis:end/p' "$ROOT/docs/benchmarks.md"
        fi
    } >"$ROOT/docs/benchmarks.md.tmp"
    mv -f "$ROOT/docs/benchmarks.md.tmp" "$ROOT/docs/benchmarks.md"
    echo "$PROG: wrote docs/benchmarks.md"
fi
echo "$PROG: results in $BENCH/results.json and $BENCH/results.md"
