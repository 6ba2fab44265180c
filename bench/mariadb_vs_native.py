"""MariaDB: Ark vs MariaDB's own GTID replication, measured in one run on the same machine.

Starts its own Kafka broker and three MariaDB 10.11 instances under a temp dir, with the project's own
scripts (deploy/kafka.py, deploy/mariadb.py: the same server options for all three): a primary, a native
replica (``CHANGE MASTER TO ... MASTER_USE_GTID=slave_pos; START SLAVE``) and an Ark standby (``ark sync``,
``ark capture``, ``ark apply``). Both replicate from the same primary AT THE SAME TIME, so they see exactly
the same workload: the tests' bank workload (tests/support/mariadb.py: each transaction moves money between
two accounts, two UPDATEs and one history INSERT).

(a) backlog drain: both appliers stopped (native ``STOP SLAVE SQL_THREAD``; Ark ``ark pause standby``, or
    with ``--restart-apply`` the ``ark apply`` process stopped) while ``--backlog`` transactions commit on the
    primary and both receivers (native's IO thread, ``ark capture``) take them in; then both are resumed at
    the same instant (``START SLAVE SQL_THREAD``; ``ark resume standby`` or a new ``ark apply``), and
    transactions/s from that command until each replica's history row count equals the primary's.
(b) steady load: ``--clients`` clients for ``--seconds``; lag p50/p99 of a probe row inserted on the
    primary every 0.1 s (lag = the moment a poller, every 0.02 s, first sees it on the replica - the moment
    its INSERT was sent), also to the moment it is readable in Kafka (Ark's capture + broker, before the
    apply); catch-up time after the load ends.

    python bench/mariadb_vs_native.py [--backlog 20000] [--seconds 30] [--clients 2] [--restart-apply] ...

About 2-3 minutes with the defaults on 2 cores. See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import yaml
from confluent_kafka import Consumer, TopicPartition
from mariadb_probes import PROBE_EVERY_S, KafkaProbeWatcher, Probes, ProbeWatcher
from pg_vs_native import (  # bench/ is the script's directory, on sys.path when run as a script
    ROOT,
    Monitor,
    ark,
    check_agents,
    fmt_s,
    pct,
    say,
    wait_until,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.mariadb import MariaDBInstance  # noqa: E402
from deploy.ports import free_port  # noqa: E402
from schemas.topics import redo_topic  # noqa: E402
from tests.support.mariadb import BankWorkload, connect, create_bank, query, table_rows  # noqa: E402

DB = "bench"
GROUP = "mbench"
TABLES = ["accounts", "history", "lag_probe"]
POLL_S = 0.1
PROGRESS_EVERY_S = 10.0
#: The processes that do each side's work (the primary's binlog dump threads, one per side, are left out:
#: they live in the primary's mariadbd with its clients' work).
NATIVE_PATH = ("mariadbd native",)
ARK_PATH = ("ark capture", "kafka", "ark apply", "mariadbd ark")


# -- the two replicas ------------------------------------------------------------------------------
def history_count(inst: MariaDBInstance) -> int:
    return int(query(inst, f"SELECT COUNT(*) FROM `{DB}`.history")[0][0])


def slave_status(inst: MariaDBInstance) -> dict[str, Any]:
    conn = connect(inst, cursorclass=pymysql.cursors.DictCursor)
    try:
        with conn.cursor() as cur:
            cur.execute("SHOW SLAVE STATUS")
            row = cur.fetchone()
            return dict(row) if row else {}
    finally:
        conn.close()


def check_native(inst: MariaDBInstance, sql_thread: bool = True) -> None:
    """Raise when the native replica's threads stopped by themselves (with MariaDB's own error)."""
    st = slave_status(inst)
    if st.get("Slave_IO_Running") != "Yes" or (sql_thread and st.get("Slave_SQL_Running") != "Yes"):
        raise RuntimeError(f"native replica stopped: IO {st.get('Slave_IO_Running')} ({st.get('Last_IO_Error')}), "
                           f"SQL {st.get('Slave_SQL_Running')} ({st.get('Last_SQL_Error')})")


def setup_native(primary: MariaDBInstance, replica: MariaDBInstance, threads: int) -> None:
    """Make ``replica`` a GTID replica of ``primary`` from the primary's current GTID position.

    The replica's own binlog (its install's GTIDs, domain 0) is reset first: with gtid_strict_mode a replica
    may not hold GTIDs of domain 0 with higher sequence numbers than its primary's.
    """
    pos = primary.sql("SELECT @@gtid_binlog_pos")
    replica.sql(f"RESET MASTER; SET GLOBAL gtid_slave_pos = '{pos}'; SET GLOBAL slave_parallel_threads = {threads}; "
                f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {primary.port}, MASTER_USER = 'root', "
                "MASTER_USE_GTID = slave_pos; START SLAVE")
    say(f"native: GTID replica of the primary from {pos or 'the start'} (slave_parallel_threads = {threads})")


def write_ark_config(path: Path, kafka: str, primary: MariaDBInstance, standby: MariaDBInstance,
                     batch_max_ms: int | None = None) -> Path:
    """The group's YAML: every setting at its default (batching, heartbeat), as a user would start, unless
    ``batch_max_ms`` sets the capture's longest wait before a Kafka commit."""
    def db(name: str, inst: MariaDBInstance, **extra: Any) -> dict[str, Any]:
        return {"name": name, "engine": "mariadb", "host": "127.0.0.1", "port": inst.port, **extra}

    doc = {"group": GROUP, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka},
           "primary": db("primary", primary, tables=[f"{DB}.*"]), "standbys": [db("standby", standby)]}
    if batch_max_ms is not None:
        doc["capture"] = {"batch_max_ms": batch_max_ms}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def redo_end(kafka: str) -> int:
    """The end offset of the group's redo topic (what ``ark capture`` has produced)."""
    consumer = Consumer({"bootstrap.servers": kafka, "group.id": f"{GROUP}-bench-probe", "enable.auto.commit": False})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(redo_topic(GROUP), 0), timeout=10)[1])
    finally:
        consumer.close()


