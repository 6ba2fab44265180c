#!/usr/bin/env bash
# Kafka's own kafka-consumer-groups.sh, run from the jars Ark fetches from Maven Central (no Kafka tarball):
#   deploy/kafka-consumer-groups.sh --bootstrap-server 127.0.0.1:9092 --describe --group ark-apply-GROUP-STANDBY
# Each applier commits its position to the consumer group ark-apply-<group>-<standby>, for information only
# (the standby's state row is the truth for exactly-once), so this shows the same lag as 'ark status'.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${ARK_PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
ARK_REPO="$REPO" exec "$PY" - "$@" <<'PYEOF'
import os
import sys
sys.path.insert(0, os.environ["ARK_REPO"])
from deploy.kafka import kafka_tool
res = kafka_tool("kafka-consumer-groups", *sys.argv[1:], timeout=600)
sys.stdout.write(res.stdout)
sys.stderr.write(res.stderr)
sys.exit(res.returncode)
PYEOF
