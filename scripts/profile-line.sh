#!/usr/bin/env bash
# profile-line.sh: instruction counts per SendText (or per webhook event) of the connector and
# of the persistence service, under callgrind, for a fixed number of calls.
#
# Usage: scripts/profile-line.sh [--provider line|meta] [--phase s|w1|w10] [--calls N]
#                                [--threads N]
#   --provider P  which connector (default line)
#   --phase T     the phase to count: s (SendText, default), w1 or w10 (webhook POSTs of 1 or
#                 10 events)
#   --calls N     calls of that phase (default 400)
#   --threads N   concurrent callers (default 8: callgrind runs one thread at a time)
#
# Runs scripts/bench-line.sh (release build, binaries as they are) with both services under
# valgrind --tool=callgrind; the counters are zeroed just before the phase and dumped just after
# it (omnichat-bench-line --phase-hook), so the figures cover exactly the phase's N calls. Prints
# instructions per call of each service and leaves the profiles in var/profile-<provider>/ for
# callgrind_annotate. Instruction counts are repeatable on a busy machine, times are not.
# Heavy (a few minutes); never part of CI.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

# The hook: "profile-line.sh begin|end TAG" from omnichat-bench-line, with PROFILE_PHASE set.
if [[ -n ${PROFILE_PHASE:-} && ($# -eq 2) && (${1:-} == begin || ${1:-} == end) ]]; then
    [[ $2 == "$PROFILE_PHASE" ]] || exit 0
    for pid in "$BENCH_CONNECTOR_PID" "$BENCH_PERSISTENCE_PID"; do
        if [[ $1 == begin ]]; then
            callgrind_control -z "$pid" >/dev/null
        else
            callgrind_control -d "phase-$2" "$pid" >/dev/null
        fi
    done
    exit 0
fi

PROVIDER=line
PHASE=s
CALLS=400
THREADS=8
while [[ $# -gt 0 ]]; do
    case $1 in
    --provider) PROVIDER=$2; shift 2 ;;
    --phase) PHASE=$2; shift 2 ;;
    --calls) CALLS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    -h | --help)
        sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) echo "profile-line.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[[ $PROVIDER == line || $PROVIDER == meta ]] || { echo "profile-line.sh: --provider line|meta" >&2; exit 2; }
[[ $PHASE == s || $PHASE == w1 || $PHASE == w10 ]] || { echo "profile-line.sh: --phase s|w1|w10" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "profile-line.sh: valgrind not found" >&2; exit 1; }

OUT=$ROOT/var/profile-$PROVIDER
mkdir -p "$OUT"
rm -f "$OUT"/callgrind.*
phases=send
[[ $PHASE == s ]] || phases=ingest
export PROFILE_PHASE=$PHASE
export BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-1} BENCH_NO_DOC=1
export BENCH_WRAP_CONNECTOR="valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.connector.%p"
export BENCH_WRAP_PERSISTENCE="valgrind --tool=callgrind --callgrind-out-file=$OUT/callgrind.persistence.%p"
# Long phases: the call count ends them. Small simulator-side references keep the run short.
export BENCH_EXTRA_ARGS="--phases $phases --calls $CALLS --threads $THREADS --duration 600 --ref-duration 1 --out-dir $OUT --phase-hook $ROOT/scripts/profile-line.sh"
bash scripts/bench-line.sh --provider "$PROVIDER" >"$OUT/bench.log" 2>&1 || {
    tail -n 30 "$OUT/bench.log" >&2
    exit 1
}

key=$(case $PHASE in s) echo sendtext ;; w1) echo webhook_k1 ;; *) echo webhook_k10 ;; esac)
# Per call: per SendText, or per webhook event (items).
calls=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['phases'][sys.argv[2]]['items'])" \
    "$OUT/results.json" "$key")
echo "profile-line.sh: $PROVIDER, phase $PHASE, $calls calls, $THREADS callers"
for svc in connector persistence; do
    f=$(find "$OUT" -maxdepth 1 -name "callgrind.$svc.*.1" | head -n 1)
    [[ -n $f ]] || { echo "  $svc: no dump" >&2; continue; }
    total=$(sed -n 's/^summary: *//p; s/^totals: *//p' "$f" | head -n 1 | awk '{print $1}')
    awk -v s="$svc" -v t="$total" -v n="$calls" -v f="$f" \
        'BEGIN { printf "  %-12s %14d instructions, %9.0f per call (%s)\n", s, t, t / n, f }'
done