def wait_received(primary: MariaDBInstance, native: MariaDBInstance, kafka: str, timeout: float) -> float:
    """Wait until both receivers hold everything the primary wrote; the seconds it took.

    Native: its IO thread's ``Gtid_IO_Pos`` equals the primary's ``gtid_binlog_pos``. Ark: the redo topic's
    end offset stopped moving for 1 s (longer than ``capture.batch_max_ms``, 100 ms by default) while every
    binlog dump thread on the primary says it has sent all.
    """
    target = primary.sql("SELECT @@gtid_binlog_pos")
    start = time.monotonic()
    wait_until(lambda: slave_status(native).get("Gtid_IO_Pos") == target, timeout, "native's IO thread")
    sent_all = ("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump' "
                "AND STATE NOT LIKE 'Master has sent all binlog%'")
    last = [-1, time.monotonic()]

    def settled() -> bool:
        end = redo_end(kafka)
        if end != last[0] or primary.sql(sent_all) != "0":
            last[:] = [end, time.monotonic()]
        return time.monotonic() - last[1] >= 1.0

    wait_until(settled, timeout, "ark capture to publish the backlog", interval=0.2)
    return time.monotonic() - start


def ark_standby_state(config: Path) -> str:
    """The standby's state as ``ark status --json`` reports it (applying, paused, ...)."""
    doc = json.loads(ark(config, "status", "--json"))
    return str(doc["standbys"][0]["state"])


# -- the measurements ------------------------------------------------------------------------------
@dataclass
class Drain:
    """One replica catching up on a backlog: when its apply started, first moved, and caught up."""

    name: str
    start: Callable[[], None]
    count: Callable[[], int]
    check: Callable[[], None]
    restarted: bool = True  # False: the applier already runs, only the wait is measured
    base: int = 0
    now: int = 0
    first_s: float = float("inf")
    done_s: float = float("inf")
    error: str = ""

    def run(self, target: int, timeout: float) -> None:
        t0 = time.monotonic()
        try:
            self.start()
            while True:
                self.now = self.count()
                took = time.monotonic() - t0
                if self.now > self.base and self.first_s == float("inf"):
                    self.first_s = took
                if self.now >= target:
                    self.done_s = took
                    return
                if took > timeout:
                    return
                self.check()
                time.sleep(POLL_S)
        except Exception as exc:  # reported with the results; the other side keeps going
            self.error = str(exc)


