"""A PostgreSQL standby of another engine's primary: which columns keep their declared type, the type map,
DDL followed by name ids (a source without stable column ids), and values PostgreSQL cannot store."""

from __future__ import annotations

import pytest

from common.snapshot import TableRows
from consumers.errors import DataApplyError, TableNeedsResync
from consumers.postgresql import foreign, sql
from consumers.postgresql.ddl import StandbyColumn, adaptation
from producers.postgresql import types as pgtypes
from schemas.entries import Column, Op, RowChange, TableMeta, Value, name_column_id

#: (type OID, typmod) of the columns a PostgreSQL capture describes itself (builtins, with and without modifiers).
PG_COLUMNS = [(oid, -1) for oid in pgtypes._BUILTIN] + [  # noqa: SLF001 - the capture's own table is the reference
    (pgtypes.NUMERIC, (12 << 16 | 2) + 4), (pgtypes.VARCHAR, 24), (pgtypes.BPCHAR, 9), (pgtypes.TIMESTAMPTZ, 3),
    (pgtypes.TIMESTAMP, 3), (pgtypes.TIME, 2), (pgtypes.TIMETZ, 2), (pgtypes.INTERVAL, 3), (pgtypes.BIT, 5),
    (1007, -1), (1231, -1)]


@pytest.mark.parametrize(("oid", "typmod"), PG_COLUMNS)
def test_a_postgresql_column_keeps_its_declared_type(oid: int, typmod: int) -> None:
    neutral, declared = pgtypes.describe(oid, typmod)
    assert sql.pg_type(Column("c", neutral, declared)) == declared


@pytest.mark.parametrize(("neutral", "declared", "expected"), [
    ("int16", "tinyint", "smallint"), ("int16", "year", "smallint"), ("int16", "tinyint unsigned", "smallint"),
    ("int32", "smallint unsigned", "integer"), ("int32", "mediumint", "integer"), ("int32", "int", "integer"),
    ("int64", "int unsigned", "bigint"), ("decimal", "bigint unsigned", "numeric(20,0)"),
    ("decimal", "decimal(10,3)", "numeric(10,3)"), ("decimal", "decimal(5,0) unsigned", "numeric(5,0)"),
    ("float32", "float", "real"), ("float64", "double", "double precision"),
    ("timestamp", "datetime(6)", "timestamp without time zone"),
    ("timestamptz", "timestamp(3)", "timestamp with time zone"), ("time", "time(2)", "interval"),
    ("string", "varchar(20) collate utf8mb4_general_ci", "text"), ("string", "enum('a','b') collate x", "text"),
    ("bytes", "blob", "bytea"), ("bytes", "geometry", "bytea"), ("other", "bit(5)", "bit(5)"),
    ("date", "date", "date"),
])
def test_another_engines_column_is_created_from_its_neutral_type(neutral: str, declared: str, expected: str) -> None:
    assert sql.pg_type(Column("c", neutral, declared)) == expected


N = name_column_id
STANDBY = [StandbyColumn("id", "integer", True), StandbyColumn("vv", "text", False),
           StandbyColumn("w", "integer", False)]


def _hinted(*cols: tuple[str, str], position: str = "binlog.000001:900 gtid=0-1-9") -> TableMeta:
    """A shape right after DDL on a source without column ids: each column says what it was called before."""
    types = {"id": ("int32", "int"), "vv": ("string", "text collate utf8mb4_bin"), "w": ("int32", "int"),
             "x": ("string", "text collate utf8mb4_bin"), "c": ("int32", "int")}
    return TableMeta("m.t", tuple(Column(name, *types[name], name != "id", 1 if name == "id" else 0,
                                         column_id=N(was)) for name, was in cols), "v3", position)


def test_a_renamed_column_is_not_taken_for_a_new_one_by_a_later_shape() -> None:
    # v2 (right after RENAME COLUMN v TO vv) said vv was v; v3 (after a later DDL) says vv was vv. Comparing the
    # two ids as if they were attnums made vv "another column of the same name": dropped and re-added, its data
    # lost. Name ids only say where a column came from in the shape before.
    previous = _hinted(("id", "id"), ("vv", "v"), ("w", "w"))
    assert adaptation(_hinted(("id", "id"), ("vv", "vv"), ("w", "w")), STANDBY, ("pk", ["id"]), previous) == []


def test_name_ids_rename_drop_and_add() -> None:
    new = _hinted(("id", "id"), ("x", "vv"), ("c", "c"))
    assert adaptation(new, STANDBY, ("pk", ["id"]), None, has_rows=lambda: False) == [
        'ALTER TABLE "m"."t" RENAME COLUMN "vv" TO "_ark_rename_0"',
        'ALTER TABLE "m"."t" RENAME COLUMN "_ark_rename_0" TO "x"',
        'ALTER TABLE "m"."t" DROP COLUMN "w", ADD COLUMN "c" integer']


def test_a_rename_onto_a_dropped_columns_name_needs_a_resync() -> None:
    with pytest.raises(TableNeedsResync, match="renamed to its name"):
        adaptation(_hinted(("id", "id"), ("w", "vv")), STANDBY, ("pk", ["id"]), None)


META = TableMeta("m.t", (Column("id", "int32", "int", False, 1), Column("d", "timestamp", "datetime(6)"),
                         Column("t", "time", "time(2)"), Column("s", "string", "varchar(9) collate utf8mb4_bin"),
                         Column("own", "date", "date")), "v1", "p")


@pytest.mark.parametrize(("values", "column"), [
    ([1, "0000-00-00 00:00:00", None, None, None], "d"), ([1, "2024-00-10 00:00:00", None, None, None], "d"),
    ([1, None, None, "a\x00b", None], "s"),
])
def test_values_postgresql_cannot_store_are_named_by_column(values: list[Value], column: str) -> None:
    with pytest.raises(DataApplyError) as err:
        foreign.check_changes({"m.t": META}, {}, [RowChange("m.t", Op.INSERT, values)], "42", "p1")
    assert f"column {column} " in err.value.message and err.value.txn_id == "42"
    assert not any(isinstance(v, str) and v in err.value.message for v in values[1:] if v)


def test_values_postgresql_stores_pass_and_its_own_columns_are_not_checked() -> None:
    fine = [RowChange("m.t", Op.INSERT, [1, "2024-02-29 23:59:59.5", "24:00:00", "ok", "0000-00-00"])]
    foreign.check_changes({"m.t": META}, {}, fine, "1", "p")  # "own" is date on both engines: native, unchecked

    class Rows(TableRows):
        def values(self):  # type: ignore[no-untyped-def]
            yield [1, "0000-00-00 00:00:00", None, None, None]

    with pytest.raises(DataApplyError, match="column d "):
        list(foreign.CheckedRows(Rows(META), foreign.checks(META)).values())
