#!/usr/bin/env bash
# build.sh: configures and builds Omnichat with CMake.
#
# Usage: scripts/build.sh [release|asan]
#   release (default)  build/       RelWithDebInfo, -Werror
#   asan               build-asan/  Debug, AddressSanitizer + UndefinedBehaviorSanitizer, -Werror
# Binaries land in <dir>/bin, unit tests in <dir>/tests. Needs the packages of scripts/deps.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

die() {
    echo "build.sh: error: $*" >&2
    exit 1
}

mode=${1:-release}
[[ $# -le 1 ]] || die "usage: scripts/build.sh [release|asan]"
case $mode in
release)
    dir=build
    args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DOMNICHAT_WERROR=ON -DOMNICHAT_SANITIZE=OFF)
    ;;
asan)
    dir=build-asan
    args=(-DCMAKE_BUILD_TYPE=Debug -DOMNICHAT_SANITIZE=ON -DOMNICHAT_WERROR=ON)
    ;;
*) die "unknown mode '$mode' (expected release or asan)" ;;
esac

for tool in cmake gcc pkg-config; do
    command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh as root first"
done

# A build directory configured for another source tree (the checkout was copied or moved) or
# left half-configured cannot be reused: start it afresh. It is generated, never edited.
cache=$dir/CMakeCache.txt
if [[ -f $cache ]]; then
    home=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$cache")
    if [[ $home != "$ROOT" ]]; then
        echo "build.sh: $dir was configured for ${home:-another tree}; reconfiguring from scratch"
        rm -rf "$dir"
    fi
fi

generator=()
if [[ ! -f $cache ]] && command -v ninja >/dev/null; then
    generator=(-G Ninja)
fi

jobs=$(nproc 2>/dev/null || echo 2)
echo "build.sh: configuring $dir ($mode)"
cmake -S . -B "$dir" "${generator[@]}" "${args[@]}"
echo "build.sh: building $dir with $jobs jobs"
cmake --build "$dir" -j "$jobs"
echo "build.sh: $mode build ready in $dir (binaries in $dir/bin)"