def run_drains(drains: list[Drain], target: int, timeout: float, serial: bool) -> None:
    """Start each side's apply (all at once, or one after the other) and wait until each caught up."""
    groups = [[d] for d in drains] if serial else [drains]
    for group in groups:
        threads = [threading.Thread(target=d.run, args=(target, timeout), daemon=True) for d in group]
        for t in threads:
            t.start()
        last = time.monotonic()
        while any(t.is_alive() for t in threads):
            time.sleep(0.2)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                say("drain: " + ", ".join(f"{d.name} {d.now - d.base:,}/{target - d.base:,}" for d in group))
        for d in group:
            first = f" (first row after {fmt_s(d.first_s)} s)" if d.restarted else ""
            say(f"{d.name}: " + (f"failed: {d.error}" if d.error else f"caught up in {fmt_s(d.done_s)} s{first}"))


def run_workload(primary: MariaDBInstance, accounts: int, clients: int, *, transactions: int = 0,
                 seconds: float = 0) -> tuple[int, float, int]:
    """Run the bank workload until ``transactions`` committed or ``seconds`` passed; (committed, wall s, errors)."""
    workload = BankWorkload(primary, DB, accounts=accounts, clients=clients)
    started = time.monotonic()
    last = started
    try:
        workload.start()
        while (transactions and workload.committed < transactions) or (seconds and
                                                                         time.monotonic() - started < seconds):
            time.sleep(0.05)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                say(f"workload: {workload.committed:,} committed, {workload.committed / (last - started):.0f} tps")
    finally:
        committed = workload.stop()
    return committed, time.monotonic() - started, workload.errors


def differences(primary: MariaDBInstance, replicas: dict[str, MariaDBInstance]) -> dict[str, list[str]]:
    """For each replica, the tables whose rows differ from the primary's (empty: equal)."""
    want = {t: table_rows(primary, f"{DB}.{t}") for t in TABLES}
    return {name: [t for t in TABLES if table_rows(inst, f"{DB}.{t}") != want[t]] for name, inst in replicas.items()}


def load() -> float:
    """The 1-minute load average (the machine is shared: it says how much CPU the run had)."""
    return os.getloadavg()[0]


