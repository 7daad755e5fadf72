#!/usr/bin/env bash
# start.sh: installs what is missing, builds, and starts the whole Omnichat system on this machine.
#
# Usage: scripts/start.sh      (as root on a fresh Debian 12; rerunning restarts the services)
#
# Steps: Debian packages (scripts/deps.sh) -> release build (build/) -> private PostgreSQL
# cluster in var/pg (scripts/pg-cluster.sh) -> migrations -> runtime grant -> secrets in
# var/secrets (generated once) -> a private CA and per-service certificates in var/certs
# (scripts/certs.sh; mutual TLS on every gRPC port) -> services in the background (logs in var/log, pids in var/run)
# -> sandbox mode: the LINE API simulator and the LINE connector, the Graph API simulator and the
# Meta connector, connected demo channels (a LINE bot, a Facebook Page and its Instagram
# account) with one conversation each, and the omnichatctl commands to try (docs/omnichatctl.md).
# Stop everything with scripts/stop.sh.
#
# Environment (start.sh's own knobs; the services also read OMNICHAT_* variables themselves):
#   PERSISTENCE_GRPC_LISTEN     default 127.0.0.1:50051
#   PERSISTENCE_ADMIN_LISTEN    default 127.0.0.1:8080
#   OMNICHAT_START_TIMEOUT      seconds to wait for each service to listen (default 60)
#   OMNICHAT_SANDBOX            1 = sandbox mode, 0 = persistence only; default 1 when
#                               omnichat-connector-line was built, else 0
#   CONNECTOR_LINE_GRPC_LISTEN  default 127.0.0.1:50052   (sandbox mode)
#   CONNECTOR_LINE_HTTP_LISTEN  default 127.0.0.1:8081    (sandbox mode; LINE webhooks)
#   LINE_SIM_LISTEN             default 127.0.0.1:8091    (sandbox mode; never expose it)
#   CONNECTOR_META_GRPC_LISTEN  default 127.0.0.1:50053   (sandbox mode)
#   CONNECTOR_META_HTTP_LISTEN  default 127.0.0.1:8082    (sandbox mode; Meta webhooks)
#   GRAPH_SIM_LISTEN            default 127.0.0.1:8092    (sandbox mode; never expose it)
#   SANDBOX_TENANT              default de000000-0000-4000-8000-000000000001 (the demo tenant)
#   OMNICHAT_TLS                1 = mutual TLS between all processes (default), 0 = plaintext
#                               gRPC (the services then warn at start)
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

VAR=$ROOT/var
PG=$VAR/pg
RUN=$VAR/run
LOGS=$VAR/log
SECRETS=$VAR/secrets
CERTS=$VAR/certs
BIN=$ROOT/build/bin
PGC=(bash "$ROOT/scripts/pg-cluster.sh")
START_TIMEOUT=${OMNICHAT_START_TIMEOUT:-60}
PERSISTENCE_GRPC_LISTEN=${PERSISTENCE_GRPC_LISTEN:-127.0.0.1:50051}
PERSISTENCE_ADMIN_LISTEN=${PERSISTENCE_ADMIN_LISTEN:-127.0.0.1:8080}
CONNECTOR_LINE_GRPC_LISTEN=${CONNECTOR_LINE_GRPC_LISTEN:-127.0.0.1:50052}
CONNECTOR_LINE_HTTP_LISTEN=${CONNECTOR_LINE_HTTP_LISTEN:-127.0.0.1:8081}
LINE_SIM_LISTEN=${LINE_SIM_LISTEN:-127.0.0.1:8091}
CONNECTOR_META_GRPC_LISTEN=${CONNECTOR_META_GRPC_LISTEN:-127.0.0.1:50053}
CONNECTOR_META_HTTP_LISTEN=${CONNECTOR_META_HTTP_LISTEN:-127.0.0.1:8082}
GRAPH_SIM_LISTEN=${GRAPH_SIM_LISTEN:-127.0.0.1:8092}
SANDBOX_TENANT=${SANDBOX_TENANT:-de000000-0000-4000-8000-000000000001}
# The demo LINE user who writes to the sandbox bot (U + 32 hex digits, like a real user id).
SANDBOX_USER=Ude00000000000000000000000000c0de
# The demo Messenger user (a page-scoped id) and the sandbox Page and Instagram account of
# omnichat-graph-sim --sandbox.
SANDBOX_PSID=24000000000000001
SANDBOX_PAGE=100000000000001
SANDBOX_IG=17841400000000001

