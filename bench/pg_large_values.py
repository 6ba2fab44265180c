"""PostgreSQL large values: Ark vs native logical replication on 10 MiB documents, measured in one run.

Starts its own Kafka broker and three PostgreSQL 15 instances under a temp dir (primary, native
subscriber, Ark standby; the set-up of bench/pg_vs_native.py). Both replicate ``docs(id int primary key,
body bytea, note text)`` from the same primary AT THE SAME TIME, through three phases:

(random) ``--docs`` documents of ``--mib`` MiB of random (incompressible) bytea, ``--per-txn`` a transaction;
(text)   as many documents of compressible text in ``note`` (words drawn with Zipf frequencies, like prose);
(update) ``--updates`` of the random documents get a new random body, ``--per-txn`` a transaction.

Every phase starts with a CHECKPOINT on the primary. For each phase: the primary's WAL bytes
(``pg_wal_lsn_diff``; of which full-page images, from ``pg_waldump --stats``) against the bytes Ark put
on Kafka for it (the redo topic's committed records: key + value + headers; and the growth of the
partition's segment files on the broker's disk, i.e. as the producer compressed them); the pgoutput
bytes each walsender sent (TCP ``bytes_acked`` from ``ss``) and its reorder buffer's spill; seconds from
the last commit until each side shows the last document, and MiB/s from the first write until then; per
process on each path (walsender and apply worker; walsender, capture, apply and the standby backend that
serves the applier; the broker shown apart): CPU seconds, VmHWM (reset at the phase start through
``/proc/PID/clear_refs``) and the peak of RssAnon sampled every 0.1 s. At the end both replicas are
compared with the primary (length and md5 of every value); the exit code is 1 if one differs.

    python bench/pg_large_values.py [--docs 50] [--mib 10] [--per-txn 5] [--updates 10] [--keep-logs DIR]

See bench/README.md for the figures and how to read them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, TopicPartition
from pg_vs_native import (  # bench/ is the script's directory, on sys.path when run as a script
    DB,
    GROUP,
    ROOT,
    SUB,
    ark,
    check_agents,
    drop_native,
    fmt_s,
    say,
    setup_native,
    sql,
    start_cluster,
    wait_until,
    work_dir,
    write_ark_config,
)

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from deploy.agents import AgentProcess  # noqa: E402
from deploy.kafka import KafkaBroker  # noqa: E402
from deploy.postgres import PG_BIN, PgInstance  # noqa: E402
from schemas.topics import redo_topic  # noqa: E402

MIB = 1 << 20
TABLE = "docs"
SAMPLE_S = 0.1
WAIT_POLL_S = 0.2
PROGRESS_EVERY_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The processes on each path, in the order of the memory table.
NATIVE_PROCS = ("native walsender", "native apply worker")
ARK_PROCS = ("ark walsender", "ark capture", "ark apply", "ark standby backend")
BROKER = "kafka broker"  # shown, not added to Ark's path: a broker serves many groups


# -- documents ---------------------------------------------------------------------------------------
@dataclass
class Doc:
    id: int
    body: bytes | None
    note: str

    @property
    def size(self) -> int:
        return len(self.body or b"") + len(self.note.encode())


def random_docs(ids: range, size: int) -> list[Doc]:
    return [Doc(i, random.randbytes(size), f"random {i}") for i in ids]


def text_docs(ids: range, size: int, rng: random.Random) -> list[Doc]:
    """Words of a 2,000-word vocabulary drawn with Zipf frequencies (1/rank), like prose: PostgreSQL's pglz
    keeps ~52% of it, zlib -1 ~37%. (Uniform draws defeat pglz's 4 KiB window: PostgreSQL stores them raw.)"""
    vocab = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(2000)]
    weights = [1 / rank for rank in range(1, len(vocab) + 1)]
    docs = []
    for i in ids:
        text = f"doc {i}:"
        while len(text) < size:
            text += " " + " ".join(rng.choices(vocab, weights=weights, k=(size - len(text)) // 5 + 100))
        docs.append(Doc(i, None, text[:size]))
    return docs


# -- what each phase measures ------------------------------------------------------------------------
@dataclass
class Phase:
    name: str
    op: str  # "insert" or "update"
    docs: list[Doc]
    written: int = 0
    primary_s: float = 0.0
    wal_bytes: int = 0
    wal_lsns: tuple[str, str] = ("", "")
    fpi_bytes: int | None = None  # full-page images in that WAL (pg_waldump --stats)
    offsets: tuple[int, int] = (0, 0)
    disk_bytes: int = 0
    record_bytes: int = 0
    records: int = 0
    wire: dict[str, int] = field(default_factory=dict)
    spill: dict[str, int] = field(default_factory=dict)
    after_commit: dict[str, float] = field(default_factory=dict)
    procs: dict[str, ProcStats] = field(default_factory=dict)

    def mib_per_s(self, side: str) -> float:
        return self.written / MIB / (self.primary_s + self.after_commit[side])


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0]) * 1024
    return out


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime: fields 14 and 15 of stat(5)


