"""PostgreSQL: Ark vs native logical replication, measured in one run on the same machine.

Starts its own Kafka broker and three PostgreSQL 15 instances under a temp dir (primary, native
subscriber, Ark standby). Both replicate from the same primary AT THE SAME TIME, so they see exactly
the same workload:

(q) a quiet primary (``--quiet-seconds``): only a probe row inserted every 0.05 s; lag p50/p99 (lag = time the
    standby shows it - insert time; each standby is polled every ``--probe-poll`` s, 0.01 by default).
(a) pgbench tpcb-like (``-i -s 10``, 4 clients, ``--seconds``): committed transactions, catch-up time
    after pgbench ends, sustainable tps = committed / (run time + catch-up), and lag p50/p99 from a
    probe row inserted on the primary every 0.2 s.
(b) one UPDATE of every row of ``big`` (``--rows`` rows, already replicated): seconds from the
    UPDATE's commit until each standby shows it; peak RSS of the Ark capture and apply processes.

    python bench/pg_vs_native.py [--seconds 60] [--rows 1000000] [--keep-logs DIR]
    python bench/pg_vs_native.py --lag-only      # (q) and (a) only, 20 s of pgbench: a few minutes

See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pg_vs_native_report import fmt_s, pct, report  # noqa: E402  (re-exported for the other bench scripts)

from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.ports import free_port  # noqa: E402
from deploy.postgres import PG_BIN, PgInstance  # noqa: E402

DB = "bench"
GROUP = "pgbench"
PUB, SUB = "bench_pub", "bench_sub"
TABLES = ["pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "lag_probe", "big"]
PROBE_EVERY_S = 0.2
QUIET_PROBE_EVERY_S = 0.05
#: How often each standby is polled for probe rows: the lag measured includes up to this much (both sides alike).
PROBE_POLL_S = 0.01
POLL_S = 0.2
os.environ.setdefault("ARK_CONTROL_KEY", secrets.token_hex(32))  # the group's control key, for this run only

_T0 = time.monotonic()


def say(msg: str) -> None:
    """One progress line, stamped with the seconds since start."""
    print(f"[{time.monotonic() - _T0:7.1f}s] {msg}", flush=True)


def sql(dsn: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run one statement in autocommit; rows if any."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(statement, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = POLL_S) -> float:
    """Poll ``pred`` until true; the seconds it took. Raises TimeoutError naming ``what``."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


