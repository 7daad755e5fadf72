#!/usr/bin/env bash
# format.sh: checks or applies .clang-format on the C sources.
#
# Usage: scripts/format.sh [--check|--fix]   (default --check)
# Files: every *.c and *.h under common/ services/ tools/ tests/ that git tracks (every such file
# when git or .git is absent, as in a tarball), minus build directories. --check exits 1 and
# lists the files that differ; --fix rewrites them in place. --check also runs
# scripts/check-log-args.py (no side effects in log macro arguments), which --fix cannot fix.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

die() {
    echo "format.sh: error: $*" >&2
    exit 1
}

mode=${1:---check}
[[ $# -le 1 ]] || die "usage: scripts/format.sh [--check|--fix]"
[[ $mode == --check || $mode == --fix ]] || die "usage: scripts/format.sh [--check|--fix]"
command -v clang-format >/dev/null || die "clang-format not found: run scripts/deps.sh as root"
[[ -f .clang-format ]] || die "no .clang-format in $ROOT"

DIRS=(common services tools tests)
list_files() {
    local existing=() d
    for d in "${DIRS[@]}"; do
        [[ -d $d ]] && existing+=("$d")
    done
    [[ ${#existing[@]} -gt 0 ]] || return 0
    if command -v git >/dev/null && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git ls-files -z -- "${existing[@]}"
    else
        find "${existing[@]}" -type f -print0
    fi | tr '\0' '\n' | grep -E '\.[ch]$' | grep -Ev '(^|/)build[^/]*/' | LC_ALL=C sort || true
}

mapfile -t FILES < <(list_files)
# A tracked file someone is deleting right now is not ours to check.
present=()
for f in "${FILES[@]}"; do
    [[ -f $f ]] && present+=("$f")
done
if [[ ${#present[@]} -eq 0 ]]; then
    echo "format.sh: no C files to check"
    exit 0
fi

if [[ $mode == --fix ]]; then
    clang-format -i --style=file -- "${present[@]}"
    echo "format.sh: formatted ${#present[@]} files"
    exit 0
fi

log_args_ok=1
if command -v python3 >/dev/null; then
    python3 scripts/check-log-args.py || log_args_ok=0
fi

bad=()
for f in "${present[@]}"; do
    if ! out=$(clang-format --dry-run --Werror --style=file -- "$f" 2>&1); then
        bad+=("$f")
        printf '%s\n' "$out" | head -n 12 >&2
    fi
done
if [[ ${#bad[@]} -gt 0 ]]; then
    echo "format.sh: ${#bad[@]} of ${#present[@]} files are not formatted:" >&2
    printf '  %s\n' "${bad[@]}" >&2
    echo "format.sh: fix with: scripts/format.sh --fix" >&2
    exit 1
fi
echo "format.sh: ${#present[@]} files formatted correctly"
((log_args_ok)) || exit 1
