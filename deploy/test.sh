#!/usr/bin/env bash
# Ark's whole test suite, on a fresh machine: installs what is missing (deploy/bootstrap.sh), checks
# lint, types and the import contract, then runs unit, integration and fault tests against a real
# Kafka broker and real PostgreSQL instances that the test session starts itself.
#
#   deploy/test.sh                 # everything (what CI runs)
#   deploy/test.sh -m "not integration"   # unit tests only; any pytest arguments pass through
#   deploy/test.sh --faults-full   # only tests/faults, full N (20 injections per case, 30 s outages),
#                                  # then the result table (tests/faults/README.md); pytest args follow
#
# Exit status: non-zero when any check or test fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
"$REPO/deploy/bootstrap.sh"
export PATH="$REPO/.venv/bin:$PATH"
if [[ "${1:-}" == "--faults-full" ]]; then
  shift
  export ARK_FAULT_RUNS="${ARK_FAULT_RUNS:-20}" ARK_FAULT_SLOW_RUNS="${ARK_FAULT_SLOW_RUNS:-5}"
  export ARK_FAULT_OUTAGE_S="${ARK_FAULT_OUTAGE_S:-30}"
  export ARK_FAULT_RESULTS="${ARK_FAULT_RESULTS:-$REPO/.ark/fault-results}"
  mkdir -p "$ARK_FAULT_RESULTS"; rm -f "$ARK_FAULT_RESULTS"/*.json
  echo "[test] fault suite, full N: runs=$ARK_FAULT_RUNS slow=$ARK_FAULT_SLOW_RUNS outage=${ARK_FAULT_OUTAGE_S}s"
  status=0
  pytest -p no:cacheprovider -ra --durations=15 tests/faults "$@" || status=$?
  echo "[test] fault results ($ARK_FAULT_RESULTS):"
  python tests/faults/report.py "$ARK_FAULT_RESULTS" || status=$(( status ? status : 1 ))
  exit "$status"
fi
echo "[test] ruff";  ruff check .
echo "[test] mypy";  mypy
echo "[test] pytest $*"
exec pytest -p no:cacheprovider -ra --durations=15 "$@"
