#!/usr/bin/env bash
# Builds the libFuzzer harnesses (tools/fuzz) and runs each one on a copy of its seed corpus.
#
#   scripts/fuzz.sh [SECONDS]     fuzz every harness for SECONDS (default 60), then summarize
#   scripts/fuzz.sh --regress     only replay the seed corpora, tests/data/fuzz/<harness>/ (CI;
#                                 a harness without seeds fails)
#   scripts/fuzz.sh [--regress|SECONDS] HARNESS...   the same, for some harnesses only
#
# Environment: BUILD_DIR (default build-fuzz), FUZZ_JOBS (build parallelism), FUZZ_FLAGS (extra
# libFuzzer flags), NO_INSTALL=1 (never call apt-get). Exits 1 when any harness crashed, leaked,
# timed out or a regression seed failed; 2 on usage or build errors. See docs/fuzzing.md.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-fuzz}
SEEDS=$ROOT/tests/data/fuzz
MAX_LEN=65536

usage() {
    sed -n '2,11s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
    exit 2
}

mode=fuzz
seconds=60
only=()
for arg in "$@"; do
    case $arg in
    --regress) mode=regress ;;
    -h | --help) usage ;;
    -*) echo "fuzz.sh: unknown option $arg" >&2; usage ;;
    *)
        if [[ $arg =~ ^[0-9]+$ ]]; then
            seconds=$arg
        else
            only+=("$arg")
        fi
        ;;
    esac
done
if [[ $mode == fuzz && $seconds -lt 1 ]]; then
    echo "fuzz.sh: SECONDS must be at least 1 (use --regress to only replay the seeds)" >&2
    exit 2
fi

# --- toolchain: clang with the libFuzzer runtime (Debian 12: clang-14 + libclang-rt-14-dev) ---
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
if command -v dpkg-query >/dev/null 2>&1; then
    have_pkg libclang-rt-14-dev || have_pkg libclang-rt-dev || missing+=(libclang-rt-14-dev)
