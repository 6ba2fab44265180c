"""The engine contract: what every engine's capture, snapshot source, applier and verifier must do.

Engine-neutral: each test gets an engine's harness (tests/contract/harness.py), builds the engine's parts
through the registry, and checks the guarantees that the runners rely on (producers/base.py,
common/snapshot.py, consumers/base.py, common/verify.py state them). A new engine is ready to plug in
when this suite passes for it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from common.config import ArkConfig
from common.engines import engine, load
from common.errors import SourceError
from common.verify import KeyRange, TableSpec
from consumers.base import Applier, ApplyState
from consumers.errors import DataApplyError
from producers.base import CaptureEvent, Idle, LogCapture, TxnBegin, TxnEnd
from schemas.entries import Op, Position, RowChange, TableMeta
from schemas.positions import just_before
from tests.contract.harness import EngineHarness

T = "public.t"
BAG = "public.bag"


def _capture(cfg: ArkConfig) -> LogCapture:
    capture: LogCapture = load(engine(cfg.primary.engine).capture)(cfg)
    capture.ensure_setup()
    return capture


def _applier(cfg: ArkConfig) -> Applier:
    applier: Applier = load(engine(cfg.standbys[0].engine).applier)(cfg.standbys[0])
    applier.prepare()
    return applier


def _txns(capture: LogCapture, resume_after: Position | None, count: int, timeout: float = 30.0
          ) -> list[list[CaptureEvent]]:
    """The next ``count`` transactions after ``resume_after``, each as its events from TxnBegin to TxnEnd.

    The contract allows a stream to repeat the transaction committed exactly at ``resume_after`` (the runner
    skips it by its position); such a repeat is left out here."""
    out: list[list[CaptureEvent]] = []
    current: list[CaptureEvent] | None = None
    skipping = False
    deadline = time.monotonic() + timeout
    stream: Iterator[CaptureEvent] = capture.stream(resume_after)
    try:
        for event in stream:
            assert time.monotonic() < deadline, f"only {len(out)} of {count} transactions in {timeout} s"
            if isinstance(event, TxnBegin):
                assert current is None, "transactions interleave"
                assert resume_after is None or event.commit.key >= resume_after.key, "a transaction before the resume"
                current = [event] if resume_after is None or event.commit.key > resume_after.key else None
                skipping = current is None
            elif isinstance(event, Idle):
                assert current is None or event.position is None, "an Idle position inside a transaction"
                if len(out) >= count:
                    return out
            elif skipping:
                skipping = not isinstance(event, TxnEnd)
            elif current is not None:
                current.append(event)
                if isinstance(event, TxnEnd):
                    out.append(current)
                    current = None
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return out


def _rows(txn: list[CaptureEvent]) -> list[RowChange]:
    return [e for e in txn if isinstance(e, RowChange)]


def test_capture_yields_committed_transactions_whole_and_in_order(harness: EngineHarness) -> None:
    src = harness.source()
    harness.run(src, harness.create_table(T))
    cfg = harness.config(src)
    capture = _capture(cfg)
    try:
        harness.run_in_one(src, [harness.insert(T, 1, "a"), harness.insert(T, 2, "b")], commit=True)
        harness.run_in_one(src, [harness.insert(T, 3, "never")], commit=False)
        harness.run_in_one(src, [harness.update(T, 1, "a2"), harness.delete_one(T, 2)], commit=True)
        txns = _txns(capture, None, 2)
    finally:
        capture.close()
    assert len(txns) == 2
    first, second = txns
    # Shape before the first row of the table, values engine-neutral and typed.
    meta = next(e for e in first if isinstance(e, TableMeta))
    assert first.index(meta) < first.index(_rows(first)[0])
    assert [c.name for c in meta.key_columns] == ["id"] and meta.identity == "key"
    assert [(r.op, r.values) for r in _rows(first)] == [
        (Op.INSERT, [1, "a", "0.01", b"a"]), (Op.INSERT, [2, "b", "0.02", b"b"])]
    assert [r.op for r in _rows(second)] == [Op.UPDATE, Op.DELETE]
    assert _rows(second)[1].old_key == [2]
    # Commit order: positions strictly increase, and begin and end agree.
    begins = [t[0] for t in txns]
    ends = [t[-1] for t in txns]
    assert all(isinstance(b, TxnBegin) and isinstance(e, TxnEnd) and b.commit == e.commit
               for b, e in zip(begins, ends, strict=True))
    assert begins[0].commit.key < begins[1].commit.key  # type: ignore[union-attr]
    assert cfg.primary.engine == capture.engine


def test_capture_resumes_after_what_was_confirmed(harness: EngineHarness) -> None:
    src = harness.source()
    harness.run(src, harness.create_table(T))
    cfg = harness.config(src)
    capture = _capture(cfg)
    try:
        for i in range(3):
            harness.run(src, harness.insert(T, i, f"v{i}"))
        txns = _txns(capture, None, 3)
        first_end = txns[0][-1]
        assert isinstance(first_end, TxnEnd)
        capture.confirm(first_end.confirm)
    finally:
        capture.close()
    again = _capture(cfg)
    try:
        text = again.parse_position(first_end.commit.text)
        assert text == first_end.commit  # positions round-trip through their text
        resumed = _txns(again, first_end.commit, 2)
        assert again.gap_after(first_end.commit) is None
    finally:
        again.close()
    assert [t[0].commit for t in resumed] == [t[0].commit for t in txns[1:]]  # type: ignore[union-attr]


#: "Within a few seconds" (issue 19): how much longer than a bare server a shutdown may take with a capture attached.
SHUTDOWN_BOUND_S = 5.0


def _stop_while_streaming(harness: EngineHarness, src: dict[str, Any], cfg: ArkConfig, i: int, held: bool
                          ) -> tuple[float, BaseException | None]:
    """Commit one row, let a consumer take the stream up to its end, then shut the source down while the
    stream is open; ``held``: the consumer stops pulling events after that transaction, as the runner does
    while Kafka is away. (Seconds the shutdown took, how the stream ended.)"""
    capture = _capture(cfg)
    ended: list[BaseException] = []
    got, release = threading.Event(), threading.Event()

    def consume() -> None:
        try:
            for event in capture.stream(None):
                if isinstance(event, TxnEnd):
                    got.set()
                    if held:
                        release.wait(60)
        except BaseException as exc:  # noqa: BLE001 - the test looks at how the stream ended
            ended.append(exc)

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    harness.run(src, harness.insert(T, i, f"before stop {i}"))
    assert got.wait(30), "the stream never delivered the transaction"
    try:
        seconds = harness.stop_source(src)
    finally:
        release.set()
        harness.start_source(src)
    reader.join(30)
    capture.close()
    return seconds, ended[0] if ended else None


def test_capture_never_delays_the_sources_shutdown_and_resumes_after_it(harness: EngineHarness) -> None:
    """Issue 19: whatever the capture is doing (reading, or held up by its consumer), the source's ordinary
    shutdown completes within a few seconds; the open stream ends with a SourceError (the runner retries
    it); and after the restart the capture delivers every transaction, those before the stops included."""
    src = harness.source()
    harness.run(src, harness.create_table(T))
    cfg = harness.config(src)
    for i, held in ((1, False), (2, True)):
        seconds, ended = _stop_while_streaming(harness, src, cfg, i, held)
        assert seconds < SHUTDOWN_BOUND_S, f"the shutdown took {seconds:.1f} s with a capture {'held' * held}"
        assert isinstance(ended, SourceError), f"the stream ended with {ended!r}, not a SourceError"
    harness.run(src, harness.insert(T, 3, "after the restarts"))
    capture = _capture(cfg)
    try:
        txns = _txns(capture, None, 3)  # nothing was confirmed: all three, in commit order
    finally:
        capture.close()
    assert [_rows(t)[0].values[0] for t in txns] == [1, 2, 3]


def test_snapshot_is_consistent_and_describes_tables_as_the_stream_does(harness: EngineHarness) -> None:
    src = harness.source()
    harness.run(src, harness.create_table(T), harness.create_table(BAG, keyless=True))
    cfg = harness.config(src)
    capture = _capture(cfg)
    try:
        harness.run(src, harness.insert(T, 1, "a"), harness.insert(BAG, 7, "x"), harness.insert(BAG, 7, "x"))
        streamed = _txns(capture, None, 3)
        source = load(engine(cfg.primary.engine).snapshot)(cfg.primary)
        with source.open() as snap:
            harness.run(src, harness.insert(T, 2, "after"))  # commits after the snapshot's position
            later = _txns(capture, streamed[-1][0].commit, 1)  # type: ignore[union-attr]
            metas = {m.table: m for m in snap.tables(cfg.primary.tables)}
            rows = {t: list(snap.rows(metas[t]).values()) for t in (T, BAG)}
            position = snap.position
    finally:
        capture.close()
    stream_metas = {e.table: e for t in streamed for e in t if isinstance(e, TableMeta)}
    for table in (T, BAG):  # one description, one key, one type map, one shape hash
        assert metas[table] == replace(stream_metas[table], position=""), table
    assert metas[BAG].identity == "full"
    assert rows[T] == [_rows(streamed[0])[0].values]  # the stream's own values
    assert rows[BAG] == [_rows(streamed[1])[0].values, _rows(streamed[2])[0].values]
    assert later[0][0].commit.key > just_before(position).key  # type: ignore[union-attr]


def _state(n: int, position: Position) -> ApplyState:
    return ApplyState("contract", "standby", "ark.contract.redo", 0, n, position.text, position.key, 0, 0, 0, n)


def test_applier_applies_atomically_with_its_state_and_names_data_errors(harness: EngineHarness) -> None:
    src, sb = harness.source(), harness.standby()
    harness.run(src, harness.create_table(T), harness.create_table(BAG, keyless=True))
    cfg = harness.config(src, [sb])
    snapshot = load(engine(cfg.primary.engine).snapshot)(cfg.primary)
    with snapshot.open() as snap:
        metas = {m.table: m for m in snap.tables(cfg.primary.tables)}
        position = snap.position
    app = _applier(cfg)
    try:
        app.begin()
        for meta in metas.values():
            app.apply_table_meta("contract", meta, None)
        app.save_state(_state(0, position))
        app.commit()
        # A rolled-back batch leaves nothing, not even its state.
        app.begin()
        app.apply_rows(metas, [RowChange(T, Op.INSERT, [1, "a", "0.01", b"a"])], "t1", "p1")
        app.save_state(_state(1, position))
        app.rollback()
        assert app.load_state("contract", "standby") == _state(0, position)
        assert harness.rows(sb, T) == []
        # A committed batch: rows and state together; keyless rows one at a time.
        app.begin()
        app.apply_rows(metas, [RowChange(T, Op.INSERT, [1, "a", "0.01", b"a"]),
                               RowChange(T, Op.INSERT, [2, "b", "0.02", b"b"]),
                               RowChange(T, Op.UPDATE, [1, "a2", "0.01", b"a2"]),
                               RowChange(BAG, Op.INSERT, [7, "x", "0.07", b"x"]),
                               RowChange(BAG, Op.INSERT, [7, "x", "0.07", b"x"]),
                               RowChange(BAG, Op.DELETE, [], [7, "x", "0.07", b"x"])], "t2", "p2")
        app.save_state(_state(2, position))
        app.commit()
        assert app.load_state("contract", "standby") == _state(2, position)
        assert harness.rows(sb, T) == [(1, "a2", "0.01", b"a2"), (2, "b", "0.02", b"b")]
        assert harness.rows(sb, BAG) == [(7, "x", "0.07", b"x")]  # one of the two identical rows went
        # Data errors are never skipped: a missing row and a duplicate key are named.
        for change in (RowChange(T, Op.DELETE, [], [99]), RowChange(T, Op.INSERT, [2, "dup", "0", b""])):
            app.begin()
            with pytest.raises(DataApplyError) as err:
                app.apply_rows(metas, [change], "t3", "p3")
            assert err.value.table == T and err.value.txn_id == "t3"
            app.rollback()
        assert harness.rows(sb, T) == [(1, "a2", "0.01", b"a2"), (2, "b", "0.02", b"b")]
    finally:
        app.close()


def test_bulk_load_and_verify_compare_both_sides(harness: EngineHarness) -> None:
    src, sb = harness.source(), harness.standby()
    harness.run(src, harness.create_table(T), *[harness.insert(T, i, f"v{i}") for i in range(1, 201)])
    cfg = harness.config(src, [sb])
    spec_engine = engine(cfg.primary.engine)
    snapshot = load(spec_engine.snapshot)(cfg.primary)
    verifier = load(spec_engine.verifier)()
    app = _applier(cfg)
    try:
        with snapshot.open() as snap:
            meta = snap.table(T)
            assert meta is not None
            app.begin()
            app.apply_table_meta("contract", meta, None)
            assert app.bulk_load(snap.rows(meta)) == 200
            app.save_state(_state(0, snap.position))
            app.commit()
            primary_side = verifier.open_source(cfg.primary, snap)
        standby_side = verifier.open_standby(cfg.standbys[0], write=False)
        spec = TableSpec.of(meta)
        everything = KeyRange(None, None)
        try:
            assert primary_side.digest(spec, everything) == standby_side.digest(spec, everything)
            assert standby_side.shape_problem(spec) == ""
        finally:
            standby_side.close()
        harness.tamper(sb, harness.update(T, 7, "tampered"))
        standby_side = verifier.open_standby(cfg.standbys[0], write=False)
        try:
            assert primary_side.digest(spec, everything) != standby_side.digest(spec, everything)
            assert standby_side.keyed_rows(spec, KeyRange(("6",), ("7",))) != \
                primary_side.keyed_rows(spec, KeyRange(("6",), ("7",)))
        finally:
            standby_side.close()
            primary_side.close()
    finally:
        app.close()


def test_a_keyless_table_replicates_updates_and_deletes_by_whole_rows(harness: EngineHarness) -> None:
    """Identity "full": every column is a key column; an UPDATE or DELETE names its row by all its old values,
    and the applier changes exactly one row per change, even among identical rows."""
    src, sb = harness.source(), harness.standby()
    harness.run(src, harness.create_table(BAG, keyless=True))
    cfg = harness.config(src, [sb])
    capture = _capture(cfg)
    try:
        harness.run(src, harness.insert(BAG, 7, "x"), harness.insert(BAG, 7, "x"), harness.insert(BAG, 8, "z"))
        harness.run(src, harness.update(BAG, 7, "y"))  # both identical rows
        harness.run(src, harness.delete_one(BAG, 7))  # one of the two, still identical
        txns = _txns(capture, None, 5)
    finally:
        capture.close()
    meta = next(e for t in txns for e in t if isinstance(e, TableMeta))
    assert meta.identity == "full" and len(meta.key_columns) == len(meta.columns)
    updates, deletes = _rows(txns[3]), _rows(txns[4])
    assert [(r.op, r.old_key, r.values) for r in updates] == 2 * [(Op.UPDATE, [7, "x", "0.07", b"x"],
                                                                   [7, "y", "0.07", b"y"])]
    assert [(r.op, r.old_key) for r in deletes] == [(Op.DELETE, [7, "y", "0.07", b"y"])]
    app = _applier(cfg)
    try:
        app.begin()
        app.apply_table_meta("contract", meta, None)
        app.apply_rows({BAG: meta}, [r for t in txns for r in _rows(t)], "t1..t5", "p1..p5")
        app.commit()
        # A change whose old row is not there is a data error, not a silent no-op.
        app.begin()
        with pytest.raises(DataApplyError) as err:
            app.apply_rows({BAG: meta}, [RowChange(BAG, Op.DELETE, [], [7, "x", "0.07", b"x"])], "t6", "p6")
        assert err.value.table == BAG
        app.rollback()
    finally:
        app.close()
    assert harness.rows(sb, BAG) == harness.rows(src, BAG) == [(7, "y", "0.07", b"y"), (8, "z", "0.08", b"z")]


def test_probe_reads_the_source_log_from_the_database_alone(harness: EngineHarness) -> None:
    """What ``ark status`` shows with Kafka down: the source's current position (in the engine's own text) and
    how many bytes of log lie between two positions; never an exception for an unreachable source."""
    src = harness.source()
    harness.run(src, harness.create_table(T))
    cfg = harness.config(src)
    capture = _capture(cfg)  # the capture's source-side setup exists (a slot, for engines that have one)
    probe = load(engine(cfg.primary.engine).probe)(cfg)
    try:
        before = probe.source_log()
        assert before.message == "" and before.current_position and before.summary, before
        harness.run(src, *[harness.insert(T, i, "x" * 200) for i in range(50)])
        after = probe.source_log()
        assert after.current_position is not None and before.current_position is not None
        older, newer = capture.parse_position(before.current_position), capture.parse_position(after.current_position)
        assert older.key < newer.key
        assert (probe.bytes_between(before.current_position, after.current_position) or 0) > 50 * 200
        assert probe.bytes_between(after.current_position, after.current_position) == 0
        assert capture.retained_from() == "" or capture.parse_position(capture.retained_from()).key <= newer.key
    finally:
        capture.close()
    gone = load(engine(cfg.primary.engine).probe)(harness.config({**src, "port": 1}))
    assert gone.source_log().message  # unreachable: said, not raised