# -- process monitor: CPU seconds and peak RSS per labelled process tree ------------------------------
class Monitor(threading.Thread):
    """Samples labelled processes (and their children) every 0.2 s: CPU seconds used, peak RSS."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.roots: dict[str, Callable[[], int | None]] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self._reset()

    def _reset(self) -> None:
        self.cpu_first: dict[tuple[str, int], float] = {}
        self.cpu_last: dict[tuple[str, int], float] = {}
        self.peak_rss: dict[str, int] = {}

    def watch(self, label: str, pid: Callable[[], int | None], children: bool) -> None:
        """Follow the process ``pid()`` (plus its children when ``children``) under ``label``."""
        with self.lock:
            self.roots[label + ("+" if children else "")] = pid

    def phase(self) -> dict[str, tuple[float, int]]:
        """Return {label: (cpu seconds, peak RSS bytes)} since the last call, and start a new phase."""
        with self.lock:
            out: dict[str, tuple[float, int]] = {}
            for (label, pid), last in self.cpu_last.items():
                cpu, rss = out.get(label, (0.0, self.peak_rss.get(label, 0)))
                out[label] = (cpu + last - self.cpu_first[(label, pid)], rss)
            self._reset()
            return out

    def run(self) -> None:
        while not self.stop_event.wait(POLL_S):
            with self.lock:
                for key, pid_of in self.roots.items():
                    label, children = key.rstrip("+"), key.endswith("+")
                    pid = pid_of()
                    if pid is None:
                        continue
                    try:
                        root = psutil.Process(pid)
                        procs = [root, *(root.children(recursive=True) if children else [])]
                    except psutil.Error:
                        continue
                    rss = 0
                    for proc in procs:
                        try:
                            with proc.oneshot():
                                t = proc.cpu_times()
                                cpu = t.user + t.system
                                rss += proc.memory_info().rss
                        except psutil.Error:
                            continue
                        self.cpu_first.setdefault((label, proc.pid), cpu)
                        self.cpu_last[(label, proc.pid)] = cpu
                    self.peak_rss[label] = max(self.peak_rss.get(label, 0), rss)


# -- lag probes --------------------------------------------------------------------------------------
@dataclass
class ProbeWatcher:
    """Polls one standby for new lag_probe rows; lag = standby clock when seen - primary insert time."""

    name: str
    dsn: str
    lags: dict[int, float] = field(default_factory=dict)
    last_id: int = 0

    def poll_once(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute("SELECT id, extract(epoch FROM clock_timestamp() - at)::float8 FROM lag_probe "
                            "WHERE id > %s ORDER BY id", (self.last_id,)).fetchall()
        for pid, lag in rows:
            self.lags[pid] = lag
            self.last_id = max(self.last_id, pid)


class Probes:
    """Insert a probe row on the primary every ``every`` s; watch each standby every ``poll`` s."""

    def __init__(self, primary_dsn: str, watchers: list[ProbeWatcher], every: float = PROBE_EVERY_S,
                 poll: float = PROBE_POLL_S) -> None:
        self.primary_dsn = primary_dsn
        self.every = every
        self.poll = poll
        self.watchers = watchers
        self.inserted: list[int] = []
        self.stop_insert = threading.Event()
        self.stop_watch = threading.Event()
        self.threads = [threading.Thread(target=self._insert, daemon=True)]
        self.threads += [threading.Thread(target=self._watch, args=(w,), daemon=True) for w in watchers]

    def start(self) -> Probes:
        for t in self.threads:
            t.start()
        return self

    def _insert(self) -> None:
        with psycopg.connect(self.primary_dsn, autocommit=True) as conn:
            nxt = time.monotonic()
            while not self.stop_insert.is_set():
                row = conn.execute("INSERT INTO lag_probe DEFAULT VALUES RETURNING id").fetchone()
                assert row is not None
                self.inserted.append(row[0])
                nxt += self.every
                self.stop_insert.wait(max(0.0, nxt - time.monotonic()))

    def _watch(self, watcher: ProbeWatcher) -> None:
        with psycopg.connect(watcher.dsn, autocommit=True) as conn:
            while not self.stop_watch.is_set():
                watcher.poll_once(conn)
                time.sleep(self.poll)

    def finish(self, timeout: float) -> None:
        """Stop inserting; wait until every standby has seen every probe (or ``timeout``); stop watching."""
        self.stop_insert.set()
        self.threads[0].join()
        last = self.inserted[-1] if self.inserted else 0
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: all(w.last_id >= last for w in self.watchers), timeout, "the last probe")
        self.stop_watch.set()
        for t in self.threads[1:]:
            t.join()

    def lags(self, watcher: ProbeWatcher) -> list[float]:
        """Lags of the probes inserted during the run (a missing one counts as infinite)."""
        return [watcher.lags.get(i, float("inf")) for i in self.inserted]


class RedoWatcher(threading.Thread):
    """Reads Ark's redo topic as an applier does (read_committed) and notes, per message, when it became readable
    less its source commit time (the message timestamp): Ark's lag before the apply (capture + Kafka)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-redo-watch",
                                  "isolation.level": "read_committed", "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(f"ark.{GROUP}.redo", 0, OFFSET_END)])
        self.seen: list[tuple[float, float]] = []  # (wall time seen, lag s)
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            msg = self.consumer.poll(0.1)
            if msg is None or msg.error():
                continue
            now = time.time()
            self.seen.append((now, now - msg.timestamp()[1] / 1000))
        self.consumer.close()

    def lags(self, start: float, end: float) -> list[float]:
        """Lags of the messages read between the wall times ``start`` and ``end``."""
        return [lag for at, lag in self.seen if start <= at <= end]


