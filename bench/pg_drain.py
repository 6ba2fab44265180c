"""PostgreSQL: backlog drain, Ark vs native logical replication, and Ark's capture vs pg_recvlogical (issue 13).

"Sustainable tps" in bench/pg_vs_native.py replays the same pgbench run through both pipelines, so it sits
near 1.0 whatever Ark's capacity is. This measures capacity instead: a backlog built while replication is
stopped, then drained as fast as each pipeline can.

Starts its own Kafka broker and three PostgreSQL 15 instances (primary, native subscriber, Ark standby; the
set-up of bench/pg_vs_native.py), both replicating the pgbench tables.

(a) **Drain, end to end.** Both paused (the subscription disabled; Ark's capture and apply stopped), pgbench
    for ``--seconds``, then both resumed at the same moment; seconds until each standby holds what the primary
    holds; drain rate in transactions and rows per second; the ratio Ark/native. Ark's time includes starting
    its two processes (about a second each), as an operator restarting it would see.
(b) **Volume.** WAL bytes the pgbench run wrote against the bytes the redo topic grew by for it (Kafka's
    partition directory, compressed batches as stored).
(c) **Capture alone.** The applier stopped: the capture stopped for a second pgbench run, then started; seconds
    until it published the run's last transaction (its heartbeat's position passes a marker), against
    ``pg_recvlogical`` reading the same WAL through a pgoutput slot of its own, to its end, into /dev/null.

(a) and (c) also give Ark's CPU per source transaction (each agent's user + system time, less what its start
cost), which moves much less with the machine's load than the rates do; ``ARK_HOT=0`` in the environment runs
the agents without the compiled hot path (README, "The compiled hot path") for a comparison.

    python bench/pg_drain.py [--seconds 60] [--scale 10] [--clients 4] [--keep-logs DIR] [--profile DIR]

Figures and how to read them: bench/README.md, "Backlog drain".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pg_vs_native import (  # bench/ is the script's directory, on sys.path when run as a script
    DB,
    PUB,
    ROOT,
    SUB,
    ark,
    check_agents,
    drop_native,
    fingerprint,
    fmt_s,
    pg_conn_args,
    pgbench_run,
    prepare_primary,
    say,
    setup_native,
    sql,
    start_cluster,
    wait_all,
    wait_until,
    work_dir,
    write_ark_config,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.config import load_config  # noqa: E402
from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.postgres import PG_BIN  # noqa: E402
from failover.view import HeartbeatView  # noqa: E402
from schemas.positions import pg_lsn  # noqa: E402
from schemas.topics import redo_topic  # noqa: E402

TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "lag_probe", "big"]
RECV_SLOT = "bench_recvlogical"
#: Rows one pgbench tpcb-like transaction changes: three UPDATEs and one INSERT.
ROWS_PER_TXN = 4


def redo_bytes(broker: KafkaBroker, group: str) -> int:
    """Bytes of the redo topic's partition as the broker stores it."""
    part = broker.data_dir / f"{redo_topic(group)}-0"
    return sum(f.stat().st_size for f in part.glob("*.log"))


def wal_lsn(dsn: str) -> str:
    return str(sql(dsn, "SELECT pg_current_wal_lsn()::text")[0][0])


def wal_bytes(dsn: str, start: str, end: str) -> int:
    return int(sql(dsn, "SELECT pg_wal_lsn_diff(%s::pg_lsn, %s::pg_lsn)", (end, start))[0][0])