# Who may call what (docs/operations.md): the certificates' names and their roles.
CLIENT_ROLES=connector-line=connector,connector-meta=connector,inbox=inbox,omnichatctl=operator
TLS=${OMNICHAT_TLS:-1}
[[ $TLS == 0 || $TLS == 1 ]] || {
    echo "start.sh: error: OMNICHAT_TLS must be 0 or 1, not '$TLS'" >&2
    exit 1
}

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

# The address a local client dials for a service listening on LISTEN with the real PORT
# (a wildcard listen address is reached over loopback).
dial_addr() {
    local host
    host=$(host_of "$1")
    case $host in
    "" | "*" | 0.0.0.0) host=127.0.0.1 ;;
    "[::]") host="[::1]" ;;
    esac
    printf '%s:%s' "$host" "$2"
}

# After start_service of a simulator: its base URL (in SIM_BASE) and its lines of the summary.
# sim_started NAME LISTEN DESCRIPTION [MORE LINES...] ("<base>" in them: the base URL)
sim_started() {
    local name=$1 listen=$2 port
    shift 2
    port=$(json_field "$LISTEN_LINE" port)
    [[ -n $port ]] || die "$name did not report its port"
    SIM_BASE=http://$(dial_addr "$listen" "$port")
    local more=("${@:2}")
    more=("${more[@]//<base>/$SIM_BASE}") # continuation lines may name the base URL
    SUMMARY+=("$(printf '%-13s http   %s  (%s' "$name" "$SIM_BASE" "$1")" "${more[@]}"
        "              log    $LOGS/$name.log   pid $(cat "$RUN/$name.pid")")
}

# After start_service of a connector: its gRPC address (CONN_GRPC) and webhook base URL
# (CONN_HTTP), and its lines of the summary.
# connector_started NAME GRPC_LISTEN HTTP_LISTEN DEFAULT_GRPC_PORT DEFAULT_HTTP_PORT SERVICES ROUTES
connector_started() {
    local name=$1 grpc_port http_port
    grpc_port=$(json_field "$LISTEN_LINE" grpc_port)
    http_port=$(json_field "$LISTEN_LINE" http_port)
    CONN_GRPC=$(dial_addr "$2" "${grpc_port:-$4}")
    CONN_HTTP=http://$(dial_addr "$3" "${http_port:-$5}")
    SUMMARY+=(
        "$(printf '%-14s gRPC   %s  (%s)' "$name" "$CONN_GRPC" "$6")"
        "              http   $CONN_HTTP/  ($7, /healthz, /metrics)"
        "              log    $LOGS/$name.log   pid $(cat "$RUN/$name.pid")"
    )
}

# ensure_vault_key: var/secrets/vault.key, the connectors' key file (docs/vault.md), made once
# with omnichatctl vault-keygen, mode 0600, never printed. Replacing it would leave every stored
# credential unopenable, so an existing file is kept as it is.
ensure_vault_key() {
    local file=$SECRETS/vault.key
    (
        umask 077
        mkdir -p "$SECRETS"
        chmod 0700 "$SECRETS"
        if [[ ! -s $file ]]; then
            {
                echo "# Omnichat vault keys (docs/vault.md). The first key is the active one."
                "$BIN/omnichatctl" vault-keygen --key-id "local-$(date -u +%Y%m%d)"
            } >"$file.tmp" || die "could not generate $file"
            mv -f "$file.tmp" "$file"
            echo "start.sh: generated $file"
        fi
        chmod 0600 "$file"
    )
}

