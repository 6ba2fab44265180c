"""F17: failover after kill -9 of the primary's postmaster, under the bank workload, with a second standby.

Each run: the client writes through a multi-host connection string while capture and appliers run; the
primary's postmaster is killed with -9; ``ark failover --dry-run`` prints per standby; a failover to a
standby that another standby is ahead of is refused, naming it (exit 41); ``ark failover`` then promotes
the target. Checked:

* every transaction that reached Kafka (every ledger seq in the redo topic's epoch that ended) is on the new
  primary, and nothing else: the new primary holds exactly the ledger prefix that Kafka held;
* the ledger is a gap-free prefix and the total the invariant at every observation of every standby;
* the second standby follows the new primary with no step and ends equal to it row by row;
* the new primary takes writes through the same connection string (time from the failover command to the
  first acknowledged write is noted);
* fencing: a producer holding the group's ``transactional.id`` from before the failover cannot commit after
  it (Kafka fenced it), and a capture started on the old primary once it is back refuses (exit 40);
* acknowledged commits that never reached Kafka are counted (they are what ``ark reinstate`` records).

Runs: ``ARK_FAULT_RUNS_F17`` (default 1; each run builds a fresh group, as a failed-over primary stays demoted).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from common.config import load_config
from common.errors import FencedError
from common.redo_kafka import KafkaRedoLog
from deploy.compare import compare_tables
from deploy.postgres import PgInstance
from failover.view import HeartbeatView
from schemas import envelope
from schemas.entries import REDO_SCHEMA, EpochMarker, Op, RedoEntry, TableMeta, TxnChunk, from_record, to_record
from tests.support.faults import (
    BANK_TABLES,
    FaultRun,
    LedgerSampler,
    bank_setup,
    converge,
    fault_runs,
    history_keys,
    ledger_counts,
    record,
)
from tests.support.handover import AckClient, divergence_seqs, multi_host_dsn
from tests.support.replication import Group, Standby, wait_for


def kafka_seqs(group: Group) -> set[int]:
    """Every ledger seq inserted into history by a transaction of epoch 0 that the redo topic holds."""
    cfg = load_config(group.config)
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    _low, high = redo.watermarks()
    seq_at: int | None = None
    out: set[int] = set()
    for rec in redo.read_range(0, high):
        dec = envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA)
        body = from_record(dec.record).body
        if dec.epoch != 0:
            continue
        if isinstance(body, TableMeta) and body.table == "public.history":
            seq_at = [c.name for c in body.columns].index("seq")
        elif isinstance(body, TxnChunk) and seq_at is not None:
            out.update(int(c.values[seq_at]) for c in body.changes
                       if c.table == "public.history" and c.op == Op.INSERT and c.values[seq_at] is not None)
    return out


def _first_write(dsn: str, timeout: float) -> float:
    """Seconds until a transfer commits through ``dsn`` (no history row: sequences come with issue 9)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with psycopg.connect(dsn) as conn, conn.transaction():
                conn.execute("UPDATE accounts SET balance = balance - 1 WHERE id = 1")
                conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 2")
            return time.monotonic() - start
        except psycopg.Error:
            time.sleep(0.05)
    raise AssertionError(f"no write succeeded through {dsn} within {timeout:g} s")


@pytest.mark.timeout(3600)
def test_f17_failover_after_kill9_of_the_primary(kafka_bootstrap: str, pg_factory: Callable[..., PgInstance],
                                                 ark_tmp: Path, fault_results_dir: Path) -> None:
    runs = fault_runs("F17", default=1)
    result = FaultRun("F17", "failover after kill -9 of the primary's postmaster, a second standby follows")
    firsts: list[float] = []
    nodes = {n: pg_factory(f"f17{n}") for n in ("primary", "standby", "other")}
    try:
        for _run in range(runs):
            firsts.append(_one_run(kafka_bootstrap, nodes, ark_tmp, result))
            result.runs += 1
    except BaseException as exc:
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        raise
    finally:
        if firsts:
            result.notes.append(f"failover command to first write: p50 {statistics.median(firsts):.2f} s, "
                                f"max {max(firsts):.2f} s over {len(firsts)}")
        record(result, fault_results_dir)
    print("\n".join(result.notes[-3:]))
    result.assert_clean(min_samples=runs)


def _one_run(kafka: str, nodes: dict[str, PgInstance], ark_tmp: Path, result: FaultRun) -> float:
    for inst in nodes.values():
        inst.start()
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    name = f"t{uuid.uuid4().hex[:8]}"
    group = Group(name, ark_tmp / "groups" / name, kafka, nodes["primary"], dbname,
                  [Standby("standby", nodes["standby"], dbname), Standby("other", nodes["other"], dbname)])
    group.write_config()
    try:
        return _failover(group, nodes, result)
    finally:
        group.stop_all()
        _drop_slots(nodes, dbname)


def _drop_slots(nodes: dict[str, PgInstance], dbname: str) -> None:
    """The run's logical slots on every node (the promoted node's too): the instances serve every run, and 20 runs'
    slots would use up max_replication_slots (a later run's table resync could not export a snapshot)."""
    for inst in nodes.values():
        if not inst.is_running():
            continue
        with psycopg.connect(inst.dsn("postgres"), autocommit=True) as conn:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE database = %s AND NOT active", (dbname,))