def machine() -> str:
    """nproc, RAM, CPU model and the MariaDB version, for the record."""
    model = "?"
    with contextlib.suppress(OSError):
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "?")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"nproc {os.cpu_count()}, {ram:.1f} GiB RAM, CPU {model}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None,
                                 epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backlog", type=int, default=20_000,
                    help="transactions of the backlog (a) (default 20,000: long enough that resuming is not all of it)")
    ap.add_argument("--seconds", type=int, default=30, help="length of the steady load (b) (default 30)")
    ap.add_argument("--clients", type=int, default=2, help="workload clients on the primary (default 2)")
    ap.add_argument("--accounts", type=int, default=1000, help="bank accounts (default 1,000)")
    ap.add_argument("--native-threads", type=int, default=0,
                    help="slave_parallel_threads of the native replica (default 0: MariaDB's default, one applier)")
    ap.add_argument("--serial-drain", action="store_true",
                    help="(a): drain native first, then Ark, each alone on the machine (default: both at once)")
    ap.add_argument("--capture-batch-ms", type=int, default=None,
                    help="Ark's capture.batch_max_ms, the longest wait before a Kafka commit (default: Ark's, 100)")
    ap.add_argument("--restart-apply", action="store_true",
                    help="(a): stop the `ark apply` process and start a new one (default: `ark pause` / `ark resume`, "
                         "the applier process stays up as the replica's server does)")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy agent and server logs here at the end")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    signal.signal(signal.SIGINT, signal.default_int_handler)  # and on Ctrl-C, even if started with SIGINT ignored
    root = Path(tempfile.mkdtemp(prefix="ark-mariadb-bench-", dir="/tmp"))
    root.chmod(0o755)  # the servers run as the mysql user
    monitor = Monitor()
    monitor.start()
    agents: list[AgentProcess] = []
    results: dict[str, Any] = {}
    say(f"work dir {root}; {machine()}; load average {load():.1f}")
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        stack.callback(monitor.stop_event.set)

        say("starting the Kafka broker")
        broker = KafkaBroker(root / "kafka", free_port(), free_port())
        stack.callback(broker.stop)
        broker.start(timeout=180)

        insts: dict[str, MariaDBInstance] = {}
        for server_id, name in enumerate(("primary", "native", "ark"), start=1):
            inst = MariaDBInstance(root / "mariadb" / name, free_port(), server_id=server_id)
            inst.datadir.parent.mkdir(parents=True, exist_ok=True)
            inst.datadir.parent.chmod(0o755)
            stack.callback(inst.destroy)
            inst.init()
            inst.start()
            insts[name] = inst
        primary, native, standby = insts["primary"], insts["native"], insts["ark"]
        if args.keep_logs:  # before the instances are destroyed
            stack.callback(_copy_logs, root, args.keep_logs)
        say(f"MariaDB up: primary :{primary.port}, native replica :{native.port}, Ark standby :{standby.port}; "
            f"Kafka {broker.bootstrap}")
        for name, inst in insts.items():
            monitor.watch(f"mariadbd {name}", _pid_of(inst), children=False)
        monitor.watch("kafka", lambda: broker.pid, children=False)

        setup_native(primary, native, args.native_threads)
        primary.create_database(DB)
        create_bank(primary, DB, args.accounts)
        primary.sql(f"CREATE TABLE `{DB}`.lag_probe (id int PRIMARY KEY, sent_us bigint NOT NULL); "
                    f"INSERT INTO `{DB}`.lag_probe VALUES (0, 0)")
        say(f"bank of {args.accounts:,} accounts created on the primary")

        standby.create_database(DB)
        config = write_ark_config(root / "ark.yaml", broker.bootstrap, primary, standby, args.capture_batch_ms)
        say("ark sync standby")
        t = time.monotonic()
        ark(config, "sync", "standby")
        say(f"ark: initial sync done in {time.monotonic() - t:.1f} s; starting capture and apply")
        capture = AgentProcess(config, ["capture"], root / "logs" / "capture.log").start()
        apply = AgentProcess(config, ["apply", "standby"], root / "logs" / "apply.log").start()
        agents += [capture, apply]
        for agent in agents:
            stack.callback(agent.stop)
            monitor.watch(f"ark {agent.args[0]}", _pid_of(agent), children=True)

        watchers = [ProbeWatcher("native", native, DB), ProbeWatcher("ark", standby, DB)]
        primary.sql(f"INSERT INTO `{DB}`.lag_probe VALUES (1, 0)")
        for w in watchers:
            def seen(w: ProbeWatcher = w) -> bool:
                check_agents(agents)
                return bool(query(w.inst, f"SELECT 1 FROM `{DB}`.lag_probe WHERE id = 1"))
            wait_until(seen, 300, f"{w.name} to stream")
            w.last_id = 1
        check_native(native)
        say("both replicas stream; settling 3 s")
        time.sleep(3)

        # (a) backlog drain
        say(f"(a) stopping both appliers; writing {args.backlog:,} transactions with {args.clients} clients")
        native.sql("STOP SLAVE SQL_THREAD")
        if args.restart_apply:
            apply.stop()

            def resume_ark() -> None:
                apply.start()
        else:  # the applier process stays up, as the replica's server does
            ark(config, "pause", "standby")
            wait_until(lambda: ark_standby_state(config) == "paused", 120, "ark apply to pause", interval=0.5)

            def resume_ark() -> None:
                ark(config, "resume", "standby")
        base = history_count(primary)
        committed, wall, errors = run_workload(primary, args.accounts, args.clients, transactions=args.backlog)
        target = history_count(primary)
        backlog = target - base
        say(f"backlog: {backlog:,} transactions committed in {wall:.1f} s ({backlog / wall:.0f} tps, "
            f"{errors} errors); waiting until both receivers hold it")
        received = wait_received(primary, native, broker.bootstrap, 300)
        check_native(native, sql_thread=False)
        say(f"both receivers hold the backlog ({received:.1f} s after the last commit); starting both appliers")
        drains = [Drain("native", lambda: native.sql("START SLAVE SQL_THREAD"), lambda: history_count(native),
                        lambda: check_native(native)),
                  Drain("ark", resume_ark, lambda: history_count(standby), lambda: check_agents(agents))]
        for d in drains:
            d.base = d.now = d.count()
        monitor.phase()
        load_a = load()
        run_drains(drains, target, 900, args.serial_drain)
        results["a"] = {"backlog": backlog, "wall": wall, "errors": errors, "drains": drains,
                        "procs": monitor.phase(), "load": (load_a, load())}
        for d in drains:
            if d.error:
                raise RuntimeError(f"{d.name} failed during the drain: {d.error}")

        # (b) steady load
        time.sleep(2)
        say(f"(b) steady load: {args.clients} clients for {args.seconds} s, probe every {PROBE_EVERY_S} s")
        monitor.phase()
        load_b = load()
        kafka_watcher = KafkaProbeWatcher("kafka", broker.bootstrap, GROUP, f"{DB}.lag_probe")
        probe_watchers: list[ProbeWatcher | KafkaProbeWatcher] = [*watchers, kafka_watcher]
        probes = Probes(primary, DB, probe_watchers, first_id=2).start()
        committed, wall, errors = run_workload(primary, args.accounts, args.clients, seconds=args.seconds)
        probes.stop_insert.set()
        target = history_count(primary)
        say(f"load done: {committed:,} committed in {wall:.1f} s ({committed / wall:.0f} tps); waiting for catch-up")
        # the appliers run: just wait
        waits = [Drain(d.name, lambda: None, d.count, d.check, restarted=False) for d in drains]
        for d in waits:
            d.base = d.now = d.count()
        run_drains(waits, target, 900, serial=False)
        catchup = {d.name: d.done_s for d in waits}
        probes.finish(60)
        check_agents(agents)
        check_native(native)
        results["b"] = {"committed": committed, "wall": wall, "errors": errors, "catchup": catchup,
                        "lags": {w.name: probes.lags(w) for w in probe_watchers}, "procs": monitor.phase(),
                        "load": (load_b, load())}

        say("comparing every row of both replicas with the primary")
        results["diffs"] = differences(primary, {"native": native, "ark": standby})
        report(args, results)
    return 0


