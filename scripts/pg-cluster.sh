#!/usr/bin/env bash
# pg-cluster.sh: a private PostgreSQL 15 cluster in one directory, reachable by unix socket only.
#
# Usage:
#   pg-cluster.sh init   DIR [PORT]  initdb DIR/data when missing, configure, start, create the
#                                    roles omnichat (owner) and omnichat_app (runtime login) and
#                                    the database omnichat; when DIR/data exists, just start
#   pg-cluster.sh start  DIR         start (no-op when running)
#   pg-cluster.sh stop   DIR         fast shutdown (no-op when stopped or absent)
#   pg-cluster.sh status DIR         prints the state; exit 0 running, 3 stopped, 4 no cluster
#   pg-cluster.sh dsn    DIR owner|app|super   prints a libpq conninfo for database omnichat
#   pg-cluster.sh grant  DIR         GRANT omnichat_runtime TO omnichat_app (after migrations)
#   pg-cluster.sh place  DIR         before init: as root, when the postgres OS user cannot walk
#                                    into DIR's parent (a checkout under /root, mode 0700), make
#                                    DIR a symlink to a directory under /var/lib/omnichat instead;
#                                    no permission of the checkout changes (no-op otherwise)
#   pg-cluster.sh destroy DIR        stop and delete the cluster (and a placed directory)
#
# Layout: DIR/data (PGDATA), DIR/run (socket directory), DIR/postgres.log, DIR/port.
# As root, the server runs as the `postgres` OS user (initdb and postgres refuse root); otherwise
# it runs as the caller. Authentication is `trust`; the socket directory is mode 0700, so only the
# server's OS user and root can connect. Notes go to stderr; stdout carries only dsn/status output.
set -euo pipefail
umask 022