def _wait_behind(group: Group, target: str, other: str, timeout: float) -> None:
    """Until the heartbeats (what 'ark failover' decides on) show ``target`` delayed and ``other`` past it."""
    view = HeartbeatView(load_config(group.config))
    try:
        def behind() -> bool:
            view.refresh(0.5)
            mine, theirs = view.applier(target), view.applier(other)
            return (mine is not None and theirs is not None and mine.delay_seconds > 0
                    and theirs.applied_offset > mine.applied_offset)
        wait_for(behind, timeout, f"the heartbeats to show {target} delayed and {other} ahead of it")
    finally:
        view.close()


def _failover(group: Group, nodes: dict[str, PgInstance], result: FaultRun) -> float:
    invariant = bank_setup(group)
    group.ark_ok("sync", "other")
    group.start("capture")
    for n in ("standby", "other", "primary"):
        group.start("apply", n)
    dsn = multi_host_dsn([(nodes["primary"], group.dbname), (nodes["standby"], group.dbname)])
    client = AckClient(dsn).start()
    samplers = {n: LedgerSampler(group.standby(n).dsn, invariant).start() for n in ("standby", "other")}
    try:
        wait_for(lambda: client.count() >= 200, 60, "the client's first commits")
        converge(group, standby="standby", at_least=100)
        converge(group, standby="other", at_least=100)
        group.ark_ok("delay", "standby", "20")  # the target falls behind the other standby
        _wait_behind(group, "standby", "other", 60)
        nodes["primary"].kill9()
        client.stop()
        acked = client.seqs()

        # A producer that holds the group's transactional.id from before the failover: Kafka must fence it.
        cfg = load_config(group.config)
        stale = KafkaRedoLog(cfg.kafka, cfg.group).writer()

        refused = group.ark("failover", "standby")
        assert refused.returncode == 41 and "other is more advanced" in refused.stderr, refused.stdout + refused.stderr
        dry = group.ark("failover", "standby", "--dry-run")
        assert dry.returncode == 0 and "standby" in dry.stdout and "other" in dry.stdout, dry.stdout + dry.stderr
        started = time.monotonic()
        out = group.ark_ok("failover", "standby", "--force", timeout=300)
        assert "done in" in out, out
        first = _first_write(dsn, 60)
        took = time.monotonic() - started

        stale.begin()
        marker = RedoEntry(cfg.group, "postgresql", 0, EpochMarker(5, "primary", ""))
        env = envelope.encode(REDO_SCHEMA, to_record(marker), epoch=0)
        stale.produce(env.value, env.headers, env.timestamp_ms)
        with pytest.raises(FencedError):
            stale.commit()
        stale.close()

        in_kafka = kafka_seqs(group)
        new_primary = group.standby("standby").dsn
        _ids, seqs = history_keys(new_primary)
        missing = in_kafka - set(seqs)
        extra = set(seqs) - in_kafka
        result.lost += len(missing)
        result.duplicated += len(extra) + len(seqs) - len(set(seqs))
        not_in_kafka = acked - in_kafka
        result.notes.append(f"{len(acked)} acknowledged, {len(in_kafka)} in Kafka, {len(not_in_kafka)} acknowledged "
                            f"but never in Kafka (the divergence 'ark reinstate' records); failover took "
                            f"{took - first:.2f} s + {first:.2f} s to the first write")

        wait_for(lambda: all(d.equal for d in compare_tables(new_primary, group.standby("other").dsn, BANK_TABLES)),
                 120, "the other standby equal to the new primary")
        lost, duplicated = ledger_counts(new_primary, group.standby("other").dsn)
        result.lost += lost
        result.duplicated += duplicated

        nodes["primary"].start()
        refused = group.ark("capture", "--node", "primary", timeout=60)
        assert refused.returncode == 40, refused.stdout + refused.stderr
        assert "not the primary" in refused.stderr
        topo = group.ark_ok("topology")
        assert "demoted" in topo and "epoch 1" in topo, topo

        # ark reinstate: the divergence ledger lists exactly what the old primary has that Kafka never had.
        _ids, old_seqs = history_keys(group.primary_dsn)
        report = group.workdir / "divergence.txt"
        out = group.ark_ok("reinstate", "primary", "--report", str(report), timeout=600)
        ledger = divergence_seqs(group)
        expected = set(old_seqs) - in_kafka
        assert ledger == expected, f"ledger {sorted(ledger)[:10]} != old primary minus Kafka {sorted(expected)[:10]}"
        assert not_in_kafka <= ledger, f"acknowledged commits missing from the ledger: {sorted(not_in_kafka - ledger)}"
        assert report.stat().st_mode & 0o077 == 0 and (not expected or "public.history" in report.read_text())
        result.notes.append(f"reinstate: {len(ledger)} transactions in the divergence ledger ({len(not_in_kafka)} of "
                            f"them acknowledged to the client); {out.strip().splitlines()[-1]}")
        wait_for(lambda: all(d.equal for d in compare_tables(new_primary, group.primary_dsn, BANK_TABLES)),
                 180, "the reinstated old primary equal to the new primary")
        verified = group.ark("verify", "primary", timeout=300)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        return took
    finally:
        client.stop()
        for n, sampler in samplers.items():
            sampler.stop()
            result.samples += sampler.samples
            result.partial_visible += sampler.bad
            result.notes += [f"{n}: {f}" for f in sampler.findings]
