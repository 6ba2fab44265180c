"""F18: a delayed standby as a recovery point: ``ark skip`` of a bad transaction, and ``ark failover --until``.

Under the ledger bank workload, with a real-time standby and one delayed by ``DELAY_S``:

1. a bad ``DELETE`` on the primary is skipped on the delayed standby (``ark skip --offset``) before its delay
   runs out (stretched with ``ark delay`` first, then set back): the rows stay there, the real-time standby
   lost them, the ledger goes on on both;
2. a bad ``DELETE`` of half the history and a ``DROP TABLE``: ``ark failover delayed --until`` a moment
   before them promotes the delayed standby with the table, its rows and the whole history there; the
   ledger is a gap-free prefix with the invariant total; the real-time standby, which applied past the
   cut, stops and asks for a resync (exit 10), and after ``ark resync`` it is equal to the new primary.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from common.config import load_config
from common.redo_kafka import KafkaRedoLog
from deploy.compare import compare_tables
from deploy.workload import BankWorkload
from schemas import envelope
from schemas.entries import REDO_SCHEMA, Op, TxnChunk, from_record
from tests.support.faults import BANK_TABLES, bank_setup, converge, ledger_max, observe
from tests.support.replication import Group, sql, wait_for

DELAY_S = 8.0
STRETCHED_S = 120.0


def _offset_of_delete(group: Group, table: str, after: int) -> int:
    """The redo offset of the first transaction after ``after`` that deletes rows of ``table``."""
    cfg = load_config(group.config)
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        _low, high = redo.watermarks()
        for rec in redo.read_range(after, high):
            body = from_record(envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA).record).body
            if isinstance(body, TxnChunk) and any(c.table == table and c.op == Op.DELETE for c in body.changes):
                return rec.offset
        time.sleep(0.2)
    raise AssertionError(f"no DELETE of {table} in the redo topic")


def _count(dsn: str, table: str) -> int:
    return int(sql(dsn, f"SELECT count(*) FROM {table}")[0][0])


@pytest.mark.timeout(900)
def test_f18_skip_and_point_in_time_failover(make_group: Callable[..., Group]) -> None:
    group = make_group(standbys=[("standby", 0.0), ("delayed", DELAY_S)])
    invariant = bank_setup(group)
    sql(group.primary_dsn, "CREATE TABLE important (id int PRIMARY KEY, v text NOT NULL)")
    sql(group.primary_dsn, "INSERT INTO important SELECT g, 'row ' || g FROM generate_series(1, 50) g")
    group.ark_ok("sync", "delayed")
    group.start("capture")
    for name in ("standby", "delayed", "primary"):
        group.start("apply", name)
    delayed, standby = group.standby("delayed").dsn, group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, ledger=True, clients=2, pause_s=0.01).start()
    try:
        converge(group, standby="standby", at_least=50)
        converge(group, standby="delayed", at_least=50, timeout=120)

        # 1. ark skip: a bad DELETE never reaches the delayed standby. The operator stretches the delay first,
        # to look at the transaction in peace: on a loaded test machine the two CLI round trips after the
        # DELETE took up to 13 s, more than DELAY_S (the applier logs an error when a skip comes too late).
        group.ark_ok("delay", "delayed", str(STRETCHED_S))
        cfg = load_config(group.config)
        start = KafkaRedoLog(cfg.kafka, cfg.group).watermarks()[1]
        deleted_at = time.monotonic()
        sql(group.primary_dsn, "DELETE FROM important WHERE id <= 10")
        offset = _offset_of_delete(group, "public.important", start)
        out = group.ark_ok("skip", "delayed", "--offset", str(offset), "--yes")
        skip_took = time.monotonic() - deleted_at
        assert "DELETE 10 rows of public.important" in out, out
        group.ark_ok("delay", "delayed", str(DELAY_S))
        wait_for(lambda: _count(standby, "important") == 40, 30, "the real-time standby applying the DELETE")
        mark = ledger_max(group.primary_dsn)
        converge(group, standby="delayed", at_least=mark, timeout=60)  # past the skipped transaction
        apply_delayed = next(a for a in group.agents if a.args == ["apply", "delayed"])
        assert _count(delayed, "important") == 50, (f"the skipped DELETE was applied on the delayed standby (skip "
                                                    f"recorded {skip_took:.2f} s after the DELETE):\n"
                                                    f"{apply_delayed.tail(30)}")

        # 2. ark failover --until: back to a moment before a bad DELETE and a DROP TABLE.
        time.sleep(1.0)
        before = ledger_max(group.primary_dsn)  # every transfer up to it committed before the recovery point
        until = datetime.now(UTC)
        time.sleep(0.5)
        kept_history = _count(group.primary_dsn, "history")
        bad_from = ledger_max(group.primary_dsn)
        sql(group.primary_dsn, "DELETE FROM history WHERE mod(seq, 2) = 0")
        sql(group.primary_dsn, "DROP TABLE important")
        wait_for(lambda: _count(standby, "history") < kept_history, 30, "the real-time standby applying the DELETE")
        res = group.ark("failover", "delayed", "--until", until.isoformat(), timeout=300)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "cut out of the group's history" in res.stdout and "ark resync standby" in res.stdout, res.stdout
    finally:
        workload.stop()

    # The recovery point: the table, its rows, and the history as it was before the bad statements.
    assert _count(delayed, "important") == 50
    with __import__("psycopg").connect(delayed, autocommit=True) as conn:
        obs = observe(conn)
    assert obs.total == invariant and obs.seqs == obs.rows and obs.max_seq == obs.seqs and obs.min_seq == 1, obs
    assert before <= obs.max_seq <= bad_from, f"ledger {obs.max_seq}: not between {before} (committed before the "\
                                              f"recovery point) and {bad_from} (the bad statements)"
    topo = group.ark_ok("topology")
    assert "epoch 1: primary delayed" in topo, topo

    # The real-time standby applied past the cut: it stops and says to resync; then it follows the new primary.
    apply_standby = next(a for a in group.agents if a.args == ["apply", "standby"])
    wait_for(lambda: not apply_standby.alive(), 60, "the real-time standby's applier to stop at the cut")
    assert apply_standby.proc is not None and apply_standby.proc.returncode == 10, apply_standby.tail(20)
    assert "ark resync standby" in apply_standby.tail(40)
    group.ark_ok("resync", "standby", timeout=300)
    group.start("apply", "standby", name="apply-standby-2")
    wait_for(lambda: all(d.equal for d in compare_tables(delayed, standby, BANK_TABLES)), 120,
             "the resynced standby equal to the new primary")