PGBIN=${OMNICHAT_PGBIN:-/usr/lib/postgresql/15/bin}
PROG=pg-cluster.sh
# Unix socket paths are limited to 107 bytes (sizeof sun_path - 1).
SOCK_PATH_MAX=107
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGSERVICE PGOPTIONS PGDATA PGPASSFILE

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}
note() {
    echo "$PROG: $*" >&2
}
usage() {
    sed -n '3,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

IS_ROOT=0
[[ $(id -u) -eq 0 ]] && IS_ROOT=1

# Runs a command as the cluster's OS user, from / so that no unreadable cwd gets in the way.
as_pg() {
    if ((IS_ROOT)); then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

check_install() {
    [[ -x $PGBIN/initdb && -x $PGBIN/pg_ctl && -x $PGBIN/postgres ]] ||
        die "PostgreSQL 15 server binaries not found in $PGBIN (run scripts/deps.sh as root)"
    if ((IS_ROOT)); then
        id -u postgres >/dev/null 2>&1 ||
            die "OS user 'postgres' does not exist (install postgresql-15: scripts/deps.sh)"
        command -v runuser >/dev/null || die "runuser not found (install util-linux)"
    fi
}

# Absolute, normalised path (symlinks resolved) of a directory that may not exist yet.
abspath() {
    local p=$1
    [[ $p == /* ]] || p=$PWD/$p
    realpath -m -- "$p"
}

# Socket directory: DIR/run, or a short directory under /tmp when DIR/run would make the
# socket path too long. Deterministic, so every subcommand finds the same one.
sock_dir_for() {
    local dir=$1 port=$2 s="$1/run"
    if ((${#s} + ${#port} + 10 > SOCK_PATH_MAX)); then # "/.s.PGSQL." is 10 bytes
        s="/tmp/omnichat-pg-$(printf '%s' "$dir" | md5sum | cut -c1-12)"
    fi
    printf '%s\n' "$s"
}

cluster_port() {
    local dir=$1 p=""
    if [[ -s $dir/port ]]; then
        p=$(<"$dir/port")
    elif [[ -f $dir/data/postgresql.conf ]]; then
        p=$(sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]\{1,5\}\).*/\1/p' \
            "$dir/data/postgresql.conf" | tail -n 1)
    fi
    [[ $p =~ ^[0-9]+$ ]] || die "no cluster in $dir (run: $PROG init $dir)"
    printf '%s\n' "$p"
}

# TCP ports in LISTEN state, from /proc (no iproute2 needed).
listening_ports() {
    local f _sl local_addr _rem st _rest
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        while read -r _sl local_addr _rem st _rest; do
            [[ $st == 0A ]] && echo $((16#${local_addr##*:}))
        done < <(tail -n +2 "$f")
    done
}

pick_port() {
    local used p i
    used=" $(listening_ports | tr '\n' ' ') "
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $used == *" $p "* ]] || {
            echo "$p"
            return 0
        }
    done
    die "could not find a free port"
}

# With root, postgres must be able to reach DIR: every ancestor needs search (x) permission.
# (DIR itself is chowned to postgres later.)
check_traversable() {
    local dir=$1 parent a parts=() cur=""
    ((IS_ROOT)) || return 0
    parent=$(dirname -- "$dir")
    if as_pg test -x "$parent"; then
        return 0
    fi
    IFS=/ read -r -a parts <<<"${parent#/}"
    for a in "${parts[@]}"; do
        cur="$cur/$a"
        if ! as_pg test -x "$cur"; then
            die "the OS user 'postgres' cannot enter $cur, so it cannot use $dir" \
                "($(stat -c '%A %U:%G' "$cur")). Put the cluster elsewhere, or allow traversal" \
                "with: chmod o+x $cur"
        fi
    done
    die "the OS user 'postgres' cannot enter $parent"
}

# Creates DIR/run (or the /tmp fallback) with mode 0700, owned by the server's user.
prepare_dirs() {
    local dir=$1 sock=$2
    mkdir -p "$sock"
    chmod 0700 "$sock"
    if ((IS_ROOT)); then
        chown postgres:postgres "$dir" "$sock"
        [[ -e $dir/postgres.log ]] && chown postgres:postgres "$dir/postgres.log"
    fi
    return 0
}

is_running() {
    as_pg "$PGBIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

psql_super() {
    local dir=$1 port sock
    shift
    port=$(cluster_port "$dir")
    sock=$(sock_dir_for "$dir" "$port")
    PGOPTIONS='-c client_min_messages=warning' \
        "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$sock" -p "$port" -U postgres "$@"
}

cmd_start() {
    local dir=$1 port sock
    [[ -f $dir/data/PG_VERSION ]] || die "no cluster in $dir (run: $PROG init $dir)"
    port=$(cluster_port "$dir")
    sock=$(sock_dir_for "$dir" "$port")
    prepare_dirs "$dir" "$sock"
    if is_running "$dir"; then
        note "already running: $dir (socket $sock, port $port)"
        return 0
    fi
    if ! as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >&2; then
        echo "--- last lines of $dir/postgres.log ---" >&2
        tail -n 30 "$dir/postgres.log" >&2 || true
        die "could not start the cluster in $dir"
    fi
    note "started: $dir (socket $sock, port $port, log $dir/postgres.log)"
}

sql_quote() {
    printf "%s" "${1//\'/\'\'}"
}

cmd_init() {
    local dir=$1 want_port=${2:-} port sock
    if [[ -n $want_port ]]; then
        if ! [[ $want_port =~ ^[0-9]{4,5}$ ]] || ((want_port < 1024 || want_port > 65535)); then
            die "PORT must be a number between 1024 and 65535, not '$want_port'"
        fi
    fi
    mkdir -p "$dir"
    check_traversable "$dir"

    if [[ -e $dir/data ]]; then
        [[ -f $dir/data/PG_VERSION ]] ||
            die "$dir/data exists but is not a PostgreSQL cluster (left by a failed init?): remove it"
        port=$(cluster_port "$dir")
        if [[ -n $want_port && $want_port != "$port" ]]; then
            note "cluster in $dir already exists with port $port; keeping it"
        fi
    else
        port=${want_port:-$(pick_port)}
        sock=$(sock_dir_for "$dir" "$port")
        ((IS_ROOT)) && chown -R postgres:postgres "$dir"
        if ! as_pg "$PGBIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-locale \
            >"$dir/initdb.log" 2>&1; then
            cat "$dir/initdb.log" >&2
            rm -rf "$dir/data"
            die "initdb failed for $dir"
        fi
        cat >>"$dir/data/postgresql.conf" <<EOF

# --- omnichat: written by scripts/pg-cluster.sh ---
listen_addresses = ''
port = $port
unix_socket_directories = '$(sql_quote "$sock")'
max_connections = 300
shared_buffers = 256MB
# Durable commits: benchmarks are compared against pgbench on the same settings.
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_destination = 'stderr'
EOF
        echo "$port" >"$dir/port"
        note "initialised $dir (port $port)"
    fi
    [[ -s $dir/port ]] || echo "$port" >"$dir/port"
    cmd_start "$dir"

    # Idempotent: also repairs a cluster whose first init stopped half-way.
    psql_super "$dir" -d postgres <<'SQL' || die "could not create the roles and database in $dir"
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'omnichat') THEN
        CREATE ROLE omnichat LOGIN CREATEROLE;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'omnichat_app') THEN
        CREATE ROLE omnichat_app LOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;
ALTER ROLE omnichat LOGIN CREATEROLE NOSUPERUSER;
ALTER ROLE omnichat_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEROLE NOCREATEDB;
SELECT 'CREATE DATABASE omnichat OWNER omnichat'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'omnichat')\gexec
SQL
}

cmd_stop() {
    local dir=$1
    if [[ ! -f $dir/data/PG_VERSION ]]; then
        note "no cluster in $dir; nothing to stop"
        return 0
    fi
    if ! is_running "$dir"; then
        note "not running: $dir"
        return 0
    fi
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 ||
        die "could not stop the cluster in $dir"
}

cmd_status() {
    local dir=$1 port sock pid
    if [[ ! -f $dir/data/PG_VERSION ]]; then
        echo "no cluster in $dir"
        return 4
    fi
    port=$(cluster_port "$dir")
    sock=$(sock_dir_for "$dir" "$port")
    if is_running "$dir"; then
        pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || echo "?")
        echo "running: pid $pid, socket $sock, port $port, log $dir/postgres.log"
        return 0
    fi
    echo "stopped: $dir"
    return 3
}

# libpq conninfo value: quoted only when it needs to be.
conninfo_value() {
    local v=$1
    if [[ $v =~ ^[A-Za-z0-9_./:@+-]+$ ]]; then
        printf '%s' "$v"
    else
        v=${v//\\/\\\\}
        printf "'%s'" "${v//\'/\\\'}"
    fi
}

cmd_dsn() {
    local dir=$1 who=${2:-} user port sock
    case $who in
    owner) user=omnichat ;;
    app) user=omnichat_app ;;
    super) user=postgres ;;
    *) die "dsn: expected owner, app or super, not '$who'" ;;
    esac
    port=$(cluster_port "$dir")
    sock=$(sock_dir_for "$dir" "$port")
    printf 'host=%s port=%s dbname=omnichat user=%s\n' "$(conninfo_value "$sock")" "$port" "$user"
}

