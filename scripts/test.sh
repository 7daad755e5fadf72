#!/usr/bin/env bash
# test.sh: runs every Omnichat test; what CI runs (.ci/run).
#
# Usage: scripts/test.sh [all|unit|integration|format|helm|fuzz]     (default all)
#   all          deps, format check, the Helm chart, release + asan builds, ctest and pytest in both builds,
#                the libFuzzer seed corpora replayed (scripts/fuzz.sh --regress, build-fuzz/)
#   unit         deps, builds, ctest in both builds
#   integration  deps, builds, tests/integration (pytest) in both builds, and once more in the
#                release build with every service on mutual TLS (OMNICHAT_TEST_TLS=1)
#   format       deps, scripts/format.sh --check
#   helm         deps, scripts/helm-test.sh (helm lint, helm template, API schema validation;
#                its pinned tools are cached in var/cache/helm-tools/)
#   fuzz         deps, scripts/fuzz.sh --regress
# Environment:
#   OMNICHAT_SKIP_ASAN=1          skip the sanitizer build and its tests (local use)
#   OMNICHAT_PYTEST_TIMEOUT=secs  limit of one pytest run (default 1800)
#   OMNICHAT_PYTEST_ARGS="..."    extra pytest arguments (e.g. "-k outbound -x")
# Logs of every stage go to var/test-logs/. The last line is always "N passed, M failed": the
# ctest and pytest counts of both builds, plus one failure for each stage that failed without
# counting tests itself (format check, a build, a test run that crashed before reporting).
# A test stage that ran nothing fails: ctest without tests, pytest without collected tests or
# without a passed test, a fuzz replay without seeds. A skipped pytest test fails its run unless
# tests/integration/skips-allowed.txt lists it with its reason (tests/integration/conftest.py).
# Exit status: 0 when everything passed, 1 otherwise.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

PY=/usr/bin/python3
WHAT=${1:-all}
case $WHAT in
all | unit | integration | format | helm | fuzz) ;;
*)
    echo "usage: scripts/test.sh [all|unit|integration|format|helm|fuzz]" >&2
    exit 2
    ;;
