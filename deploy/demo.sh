#!/usr/bin/env bash
# Ark's demo, on a fresh machine: installs what is missing (deploy/bootstrap.sh), then starts a real
# Kafka broker, three PostgreSQL instances and a MariaDB one, syncs three standbys online from a busy primary
# (one delayed, one MariaDB), replicates a live bank workload, shows status with lag, compares row by row.
#
#   deploy/demo.sh                 # about 2 minutes; options pass to 'ark demo' (--seconds, --keep, --dir)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
"$REPO/deploy/bootstrap.sh"
exec "$REPO/.venv/bin/ark" demo "$@"
