"""The runners' own logic, fast: capture and apply agents against an in-memory source, log and standby.

Real Kafka and PostgreSQL prove the same properties in the integration and fault tiers; here each
property is checked in well under a second, with faults injected exactly where the logic branches:
chunking, resuming after a crash without loss or duplicates, confirming only what is durable,
exactly-once apply across crashes, the delay gate, grouping, CRC retransmission and source gaps.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import pytest

from common import agent
from common.config import ArkConfig, parse_config
from consumers.base import ApplyState
from consumers.errors import DataApplyError, TransientApplyError
from consumers.gaps import SourceGap
from consumers.runner import ApplyRunner, NotSynced
from producers.errors import SourceDown
from producers.runner import CaptureRunner
from schemas import envelope
from schemas.control import SourceGap as SourceGapRecord
from schemas.entries import REDO_SCHEMA, RowChange, TableMeta, TxnChunk, from_record
from schemas.positions import pg_lsn
from tests.support.memory import (
    MemoryApplier,
    MemoryCapture,
    MemoryRedoLog,
    MemorySource,
    MemoryStandby,
    Running,
    dele,
    ins,
    memory_channel,
    table_meta,
    upd,
    wait_until,
)

T = "public.t"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent, "BACKOFF_START_S", 0.01)
    monkeypatch.setattr(agent, "BACKOFF_MAX_S", 0.05)


def config(window_s: float = 900.0, chunk_rows: int = 10, delay: float = 0.0, batch_txns: int = 1000,
           on_data_error: str = "stop") -> ArkConfig:
    pg = {"engine": "postgresql"}
    return parse_config({
        "group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
        "primary": {"name": "p", **pg},
        "capture": {"chunk_rows": chunk_rows, "batch_max_ms": 5, "retransmit_window_s": window_s},
        "standbys": [{"name": "sb", "delay_seconds": delay, "batch_max_txns": batch_txns,
                      "on_data_error": on_data_error, **pg}]})


def entries(log: MemoryRedoLog) -> list[tuple[int, Any]]:
    """(offset, body) of every committed record."""
    out = []
    for rec in log.entries():
        dec = envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA)
        out.append((rec.offset, from_record(dec.record).body))
    return out


def complete_txns(log: MemoryRedoLog) -> list[str]:
    """Commit positions of every transaction whose last chunk is in the log, in log order."""
    return [b.commit.text for _o, b in entries(log) if isinstance(b, TxnChunk) and b.last and b.txn_id]


def workload(source: MemorySource, txns: int, rows: int = 3, seed: int = 1) -> dict[int, str]:
    """Random inserts, updates and deletes on table T; returns the expected final table (id -> v)."""
    rnd = random.Random(seed)
    meta = table_meta(T)
    expected: dict[int, str] = {}
    next_id = 0
    for n in range(txns):
        changes: list[RowChange] = []
        for _ in range(rows):
            if expected and rnd.random() < 0.3:
                key = rnd.choice(sorted(expected))
                if rnd.random() < 0.5:
                    changes.append(dele(T, key))
                    del expected[key]
                else:
                    expected[key] = f"u{n}"
                    changes.append(upd(T, key, f"u{n}"))
            else:
                expected[next_id] = f"i{n}"
                changes.append(ins(T, next_id, f"i{n}"))
                next_id += 1
        source.commit(changes, [meta])
    return expected


def capture(cfg: ArkConfig, source: MemorySource, log: MemoryRedoLog, store: list[Any]) -> Running:
    return Running(CaptureRunner(cfg, lambda: MemoryCapture(source), log), store)


def synced_standby(log: MemoryRedoLog, meta: TableMeta | None = None) -> MemoryStandby:
    """A standby as 'ark sync' leaves it before any stream: the state row at offset 0, at a snapshot position
    below every transaction of the source."""
    standby = MemoryStandby()
    app = MemoryApplier(standby)
    app.begin()
    if meta is not None:
        app.apply_table_meta("g", meta, None)
    floor = pg_lsn(1)
    app.save_state(ApplyState("g", "sb", log.topic, 0, 0, floor.text, floor.key, 0, 0, 0))
    app.commit()
    standby.commits.clear()
    return standby


def apply(cfg: ArkConfig, standby: MemoryStandby, log: MemoryRedoLog, store: list[Any]) -> Running:
    return Running(ApplyRunner(cfg, cfg.standbys[0], lambda: MemoryApplier(standby), log), store)


def table(standby: MemoryStandby) -> dict[int, str]:
    return {int(r[0]): str(r[1]) for r in standby.rows(T)}  # type: ignore[arg-type]


# -- capture -------------------------------------------------------------------------------------------
def test_a_large_transaction_travels_in_chunks_after_its_table_shape() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    meta = table_meta(T)
    source.commit([ins(T, i) for i in range(25)], [meta])
    source.commit([ins(T, 100)], [meta])
    running = capture(config(chunk_rows=10), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 2, what="both transactions in the log")
    finally:
        running.stop()
    bodies = [b for _o, b in entries(log) if not (isinstance(b, TxnChunk) and b.is_checkpoint)]
    assert isinstance(bodies[0], TableMeta) and bodies[0].table == T
    chunks = [b for b in bodies if isinstance(b, TxnChunk)]
    assert [(c.chunk_index, c.first_row, len(c.changes), c.last) for c in chunks] == [
        (0, 0, 10, False), (1, 10, 10, False), (2, 20, 5, True), (0, 0, 1, True)]
    assert chunks[2].confirm == pg_lsn(int.from_bytes(chunks[2].commit.key, "big") + 1).text


def test_capture_crashes_lose_and_duplicate_nothing() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    workload(source, txns=60, rows=7)  # 7 rows, chunks of 3: crashes land inside transactions too
    rnd = random.Random(7)
    # Planned before the capture starts: each of the first 15 streams breaks after that many events. Their sum
    # (at most 15 x 30) is below the ~540 events of the workload, so every one of them lands before the end.
    source.fail_plan = [rnd.randint(1, 30) for _ in range(15)]
    running = capture(config(chunk_rows=3), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 60, what="every transaction in the log")
    finally:
        running.stop()
    assert source.crashes == 15
    commits = complete_txns(log)
    assert len(commits) == len(set(commits)) == 60  # every transaction once, complete
    # Chunks of one transaction are contiguous and never repeated (a restart resumes at the next row).
    seen: Counter[tuple[str, int]] = Counter((b.commit.text, b.chunk_index) for _o, b in entries(log)
                                              if isinstance(b, TxnChunk) and b.txn_id)
    assert max(seen.values()) == 1


def test_the_source_forgets_only_what_kafka_holds_and_only_after_the_window() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    workload(source, txns=10)
    held = capture(config(window_s=900), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 10, what="the transactions in the log")
    finally:
        held.stop()
    assert source.confirmed == 0  # inside the retransmit window: the source keeps its whole log

    source, log = MemorySource(), MemoryRedoLog()
    workload(source, txns=10)
    running = capture(config(window_s=0), source, log, store)
    try:
        wait_until(lambda: source.confirmed > 0 and len(complete_txns(log)) == 10, what="a confirmation")
    finally:
        running.stop()
    last = max(int.from_bytes(b.commit.key, "big") for _o, b in entries(log) if isinstance(b, TxnChunk))
    assert source.confirmed <= last + 1  # never past what Kafka holds


# -- apply ---------------------------------------------------------------------------------------------
def _filled_log(txns: int, rows: int = 3, seed: int = 1) -> tuple[MemorySource, MemoryRedoLog, dict[int, str]]:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    expected = workload(source, txns, rows, seed)
    running = capture(config(), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == txns, what="the transactions in the log")
    finally:
        running.stop()
    return source, log, expected


def test_apply_is_exactly_once_across_crashes_and_keeps_transactions_whole() -> None:
    _source, log, expected = _filled_log(200, rows=4)
    standby = synced_standby(log, table_meta(T))
    rnd = random.Random(3)
    budget = {"crashes": 12}

    def crash(_change: RowChange) -> Exception | None:
        if budget["crashes"] and rnd.random() < 0.03:
            budget["crashes"] -= 1
            return TransientApplyError("connection lost (test)", fix="retried")
        return None

    standby.fail_on = crash
    running = apply(config(batch_txns=7), standby, log, [])
    try:
        wait_until(lambda: table(standby) == expected, what="the standby to converge")
        wait_until(lambda: standby.db.state is not None and standby.db.state.applied_txns == 200,
                   what="every transaction recorded in the state row")
    finally:
        running.stop()
    applied = [t for _state, txns in standby.commits for group in txns for t in group.split("..")]
    assert budget["crashes"] <= 4  # most of the crashes happened (each one lost an open batch)
    assert len(standby.commits) < 200  # small transactions were grouped
    states = [s for s, _t in standby.commits if s is not None]
    assert all(a.applied_txns <= b.applied_txns for a, b in zip(states, states[1:], strict=False))
    assert applied  # the commits named the source transactions they applied


def test_a_standby_that_was_never_synced_stops_with_the_fix() -> None:
    _source, log, _expected = _filled_log(2)
    running = apply(config(), MemoryStandby(), log, [])
    err = running.wait_exit()
    assert isinstance(err, NotSynced) and "ark sync sb" in err.fix


def test_delay_gate_applies_no_earlier_than_commit_plus_delay() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    standby = synced_standby(log, table_meta(T))
    cap = capture(config(), source, log, store)
    app = apply(config(delay=0.4), standby, log, store)
    try:
        committed = time.time()
        source.commit([ins(T, 1, "late")], [table_meta(T)], at_us=int(committed * 1e6))
        wait_until(lambda: table(standby) == {1: "late"}, what="the delayed row")
        applied = time.time()
    finally:
        app.stop()
        cap.stop()
    assert applied - committed >= 0.4


def test_a_delayed_standby_applies_a_backlog_at_commit_plus_delay_not_at_its_publication() -> None:
    """A capture that starts behind (a restart, a switchover's new primary) publishes the table's shape and the
    sequences' values after transactions that committed earlier: those entries must not hold the transactions
    that follow them past commit + D (guarantee 5's upper bound)."""
    source, log, store = MemorySource(), MemoryRedoLog(), []
    source.sequences = {"public.t_id_seq": 5}
    standby = synced_standby(log, table_meta(T))
    delay, behind = 3.5, 3.0
    start = time.time()
    for i in range(5):  # committed before the capture runs: its first shape and sequence entries come later
        source.commit([ins(T, i, "backlog")], [table_meta(T)], at_us=int((start - behind + i * 0.01) * 1e6))
    last_commit = start - behind + 0.04
    cap = capture(config(), source, log, store)
    app = apply(config(delay=delay), standby, log, store)
    try:
        wait_until(lambda: len(table(standby)) == 5, timeout=30, what="the backlog on the delayed standby")
        applied = time.time()
    finally:
        app.stop()
        cap.stop()
    assert applied - last_commit >= delay
    # Held behind entries stamped at their publication, the last one would be applied at start + 3.5 s or later.
    assert applied - last_commit < delay + 1.5, f"applied {applied - last_commit:.2f} s after its commit"


def test_a_data_error_stops_the_standby_naming_the_exact_transaction() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    meta = table_meta(T)
    for i in range(20):
        source.commit([ins(T, i)], [meta])
    bad = source.commit([upd(T, 999, "no such row")], [meta])
    source.commit([ins(T, 50)], [meta])
    cap = capture(config(), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 22, what="the log")
    finally:
        cap.stop()
    standby = synced_standby(log, meta)
    err = apply(config(), standby, log, store).wait_exit()
    assert isinstance(err, DataApplyError) and err.txn_id == str(bad.xid), err
    assert "redo entry" in err.message and err.exit_code == 9
    assert sorted(table(standby)) == list(range(20))  # everything before it, nothing after it


# -- integrity -----------------------------------------------------------------------------------------
def test_a_corrupt_entry_is_quarantined_and_retransmitted() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    expected = workload(source, txns=40)
    cap = capture(config(), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 40, what="the log")
        victim = next(o for o, b in entries(log)[len(entries(log)) // 2:] if isinstance(b, TxnChunk) and b.txn_id)
        log.corrupt(victim)
        standby = synced_standby(log, table_meta(T))
        app = apply(config(), standby, log, store)
        try:
            wait_until(lambda: table(standby) == expected, what="the standby to heal")
        finally:
            app.stop()
    finally:
        cap.stop()
    assert [q[2] for q in log.quarantined] == [f"{log.topic}:0:{victim}"]
    kinds = [r.kind for r in memory_channel(store).poll()]
    assert kinds.count("retransmit") == 1 and kinds.count("retransmit-done") == 1


def test_a_standby_stops_at_an_accepted_source_gap() -> None:
    _source, log, _expected = _filled_log(10)
    gap_at = entries(log)[len(entries(log)) // 2][0]
    before = [b.commit for o, b in entries(log) if o < gap_at and isinstance(b, TxnChunk) and b.last][-1]
    store: list[Any] = []  # the operator accepted a hole after `before`; entries from gap_at on follow it
    memory_channel(store).publish(SourceGapRecord(before.text, before.key, gap_at, "slot recreated (test)"))
    standby = synced_standby(log, table_meta(T))
    err = apply(config(), standby, log, store).wait_exit()
    assert isinstance(err, SourceGap) and f"@{gap_at}" in err.message and err.exit_code == 15
    assert standby.db.state is not None and standby.db.state.next_offset <= gap_at


def test_forged_control_records_are_refused_and_counted() -> None:
    from common.control import ControlChannel
    from schemas.control import SetDelay, VerifyHold
    from tests.support.memory import MemoryBus

    store: list[Any] = []
    memory_channel(store, key=b"another-key-entirely-0123456789abcdef").publish(SetDelay(0.0), "sb")  # wrong key
    value, headers = store[0]
    store.append((value, [h for h in headers if h[0] != envelope.H_SIGNATURE]))  # unsigned
    memory_channel(store).publish(VerifyHold(5.0), "sb")  # the real one
    store.append(store[-1])  # a replay of a valid record
    reader = ControlChannel("g", b"k" * 40, MemoryBus(store))
    got = reader.poll()
    assert [r.kind for r in got] == ["verify-hold"]
    assert dict(reader.refused) == {"bad-signature": 1, "unsigned": 1, "replayed": 1}


# -- engines whose DDL commits by itself ---------------------------------------------------------------
class RecordingApplier(MemoryApplier):
    """A MemoryApplier that records, at each shape change, which source transactions its open target
    transaction already holds, and every commit's applied transactions."""

    def __init__(self, standby: MemoryStandby, seen: dict[str, list[str]], *, transactional_ddl: bool) -> None:
        super().__init__(standby)
        self.transactional_ddl = transactional_ddl
        self.seen = seen

    def apply_table_meta(self, group: str, meta: TableMeta, previous: TableMeta | None) -> None:
        self.seen[f"{meta.table} {meta.version}"] = list(self._applied)  # what the engine's DDL would commit
        super().apply_table_meta(group, meta, previous)


def _ddl_log() -> tuple[MemoryRedoLog, dict[str, str]]:
    """Small transactions, a shape change of T, then one large transaction (3 chunks) that brings table U's
    first shape between its chunks."""
    source, log, store = MemorySource(), MemoryRedoLog(), []
    v1, v2, u = table_meta(T), table_meta(T, version="v2"), table_meta("public.u")
    source.commit([ins(T, 1, "a")], [v1])
    source.commit([ins(T, 2, "b")], [v1])
    source.commit([ins(T, 3, "c")], [v2])
    big = source.commit([ins(T, i, "big") for i in range(10, 22)] + [ins("public.u", i) for i in range(12)], [v2, u])
    running = capture(config(chunk_rows=10), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 4, what="the transactions in the log")
    finally:
        running.stop()
    return log, {"big": str(big.xid)}


@pytest.mark.parametrize("transactional_ddl", [False, True])
def test_a_standby_whose_ddl_commits_by_itself_commits_before_each_shape_change(transactional_ddl: bool) -> None:
    log, txns = _ddl_log()
    standby = synced_standby(log, table_meta(T))
    seen: dict[str, list[str]] = {}
    cfg = config(batch_txns=1000)

    def factory() -> RecordingApplier:
        return RecordingApplier(standby, seen, transactional_ddl=transactional_ddl)

    running = Running(ApplyRunner(cfg, cfg.standbys[0], factory, log), [])
    try:
        wait_until(lambda: standby.db.state is not None and standby.db.state.applied_txns == 4,
                   what="every transaction")
    finally:
        running.stop()
    assert sorted(table(standby)) == [1, 2, 3, *range(10, 22)] and len(standby.rows("public.u")) == 12
    if transactional_ddl:
        # PostgreSQL's way, unchanged: the shape change joins the batch of the small transactions before it.
        assert seen[f"{T} v2"] != []
        return
    # Nothing of an earlier source transaction is in the target transaction when the DDL runs (it would be
    # committed by the DDL, or replayed on the new shape after a crash): the batch was committed first ...
    assert seen[f"{T} v2"] == []
    # ... and so it was before the large transaction began, whose second chunk brought U's first shape.
    assert set(seen["public.u v1"]) == {txns["big"]}
    before = [state.applied_txns for state, _t in standby.commits if state is not None]
    assert before[:2] == [2, 3]  # committed after the two small ones, then after the third (before the big one)


# -- values of any size --------------------------------------------------------------------------------
def _big_source(sizes: list[int], seed: int = 5) -> tuple[MemorySource, dict[int, str]]:
    """Rows with values of the given sizes (text), between small transactions on the same table."""
    rnd = random.Random(seed)
    source, meta, expected = MemorySource(), table_meta(T), {}
    for i, size in enumerate(sizes):
        value = "".join(rnd.choice("abcdefé€𝄞") for _ in range(size // 2)) if size else ""
        source.commit([ins(T, 1000 + i, "small")], [meta])
        source.commit([ins(T, i, value), ins(T, 2000 + i, "after")], [meta])
        expected.update({1000 + i: "small", i: value, 2000 + i: "after"})
    return source, expected


def test_values_larger_than_a_message_travel_in_parts_and_come_back_whole() -> None:
    source, expected = _big_source([0, 900_000, 1_100_000, 3_000_000])
    log, store = MemoryRedoLog(limit=1 << 20), []
    standby = synced_standby(log, table_meta(T))
    cap = capture(config(), source, log, store)
    app = apply(config(), standby, log, store)
    try:
        wait_until(lambda: table(standby) == expected, 30, "the large values on the standby")
    finally:
        app.stop()
        cap.stop()
    parts = [b for _o, b in entries(log) if isinstance(b, TxnChunk) and b.part is not None]
    assert parts and max(len(p.part.data) for p in parts) < 1 << 20  # type: ignore[union-attr]
    assert standby.parts_seen == len(parts)


def test_chunks_are_bounded_by_bytes_as_well_as_rows() -> None:
    source, meta = MemorySource(), table_meta(T)
    source.commit([ins(T, i, "x" * 200_000) for i in range(40)], [meta])  # 8 MB in one transaction, 1 MB limit
    log, store = MemoryRedoLog(limit=1 << 20), []
    cap = capture(config(chunk_rows=5000), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 1, what="the transaction in the log")
    finally:
        cap.stop()
    chunks = [b for _o, b in entries(log) if isinstance(b, TxnChunk) and b.txn_id]
    assert len(chunks) >= 8 and all(b.part is None for b in chunks)  # many chunks, no value had to be cut
    assert max(len(r.value or b"") for r in log.entries()) < 1 << 20


def test_a_capture_crash_in_the_middle_of_a_large_value_loses_nothing() -> None:
    source, expected = _big_source([2_500_000, 2_500_000, 10])
    log, store = MemoryRedoLog(limit=1 << 20), []
    standby = synced_standby(log, table_meta(T))
    crashes = 0
    cap = capture(config(), source, log, store)
    try:
        while len(complete_txns(log)) < 6:
            if source.fail_after is None and crashes < 6:
                source.fail_after = 3 + 2 * crashes  # the source breaks while parts of a value are being published
                crashes += 1
            time.sleep(0.01)
        app = apply(config(), standby, log, store)
        try:
            wait_until(lambda: table(standby) == expected, 30, "the standby")
        finally:
            app.stop()
    finally:
        cap.stop()
    assert crashes >= 2
    assert len(complete_txns(log)) == len(set(complete_txns(log))) == 6


def test_a_corrupt_part_is_retransmitted() -> None:
    source, expected = _big_source([3_000_000])
    log, store = MemoryRedoLog(limit=1 << 20), []
    cap = capture(config(), source, log, store)
    try:
        wait_until(lambda: len(complete_txns(log)) == 2, what="the log")
        victim = next(o for o, b in entries(log)
                      if isinstance(b, TxnChunk) and b.part is not None and b.part.index == 1)
        log.corrupt(victim)
        standby = synced_standby(log, table_meta(T))
        app = apply(config(), standby, log, store)
        try:
            wait_until(lambda: table(standby) == expected, 30, "the standby to heal")
        finally:
            app.stop()
    finally:
        cap.stop()
    assert [q[2] for q in log.quarantined] == [f"{log.topic}:0:{victim}"]


def test_an_idle_source_whose_log_ends_at_the_last_commit_still_gets_one_checkpoint(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """MariaDB's binlog does not move while the primary is idle: its idle position is the last transaction's
    end, which the capture already confirmed. One checkpoint just below it must still reach the log, so a
    table resync copied at that position (floor: just below it) sees the standby reach its floor."""
    from producers import session as capture_session
    from producers.base import Idle, TxnEnd
    from schemas.positions import just_before

    monkeypatch.setattr(capture_session, "CHECKPOINT_INTERVAL_S", 0.0)
    source, log, store = MemorySource(), MemoryRedoLog(), []
    workload(source, txns=3)
    last = pg_lsn(source.txns[-1].commit)
    still = pg_lsn(source.txns[-1].commit + 0x80)  # where the last transaction ends (its commit key: its start)

    class StillLog(MemoryCapture):
        def stream(self, resume_after: Any) -> Any:
            for event in super().stream(resume_after):
                if isinstance(event, TxnEnd) and event.commit == last:
                    event = TxnEnd(last, still)
                yield Idle(still) if isinstance(event, Idle) else event

    def checkpoints() -> list[TxnChunk]:
        return [b for _o, b in entries(log) if isinstance(b, TxnChunk) and not b.txn_id]

    running = Running(CaptureRunner(config(window_s=0), lambda: StillLog(source), log), store)
    try:
        wait_until(lambda: len(checkpoints()) >= 1, what="a checkpoint of the idle source")
        time.sleep(0.2)  # many more idle events: still one checkpoint for one idle position
    finally:
        running.stop()
    assert [c.commit.key for c in checkpoints()] == [just_before(still).key]
    assert len(complete_txns(log)) == 3


def test_a_capture_retrying_against_a_dead_source_never_says_running() -> None:
    """The controller counts a 'running' capture heartbeat as news that the primary is alive (F22). A session that
    retries against a dead source says 'starting' until the source answers, however long it takes to open its
    Kafka writer first; it says 'running' again at the source's first event."""
    source, log, store = MemorySource(), MemoryRedoLog(), []
    workload(source, txns=3)
    down = threading.Event()
    while_connecting: list[str] = []
    runners: list[CaptureRunner] = []

    class DyingSource(MemoryCapture):
        def stream(self, resume_after: Any) -> Any:
            if down.is_set():
                while_connecting.append(runners[0].heartbeat()["state"])  # what a beat would say right now
                raise SourceDown("the source is not listening")
            for event in super().stream(resume_after):
                if down.is_set():
                    raise SourceDown("the source is not listening")
                yield event

    runner = CaptureRunner(config(), lambda: DyingSource(source), log)
    runners.append(runner)
    running = Running(runner, store)
    try:
        wait_until(lambda: runner.heartbeat()["state"] == "running", what="the capture running")
        down.set()
        wait_until(lambda: len(while_connecting) >= 3, what="three sessions retrying against the dead source")
        down.clear()
        wait_until(lambda: runner.heartbeat()["state"] == "running", what="the capture running again")
    finally:
        running.stop()
    assert "running" not in while_connecting, while_connecting
