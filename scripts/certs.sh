#!/usr/bin/env bash
# certs.sh: a private CA and certificates for mutual TLS between Omnichat's processes.
#
# Usage: scripts/certs.sh DIR NAME...
#   DIR/ca.crt, DIR/ca.key   the CA (made once, kept: the services trust it)
#   DIR/NAME.crt, NAME.key   one certificate per NAME, signed by the CA, made when missing or
#                            expiring within 30 days. Its SANs are DNS:NAME (the identity that
#                            --tls-client-roles maps to a role), DNS:localhost and IP:127.0.0.1
#                            (so a local client can check it as a server certificate), and it is
#                            valid for both TLS server and client use.
# Keys are EC P-256, mode 0600; certificates are valid 825 days (the CA ten years). To rotate a
# certificate, delete it (or let it near expiry) and run this again: the services re-read their
# files on change, without a restart (docs/operations.md).
set -euo pipefail
umask 077

die() {
    echo "certs.sh: error: $*" >&2
    exit 1
}

[[ $# -ge 2 ]] || die "usage: scripts/certs.sh DIR NAME..."
command -v openssl >/dev/null || die "openssl not found (scripts/deps.sh installs it)"
dir=$1
shift
mkdir -p "$dir"

if [[ ! -s $dir/ca.crt || ! -s $dir/ca.key ]]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$dir/ca.key.tmp" -out "$dir/ca.crt.tmp" -days 3650 \
        -subj "/CN=Omnichat private CA $(date -u +%Y%m%d%H%M%S)" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
        die "could not create the CA in $dir"
    mv -f "$dir/ca.key.tmp" "$dir/ca.key"
    mv -f "$dir/ca.crt.tmp" "$dir/ca.crt"
    chmod 0644 "$dir/ca.crt"
    echo "certs.sh: created the CA $dir/ca.crt"
fi

for name in "$@"; do
    [[ $name =~ ^[a-z0-9][a-z0-9.-]{0,62}$ ]] || die "bad certificate name '$name'"
    crt=$dir/$name.crt key=$dir/$name.key
    if [[ -s $crt && -s $key ]] && openssl x509 -in "$crt" -noout -checkend $((30 * 86400)) \
        >/dev/null 2>&1 && openssl verify -CAfile "$dir/ca.crt" "$crt" >/dev/null 2>&1; then
        continue
    fi
    ext=$(mktemp)
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=DNS:$name,DNS:localhost,IP:127.0.0.1" >"$ext"
    # New files first, then renamed over the old ones: a service re-reading them meanwhile sees
    # either pair whole (it also skips a key that does not match the certificate).
    if ! openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$key.tmp" -out "$crt.csr" -subj "/CN=$name" 2>/dev/null ||
        ! openssl x509 -req -in "$crt.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 825 -sha256 -extfile "$ext" -out "$crt.tmp" 2>/dev/null; then
        rm -f "$ext" "$crt.csr" "$key.tmp" "$crt.tmp"
        die "could not create the certificate $name"
    fi
    rm -f "$ext" "$crt.csr"
    chmod 0644 "$crt.tmp"
    mv -f "$key.tmp" "$key"
    mv -f "$crt.tmp" "$crt"
    echo "certs.sh: created $crt ($name)"
done