esac
[[ $# -le 1 ]] || {
    echo "usage: scripts/test.sh [all|unit|integration|format|helm|fuzz]" >&2
    exit 2
}

LOGDIR=$ROOT/var/test-logs
mkdir -p "$LOGDIR"
JOBS=$(nproc 2>/dev/null || echo 2)
PYTEST_TIMEOUT=${OMNICHAT_PYTEST_TIMEOUT:-1800}
ASAN_ENV=(ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1)

TOTAL_PASSED=0
TOTAL_FAILED=0
SUMMARY=()
FAILED_ANY=0
T0=$SECONDS

banner() {
    printf '\n===== %s =====\n' "$*"
}

# record NAME STATUS PASSED FAILED SECONDS [NOTE]
record() {
    local name=$1 status=$2 passed=$3 failed=$4 secs=$5 note=${6:-}
    TOTAL_PASSED=$((TOTAL_PASSED + passed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    [[ $status == FAIL ]] && FAILED_ANY=1
    SUMMARY+=("$(printf '%-22s %-5s %4s passed %4s failed %5ss  %s' \
        "$name" "$status" "$passed" "$failed" "$secs" "$note")")
    printf -- '----- %s: %s (%s passed, %s failed, %ss) %s\n' \
        "$name" "$status" "$passed" "$failed" "$secs" "$note"
}

print_summary() {
    local s
    banner "summary ($((SECONDS - T0))s)"
    for s in "${SUMMARY[@]}"; do
        echo "$s"
    done
    echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
}
trap print_summary EXIT

# A stage that is not a test run: format check, deps, builds. Failure counts as one.
run_step() {
    local name=$1 log t rc=0
    shift
    log=$LOGDIR/$name.log
    banner "$name"
    t=$SECONDS
    "$@" 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    if ((rc == 0)); then
        record "$name" PASS 0 0 $((SECONDS - t))
    else
        record "$name" FAIL 0 1 $((SECONDS - t)) "exit $rc, log $log"
    fi
    return "$rc"
}

# ctest in one build directory; counts come from its "N% tests passed, F tests failed out of T".
run_ctest() {
    local name=$1 dir=$2 log t rc=0 line total failed
    shift 2
    log=$LOGDIR/$name.log
    banner "$name"
    t=$SECONDS
    env "$@" ctest --test-dir "$dir" --output-on-failure --no-tests=error -j "$JOBS" 2>&1 |
        tee "$log" ||
        rc=${PIPESTATUS[0]}
    line=$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 ||
        true)
    if [[ -n $line ]]; then
        total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
        failed=$(sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/' <<<"$line")
        if ((rc == 0 && failed == 0 && total > 0)); then
            record "$name" PASS $((total - failed)) "$failed" $((SECONDS - t))
        else
            ((failed > 0)) || failed=1
            record "$name" FAIL $((total - failed)) "$failed" $((SECONDS - t)) "log $log"
        fi
    elif grep -q 'No tests were found' "$log"; then
        # Nothing ran is not a pass: a build without CUnit, or a broken glob, would look green.
        record "$name" FAIL 0 1 $((SECONDS - t)) "no unit tests were found, log $log"
    else
        record "$name" FAIL 0 1 $((SECONDS - t)) "ctest exit $rc without a result, log $log"
    fi
}

# pytest counts: "3 failed, 10 passed, 1 skipped, 2 errors in 5.01s".
count_of() {
    local word=$1 line=$2
    grep -oE "[0-9]+ $word" <<<"$line" | head -n 1 | grep -oE '^[0-9]+' || echo 0
}

run_pytest() {
    local name=$1 bindir=$2 log t rc=0 line passed failed errors skipped note
    shift 2
    log=$LOGDIR/$name.log
    banner "$name"
    t=$SECONDS
    if [[ ! -d tests/integration ]]; then
        record "$name" FAIL 0 1 0 "no tests/integration"
        return 0
    fi
    local extra=()
    # Word splitting of the knob is wanted: it holds several pytest arguments.
    # shellcheck disable=SC2206
    [[ -n ${OMNICHAT_PYTEST_ARGS:-} ]] && extra=(${OMNICHAT_PYTEST_ARGS})
    env "$@" OMNICHAT_BIN_DIR="$ROOT/$bindir" PYTHONDONTWRITEBYTECODE=1 \
        timeout --signal=TERM --kill-after=30 "$PYTEST_TIMEOUT" \
        "$PY" -m pytest -q -rfE -p no:cacheprovider "${extra[@]}" tests/integration </dev/null 2>&1 |
        tee "$log" || rc=${PIPESTATUS[0]}
    line=$(grep -E '^=*[[:space:]]*([0-9]+ [a-z]+(, )?)+.* in [0-9.]+s' "$log" | tail -n 1 || true)
    passed=$(count_of passed "$line")
    failed=$(count_of failed "$line")
    errors=$(count_of 'errors?' "$line")
    skipped=$(count_of skipped "$line")
    failed=$((failed + errors))
    note=""
    ((skipped == 0)) || note="$skipped skipped (listed in tests/integration/skips-allowed.txt)"
    if ((rc == 0 && passed > 0)); then
        record "$name" PASS "$passed" "$failed" $((SECONDS - t)) "$note"
    elif ((rc == 0)); then
        record "$name" FAIL 0 1 $((SECONDS - t)) "no test passed, log $log"
    elif ((rc == 5)); then
        record "$name" FAIL 0 1 $((SECONDS - t)) "no tests collected, log $log"
    elif ((rc == 1 && failed == 0)) && grep -q '^SKIPPED-UNLISTED ' "$log"; then
        record "$name" FAIL "$passed" "$(grep -c '^SKIPPED-UNLISTED ' "$log")" $((SECONDS - t)) \
            "skipped tests not in tests/integration/skips-allowed.txt, log $log"
    elif ((rc == 124 || rc == 137)); then
        record "$name" FAIL "$passed" $((failed + 1)) $((SECONDS - t)) \
            "timed out after ${PYTEST_TIMEOUT}s, log $log"
    else
        ((failed > 0)) || failed=1
        record "$name" FAIL "$passed" "$failed" $((SECONDS - t)) "pytest exit $rc, log $log"
    fi
}

# The Helm chart (scripts/helm-test.sh: pytest over tests/helm, after installing its pinned
# tools once). Counts come from pytest's closing line.
run_helm() {
    local name=helm log t rc=0 line passed failed
    log=$LOGDIR/$name.log
    banner "$name"
    t=$SECONDS
    bash scripts/helm-test.sh </dev/null 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    line=$(grep -E '^=*[[:space:]]*([0-9]+ [a-z]+(, )?)+.* in [0-9.]+s' "$log" | tail -n 1 || true)
    passed=$(count_of passed "$line")
    failed=$(($(count_of failed "$line") + $(count_of 'errors?' "$line")))
    if ((rc == 0 && passed > 0)); then
        record "$name" PASS "$passed" "$failed" $((SECONDS - t))
    else
        ((failed > 0)) || failed=1
        record "$name" FAIL "$passed" "$failed" $((SECONDS - t)) "helm-test.sh exit $rc, log $log"
    fi
}

# The libFuzzer seed corpora, crash seeds included, replayed by the fuzz build (clang, ASan,
# UBSan; build-fuzz/). Passed and failed count harnesses; a harness without seeds fails.
run_fuzz_regress() {
    local name=fuzz-regress log t rc=0 ok bad inputs
    log=$LOGDIR/$name.log
    banner "$name"
    t=$SECONDS
    NO_INSTALL=1 bash scripts/fuzz.sh --regress 2>&1 | tee "$log" || rc=${PIPESTATUS[0]}
    ok=$(grep -cE '^ +fuzz_[A-Za-z0-9_]+ +[0-9]+ inputs .* ok$' "$log" || true)
    bad=$(grep -cE '^ +fuzz_[A-Za-z0-9_]+ +[0-9]+ inputs .* FAILED' "$log" || true)
    inputs=$(sed -nE 's/^ +fuzz_[A-Za-z0-9_]+ +([0-9]+) inputs .*/\1/p' "$log" |
        awk '{ s += $1 } END { print s + 0 }')
    if ((rc == 0 && bad == 0 && ok > 0)); then
        record "$name" PASS "$ok" 0 $((SECONDS - t)) "$inputs seeds replayed"
    else
        ((bad > 0)) || bad=1
        record "$name" FAIL "$ok" "$bad" $((SECONDS - t)) "fuzz.sh exit $rc, log $log"
    fi
}

echo "test.sh: $WHAT in $ROOT ($JOBS cores${CI:+, CI})"

if ! run_step deps bash scripts/deps.sh; then
    echo "test.sh: cannot continue without the packages" >&2
    exit 1
fi
[[ -x $PY ]] || {
    echo "test.sh: $PY missing after deps.sh" >&2
    exit 1
}

if [[ $WHAT == all || $WHAT == format ]]; then
    run_step format bash scripts/format.sh --check || true
fi

if [[ $WHAT == all || $WHAT == helm ]]; then
    run_helm
fi

if [[ $WHAT != format && $WHAT != helm && $WHAT != fuzz ]]; then
    BUILDS=(release)
    [[ ${OMNICHAT_SKIP_ASAN:-0} == 1 ]] || BUILDS+=(asan)
    for b in "${BUILDS[@]}"; do
        if [[ $b == release ]]; then
            dir=build
            envs=()
        else
            dir=build-asan
            envs=("${ASAN_ENV[@]}")
        fi
        if ! run_step "build-$b" bash scripts/build.sh "$b"; then
            # The other build compiles the same sources: it would fail the same way, slowly.
            echo "test.sh: build-$b failed; skipping its tests and further builds" >&2
            break
        fi
        if [[ $WHAT == all || $WHAT == unit ]]; then
            run_ctest "unit-$b" "$dir" "${envs[@]}"
        fi
        if [[ $WHAT == all || $WHAT == integration ]]; then
            run_pytest "integration-$b" "$dir/bin" "${envs[@]}"
            # The sandbox runs mutual TLS: once more with every service the suite starts on
            # mutual TLS and method roles (the release build; the sanitizer build runs the same
            # C code plaintext).
            if [[ $b == release ]]; then
                run_pytest "integration-$b-tls" "$dir/bin" "${envs[@]}" OMNICHAT_TEST_TLS=1
            fi
        fi
    done
    if [[ ${OMNICHAT_SKIP_ASAN:-0} == 1 ]]; then
        echo "test.sh: OMNICHAT_SKIP_ASAN=1: the sanitizer build and its tests were skipped"
        record "build-asan" SKIP 0 0 0 "OMNICHAT_SKIP_ASAN=1"
    fi
fi

if [[ $WHAT == all || $WHAT == fuzz ]]; then
    run_fuzz_regress
fi

((FAILED_ANY == 0 && TOTAL_FAILED == 0))
