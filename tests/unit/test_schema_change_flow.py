"""Schema changes (DDL) through the engine-neutral runners: at their place inside their transaction, exactly once.

The capture publishes a schema change after its transaction's first chunk; a capture that restarts inside the
transaction may publish it again, and the standby applies each (commit, seq) once, inside the transaction's own
target transaction (so an applier crash re-applies it with the transaction, never half).
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import replace

import pytest

from common import agent
from common.redo import RedoRecord
from consumers.errors import TransientApplyError
from consumers.schema_change import Applied
from schemas import envelope
from schemas.entries import REDO_SCHEMA, Position, RowChange, SchemaChange, TxnChunk, from_record
from tests.support.memory import MemoryRedoLog, MemorySource, ins, table_meta, wait_until
from tests.unit.test_runners import T, apply, capture, complete_txns, config, entries, synced_standby, table


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(agent, "BACKOFF_MAX_S", 0.05)


def _source(txns: int) -> tuple[MemorySource, list[str], dict[int, str]]:
    """Transactions of 7 rows with a DDL after row 2 and another after row 5 of every third one."""
    source, meta = MemorySource(), table_meta(T)
    ddl: list[str] = []
    expected: dict[int, str] = {}
    for n in range(txns):
        rows = [ins(T, n * 10 + i, f"v{n}") for i in range(7)]
        expected.update({n * 10 + i: f"v{n}" for i in range(7)})
        at = {2: [f"ddl {n}.a"], 5: [f"ddl {n}.b", f"ddl {n}.c"]} if n % 3 == 0 else {0: [f"ddl {n}.a"]}
        ddl += [s for i in sorted(at) for s in at[i]]
        source.commit(rows, [meta], ddl_at=at)
    return source, ddl, expected


def test_schema_changes_follow_chunk_zero_and_survive_capture_crashes_exactly_once() -> None:
    source, ddl, _expected = _source(30)
    log, store = MemoryRedoLog(), []
    rnd = random.Random(11)
    crashes = 0
    running = capture(config(chunk_rows=3), source, log, store)
    try:
        while len(complete_txns(log)) < 30:
            if source.fail_after is None and crashes < 15:
                source.fail_after = rnd.randint(1, 30)
                crashes += 1
            time.sleep(0.002)
    finally:
        running.stop()
    bodies = [b for _o, b in entries(log)]
    seen_chunk0: set[bytes] = set()
    published: Counter[tuple[str, int]] = Counter()
    for b in bodies:
        if isinstance(b, TxnChunk) and b.chunk_index == 0 and b.txn_id:
            seen_chunk0.add(b.commit.key)
        if isinstance(b, SchemaChange):
            assert b.commit.key in seen_chunk0, "a schema change before its transaction's first chunk"
            published[(b.commit.text, b.seq)] += 1
    # every statement published at least once (a restart may publish one again, never lose it)
    assert len(published) == len(ddl)


def test_the_standby_runs_each_schema_change_once_in_order_across_crashes() -> None:
    source, ddl, expected = _source(40)
    log, store = MemoryRedoLog(), []
    rnd = random.Random(5)
    running = capture(config(chunk_rows=3), source, log, store)
    try:
        for _ in range(8):  # the capture restarts inside transactions: some schema changes are published twice
            source.fail_after = rnd.randint(5, 40)
            time.sleep(0.02)
        wait_until(lambda: len(complete_txns(log)) == 40, what="every transaction in the log")
    finally:
        running.stop()
    log = _every_schema_change_twice(log)  # as a capture that restarted right after one would leave it
    standby = synced_standby(log, table_meta(T))
    budget = {"crashes": 10}

    def crash(_change: RowChange) -> Exception | None:
        if budget["crashes"] and rnd.random() < 0.05:
            budget["crashes"] -= 1
            return TransientApplyError("connection lost (test)", fix="retried")
        return None

    standby.fail_on = crash
    running = apply(config(batch_txns=5), standby, log, [])
    try:
        wait_until(lambda: table(standby) == expected, what="the standby to converge")
    finally:
        running.stop()
    assert [sql for _what, sql in standby.db.ddl] == ddl  # each once, in source order


def _every_schema_change_twice(log: MemoryRedoLog) -> MemoryRedoLog:
    out = MemoryRedoLog(log.topic)
    for rec in log.read_range(0, log.next_offset):
        copies = 2 if isinstance(entries_of(rec), SchemaChange) else 1
        for _ in range(copies):
            out.records[out.next_offset] = replace(rec, offset=out.next_offset)
            out.next_offset += 1
    return out


def entries_of(rec: RedoRecord) -> object:
    return from_record(envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA).record).body


def test_applied_remembers_per_transaction() -> None:
    applied = Applied()
    a = SchemaChange(Position("0/1", b"\x01"), 0, "T")
    assert applied.first(a) and not applied.first(a)
    assert applied.first(SchemaChange(Position("0/1", b"\x01"), 1, "T"))
    b = SchemaChange(Position("0/2", b"\x02"), 0, "T")
    assert applied.first(b) and not applied.first(b)
    assert applied.first(a)  # another transaction since: a new source transaction re-applies from its start