fi
if ((${#missing[@]} > 0)); then
    if [[ ${NO_INSTALL:-0} == 1 ]]; then
        echo "fuzz.sh: missing ${missing[*]} (NO_INSTALL=1 set)" >&2
        exit 2
    fi
    sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || { echo "fuzz.sh: need root to install ${missing[*]}" >&2; exit 2; }
        sudo=(sudo)
    fi
    echo "fuzz.sh: installing ${missing[*]}"
    if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq ||
        ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; then
        echo "fuzz.sh: apt-get failed" >&2
        exit 2
    fi
fi

# --- build ---
gen=()
if [[ ! -f $BUILD_DIR/CMakeCache.txt ]] && command -v ninja >/dev/null 2>&1; then
    gen=(-G Ninja)
fi
mkdir -p "$BUILD_DIR"
CC=clang cmake -S "$ROOT" -B "$BUILD_DIR" "${gen[@]}" -DOMNICHAT_FUZZ=ON >"$BUILD_DIR/configure.log" 2>&1 ||
    { cat "$BUILD_DIR/configure.log" >&2; echo "fuzz.sh: configure failed" >&2; exit 2; }
cmake --build "$BUILD_DIR" --target fuzz -j "${FUZZ_JOBS:-$(nproc)}" ||
    { echo "fuzz.sh: build failed" >&2; exit 2; }

BIN=$BUILD_DIR/fuzz
mapfile -t harnesses <"$BIN/harnesses.txt"
if ((${#only[@]} > 0)); then
    for h in "${only[@]}"; do
        [[ -x $BIN/$h ]] || { echo "fuzz.sh: no harness $h (have: ${harnesses[*]})" >&2; exit 2; }
    done
    harnesses=("${only[@]}")
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
RUN=$BUILD_DIR/fuzz-run
rm -rf "$RUN"
mkdir -p "$RUN"
# fuzz_config makes its temporary secret files here, not in /tmp.
export TMPDIR=$RUN

# read -a: extra libFuzzer flags from the environment, split on blanks
read -r -a extra <<<"${FUZZ_FLAGS:-}"
failed=0
summary=()

# Replays files one process at a time when needed, so every failing seed is named.
replay() { # harness dir files...
    local h=$1 dir=$2 log bad=()
    shift 2
    (($# == 0)) && return 0
    log=$dir/replay.log
    if "$BIN/$h" -runs=0 -max_len=$MAX_LEN "${extra[@]}" "$@" >"$log" 2>&1; then
        return 0
    fi
    for f in "$@"; do
        "$BIN/$h" -runs=0 -max_len=$MAX_LEN "${extra[@]}" "$f" >"$dir/replay-$(basename "$f").log" 2>&1 ||
            bad+=("$(basename "$f")")
    done
    echo "${bad[*]:-"(the batch failed; see $log)"}"
    return 1
}

for h in "${harnesses[@]}"; do
    dir=$RUN/$h
    mkdir -p "$dir/corpus" "$dir/artifacts"
    seeds=() crashes=()
    if [[ -d $SEEDS/$h ]]; then
        for f in "$SEEDS/$h"/*; do
            [[ -f $f ]] || continue
            case $(basename "$f") in
            crash-* | leak-* | timeout-* | oom-*) crashes+=("$f") ;;
            *) seeds+=("$f") ;;
            esac
        done
    fi

    if [[ $mode == regress ]]; then
        start=$SECONDS
        if ((${#seeds[@]} + ${#crashes[@]} == 0)); then
            # Replaying nothing proves nothing: every harness keeps seeds in the tree.
            failed=1
            summary+=("$(printf '%-20s %5d inputs  %3ds  FAILED: no seeds in %s' "$h" 0 0 \
                "tests/data/fuzz/$h/")")
        elif out=$(replay "$h" "$dir" "${seeds[@]}" "${crashes[@]}"); then
            summary+=("$(printf '%-20s %5d inputs  %3ds  ok' "$h" $((${#seeds[@]} + ${#crashes[@]})) $((SECONDS - start)))")
        else
            failed=1
            summary+=("$(printf '%-20s %5d inputs  %3ds  FAILED: %s (logs in %s)' "$h" \
                $((${#seeds[@]} + ${#crashes[@]})) $((SECONDS - start)) "$out" "$dir")")
        fi
        continue
    fi

    # Known crashes are replayed, not fuzzed from: they would stop the run at once.
    known=""
    if ((${#crashes[@]} > 0)) && ! known=$(replay "$h" "$dir" "${crashes[@]}"); then
        failed=1
        known=" KNOWN CRASH STILL REPRODUCES: $known;"
    else
        known=""
    fi
    ((${#seeds[@]} > 0)) && cp "${seeds[@]}" "$dir/corpus/"
    echo "fuzz.sh: $h for ${seconds}s"
    "$BIN/$h" "$dir/corpus" -max_total_time="$seconds" -max_len=$MAX_LEN -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "${extra[@]}" \
        >"$dir/fuzz.log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/fuzz.log" | tail -1)
    ncorpus=$(find "$dir/corpus" -type f | wc -l)
    arts=$(find "$dir/artifacts" -type f -printf '%f ' 2>/dev/null)
    if [[ $rc -eq 0 && -z $arts && -z $known ]]; then
        result=ok
    elif [[ $rc -eq 0 && -z $arts ]]; then
        result="FAILED:$known"
    else
        failed=1
        reason=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:' "$dir/fuzz.log" |
            sed 's/^==[0-9]*==//')
        result="FAILED:$known ${reason:-exit $rc}; artifacts: ${arts:-none} in $dir/artifacts (log $dir/fuzz.log)"
    fi
    summary+=("$(printf '%-20s %10s execs  %5d corpus  %s' "$h" "${execs:-?}" "$ncorpus" "$result")")
done

echo
if [[ $mode == regress ]]; then
    echo "fuzz.sh --regress: seed corpora replayed"
else
    echo "fuzz.sh: ${seconds}s per harness; the grown corpora stay in $RUN/<harness>/corpus"
fi
printf '  %s\n' "${summary[@]}"
if ((failed)); then
    echo "fuzz.sh: FAILED (to keep a crashing input as a regression seed, copy it to tests/data/fuzz/<harness>/crash-<what>)"
    exit 1
fi
echo "fuzz.sh: all ok"
