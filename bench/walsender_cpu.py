"""The walsender's CPU while serving Ark's capture, against pg_recvlogical on the same primary, same run.

Starts its own Kafka broker and one PostgreSQL 15 primary under a temp dir. Ark's capture and
``pg_recvlogical`` (pgoutput, the same publication, its own slot) stream from the primary AT THE SAME
TIME. The CPU seconds of each one's walsender (``/proc``, through psutil) are read over two phases:

(a) idle: nothing written for ``--seconds``;
(b) streaming: the bank workload (2 clients) for ``--seconds``.

A walsender that spins on keepalives (issue 19) shows up as CPU far above its peer's.

    python bench/walsender_cpu.py [--seconds 30]

See bench/README.md for the figures.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.ports import free_port  # noqa: E402
from deploy.postgres import PG_BIN, PgInstance  # noqa: E402
from deploy.workload import BankWorkload, create_bank  # noqa: E402

DB, GROUP, PEER_SLOT = "bench", "wscpu", "peer_recvlogical"
os.environ.setdefault("ARK_CONTROL_KEY", secrets.token_hex(32))  # the group's control key, for this run only
_T0 = time.monotonic()


def say(msg: str) -> None:
    """One progress line, stamped with the seconds since start."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {msg}", flush=True)


def walsender(dsn: str, application: str, timeout: float = 60) -> psutil.Process:
    """The walsender process serving ``application`` (waits until it streams)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT pid FROM pg_stat_replication WHERE application_name = %s AND state = "
                               "'streaming'", (application,)).fetchone()
            if row:
                return psutil.Process(int(row[0]))
            time.sleep(0.2)
    raise SystemExit(f"no streaming walsender for {application} within {timeout:g} s")


def cpu(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` so far."""
    t = proc.cpu_times()
    return float(t.user + t.system)


def measure(procs: dict[str, psutil.Process], seconds: float) -> dict[str, float]:
    """CPU seconds each process used over ``seconds``."""
    before = {k: cpu(p) for k, p in procs.items()}
    time.sleep(seconds)
    return {k: cpu(p) - before[k] for k, p in procs.items()}


def main() -> None:
    """Run both phases and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0, help="length of each phase (default 30)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ark-wscpu-"))
    tmp.chmod(0o755)
    broker = KafkaBroker(tmp / "kafka", free_port(), free_port())
    primary = PgInstance(tmp / "primary", free_port())
    agents: list[AgentProcess] = []
    peer: subprocess.Popen[bytes] | None = None
    try:
        say("starting Kafka and PostgreSQL")
        broker.start(timeout=120)
        primary.init()
        primary.start()
        dsn = primary.create_database(DB)
        create_bank(dsn, accounts=100, ledger=True)
        cfg = tmp / f"{GROUP}.yaml"
        db = {"engine": "postgresql", "host": "127.0.0.1", "port": primary.port, "dbname": DB, "user": "postgres"}
        cfg.write_text(yaml.safe_dump({
            "group": GROUP, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": broker.bootstrap},
            "primary": {"name": "primary", **db, "tables": ["public.*"]},
            "standbys": [{"name": "unused", **db}],
        }, sort_keys=False))
        agents.append(AgentProcess(cfg, ["capture"], tmp / "capture.log").start())
        procs = {"ark capture": walsender(dsn, "ark-capture")}
        primary.psql(f"SELECT pg_create_logical_replication_slot('{PEER_SLOT}', 'pgoutput')", DB)
        peer = subprocess.Popen([str(PG_BIN / "pg_recvlogical"), "-d", primary.dsn(DB), "--slot", PEER_SLOT,
                                 "--start", "-o", "proto_version=1", "-o", f"publication_names=ark_{GROUP}",
                                 "-f", "/dev/null"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["pg_recvlogical"] = walsender(dsn, "pg_recvlogical")
        time.sleep(3)
        say(f"idle for {args.seconds:g} s")
        idle = measure(procs, args.seconds)
        say(f"streaming (bank workload, 2 clients) for {args.seconds:g} s")
        work = BankWorkload(dsn, accounts=100, clients=2, ledger=True).start()
        busy = measure(procs, args.seconds)
        committed = work.stop()
        print(f"\nwalsender CPU seconds over {args.seconds:g} s ({committed} transfers in the streaming phase)")
        print(f"{'client':<16}{'idle':>10}{'streaming':>12}")
        for name in procs:
            print(f"{name:<16}{idle[name]:>10.2f}{busy[name]:>12.2f}")
        ratio = busy["ark capture"] / busy["pg_recvlogical"] if busy["pg_recvlogical"] else float("nan")
        print(f"streaming ratio ark/pg_recvlogical: {ratio:.2f}")
    finally:
        for agent in agents:
            agent.stop()
        if peer is not None:
            peer.terminate()
            peer.wait(10)
        primary.destroy()
        broker.stop()


if __name__ == "__main__":
    main()
