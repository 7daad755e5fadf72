#!/usr/bin/env bash
# bench-common.sh: what both benchmark scripts share; sourced, never run. Needs ROOT, PROG, PGC,
# PGBIN set by the caller; defines die, step, and bench_fresh_cluster.

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}
step() {
    printf '\n==> %s\n' "$*"
}

# bench_fresh_cluster DIR SVC: a new cluster in DIR with durable commits, migrated by SVC (the
# omnichat-persistence binary) and granted, with pg_stat_statements loaded and created in the
# database (after a run: SELECT ... FROM pg_stat_statements as the superuser); sets SUPER_DSN,
# OWNER_DSN and APP_DSN.
bench_fresh_cluster() {
    local dir=$1 svc=$2
    "${PGC[@]}" destroy "$dir"
    "${PGC[@]}" place "$dir"
    "${PGC[@]}" init "$dir"
    # The callers use the three DSNs.
    # shellcheck disable=SC2034
    SUPER_DSN=$("${PGC[@]}" dsn "$dir" super)
    OWNER_DSN=$("${PGC[@]}" dsn "$dir" owner)
    # shellcheck disable=SC2034
    APP_DSN=$("${PGC[@]}" dsn "$dir" app)
    # Durable commits (pg-cluster.sh sets them too; this keeps the figures independent of that).
    # The bench programs force a checkpoint before each write phase; a large max_wal_size and
    # checkpoint_timeout keep another from landing inside a phase.
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$SUPER_DSN" >/dev/null <<'SQL'
ALTER SYSTEM SET fsync = on;
ALTER SYSTEM SET synchronous_commit = on;
ALTER SYSTEM SET full_page_writes = on;
ALTER SYSTEM SET max_wal_size = '4GB';
ALTER SYSTEM SET checkpoint_timeout = '30min';
ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements';
SQL
    # pg_stat_statements (per-statement calls, time, WAL and buffers, nested statements of the
    # SQL functions included) needs a restart to load.
    "${PGC[@]}" stop "$dir"
    "${PGC[@]}" start "$dir"
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$SUPER_DSN" >/dev/null <<'SQL'
ALTER SYSTEM SET pg_stat_statements.track = 'all';
SELECT pg_reload_conf();
CREATE EXTENSION pg_stat_statements;
SQL
    sleep 0.5
    "$svc" migrate --database-url "$OWNER_DSN" --log-level warn || die "migrations failed"
    "${PGC[@]}" grant "$dir"
}
