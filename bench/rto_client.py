"""The RTO benchmark's client as a process of its own: ``bench/rto.py --via service-address`` runs it inside the
client host's network namespace, so that it reaches the databases only through the switch and the service address.

It runs deploy/continuity.py's :class:`AckClient` (ledger-bank transfers, three threads) on the DSN in
``$ARK_RTO_DSN`` (the server named by ``$ARK_RTO_IDENTIFY_SQL``, by default its ``cluster_name``) and prints one
line per acknowledged commit: ``<CLOCK_MONOTONIC seconds> <server> <ledger seq>`` (the monotonic clock is the
machine's, the same in every network namespace, so the parent compares it with its own). It runs until it gets
SIGTERM or its stdout closes. The DSN names no password (the benchmark's servers trust local connections); it
comes through the environment, never the arguments, all the same.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.continuity import AckClient  # noqa: E402
from deploy.service_lan import IDENTIFY_SQL  # noqa: E402

#: Each client thread pauses this long after a transfer: on a 2-core machine shared with other runs the capture must
#: keep up, or each reinstate copies its backlog (tests/faults/test_f25_service_address.py does the same).
PAUSE_S = 0.05


def main() -> int:
    dsn = os.environ.get("ARK_RTO_DSN", "")
    if not dsn:
        print("error: ARK_RTO_DSN is not set\nfix: run it through bench/rto.py --via service-address", file=sys.stderr)
        return 2
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    identify = os.environ.get("ARK_RTO_IDENTIFY_SQL") or IDENTIFY_SQL
    client = AckClient(dsn, ids="ledger", identify_sql=identify, pause_s=PAUSE_S).start()
    printed = 0
    try:
        while not stop.wait(0.05):
            with client._lock:  # noqa: SLF001 - the bench reads the client's log directly
                new = client.acks[printed:]
            printed += len(new)
            if new:
                sys.stdout.write("".join(f"{a.at:.6f} {a.server} {a.seq}\n" for a in new))
                sys.stdout.flush()
    except BrokenPipeError:  # the benchmark is gone
        pass
    finally:
        client.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
