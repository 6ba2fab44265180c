#!/usr/bin/env bash
# Ark's whole test suite, on a fresh machine: installs what is missing (deploy/bootstrap.sh), checks
# lint, types and the import contract, then runs unit, integration and fault tests against a real
# Kafka broker and real PostgreSQL instances that the test session starts itself.
#
#   deploy/test.sh                 # everything (what CI runs)
#   deploy/test.sh -m "not integration"   # unit tests only; any pytest arguments pass through
#
# Exit status: non-zero when any check or test fails.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
"$REPO/deploy/bootstrap.sh"
export PATH="$REPO/.venv/bin:$PATH"
echo "[test] ruff";  ruff check .
echo "[test] mypy";  mypy
echo "[test] pytest $*"
exec pytest -p no:cacheprovider -ra --durations=15 "$@"