# sandbox_mode: prints 1 or 0 (OMNICHAT_SANDBOX, or whether the LINE connector was built).
sandbox_mode() {
    local want=${OMNICHAT_SANDBOX:-} bin
    case $want in
    0 | 1 | "") ;;
    *) die "OMNICHAT_SANDBOX must be 0 or 1, not '$want'" ;;
    esac
    if [[ $want == 0 ]]; then
        echo 0
        return
    fi
    for bin in omnichat-connector-line omnichat-line-sim omnichat-connector-meta \
        omnichat-graph-sim omnichatctl; do
        if [[ ! -x $BIN/$bin ]]; then
            [[ $want == 1 ]] && die "OMNICHAT_SANDBOX=1 but $BIN/$bin was not built"
            echo "start.sh: sandbox mode off: $bin was not built (persistence only)" >&2
            echo 0
            return
        fi
    done
    echo 1
}

step "packages"
bash "$ROOT/scripts/deps.sh"

step "build (release)"
bash "$ROOT/scripts/build.sh" release

# Decided right after the build, so that OMNICHAT_SANDBOX=1 without the binaries fails early.
SANDBOX=$(sandbox_mode)

step "database"
mkdir -p "$VAR"
# A checkout under /root (mode 0700) gets its cluster under /var/lib/omnichat, var/pg linking there.
"${PGC[@]}" place "$PG"
"${PGC[@]}" init "$PG"
"$BIN/omnichat-persistence" migrate --database-url "$("${PGC[@]}" dsn "$PG" owner)" ||
    die "migrations failed"
"${PGC[@]}" grant "$PG"

step "secrets"
ensure_secret cursor.key 32

# tls_flags NAME: the TLS flags of a process presenting NAME's certificate (none in plaintext).
tls_flags() {
    [[ $TLS == 1 ]] || return 0
    printf '%s\n' --tls-cert-file "$CERTS/$1.crt" --tls-key-file "$CERTS/$1.key" \
        --tls-ca-file "$CERTS/ca.crt"
}
PST_TLS=() CONN_TLS=() META_TLS=() CTL_TLS=()
if [[ $TLS == 1 ]]; then
    step "certificates (private CA in $CERTS; OMNICHAT_TLS=0 turns mutual TLS off)"
    # inbox: a certificate to try the inbox role with (reads and SendText only).
    bash "$ROOT/scripts/certs.sh" "$CERTS" persistence connector-line connector-meta omnichatctl \
        inbox
    mapfile -t PST_TLS < <(tls_flags persistence)
    PST_TLS+=(--tls-client-roles "$CLIENT_ROLES")
    mapfile -t CONN_TLS < <(tls_flags connector-line)
    CONN_TLS+=(--tls-client-roles "$CLIENT_ROLES")
    mapfile -t META_TLS < <(tls_flags connector-meta)
    META_TLS+=(--tls-client-roles "$CLIENT_ROLES")
    mapfile -t CTL_TLS < <(tls_flags omnichatctl)
fi

step "services"
start_service persistence "$BIN/omnichat-persistence" \
    --database-url "$("${PGC[@]}" dsn "$PG" app)" \
    --cursor-key-file "$SECRETS/cursor.key" \
    --grpc-listen "$PERSISTENCE_GRPC_LISTEN" \
    --admin-listen "$PERSISTENCE_ADMIN_LISTEN" \
    ${PST_TLS[@]+"${PST_TLS[@]}"}
grpc_port=$(json_field "$LISTEN_LINE" grpc_port)
admin_port=$(json_field "$LISTEN_LINE" admin_port)
SUMMARY+=(
    "persistence   gRPC   $(host_of "$PERSISTENCE_GRPC_LISTEN"):${grpc_port:-?}  (omnichat.persistence.v1.Persistence, grpc.health.v1.Health)"
    "              admin  http://$(host_of "$PERSISTENCE_ADMIN_LISTEN"):${admin_port:-?}/  (/healthz, /metrics)"
    "              log    $LOGS/persistence.log   pid $(cat "$RUN/persistence.pid")"
)
PERSISTENCE_ADDR=$(dial_addr "$PERSISTENCE_GRPC_LISTEN" "${grpc_port:-50051}")
# Later services (connectors, provider simulators) are one start_service call each.