def marker(dsn: str) -> str:
    """Commit one small transaction and return an LSN below its commit record: a capture that has published
    a position at or past it has published everything committed before."""
    return str(sql(dsn, "INSERT INTO lag_probe DEFAULT VALUES RETURNING pg_current_wal_lsn()::text")[0][0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="pgbench -T of each backlog (default 60)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy agent and server logs here at the end")
    ap.add_argument("--profile", type=Path, default=None,
                    help="record py-spy profiles (50 Hz, idle threads included, raw collapsed stacks) of the "
                         "capture and the applier during the drains (a) and (c) into this directory")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    root = work_dir("ark-drain-")
    say(f"work dir {root}")
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        broker, primary, native, standby = start_cluster(stack, root, args.keep_logs)
        pdsn = primary.dsn(DB)
        prepare_primary(primary, 1000, args.scale)
        stack.callback(drop_native, primary, native)
        setup_native(primary, native, TABLES)
        config = write_ark_config(root / "ark.yaml", broker.bootstrap, primary, standby, TABLES)
        say("ark sync standby")
        ark(config, "sync", "standby")

        def start(label: str, cmd: list[str]) -> AgentProcess:
            agent = AgentProcess(config, cmd, root / "logs" / f"{label}.log").start()
            stack.callback(agent.stop)
            if args.profile is not None and label in PROFILED:
                profile(agent, args.profile / f"{label}.txt")
            return agent

        capture, apply = start("capture", ["capture"]), start("apply", ["apply", "standby"])
        target = fingerprint(pdsn)
        wait_all({"native": lambda: fingerprint(native.dsn(DB)) == target,
                  "ark": lambda: fingerprint(standby.dsn(DB)) == target}, 300)
        check_agents([capture, apply])
        # What starting costs (imports, connections, Kafka transactions, catalog reads): both agents have done
        # that and little else here, so it is subtracted from their CPU in the drains (per transaction figures).
        results["start_cpu"] = {"capture": settled_cpu_s(capture), "apply": settled_cpu_s(apply)}
        say("both standbys stream")

        # (a) + (b): the backlog, then both resumed at once
        sql(native.dsn(DB), f"ALTER SUBSCRIPTION {SUB} DISABLE")
        capture.stop()
        apply.stop()
        wait_until(lambda: not sql(pdsn, "SELECT 1 FROM pg_stat_replication WHERE application_name = %s", (SUB,)),
                   60, "the native walsender to stop")
        kafka_before, lsn_before = redo_bytes(broker, config_group(config)), wal_lsn(pdsn)
        say(f"(a) both paused; pgbench tpcb-like: {args.clients} clients, {args.seconds} s")
        committed, wall, tps_line = pgbench_run(primary, args.seconds, args.clients)
        lsn_after = wal_lsn(pdsn)
        target = fingerprint(pdsn)
        say(f"backlog: {committed:,} transactions ({tps_line}); resuming both at once")
        sql(native.dsn(DB), f"ALTER SUBSCRIPTION {SUB} ENABLE")
        capture, apply = start("capture2", ["capture"]), start("apply2", ["apply", "standby"])
        drained = wait_all({"native": lambda: fingerprint(native.dsn(DB)) == target,
                            "ark": lambda: fingerprint(standby.dsn(DB)) == target}, 1800)
        check_agents([capture, apply])
        cpu = {"capture": cpu_s(capture), "apply": cpu_s(apply)}
        time.sleep(2)  # the capture's last batch and checkpoint reach the broker's files
        results["a"] = {"committed": committed, "wall": wall, "drained": drained, "cpu": cpu,
                        "wal": wal_bytes(pdsn, lsn_before, lsn_after),
                        "kafka": redo_bytes(broker, config_group(config)) - kafka_before}
        say("drained: " + ", ".join(f"{k} {fmt_s(v)} s" for k, v in drained.items()))

        # (c) the capture alone, against pg_recvlogical on the same WAL
        apply.stop()
        capture.stop()
        sql(pdsn, f"SELECT pg_create_logical_replication_slot('{RECV_SLOT}', 'pgoutput')")
        stack.callback(_drop_slot, pdsn)
        say(f"(c) capture stopped (and the applier); pgbench again, {args.seconds} s")
        committed_c, _wall, _tps = pgbench_run(primary, args.seconds, args.clients)
        mark = marker(pdsn)
        end_lsn = wal_lsn(pdsn)
        view = HeartbeatView(load_config(config))
        stack.callback(view.close)
        started = time.monotonic()
        capture = start("capture3", ["capture"])

        def published() -> bool:
            check_agents([capture])
            view.refresh(0.1)
            beat = view.capture()
            pos = str(beat.record.get("source_position", "")) if beat else ""
            return bool(pos) and pg_lsn(pos.lstrip("<")).key >= pg_lsn(mark).key

        wait_until(published, 1800, "the capture to publish the backlog", interval=0.1)
        capture_s = time.monotonic() - started
        capture_cpu = cpu_s(capture)
        capture.stop()
        say(f"capture: published the backlog in {capture_s:.2f} s; pg_recvlogical to {end_lsn}")
        started = time.monotonic()
        subprocess.run([str(PG_BIN / "pg_recvlogical"), *pg_conn_args(primary), "-d", DB, "--slot", RECV_SLOT,
                        "--start", "--endpos", end_lsn, "-o", "proto_version=1", "-o", f"publication_names={PUB}",
                        "-f", "/dev/null", "--no-loop"], check=True, timeout=1800)
        recv_s = time.monotonic() - started
        results["c"] = {"committed": committed_c, "capture": capture_s, "recvlogical": recv_s, "cpu": capture_cpu}
        report(args, results)
    return 0


#: The agents whose drains --profile records: (a)'s capture and applier, (c)'s capture.
PROFILED = ("capture2", "apply2", "capture3")


def profile(agent: AgentProcess, out: Path) -> None:
    """py-spy on ``agent`` until it exits (it writes ``out`` then); a missing py-spy only warns."""
    beside = Path(sys.executable).with_name("py-spy")
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None or agent.pid is None:
        say("--profile: py-spy is neither next to this python nor on PATH (pip install py-spy); not profiling")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.Popen([spy, "record", "-r", "50", "--idle", "-f", "raw", "-o", str(out), "-p", str(agent.pid)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def cpu_s(agent: AgentProcess) -> float:
    """CPU seconds (user + system) the agent's process used so far, its start (imports, connections) included."""
    try:
        fields = Path(f"/proc/{agent.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled_cpu_s(agent: AgentProcess, timeout: float = 60.0) -> float:
    """The agent's CPU seconds once it has settled (started, caught up): less than 20 ms more over a second."""
    last = cpu_s(agent)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.0)  # sampling the CPU clock, not waiting for an event: the condition is the flat clock
        now = cpu_s(agent)
        if now - last < 0.02:
            return now
        last = now
    return last


def config_group(config: Path) -> str:
    return load_config(config).group


def _drop_slot(dsn: str) -> None:
    with contextlib.suppress(Exception):
        sql(dsn, f"SELECT pg_drop_replication_slot('{RECV_SLOT}')")


def hot_active() -> bool:
    """Whether the agents (same interpreter, same environment) use the compiled hot path."""
    from producers.postgresql import pgoutput  # noqa: PLC0415 - only for the report line
    from schemas import hot  # noqa: PLC0415

    return hot.ACTIVE and pgoutput.COMPILED


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    a, c = results["a"], results["c"]
    n = a["committed"]
    print(f"\n== (a) backlog drain: pgbench tpcb-like, scale {args.scale}, {args.clients} clients, -T {args.seconds}: "
          f"{n:,} transactions ({n * ROWS_PER_TXN:,} rows) built up with both pipelines stopped")
    print(f"{'':10} {'drain s':>9} {'txn/s':>10} {'rows/s':>11}")
    rate = {}
    for name in ("native", "ark"):
        s = a["drained"][name]
        rate[name] = n / s if s not in (0, float("inf")) else 0.0
        print(f"{name:10} {fmt_s(s):>9} {rate[name]:>10,.0f} {rate[name] * ROWS_PER_TXN:>11,.0f}")
    ratio = rate["ark"] / rate["native"] if rate["native"] else 0.0
    cpu, start = a["cpu"], results["start_cpu"]
    per = {k: (cpu[k] - start[k]) / n * 1e6 for k in cpu}
    print(f"Ark CPU: capture {cpu['capture']:.2f} s, apply {cpu['apply']:.2f} s (start: {start['capture']:.2f}, "
          f"{start['apply']:.2f} s); without the start {per['capture']:,.0f} and {per['apply']:,.0f} us/txn  "
          f"(compiled hot path: {'on' if hot_active() else 'off'})")
    print(f"ratio Ark/native drain rate: {ratio:.2f}  (target >= 1.5: {'met' if ratio >= 1.5 else 'NOT met'})")
    print(f"\n== (b) volume of the same run: WAL {a['wal'] / 2**20:,.1f} MiB, redo topic {a['kafka'] / 2**20:,.1f} MiB")
    vol = a["kafka"] / a["wal"] if a["wal"] else 0.0
    print(f"ratio Kafka/WAL bytes: {vol:.3f}  (target <= 0.25: {'met' if vol <= 0.25 else 'NOT met'})")
    print(f"\n== (c) the capture alone: {c['committed']:,} transactions of backlog")
    print(f"Ark capture      {c['capture']:8.2f} s  {c['committed'] / c['capture']:>10,.0f} txn/s")
    cap_us = (c["cpu"] - results["start_cpu"]["capture"]) / c["committed"] * 1e6
    print(f"  capture CPU {c['cpu']:.2f} s; without the start {cap_us:,.0f} us/txn")
    print(f"pg_recvlogical   {c['recvlogical']:8.2f} s  {c['committed'] / c['recvlogical']:>10,.0f} txn/s")
    cap = c["recvlogical"] / c["capture"] if c["capture"] else 0.0
    print(f"ratio Ark capture / pg_recvlogical rate: {cap:.2f}  (target >= 0.5: {'met' if cap >= 0.5 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
