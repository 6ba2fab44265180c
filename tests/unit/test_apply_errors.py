"""Classified apply errors, the per-table skip rule, and the retention-gap message (no services)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors as pge

from common.control import ControlRecord
from common.errors import TargetError
from consumers.base import ApplyState
from consumers.errors import DataApplyError, TransientApplyError
from consumers.postgresql.errors import classify, is_connection_lost
from consumers.retention import retention_gap
from consumers.table_resync import ResyncJob, unanswered_requests
from consumers.tables import OK, RESYNCING, TableState, resyncing_tables, split_rows, staging_name
from schemas.entries import Op, RowChange, TxnChunk
from schemas.positions import pg_lsn
from tests.support.memory import record

CASES = [
    # (error, expected class, what it stands for)
    (pge.AdminShutdown("terminating connection due to administrator command"), TransientApplyError, "restart"),
    (pge.CrashShutdown("terminating connection because of crash of another server process"), TransientApplyError,
     "crash restart"),
    (pge.CannotConnectNow("the database system is starting up"), TransientApplyError, "starting up"),
    (psycopg.OperationalError("server closed the connection unexpectedly"), TransientApplyError, "connection lost"),
    (pge.ConnectionFailure("connection failure"), TransientApplyError, "connection failure"),
    (pge.DeadlockDetected("deadlock detected"), TransientApplyError, "deadlock"),
    (pge.SerializationFailure("could not serialize access"), TransientApplyError, "serialization"),
    (pge.LockNotAvailable("could not obtain lock"), TransientApplyError, "lock timeout"),
    (pge.QueryCanceled("canceling statement due to statement timeout"), TransientApplyError, "cancelled"),
    (pge.UniqueViolation("duplicate key value violates unique constraint"), DataApplyError, "duplicate key"),
    (pge.InvalidTextRepresentation("invalid input syntax for type numeric"), DataApplyError, "type mismatch"),
    (pge.DatatypeMismatch("column is of type integer but expression is of type text"), DataApplyError,
     "type mismatch"),
    (pge.NumericValueOutOfRange("numeric field overflow"), DataApplyError, "does not fit"),
    (pge.NotNullViolation("null value in column"), DataApplyError, "not null"),
    (pge.UndefinedTable("relation does not exist"), DataApplyError, "missing table"),
    (pge.UndefinedColumn("column does not exist"), DataApplyError, "missing column"),
    (pge.InsufficientPrivilege("permission denied"), TargetError, "privileges"),
    (pge.ReadOnlySqlTransaction("cannot execute INSERT in a read-only transaction"), TargetError, "read-only"),
]


@pytest.mark.parametrize(("exc", "expected", "what"), CASES, ids=[c[2] + ":" + type(c[0]).__name__ for c in CASES])
def test_classify(exc: psycopg.Error, expected: type[Exception], what: str) -> None:
    err = classify(exc, what="applying rows", table="public.t", txn_id="731", position="0/16B3748", key=[7])
    assert type(err) is expected, what
    if expected is TransientApplyError:
        assert "retries" in err.fix


def test_data_error_names_transaction_table_key_and_position() -> None:
    err = classify(pge.UniqueViolation("duplicate key value violates unique constraint \"t_pkey\""),
                   what="applying rows", table="public.t", txn_id="731", position="0/16B3748", key=[7])
    assert isinstance(err, DataApplyError)
    for needle in ("public.t", "731", "0/16B3748", "[7]"):
        assert needle in err.message, needle
    assert (err.table, err.txn_id, err.position, err.key) == ("public.t", "731", "0/16B3748", [7])
    assert "resync" in err.fix


@pytest.mark.parametrize(("exc", "lost"), [
    (psycopg.OperationalError("server closed the connection unexpectedly"), True),
    (pge.AdminShutdown("terminating connection"), True),
    (pge.CannotConnectNow("starting up"), True),
    (pge.DeadlockDetected("deadlock"), False),
    (pge.UniqueViolation("dup"), False),
])
def test_connection_lost(exc: psycopg.Error, lost: bool) -> None:
    assert is_connection_lost(exc, None) is lost


def _rows(*tables: str) -> list[RowChange]:
    return [RowChange(t, Op.INSERT, [i]) for i, t in enumerate(tables)]


@pytest.mark.parametrize(("tables", "skip", "kept", "skipped"), [
    (["a", "b", "a"], set(), ["a", "b", "a"], {}),
    (["a", "b", "a"], {"c"}, ["a", "b", "a"], {}),
    (["a", "b", "a"], {"a"}, ["b"], {"a": 2}),
    (["a", "b", "c"], {"a", "c"}, ["b"], {"a": 1, "c": 1}),
    (["a"], {"a"}, [], {"a": 1}),
    ([], {"a"}, [], {}),
])
def test_split_rows(tables: list[str], skip: set[str], kept: list[str], skipped: dict[str, int]) -> None:
    changes = _rows(*tables)
    got, left_out = split_rows(changes, skip)
    assert [c.table for c in got] == kept and {t: len(rows) for t, rows in left_out.items()} == skipped
    assert [c.values[0] for c in got] == [c.values[0] for c in changes if c.table not in skip]  # order kept


def test_resyncing_tables() -> None:
    states = {"a": TableState("a", RESYNCING), "b": TableState("b", OK, "0/1", b"\x01")}
    assert resyncing_tables(states) == {"a"}


@pytest.mark.parametrize(("table", "expected"), [
    ("public.history", "ark_resync.public.history"),
    ("history", "ark_resync.public.history"),
    ("Sales.Order", "ark_resync.Sales.Order"),
])
def test_staging_name(table: str, expected: str) -> None:
    assert staging_name(table) == expected


def test_staging_name_fits_postgres() -> None:
    long = "public." + "x" * 80
    name = staging_name(long).removeprefix("ark_resync.")
    assert len(name.encode()) <= 63 and name != staging_name("public." + "x" * 81).removeprefix("ark_resync.")


def _job() -> ResyncJob:
    return ResyncJob("public.t", "test", "", lambda: None, None, None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(("floor", "notes", "later_floor", "o_first"), [
    # skipped before the snapshot's position was known: sorted out once it is (the loop may lag behind P)
    (None, [(10, "0/5"), (12, "0/9")], "0/8", 12),
    (None, [(10, "0/5"), (12, "0/9")], "0/4", 10),
    (None, [(10, "0/5")], "0/8", None),
    # with the floor known: rows at or below it are in the copy, the first one above it counts
    ("0/8", [(10, "0/5"), (12, "0/8"), (14, "0/9"), (16, "0/A")], None, 14),
    # a session restart re-reads from an earlier offset: the smallest offset wins
    ("0/8", [(14, "0/9"), (11, "0/9")], None, 11),
    ("0/8", [(10, "0/5")], None, None),
])
def test_o_first(floor: str | None, notes: list[tuple[int, str]], later_floor: str | None,
                 o_first: int | None) -> None:
    job = _job()
    if floor is not None:
        job.floor = pg_lsn(floor)
    for offset, commit in notes:
        rows = [RowChange("public.t", Op.INSERT, [offset])]
        job.note_skipped(offset, TxnChunk(str(offset), pg_lsn(commit), 0, 0, True, rows), rows, epoch=3)
    if later_floor is not None:
        job.floor = pg_lsn(later_floor)
    assert job.first_offset() == o_first
    floor_key = job.floor.key if job.floor else b""
    kept = sorted(o for o, (_t, at, _r) in job.stash.items() if at.key > floor_key)
    assert kept[:1] == ([o_first] if o_first is not None else [])  # the stash holds what the catch-up needs


def _rec(offset: int, kind: str, target: str, request_id: str = "", **args: str) -> ControlRecord:
    return record(kind, target, at_offset=offset, rid=request_id, at_us=0, **args)


def test_unanswered_requests() -> None:
    records = [
        _rec(0, "resync-table", "sb1", "r1", table="public.a"),
        _rec(1, "resync-table", "sb2", "r2", table="public.a"),
        _rec(2, "resync-table", "sb1", "r3", table="public.b"),
        _rec(3, "table-quarantined", "sb1", "x", table="public.a", request="r1"),  # the v1 name still reads
    ]
    assert [r.request_id for r in unanswered_requests(records, "sb1")] == ["r3"]


def test_retention_gap_says_what_is_missing() -> None:
    state = ApplyState(group="g", standby="sb1", topic="ark.g.redo", partition=0, next_offset=120,
                       position="0/16B3748", position_key=pg_lsn("0/16B3748").key, epoch=0,
                       commit_time_us=1_700_000_000_000_000, applied_at_us=0)
    err = retention_gap("sb1", "ark.g.redo", state, low=500, first_retained_us=1_700_003_600_000_000)
    text = err.message
    for needle in ("ark.g.redo[0]@120..499", "380 offsets", "2023-11-14T22:13:20Z", "2023-11-14T23:13:20Z",
                   "0/16B3748", "offset 500"):
        assert needle in text, needle
    assert "ark resync sb1" in err.fix and "ark apply sb1" in err.fix
    assert (err.first_missing, err.last_missing) == (120, 499) and err.exit_code == 13