cmd_grant() {
    local dir=$1
    is_running "$dir" || die "the cluster in $dir is not running (run: $PROG start $dir)"
    psql_super "$dir" -d omnichat <<'SQL' || die "could not grant omnichat_runtime to omnichat_app in $dir"
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'omnichat_runtime') THEN
        RAISE EXCEPTION 'role omnichat_runtime does not exist: run the migrations first'
            USING HINT = 'omnichat-persistence migrate --database-url "$(pg-cluster.sh dsn DIR owner)"';
    END IF;
END
$$;
GRANT omnichat_runtime TO omnichat_app;
SQL
}

# place: DIR as the caller named it (not resolved: DIR may become the symlink itself).
cmd_place() {
    local link=$1 parent alt
    [[ $link == /* ]] || link=$PWD/$link
    [[ $(id -u) -eq 0 ]] || return 0
    [[ -L $link || -d $link/data ]] && return 0
    parent=$(dirname "$link")
    mkdir -p "$parent"
    if (cd / && runuser -u postgres -- test -x "$parent"); then
        return 0
    fi
    # An empty directory left by an earlier failed attempt.
    if [[ -d $link ]]; then rmdir "$link" 2>/dev/null || true; fi
    [[ -e $link ]] && die "$link exists and the postgres user cannot reach it; remove it or chmod o+x the directories above it"
    alt=/var/lib/omnichat/$(basename "$link")-$(printf '%s' "$(realpath -m -- "$link")" | md5sum | cut -c1-12)
    mkdir -p "$alt"
    chmod 0755 /var/lib/omnichat
    ln -s "$alt" "$link"
    note "the postgres user cannot enter $parent; the cluster lives in $alt ($link links there)"
}

cmd_destroy() {
    local link=$1 dir=$2
    [[ $link == /* ]] || link=$PWD/$link
    cmd_stop "$dir" >/dev/null 2>&1 || true
    if [[ -L $link ]]; then rm -rf "$(readlink -f "$link")"; fi
    rm -rf "$link"
}

main() {
    [[ $# -ge 2 ]] || usage
    local cmd=$1 dir given=$2
    [[ -n $2 ]] || die "DIR must not be empty"
    dir=$(abspath "$2")
    shift 2
    case $cmd in
    init)
        [[ $# -le 1 ]] || usage
        check_install
        cmd_init "$dir" "$@"
        ;;
    start)
        [[ $# -eq 0 ]] || usage
        check_install
        cmd_start "$dir"
        ;;
    stop)
        [[ $# -eq 0 ]] || usage
        check_install
        cmd_stop "$dir"
        ;;
    status)
        [[ $# -eq 0 ]] || usage
        check_install
        cmd_status "$dir"
        ;;
    dsn)
        [[ $# -eq 1 ]] || usage
        cmd_dsn "$dir" "$1"
        ;;
    grant)
        [[ $# -eq 0 ]] || usage
        check_install
        cmd_grant "$dir"
        ;;
    place)
        [[ $# -eq 0 ]] || usage
        cmd_place "$given"
        ;;
    destroy)
        [[ $# -eq 0 ]] || usage
        check_install
        cmd_destroy "$given" "$dir"
        ;;
    *) usage ;;
    esac
}

main "$@"
