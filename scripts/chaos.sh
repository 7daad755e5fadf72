#!/usr/bin/env bash
# chaos.sh: runs the hostile scenarios against a fresh system and prints a table (never in CI).
#
# Usage: scripts/chaos.sh [--only TEXT] [--callers N]
#   Builds the release binaries, then tests/chaos/chaos.py starts, for each scenario, its own
#   PostgreSQL cluster, persistence, LINE simulator and LINE connector, loads them, breaks one
#   part (PostgreSQL fast/immediate restart, SIGKILL of a service) and checks every key.
#   Prints a Markdown table; exit 1 when anything acknowledged was lost or stored twice.
# Figures of the last run on record: docs/reliability.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
bash scripts/deps.sh >/dev/null
bash scripts/build.sh release >/dev/null
mkdir -p var/chaos
export OMNICHAT_BIN_DIR=$ROOT/build/bin PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/chaos/chaos.py --json var/chaos/last.json "$@" </dev/null
