#!/usr/bin/env bash
# Ark's whole test suite, on a fresh machine: installs what is missing (deploy/bootstrap.sh), checks
# lint, types and the import contract, then runs unit, integration and fault tests against a real
# Kafka broker and real PostgreSQL instances that the test session starts itself.
#
#   deploy/test.sh                 # everything, tier by tier: unit, contract, integration, faults (what CI runs)
#   deploy/test.sh --quick         # unit + contract only (under a minute); pytest arguments pass through
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
# Tiers, fastest first; the first tier that fails stops the run (its failures are what to look at).
#   unit        pure logic and the runners against in-memory fakes (seconds)
#   contract    every engine's capture, snapshot, applier and verifier against real databases (no Kafka)
#   integration real Kafka and real databases, whole commands
#   faults      kill -9, broker restarts, network cuts, corrupt bytes
tiers=(unit contract integration faults)
if [[ "${1:-}" == "--quick" ]]; then
  shift
  tiers=(unit contract)
fi
for tier in "${tiers[@]}"; do
  echo "[test] tier: $tier"
  started=$SECONDS
  if ! pytest -p no:cacheprovider -ra --durations=10 "tests/$tier" "$@"; then
    echo "[test] tier $tier FAILED after $(( SECONDS - started )) s; later tiers not run"
    exit 1
  fi
  echo "[test] tier $tier passed in $(( SECONDS - started )) s"
done
