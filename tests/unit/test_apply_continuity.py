"""Issue 9 (items 5 and 6) on the in-memory log: the delay gate covers every kind of entry, and a running
applier never skips a range that retention deleted under it (holes left by markers and aborted
transactions are not gaps)."""

from __future__ import annotations

import time
from typing import Any

from common.exit_codes import ExitCode
from common.redo import EndOfLog, RedoRecord
from consumers.base import ApplyState
from consumers.continuity import ContinuousReader
from consumers.retention import RetentionGap
from schemas.positions import pg_lsn
from tests.support.memory import MemoryRedoLog, MemorySource, MemoryStandby, ins, table_meta, wait_until
from tests.unit.test_runners import T, apply, capture, complete_txns, config, synced_standby, table


def _state(log: MemoryRedoLog) -> ApplyState:
    floor = pg_lsn(1)
    return ApplyState("g", "sb", log.topic, 0, 0, floor.text, floor.key, 0, 0, 0)


def _reader(log: MemoryRedoLog, start: int = 0) -> ContinuousReader:
    reader = ContinuousReader(log.reader("sb"), standby="sb", topic=log.topic, applied=lambda: _state(log))
    reader.seek(start)
    return reader


def _read_all(reader: ContinuousReader) -> list[int]:
    offsets = []
    while True:
        got = reader.poll(0.0)
        if isinstance(got, EndOfLog):
            return offsets
        assert isinstance(got, RedoRecord)
        offsets.append(got.offset)


def _produce(log: MemoryRedoLog, n: int, *, abort: bool = False) -> None:
    writer = log.writer()
    writer.begin()
    for i in range(n):
        writer.produce(b"x%d" % i, [], 0)
    if abort:
        writer.abort()
    else:
        writer.commit()


def test_holes_of_markers_and_aborted_transactions_are_not_gaps() -> None:
    log = MemoryRedoLog()
    _produce(log, 3)
    _produce(log, 4, abort=True)  # 4 records and a marker that a read_committed reader never sees
    _produce(log, 2)
    reader = _reader(log)
    assert _read_all(reader) == [0, 1, 2, 9, 10]
    assert reader.holes == 2  # 3..8 (a marker, the aborted records, their marker) and the last marker: not gaps


def test_a_hole_that_retention_made_stops_the_reader_naming_the_range() -> None:
    log = MemoryRedoLog()
    _produce(log, 5)
    _produce(log, 5)
    reader = _reader(log)
    assert reader.poll(0.0).offset == 0  # type: ignore[union-attr]
    log.delete_below(8)  # retention, while the reader runs: the fake reader then jumps as 'earliest' would
    try:
        reader.poll(0.0)
    except RetentionGap as exc:
        assert (exc.first_missing, exc.last_missing) == (1, 7)
        assert exc.exit_code == ExitCode.RETENTION_GAP
        assert "ark.g.redo[0]@1..7" in exc.message and "ark resync sb" in exc.fix
    else:
        raise AssertionError("the jump over deleted offsets was not noticed")


def test_retention_deleting_the_range_a_delayed_applier_holds_back_stops_it() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    standby = synced_standby(log, table_meta(T))
    cap = capture(config(), source, log, store)
    app = apply(config(delay=0.8), standby, log, store)
    try:
        source.commit([ins(T, 1, "a")], [table_meta(T)])
        wait_until(lambda: app.body.state == "delayed", what="the applier to hold the first entry")
        for i in range(2, 5):
            source.commit([ins(T, i, "b")], [table_meta(T)])
        wait_until(lambda: len(complete_txns(log)) == 4, what="the transactions in the log")
        log.delete_below(log.next_offset)  # a long delay hold: retention deleted what the applier needs
        err: Any = app.wait_exit(timeout=10)
    finally:
        cap.stop()
    assert isinstance(err, RetentionGap), err
    assert err.first_missing >= 1 and err.last_missing == log.next_offset - 1
    assert "deleted by retention" in err.message
    assert table(standby) == {} or table(standby) == {1: "a"}  # what was due was applied; nothing after the hole
    assert standby.db.state is not None and standby.db.state.next_offset <= err.first_missing


def test_a_table_shape_is_not_applied_on_a_delayed_standby_before_commit_plus_delay() -> None:
    source, log, store = MemorySource(), MemoryRedoLog(), []
    standby = MemoryStandby()
    seeded = synced_standby(log)  # no table yet: its shape arrives in the stream
    standby.db = seeded.db
    cap = capture(config(), source, log, store)
    app = apply(config(delay=0.6), standby, log, store)
    try:
        published = time.time()
        source.commit([ins(T, 1, "a")], [table_meta(T)])
        wait_until(lambda: T in standby.db.tables, what="the table's shape on the standby")
        shown = time.time()
        wait_until(lambda: table(standby) == {1: "a"}, what="the row")
    finally:
        app.stop()
        cap.stop()
    assert shown - published >= 0.6, f"the shape was applied {shown - published:.3f} s after it was published"