@dataclass
class ProcStats:
    pids: int
    hwm: int  # VmHWM, summed over the pids
    anon: int  # peak of the sampled sum of RssAnon
    cpu: float  # CPU seconds in the phase


class ProcWatch(threading.Thread):
    """Per labelled group of pids, per phase: CPU seconds, VmHWM (reset at the phase start through
    ``clear_refs``) and the peak of RssAnon sampled every 0.1 s (private memory; a PostgreSQL backend's
    VmHWM also counts the shared buffers it touched)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.groups: dict[str, list[int]] = {}
        self.peak_anon: dict[str, int] = {}
        self.cpu0: dict[str, float] = {}
        self.hwm_reset = True

    def start_phase(self, groups: dict[str, list[int]]) -> None:
        for pids in groups.values():
            for pid in pids:
                try:
                    Path(f"/proc/{pid}/clear_refs").write_text("5")
                except OSError:
                    self.hwm_reset = False  # then VmHWM is the process's lifetime peak (said in the report)
        with self.lock:
            self.groups, self.peak_anon = groups, {label: 0 for label in groups}
            self.cpu0 = {label: sum(_cpu_s(p) for p in pids) for label, pids in groups.items()}

    def end_phase(self) -> dict[str, ProcStats]:
        with self.lock:
            self._sample()
            return {label: ProcStats(len(pids), sum(_status_kib(p, ("VmHWM",)).get("VmHWM", 0) for p in pids),
                                     self.peak_anon[label], sum(_cpu_s(p) for p in pids) - self.cpu0[label])
                    for label, pids in self.groups.items()}

    def _sample(self) -> None:
        for label, pids in self.groups.items():
            anon = sum(_status_kib(p, ("RssAnon",)).get("RssAnon", 0) for p in pids)
            self.peak_anon[label] = max(self.peak_anon[label], anon)

    def run(self) -> None:
        while not self.stop_event.wait(SAMPLE_S):
            with self.lock:
                self._sample()


# -- the instances' processes and counters -----------------------------------------------------------
@dataclass
class Pipelines:
    primary: PgInstance
    native: PgInstance
    standby: PgInstance
    capture: AgentProcess
    apply: AgentProcess

    def walsenders(self) -> dict[str, tuple[int, int, str]]:
        """{side: (walsender pid, client port, slot)} of the two streaming walsenders on the primary."""
        rows = sql(self.primary.dsn(DB),
                   "SELECT r.application_name, r.pid, r.client_port, s.slot_name "
                   "FROM pg_stat_replication r JOIN pg_replication_slots s ON s.active_pid = r.pid")
        out = {}
        for app, pid, port, slot in rows:
            side = "native" if app == SUB else "ark" if app == "ark-capture" else None
            if side:
                out[side] = (int(pid), int(port), str(slot))
        if set(out) != {"native", "ark"}:
            raise RuntimeError(f"expected the native and the Ark walsender on the primary, found {rows}")
        return out

    def processes(self) -> dict[str, list[int]]:
        ws = self.walsenders()
        apply_worker = sql(self.native.dsn(DB), "SELECT pid FROM pg_stat_subscription WHERE subname = %s "
                                                "AND relid IS NULL AND pid IS NOT NULL", (SUB,))
        backends = sql(self.standby.dsn(DB), "SELECT pid FROM pg_stat_activity WHERE application_name = 'ark' "
                                             "AND backend_type = 'client backend'")
        assert self.capture.pid is not None and self.apply.pid is not None
        return {"native walsender": [ws["native"][0]], "native apply worker": [int(r[0]) for r in apply_worker],
                "ark walsender": [ws["ark"][0]], "ark capture": [self.capture.pid], "ark apply": [self.apply.pid],
                "ark standby backend": [int(r[0]) for r in backends]}

    def wire_bytes(self) -> dict[str, int]:
        """Bytes each walsender has sent on its connection (acknowledged by the receiver's kernel)."""
        out = {}
        for side, (_pid, port, _slot) in self.walsenders().items():
            text = subprocess.run(["ss", "-tinH", "state", "established",
                                   f"( sport = :{self.primary.port} and dport = :{port} )"],
                                  capture_output=True, text=True, check=True).stdout
            acked = [int(tok.split(":")[1]) for tok in text.split() if tok.startswith("bytes_acked:")]
            out[side] = sum(acked)
        return out

    def spill_bytes(self) -> dict[str, int]:
        """Bytes each slot's reorder buffer spilled to disk (pg_stat_replication_slots)."""
        slots = {slot: side for side, (_p, _c, slot) in self.walsenders().items()}
        rows = sql(self.primary.dsn(DB), "SELECT slot_name, spill_bytes FROM pg_stat_replication_slots")
        return {slots[name]: int(b) for name, b in rows if name in slots}


def wal_lsn(dsn: str) -> str:
    return str(sql(dsn, "SELECT pg_current_wal_lsn()")[0][0])


def fpi_bytes(inst: PgInstance, lsns: tuple[str, str]) -> int | None:
    """Bytes of full-page images between two LSNs (``pg_waldump --stats``); None when it cannot tell (the WAL
    was recycled, or its output changed)."""
    res = subprocess.run([str(PG_BIN / "pg_waldump"), "--stats", "-p", str(inst.datadir / "pg_wal"),
                          "-s", lsns[0], "-e", lsns[1]], capture_output=True, text=True, check=False)
    m = re.search(r"^Total\s+\d+\s+\d+\s+\[[^]]*\]\s+(\d+)", res.stdout, re.M)
    if m is None:
        say(f"  pg_waldump --stats gave no total ({res.returncode}): {res.stderr.strip()[:200]}")
        return None
    return int(m.group(1))


def redo_disk_bytes(broker: KafkaBroker) -> int:
    """Size of the redo partition's segment files (*.log: record batches as the producer compressed them)."""
    return sum(f.stat().st_size for f in (broker.data_dir / f"{redo_topic(GROUP)}-0").glob("*.log"))


def redo_end(bootstrap: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-large-values"})
    try:
        return int(consumer.get_watermark_offsets(TopicPartition(redo_topic(GROUP), 0), timeout=30)[1])
    finally:
        consumer.close()


def count_records(bootstrap: str, phases: list[Phase]) -> None:
    """Sum key + value + header bytes of the committed redo records in each phase's offset range."""
    start, end = phases[0].offsets[0], phases[-1].offsets[1]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-large-values",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "enable.partition.eof": True, "fetch.max.bytes": 64 * MIB})
    consumer.assign([TopicPartition(redo_topic(GROUP), 0, start)])
    try:
        while True:
            msg = consumer.poll(10)
            if msg is None:
                raise TimeoutError("no redo record within 10 s while counting")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:  # read everything committed
                    break
                raise RuntimeError(f"reading the redo topic: {err}")
            offset = msg.offset() or 0
            if offset >= end:
                break
            size = len(msg.value() or b"") + len(msg.key() or b"")
            headers = msg.headers() or []
            for name, value in headers.items() if isinstance(headers, dict) else headers:
                size += len(name.encode()) + len(value.encode() if isinstance(value, str) else value or b"")
            for ph in phases:
                if ph.offsets[0] <= offset < ph.offsets[1]:
                    ph.record_bytes += size
                    ph.records += 1
    finally:
        consumer.close()


# -- one phase ---------------------------------------------------------------------------------------
def write_phase(primary_dsn: str, phase: Phase, per_txn: int) -> None:
    """Write the phase's documents on the primary, ``per_txn`` a transaction; WAL bytes and seconds."""
    with psycopg.connect(primary_dsn) as conn:
        lsn0 = str(conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0])  # type: ignore[index]
        conn.commit()
        started = time.monotonic()
        for n in range(0, len(phase.docs), per_txn):
            for d in phase.docs[n:n + per_txn]:
                if phase.op == "insert":
                    conn.execute(f"INSERT INTO {TABLE} (id, body, note) VALUES (%s, %b, %s)", (d.id, d.body, d.note))
                else:
                    conn.execute(f"UPDATE {TABLE} SET body = %b, note = %s WHERE id = %s", (d.body, d.note, d.id))
            conn.commit()
            done = phase.docs[:n + per_txn]
            say(f"  {phase.name}: committed {len(done)}/{len(phase.docs)} documents "
                f"({sum(d.size for d in done) / MIB:,.0f} MiB) in {time.monotonic() - started:.1f} s")
        phase.primary_s = time.monotonic() - started
        row = conn.execute("SELECT pg_current_wal_lsn()::text, pg_wal_lsn_diff(pg_current_wal_lsn(), %s)::bigint",
                           (lsn0,)).fetchone()
        assert row is not None
        phase.wal_lsns, phase.wal_bytes = (lsn0, str(row[0])), int(row[1])
    phase.written = sum(d.size for d in phase.docs)


def wait_applied(phase: Phase, dsns: dict[str, str], agents: list[AgentProcess], timeout: float) -> None:
    """Seconds from now (just after the last commit) until each side shows the phase's last document."""
    last = phase.docs[-1]
    want = hashlib.md5(last.note.encode()).hexdigest()
    ids = [d.id for d in phase.docs]
    notes = [d.note[:40] for d in phase.docs]
    conns = {side: psycopg.connect(dsn, autocommit=True) for side, dsn in dsns.items()}
    start = next_progress = time.monotonic()
    try:
        while len(phase.after_commit) < len(conns):
            check_agents(agents)
            for side, conn in conns.items():
                if side not in phase.after_commit:
                    row = conn.execute(f"SELECT md5(note) FROM {TABLE} WHERE id = %s", (last.id,)).fetchone()
                    if row is not None and row[0] == want:
                        phase.after_commit[side] = time.monotonic() - start
                        say(f"  {side} shows the last document {phase.after_commit[side]:.2f} s after the last commit")
            now = time.monotonic()
            if now - start > timeout:
                for side in conns:
                    phase.after_commit.setdefault(side, float("inf"))
                break
            if now >= next_progress and len(phase.after_commit) < len(conns):
                counts = {side: conn.execute(f"SELECT count(*) FROM {TABLE} WHERE id = ANY(%s) AND left(note, 40) = "
                                             "ANY(%s)", (ids, notes)).fetchone()[0]  # type: ignore[index]
                          for side, conn in conns.items()}
                say(f"  waiting {now - start:.0f} s: "
                    + ", ".join(f"{s} has {c}/{len(ids)}" for s, c in counts.items()))
                next_progress = now + PROGRESS_EVERY_S
            time.sleep(WAIT_POLL_S)
    finally:
        for conn in conns.values():
            conn.close()


def run_phase(phase: Phase, pipes: Pipelines, broker: KafkaBroker, watch: ProcWatch,
              per_txn: int, timeout: float) -> None:
    primary_dsn = pipes.primary.dsn(DB)
    sql(primary_dsn, "CHECKPOINT")  # every phase starts from a checkpoint: same full-page-write state
    wire0, spill0 = pipes.wire_bytes(), pipes.spill_bytes()
    offset0, disk0 = redo_end(broker.bootstrap), redo_disk_bytes(broker)
    watch.start_phase({**pipes.processes(), BROKER: [broker.pid or 0]})
    say(f"({phase.name}) {len(phase.docs)} documents, {sum(d.size for d in phase.docs) / MIB:,.0f} MiB, "
        f"{per_txn} a transaction ({phase.op})")
    write_phase(primary_dsn, phase, per_txn)
    wait_applied(phase, {"native": pipes.native.dsn(DB), "ark": pipes.standby.dsn(DB)},
                 [pipes.capture, pipes.apply], timeout)
    phase.procs = watch.end_phase()
    phase.fpi_bytes = fpi_bytes(pipes.primary, phase.wal_lsns)  # before the next CHECKPOINT recycles that WAL
    phase.offsets = (offset0, redo_end(broker.bootstrap))
    phase.disk_bytes = redo_disk_bytes(broker) - disk0
    wire1, spill1 = pipes.wire_bytes(), pipes.spill_bytes()
    phase.wire = {s: wire1[s] - wire0[s] for s in wire1}
    phase.spill = {s: spill1.get(s, 0) - spill0.get(s, 0) for s in spill1}
    say(f"({phase.name}) WAL {phase.wal_bytes / MIB:,.1f} MiB, redo partition +{phase.disk_bytes / MIB:,.1f} MiB on "
        f"disk; after the last commit: native {fmt_s(phase.after_commit['native'])} s, "
        f"ark {fmt_s(phase.after_commit['ark'])} s")


def fingerprint(dsn: str) -> list[tuple[Any, ...]]:
    return sql(dsn, f"SELECT id, length(body), md5(body), length(note), md5(note) FROM {TABLE} ORDER BY id")


# -- the report --------------------------------------------------------------------------------------
def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and a != float("inf") and b != float("inf") else "-"


def report(args: argparse.Namespace, phases: list[Phase], equal: dict[str, str], hwm_reset: bool) -> None:
    m = MIB
    print()
    print(f"== bytes, MiB: {args.docs} documents of {args.mib} MiB a phase, {args.per_txn} a transaction. WAL on the "
          "primary; Kafka: the redo records (key + value + headers) and the growth of the partition on disk")
    print(f"{'phase':8} {'written':>8} {'WAL':>8} {'of it FPI':>10} {'WAL/wr':>7} {'Kafka rec':>10} {'rec/WAL':>8} "
          f"{'Kafka disk':>11} {'disk/WAL':>9} {'records':>8}")
    for p in phases:
        fpi = "-" if p.fpi_bytes is None else f"{p.fpi_bytes / m:.1f}"
        print(f"{p.name:8} {p.written / m:8.1f} {p.wal_bytes / m:8.1f} {fpi:>10} {ratio(p.wal_bytes, p.written):>7} "
              f"{p.record_bytes / m:10.1f} {ratio(p.record_bytes, p.wal_bytes):>8} {p.disk_bytes / m:11.1f} "
              f"{ratio(p.disk_bytes, p.wal_bytes):>9} {p.records:8}")
    print()
    print("== walsenders, MiB: pgoutput bytes sent on the connection (TCP bytes_acked), reorder buffer spilled to disk")
    print(f"{'phase':8} {'sent native':>12} {'sent ark':>9} {'spill native':>13} {'spill ark':>10}")
    for p in phases:
        print(f"{p.name:8} {p.wire.get('native', 0) / m:12.1f} {p.wire.get('ark', 0) / m:9.1f} "
              f"{p.spill.get('native', 0) / m:13.1f} {p.spill.get('ark', 0) / m:10.1f}")
    print()
    print("== time: seconds from the last commit until the side shows the last document; MiB/s from the first write")
    print(f"{'phase':8} {'primary s':>10} {'native s':>9} {'ark s':>9} {'Ark/nat':>8} {'native MiB/s':>13} "
          f"{'ark MiB/s':>10} {'Ark/nat':>8}")
    for p in phases:
        n, a = p.after_commit["native"], p.after_commit["ark"]
        print(f"{p.name:8} {p.primary_s:10.1f} {fmt_s(n):>9} {fmt_s(a):>9} {ratio(a, n):>8} "
              f"{p.mib_per_s('native'):13.1f} {p.mib_per_s('ark'):10.1f} "
              f"{ratio(p.mib_per_s('ark'), p.mib_per_s('native')):>8}")
    print()
    how = "reset at each phase start" if hwm_reset else "lifetime peak: clear_refs refused"
    print(f"== memory per phase, MiB: VmHWM ({how}) / peak RssAnon (sampled every {SAMPLE_S} s); "
          "CPU seconds per phase")
    print(f"{'process':24}" + "".join(f" {p.name + ' MiB':>15} {'cpu s':>6}" for p in phases))
    for label in (*NATIVE_PROCS, *ARK_PROCS, BROKER):
        st = [p.procs[label] for p in phases]
        name = label if st[0].pids == 1 else f"{label} ({st[0].pids})"
        print(f"{name:24}" + "".join(f" {x.hwm / m:6.0f} / {x.anon / m:6.0f} {x.cpu:6.1f}" for x in st))
    totals = {path: [(sum(p.procs[lb].anon for lb in labels), sum(p.procs[lb].cpu for lb in labels)) for p in phases]
              for path, labels in (("native", NATIVE_PROCS), ("ark", ARK_PROCS))}
    for path, per_phase in totals.items():
        print(f"{path + ' path (w/o broker)':24}" + "".join(f" {anon / m:15.0f} {cpu:6.1f}" for anon, cpu in per_phase))
    print(f"{'Ark/native':24}" + "".join(f" {ratio(a[0], n[0]):>15} {ratio(a[1], n[1]):>6}"
                                         for a, n in zip(totals["ark"], totals["native"], strict=True)))
    print()
    print("== replicas against the primary (length and md5 of every value): "
          + ", ".join(f"{side} {verdict}" for side, verdict in equal.items()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=50, help="documents per phase (default 50)")
    ap.add_argument("--mib", type=int, default=10, help="size of a document in MiB (default 10)")
    ap.add_argument("--per-txn", type=int, default=5, help="documents per transaction (default 5)")
    ap.add_argument("--updates", type=int, default=None, help="random documents updated (default docs / 5)")
    ap.add_argument("--no-text", action="store_true", help="skip the compressible-text phase")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a side (default 1800)")
    ap.add_argument("--seed", type=int, default=17, help="seed of the text documents (default 17)")
    ap.add_argument("--keep-logs", type=Path, default=None, help="copy agent and server logs here at the end")
    args = ap.parse_args(argv)
    updates = args.docs // 5 if args.updates is None else args.updates

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up on SIGTERM too
    root = work_dir("ark-largevalues-")
    watch = ProcWatch()
    watch.start()
    phases: list[Phase] = []
    say(f"work dir {root}")
    with contextlib.ExitStack() as stack:
        stack.callback(watch.stop_event.set)
        broker, primary, native, standby = start_cluster(stack, root, args.keep_logs)

        sql(primary.dsn(DB), f"CREATE TABLE {TABLE} (id int PRIMARY KEY, body bytea, note text)")
        stack.callback(drop_native, primary, native)
        setup_native(primary, native, [TABLE])
        config = write_ark_config(root / "ark.yaml", broker.bootstrap, primary, standby, [TABLE])
        say("ark sync standby")
        ark(config, "sync", "standby")
        agents = []
        for label, cmd in (("capture", ["capture"]), ("apply", ["apply", "standby"])):
            agent = AgentProcess(config, cmd, root / "logs" / f"{label}.log").start()
            agents.append(agent)
            stack.callback(agent.stop)
        pipes = Pipelines(primary, native, standby, agents[0], agents[1])
        sql(primary.dsn(DB), f"INSERT INTO {TABLE} VALUES (0, NULL, 'start')")
        for name, inst in (("native", native), ("ark", standby)):
            def seen(inst: PgInstance = inst) -> bool:
                check_agents(agents)
                return bool(sql(inst.dsn(DB), f"SELECT 1 FROM {TABLE} WHERE id = 0"))
            wait_until(seen, 300, f"{name} to stream")
        say("both replicas stream")

        n, size = args.docs, args.mib * MIB
        say(f"generating {n} random documents of {args.mib} MiB")
        phases.append(Phase("random", "insert", random_docs(range(1, n + 1), size)))
        run_phase(phases[-1], pipes, broker, watch, args.per_txn, args.timeout)
        phases[-1].docs = phases[-1].docs[-1:]  # free the memory; the last one is all wait_applied needed
        if not args.no_text:
            say(f"generating {n} text documents of {args.mib} MiB")
            phases.append(Phase("text", "insert", text_docs(range(n + 1, 2 * n + 1), size, random.Random(args.seed))))
            run_phase(phases[-1], pipes, broker, watch, args.per_txn, args.timeout)
            phases[-1].docs = phases[-1].docs[-1:]
        if updates:
            say(f"generating {updates} new random bodies")
            docs = [Doc(d.id, d.body, f"updated {d.id}") for d in random_docs(range(1, updates + 1), size)]
            phases.append(Phase("update", "update", docs))
            run_phase(phases[-1], pipes, broker, watch, args.per_txn, args.timeout)

        say("counting the redo records of each phase")
        count_records(broker.bootstrap, phases)
        say("comparing both replicas with the primary (length and md5 of every value)")
        want = fingerprint(primary.dsn(DB))
        equal = {}
        for side, inst in (("native", native), ("ark", standby)):
            got = fingerprint(inst.dsn(DB))
            diff = sum(1 for a, b in zip(want, got, strict=False) if a != b) + abs(len(want) - len(got))
            equal[side] = f"equal ({len(got)} rows)" if got == want else f"DIFFERENT ({diff} of {len(want)} rows)"
        report(args, phases, equal, watch.hwm_reset)
        return 0 if all(v.startswith("equal") for v in equal.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