TRY=()
if [[ $SANDBOX == 1 ]]; then
    step "sandbox (LINE simulator + LINE connector; OMNICHAT_SANDBOX=0 turns it off)"
    ensure_vault_key
    ensure_secret line-sandbox.token 32
    ensure_secret line-sandbox.secret 16

    start_service line-sim "$BIN/omnichat-line-sim" \
        --listen "$LINE_SIM_LISTEN" \
        --sandbox --token-file "$SECRETS/line-sandbox.token"
    sim_started line-sim "$LINE_SIM_LISTEN" \
        "LINE Messaging API simulator, sandbox bot @omnichat-sandbox;" \
        "                     control API <base>/__sim/..., docs/line-simulator.md)"
    SIM_URL=$SIM_BASE

    start_service connector-line "$BIN/omnichat-connector-line" \
        --grpc-listen "$CONNECTOR_LINE_GRPC_LISTEN" \
        --http-listen "$CONNECTOR_LINE_HTTP_LISTEN" \
        --persistence-target "$PERSISTENCE_ADDR" \
        --line-api-base "$SIM_URL" \
        --vault-key-file "$SECRETS/vault.key" \
        ${CONN_TLS[@]+"${CONN_TLS[@]}"}
    connector_started connector-line "$CONNECTOR_LINE_GRPC_LISTEN" "$CONNECTOR_LINE_HTTP_LISTEN" \
        50052 8081 "omnichat.connector.v1.Connector, grpc.health.v1.Health" \
        "/webhooks/line/{channel_account_id}"
    CONNECTOR_ADDR=$CONN_GRPC
    WEBHOOK_URL=$CONN_HTTP

    # The demo channel: connecting again is idempotent (same account, credentials re-sealed).
    CTL=("$BIN/omnichatctl" --persistence "$PERSISTENCE_ADDR" --connector "$CONNECTOR_ADDR"
        --tenant "$SANDBOX_TENANT" ${CTL_TLS[@]+"${CTL_TLS[@]}"})
    out=$("${CTL[@]}" --json connect line --name "Omnichat Sandbox" \
        --token-file "$SECRETS/line-sandbox.token" \
        --secret-file "$SECRETS/line-sandbox.secret") ||
        die "could not connect the sandbox LINE channel (see $LOGS/connector-line.log)"
    account=$(json_field "$out" channel_account_id)
    [[ -n $account ]] || die "omnichatctl connect printed no channel account id"
    echo "start.sh: sandbox LINE channel connected for the demo tenant $SANDBOX_TENANT (account $account)"

    # One inbound message, so that a conversation exists; only the first time.
    find_conv() {
        local list
        list=$("${CTL[@]}" --json conversations --account "$account" --thread "$SANDBOX_USER") ||
            return 1
        json_field "$list" conversation_id
    }
    conv=$(find_conv) || die "could not list the sandbox conversations"
    if [[ -z $conv ]]; then
        "${CTL[@]}" simulate line-webhook --account "$account" --url "$WEBHOOK_URL" \
            --secret-file "$SECRETS/line-sandbox.secret" --user "$SANDBOX_USER" \
            --text "Hello! Where is my order #1042?" >/dev/null ||
            die "the simulated LINE webhook failed (see $LOGS/connector-line.log)"
        conv=$(find_conv) || die "could not list the sandbox conversations"
        [[ -n $conv ]] || die "the simulated LINE webhook created no conversation"
        echo "start.sh: delivered one simulated LINE message (conversation $conv)"
    fi

    step "sandbox (Graph API simulator + Meta connector: a Facebook Page and its Instagram account)"
    ensure_secret meta-sandbox.token 32
    ensure_secret meta-app.secret 16
    ensure_secret meta-verify.token 16
    start_service graph-sim "$BIN/omnichat-graph-sim" \
        --listen "$GRAPH_SIM_LISTEN" \
        --sandbox --token-file "$SECRETS/meta-sandbox.token" \
        --app-secret-file "$SECRETS/meta-app.secret"
    sim_started graph-sim "$GRAPH_SIM_LISTEN" "Graph API simulator, sandbox Page $SANDBOX_PAGE;" \
        "                     control API <base>/__sim/...)"
    GSIM_URL=$SIM_BASE
    start_service connector-meta "$BIN/omnichat-connector-meta" \
        --grpc-listen "$CONNECTOR_META_GRPC_LISTEN" \
        --http-listen "$CONNECTOR_META_HTTP_LISTEN" \
        --persistence-target "$PERSISTENCE_ADDR" \
        --meta-api-base "$GSIM_URL" \
        --vault-key-file "$SECRETS/vault.key" \
        --app-secret-file "$SECRETS/meta-app.secret" \
        --verify-token-file "$SECRETS/meta-verify.token" \
        ${META_TLS[@]+"${META_TLS[@]}"}
    connector_started connector-meta "$CONNECTOR_META_GRPC_LISTEN" "$CONNECTOR_META_HTTP_LISTEN" \
        50053 8082 "omnichat.connector.v1.Connector: facebook, instagram" "/webhooks/meta"
    META_ADDR=$CONN_GRPC
    META_URL=$CONN_HTTP
    # The simulator posts echoes and receipts to the connector, signed with the app secret.
    curl -fsS -o /dev/null -X POST "$GSIM_URL/__sim/config" \
        -d "{\"webhook_url\":\"$META_URL/webhooks/meta\"}" ||
        die "could not point graph-sim at the Meta connector"
    CTL+=(--meta-connector "$META_ADDR")
    for kind in facebook instagram; do
        id=$SANDBOX_PAGE
        [[ $kind == instagram ]] && id=$SANDBOX_IG
        out=$("${CTL[@]}" --json connect $kind --account-id "$id" \
            --token-file "$SECRETS/meta-sandbox.token") ||
            die "could not connect the sandbox $kind channel (see $LOGS/connector-meta.log)"
        id=$(json_field "$out" channel_account_id)
        [[ $kind == facebook ]] && fb_account=$id
        echo "start.sh: sandbox $kind channel connected (account $id)"
    done
    find_fb_conv() {
        local list
        list=$("${CTL[@]}" --json conversations --account "$fb_account" \
            --thread "$SANDBOX_PAGE:$SANDBOX_PSID") || return 1
        json_field "$list" conversation_id
    }
    fb_conv=$(find_fb_conv) || die "could not list the sandbox Messenger conversations"
    if [[ -z $fb_conv ]]; then
        "${CTL[@]}" simulate meta-webhook --account-id "$SANDBOX_PAGE" --url "$META_URL" \
            --app-secret-file "$SECRETS/meta-app.secret" --user "$SANDBOX_PSID" \
            --text "Hi! Do you ship to Chiang Mai?" >/dev/null ||
            die "the simulated Messenger webhook failed (see $LOGS/connector-meta.log)"
        fb_conv=$(find_fb_conv) || die "could not list the sandbox Messenger conversations"
        [[ -n $fb_conv ]] || die "the simulated Messenger webhook created no conversation"
        echo "start.sh: delivered one simulated Messenger message (conversation $fb_conv)"
    fi

    ctl_cmd=$BIN/omnichatctl
    env_line="export OMNICHAT_TENANT=$SANDBOX_TENANT"
    [[ $PERSISTENCE_ADDR == 127.0.0.1:50051 ]] ||
        env_line+=" OMNICHAT_PERSISTENCE=$PERSISTENCE_ADDR"
    [[ $CONNECTOR_ADDR == 127.0.0.1:50052 ]] || env_line+=" OMNICHAT_CONNECTOR=$CONNECTOR_ADDR"
    [[ $META_ADDR == 127.0.0.1:50053 ]] || env_line+=" OMNICHAT_META_CONNECTOR=$META_ADDR"
    meta_url_opt=""
    [[ $META_URL == http://127.0.0.1:8082 ]] || meta_url_opt=" --url $META_URL"
    tls_line="export OMNICHAT_TLS_CERT_FILE=$CERTS/omnichatctl.crt"
    tls_line+=" OMNICHAT_TLS_KEY_FILE=$CERTS/omnichatctl.key OMNICHAT_TLS_CA_FILE=$CERTS/ca.crt"
    url_opt=""
    [[ $WEBHOOK_URL == http://127.0.0.1:8081 ]] || url_opt=" --url $WEBHOOK_URL"
    TRY=("$env_line")
    [[ $TLS == 1 ]] && TRY+=("$tls_line   # the operator's certificate")
    TRY+=(
        "$ctl_cmd conversations"
        "$ctl_cmd timeline $conv"
        "$ctl_cmd send $conv --text 'Your order left the warehouse today.' --agent-name 'Agent Demo'"
        "$ctl_cmd simulate line-webhook --account $account --user $SANDBOX_USER \\"
        "    --secret-file $SECRETS/line-sandbox.secret$url_opt --text 'Thank you!'"
        "curl -s '$SIM_URL/__sim/deliveries?to=$SANDBOX_USER'   # what the LINE user received"
        ""
        "# Messenger: the same, through the Meta connector (Graph API simulator)"
        "$ctl_cmd timeline $fb_conv"
        "$ctl_cmd send $fb_conv --text 'Yes, in 2 days.' --agent-name 'Agent Demo'"
        "$ctl_cmd simulate meta-webhook --account-id $SANDBOX_PAGE --user $SANDBOX_PSID \\"
        "    --app-secret-file $SECRETS/meta-app.secret$meta_url_opt --text 'Great, thanks!'"
        "curl -s -X POST $GSIM_URL/__sim/events -d '{\"object\":\"page\",\"account_id\":\"$SANDBOX_PAGE\",\"events\":[{\"kind\":\"read\",\"sender\":\"$SANDBOX_PSID\",\"recipient\":\"$SANDBOX_PAGE\",\"watermark\":4102444800000}]}'   # the user read everything: the timeline says read"
        "curl -s '$GSIM_URL/__sim/deliveries?to=$SANDBOX_PSID'   # what the Messenger user received"
    )
else
    # A previous sandbox run must not linger beside a persistence-only one.
    bash "$ROOT/scripts/stop.sh" --service connector-line
    bash "$ROOT/scripts/stop.sh" --service line-sim
    bash "$ROOT/scripts/stop.sh" --service connector-meta
    bash "$ROOT/scripts/stop.sh" --service graph-sim
fi

printf '\nOmnichat is running%s.\n\n' "$([[ $SANDBOX == 1 ]] && echo ' in sandbox mode')"
printf '  %s\n' "${SUMMARY[@]}"
printf '  %s\n' \
    "postgresql    $("${PGC[@]}" dsn "$PG" owner)" \
    "              log $PG/postgres.log; psql \"\$(scripts/pg-cluster.sh dsn var/pg owner)\"" \
    "secrets       $SECRETS (mode 0600, never printed)"
if [[ $TLS == 1 ]]; then
    printf '  %s\n' \
        "certificates  $CERTS (private CA; mutual TLS on every gRPC port; roles $CLIENT_ROLES)"
else
    printf '  %s\n' "certificates  none: gRPC is plaintext (OMNICHAT_TLS=0)"
fi
if [[ ${#TRY[@]} -gt 0 ]]; then
    printf '\n  Try it (a simulated LINE Official Account and Facebook Page; nothing leaves this machine):\n\n'
    printf '    %s\n' "${TRY[@]}"
fi
printf '\n  API descriptor set: %s\n' "$ROOT/build/omnichat.protoset"
printf '  Stop everything:    %s\n' "$ROOT/scripts/stop.sh"
printf '  Run every test:     %s\n\n' "$ROOT/scripts/test.sh"