def _pid_of(proc: MariaDBInstance | AgentProcess) -> Callable[[], int | None]:
    """A callable giving ``proc``'s current pid (it changes when the process restarts)."""
    return lambda: proc.pid


def _copy_logs(root: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copytree(root / "logs", dest / "ark", dirs_exist_ok=True)
    for name in ("primary", "native", "ark"):
        with contextlib.suppress(OSError):
            shutil.copy(root / "mariadb" / name / "server.log", dest / f"mariadb-{name}.log")


def report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    a, b = results["a"], results["b"]
    drains: dict[str, Drain] = {d.name: d for d in a["drains"]}
    print()
    how = ("one after the other" if args.serial_drain else "at once") + (
        ", Ark by a new `ark apply` process" if args.restart_apply else ", Ark by `ark resume`")
    print(f"== (a) backlog drain: {a['backlog']:,} bank transactions written in {a['wall']:.1f} s by {args.clients} "
          f"clients with both appliers stopped; then both started {how} (load average {a['load'][0]:.1f} → "
          f"{a['load'][1]:.1f})")
    print(f"{'':10} {'first row s':>12} {'caught up s':>12} {'txn/s':>9} {'txn/s after 1st row':>20}")
    rate: dict[str, float] = {}
    moving: dict[str, float] = {}
    for name in ("native", "ark"):
        d = drains[name]
        rate[name] = a["backlog"] / d.done_s
        moving[name] = a["backlog"] / max(1e-9, d.done_s - d.first_s)
        print(f"{name:10} {fmt_s(d.first_s):>12} {fmt_s(d.done_s):>12} {rate[name]:9.0f} {moving[name]:20.0f}")
    ratio_a = rate["ark"] / rate["native"]
    print(f"ratio Ark/native drain rate: {ratio_a:.3f} (after the first row: {moving['ark'] / moving['native']:.3f})"
          f"  (goal >= 1.0: {'met' if ratio_a >= 1.0 else 'NOT met'})")
    print()
    print(f"== (b) steady load: {args.clients} clients, {b['committed']:,} committed in {b['wall']:.1f} s on the "
          f"primary ({b['committed'] / b['wall']:.0f} tps); probes: {len(b['lags']['ark'])} (load average "
          f"{b['load'][0]:.1f} → {b['load'][1]:.1f})")
    print(f"{'':10} {'catch-up s':>11} {'sustain tps':>12} {'lag p50 s':>10} {'lag p99 s':>10} {'lag max s':>10}")
    for name in ("native", "ark"):
        lags = b["lags"][name]
        sustain = b["committed"] / (b["wall"] + b["catchup"][name])
        print(f"{name:10} {fmt_s(b['catchup'][name]):>11} {sustain:12.1f} {pct(lags, 50):10.3f} "
              f"{pct(lags, 99):10.3f} {max(lags, default=float('nan')):10.3f}")
    kafka = b["lags"]["kafka"]
    print(f"{'(Ark: readable in Kafka, before the apply)':>47} {pct(kafka, 50):10.3f} {pct(kafka, 99):10.3f} "
          f"{max(kafka, default=float('nan')):10.3f}")
    p50 = pct(b["lags"]["native"], 50) / pct(b["lags"]["ark"], 50)
    p99 = pct(b["lags"]["native"], 99) / pct(b["lags"]["ark"], 99)
    print(f"ratio native/Ark lag (>= 1.0: Ark's lag is no larger): p50 {p50:.3f}, p99 {p99:.3f}  "
          f"(goal >= 1.0: {'met' if min(p50, p99) >= 1.0 else 'NOT met'})")
    print()
    print(f"== processes: CPU seconds and peak RSS per phase (a: the drain, b: the load + catch-up); {machine()}")
    print(f"{'':18} {'a cpu s':>8} {'a RSS MiB':>10} {'b cpu s':>8} {'b RSS MiB':>10}")
    for label in sorted(set(a["procs"]) | set(b["procs"])):
        ca, ra = a["procs"].get(label, (0.0, 0))
        cb, rb = b["procs"].get(label, (0.0, 0))
        print(f"{label:18} {ca:8.1f} {ra / 2**20:10.1f} {cb:8.1f} {rb / 2**20:10.1f}")
    for phase in ("a", "b"):
        procs = results[phase]["procs"]
        native_cpu = sum(procs.get(label, (0.0, 0))[0] for label in NATIVE_PATH)
        ark_cpu = sum(procs.get(label, (0.0, 0))[0] for label in ARK_PATH)
        print(f"CPU s of the path, {phase}: native {native_cpu:.1f} ({' + '.join(NATIVE_PATH)}), Ark {ark_cpu:.1f} "
              f"({' + '.join(ARK_PATH)}); Ark/native {ark_cpu / max(native_cpu, 1e-9):.1f}")
    print()
    for name, tables in results["diffs"].items():
        print(f"{name}: rows {'equal to the primary' if not tables else 'DIFFER in ' + ', '.join(tables)}")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the ExitStack has stopped every process and removed the work dir
        print("interrupted: every process of this run is stopped and its work dir removed", file=sys.stderr)
        sys.exit(130)