# -- set-up ------------------------------------------------------------------------------------------
def pg_conn_args(inst: PgInstance) -> list[str]:
    return ["-h", "127.0.0.1", "-p", str(inst.port), "-U", "postgres"]


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def prepare_primary(primary: PgInstance, rows: int, scale: int) -> None:
    dsn = primary.dsn(DB)
    say(f"pgbench -i -s {scale} on the primary")
    run([str(PG_BIN / "pgbench"), "-i", "-q", "-s", str(scale), *pg_conn_args(primary), DB])
    sql(dsn, "ALTER TABLE pgbench_history ADD COLUMN id bigserial PRIMARY KEY")
    sql(dsn, "CREATE TABLE lag_probe (id serial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
    say(f"filling big with {rows:,} rows")
    sql(dsn, "CREATE TABLE big (id int PRIMARY KEY, v int NOT NULL, n numeric(12,2), t text)")
    sql(dsn, "INSERT INTO big SELECT i, i, (i %% 100000) / 100.0, md5(i::text) FROM generate_series(1, %s) i",
        (rows,))
    sql(dsn, "VACUUM ANALYZE")


def setup_native(primary: PgInstance, sub: PgInstance, tables: list[str] | None = None) -> None:
    tables = tables or TABLES
    say("native: schema to the subscriber, publication, subscription (copy_data=true)")
    schema = run([str(PG_BIN / "pg_dump"), "-s", "--no-publications", "--no-subscriptions",
                  *pg_conn_args(primary), DB]).stdout
    run([str(PG_BIN / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *pg_conn_args(sub), "-d", DB], input=schema)
    sql(primary.dsn(DB), f"CREATE PUBLICATION {PUB} FOR TABLE {', '.join(tables)}")
    sql(sub.dsn(DB), f"CREATE SUBSCRIPTION {SUB} CONNECTION '{primary.dsn(DB)}' PUBLICATION {PUB} "
                     "WITH (copy_data = true)")

    def ready() -> bool:
        states = sql(sub.dsn(DB), "SELECT srsubstate FROM pg_subscription_rel")
        return len(states) == len(tables) and all(s == "r" for (s,) in states)

    took = wait_until(ready, 900, "the native initial sync")
    say(f"native: initial sync done in {took:.1f} s")


def drop_native(primary: PgInstance, sub: PgInstance) -> None:
    if not sub.is_running():
        return
    try:
        sql(sub.dsn(DB), f"DROP SUBSCRIPTION IF EXISTS {SUB}")
    except psycopg.Error:  # the primary is gone: detach the slot, then drop
        with contextlib.suppress(psycopg.Error):
            sql(sub.dsn(DB), f"ALTER SUBSCRIPTION {SUB} DISABLE")
            sql(sub.dsn(DB), f"ALTER SUBSCRIPTION {SUB} SET (slot_name = NONE)")
            sql(sub.dsn(DB), f"DROP SUBSCRIPTION {SUB}")


def write_ark_config(path: Path, kafka: str, primary: PgInstance, standby: PgInstance,
                     tables: list[str] | None = None) -> Path:
    tables = tables or TABLES

    def db(name: str, inst: PgInstance, **extra: Any) -> dict[str, Any]:
        return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": inst.port, "dbname": DB,
                "user": "postgres", **extra}

    doc = {"group": GROUP, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka},
           "primary": db("primary", primary, tables=[f"public.{t}" for t in tables]),
           "standbys": [db("standby", standby)]}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ark(config: Path, *args: str, timeout: float = 900) -> str:
    res = subprocess.run([sys.executable, "-m", "ops", "-c", str(config), *args], capture_output=True, text=True,
                         timeout=timeout, cwd=ROOT, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"ark {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.stdout


# -- the measurements --------------------------------------------------------------------------------
def fingerprint(dsn: str) -> tuple[int, int]:
    row = sql(dsn, "SELECT (SELECT count(*) FROM pgbench_history), "
                   "(SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts)")[0]
    return int(row[0]), int(row[1])


def wait_all(targets: dict[str, Callable[[], bool]], timeout: float) -> dict[str, float]:
    """Poll every predicate in its own thread from now; seconds until each became true (inf on timeout)."""
    start = time.monotonic()
    out: dict[str, float] = {}

    def one(name: str, pred: Callable[[], bool]) -> None:
        try:
            wait_until(pred, timeout, name)
            out[name] = time.monotonic() - start
        except TimeoutError:
            out[name] = float("inf")

    threads = [threading.Thread(target=one, args=item) for item in targets.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def check_agents(agents: list[AgentProcess]) -> None:
    for agent in agents:
        if not agent.alive():
            raise RuntimeError(f"ark {' '.join(agent.args)} exited ({agent.proc and agent.proc.returncode}):\n"
                               f"{agent.tail(40)}")


def pgbench_run(primary: PgInstance, seconds: int, clients: int) -> tuple[int, float, str]:
    """Run pgbench tpcb-like; (committed transactions, wall seconds, pgbench's tps line)."""
    cmd = [str(PG_BIN / "pgbench"), "-n", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
           "-P", "10", *pg_conn_args(primary), DB]
    started = time.monotonic()
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, check=False)
    wall = time.monotonic() - started
    if res.returncode != 0:
        raise RuntimeError(f"pgbench failed ({res.returncode}):\n{res.stdout}")
    m = re.search(r"number of transactions actually processed: (\d+)", res.stdout)
    if not m:
        raise RuntimeError(f"cannot parse pgbench output:\n{res.stdout}")
    tps = re.search(r"^tps = .*$", res.stdout, re.M)
    return int(m.group(1)), wall, tps.group(0) if tps else ""


def work_dir(prefix: str) -> Path:
    """A fresh work directory under /tmp, readable by the postgres OS user (the servers run as it)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    (root / "pg").mkdir()
    (root / "pg").chmod(0o755)
    return root


def start_cluster(stack: contextlib.ExitStack, root: Path, keep_logs: Path | None,
                  ) -> tuple[KafkaBroker, PgInstance, PgInstance, PgInstance]:
    """The benchmarks' machine room: a Kafka broker and three PostgreSQL instances (primary, native subscriber, Ark
    standby) under ``root``, each stopped and removed by ``stack``; the logs copied to ``keep_logs`` first."""
    stack.callback(shutil.rmtree, root, True)
    say("starting the Kafka broker")
    broker = KafkaBroker(root / "kafka", free_port(), free_port())
    stack.callback(broker.stop)
    broker.start(timeout=180)
    insts: dict[str, PgInstance] = {}
    for name in ("primary", "native", "ark"):
        inst = PgInstance(root / "pg" / name, free_port())
        stack.callback(inst.destroy)
        inst.init()
        inst.start()
        inst.create_database(DB)
        insts[name] = inst
    if keep_logs:  # registered last, so it runs before the instances are destroyed
        stack.callback(_copy_logs, root, keep_logs)
    primary, native, standby = insts["primary"], insts["native"], insts["ark"]
    say(f"PostgreSQL up: primary :{primary.port}, native subscriber :{native.port}, Ark standby :{standby.port}; "
        f"Kafka {broker.bootstrap}")
    return broker, primary, native, standby


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="pgbench -T (default 60)")
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the big UPDATE (default 1,000,000)")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i -s (default 10)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy agent and server logs here at the end")
    ap.add_argument("--quiet-seconds", type=int, default=15,
                    help="(q): seconds of a quiet primary, one probe row every 0.05 s (default 15; 0 skips it)")
    ap.add_argument("--probe-poll", type=float, default=PROBE_POLL_S,
                    help=f"seconds between polls of each standby for probe rows (default {PROBE_POLL_S})")
    ap.add_argument("--lag-only", action="store_true",
                    help="the lag phases (q) and (a) only: no big table, no (b); --seconds defaults to 20")
    args = ap.parse_args(argv)
    if args.lag_only:
        args.rows = min(args.rows, 1000)
        if "--seconds" not in (argv if argv is not None else sys.argv[1:]):
            args.seconds = 20

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    root = work_dir("ark-pgbench-")
    monitor = Monitor()
    monitor.start()
    agents: list[AgentProcess] = []
    results: dict[str, Any] = {}
    say(f"work dir {root}")
    with contextlib.ExitStack() as stack:
        stack.callback(monitor.stop_event.set)
        broker, primary, native, standby = start_cluster(stack, root, args.keep_logs)
        insts = {"primary": primary, "native": native, "ark": standby}
        for name, inst in insts.items():
            monitor.watch(f"pg {name}", lambda inst=inst: inst.pid, children=True)
        monitor.watch("kafka", lambda: broker.pid, children=False)

        prepare_primary(primary, args.rows, args.scale)
        stack.callback(drop_native, primary, native)  # runs before the instances stop
        setup_native(primary, native)

        config = write_ark_config(root / "ark.yaml", broker.bootstrap, primary, standby)
        say("ark sync standby")
        t = time.monotonic()
        ark(config, "sync", "standby")
        say(f"ark: initial sync done in {time.monotonic() - t:.1f} s; starting capture and apply")
        for label, cmd in (("capture", ["capture"]), ("apply", ["apply", "standby"])):
            agent = AgentProcess(config, cmd, root / "logs" / f"{label}.log").start()
            agents.append(agent)
            stack.callback(agent.stop)
            monitor.watch(f"ark {label}", lambda agent=agent: agent.pid, children=True)

        watchers = [ProbeWatcher("native", native.dsn(DB)), ProbeWatcher("ark", standby.dsn(DB))]
        last = sql(primary.dsn(DB), "INSERT INTO lag_probe DEFAULT VALUES RETURNING id")[0][0]
        for w in watchers:
            def seen(w: ProbeWatcher = w) -> bool:
                check_agents(agents)
                return bool(sql(w.dsn, "SELECT 1 FROM lag_probe WHERE id = %s", (last,)))
            wait_until(seen, 300, f"{w.name} to stream")
            w.last_id = last
        say("both standbys stream; settling 3 s")
        redo_watch = RedoWatcher(broker.bootstrap)
        redo_watch.start()
        stack.callback(redo_watch.stop_event.set)
        time.sleep(3)

        # (q) a quiet primary
        if args.quiet_seconds > 0:
            say(f"(q) quiet primary: one probe row every {QUIET_PROBE_EVERY_S} s for {args.quiet_seconds} s")
            started = time.time()
            quiet = Probes(primary.dsn(DB), watchers, every=QUIET_PROBE_EVERY_S, poll=args.probe_poll).start()
            time.sleep(args.quiet_seconds)
            quiet.finish(60)
            check_agents(agents)
            results["q"] = {"lags": {w.name: quiet.lags(w) for w in watchers}, "every": QUIET_PROBE_EVERY_S,
                            "kafka": redo_watch.lags(started, time.time())}
            say("(q) lag p50/p99: " + ", ".join(f"{w.name} {pct(quiet.lags(w), 50):.3f}/{pct(quiet.lags(w), 99):.3f} s"
                                                for w in watchers))

        # (a) pgbench
        monitor.phase()
        say(f"(a) pgbench tpcb-like: {args.clients} clients, {args.seconds} s, both replicating")
        started = time.time()
        probes = Probes(primary.dsn(DB), watchers, poll=args.probe_poll).start()
        committed, wall, tps_line = pgbench_run(primary, args.seconds, args.clients)
        probes.stop_insert.set()
        kafka_lags = redo_watch.lags(started, time.time())
        target = fingerprint(primary.dsn(DB))
        say(f"pgbench done: {committed:,} committed in {wall:.1f} s ({tps_line}); waiting for catch-up")
        catchup = wait_all({w.name: (lambda w=w: fingerprint(w.dsn) == target) for w in watchers}, 900)
        probes.finish(60)
        check_agents(agents)
        results["a"] = {"committed": committed, "wall": wall, "tps_line": tps_line, "catchup": catchup,
                        "lags": {w.name: probes.lags(w) for w in watchers}, "procs": monitor.phase(),
                        "kafka": kafka_lags}
        say("catch-up: " + ", ".join(f"{k} {fmt_s(v)} s" for k, v in catchup.items()))

        if args.lag_only:
            report(args, results)
            return 0

        # (b) one big UPDATE
        time.sleep(2)
        monitor.phase()
        say(f"(b) UPDATE big SET v = v + 1 ({args.rows:,} rows) in one transaction")
        t = time.monotonic()
        sql(primary.dsn(DB), "UPDATE big SET v = v + 1")
        committed_at = time.monotonic()
        say(f"UPDATE committed on the primary in {committed_at - t:.1f} s; polling the standbys every {POLL_S} s")
        sentinel = f"SELECT v = id + 1 FROM big WHERE id = {args.rows}"
        applied = wait_all({w.name: (lambda w=w: bool(sql(w.dsn, sentinel)[0][0])) for w in watchers}, 1800)
        procs_b = monitor.phase()
        counts = {w.name: sql(w.dsn, "SELECT count(*) FROM big WHERE v = id + 1")[0][0] for w in watchers}
        check_agents(agents)
        results["b"] = {"update_s": committed_at - t, "applied": applied, "counts": counts, "procs": procs_b}
        say("applied after commit: " + ", ".join(f"{k} {fmt_s(v)} s" for k, v in applied.items()))
        report(args, results)
    return 0


def _copy_logs(root: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        shutil.copytree(root / "logs", dest / "ark", dirs_exist_ok=True)
    for name in ("primary", "native", "ark"):
        with contextlib.suppress(OSError):
            shutil.copy(root / "pg" / name / "server.log", dest / f"pg-{name}.log")




if __name__ == "__main__":
    sys.exit(main())
