"""A MariaDB standby of another engine's primary: which columns keep their declared type, the type map, the
values MariaDB cannot store (named by column), and DDL followed by stable column ids (PostgreSQL's attnums)."""

from __future__ import annotations

import pytest

from consumers.errors import TableNeedsResync
from consumers.mariadb import sql
from consumers.mariadb.ddl import StandbyColumn, plan
from consumers.mariadb.plan import split_runs
from producers.mariadb.types import ColumnType
from schemas.entries import UNCHANGED, Column, Op, RowChange, TableMeta

#: Every kind of column a MariaDB capture describes, as its own ColumnType.
MARIADB_TYPES = [
    ColumnType("tinyint"), ColumnType("tinyint", unsigned=True), ColumnType("smallint"),
    ColumnType("smallint", unsigned=True), ColumnType("mediumint"), ColumnType("int"), ColumnType("int", unsigned=True),
    ColumnType("bigint"), ColumnType("bigint", unsigned=True), ColumnType("year"), ColumnType("decimal", precision=12,
                                                                                           scale=2),
    ColumnType("decimal", unsigned=True, precision=5, scale=0), ColumnType("float"), ColumnType("double"),
    ColumnType("date"), ColumnType("datetime", fsp=6), ColumnType("datetime"), ColumnType("timestamp", fsp=3),
    ColumnType("time", fsp=2), ColumnType("char", length=5, collation="utf8mb4_bin"),
    ColumnType("varchar", length=40, collation="latin1_swedish_ci"), ColumnType("text", collation="utf8mb4_general_ci"),
    ColumnType("longtext", collation="utf8mb4_bin"), ColumnType("enum", collation="utf8mb4_general_ci",
                                                                labels=("a", "it's")),
    ColumnType("set", collation="utf8mb4_general_ci", labels=("x", "y")), ColumnType("binary", length=4),
    ColumnType("varbinary", length=8), ColumnType("blob"), ColumnType("longblob"), ColumnType("bit", length=10),
    ColumnType("geometry"),
]


@pytest.mark.parametrize("ct", MARIADB_TYPES, ids=lambda ct: ct.declared)
def test_a_mariadb_column_keeps_its_declared_type(ct: ColumnType) -> None:
    col = Column("c", ct.neutral, ct.declared)
    assert sql.is_native(col) and sql.column_type(col) == ct.declared


@pytest.mark.parametrize(("neutral", "declared", "expected"), [
    ("int32", "integer", "int"), ("int16", "smallint", "smallint"), ("int64", "bigint", "bigint"),
    ("decimal", "numeric(12,2)", "decimal(12,2)"), ("decimal", "numeric", "decimal(65,30)"),
    ("decimal", "numeric(100,2)", "decimal(65,30)"), ("float32", "real", "float"),
    ("float64", "double precision", "double"), ("boolean", "boolean", "boolean"),
    ("string", "text", "longtext character set utf8mb4 collate utf8mb4_nopad_bin"),
    ("string", "character varying(20)", "varchar(20) character set utf8mb4 collate utf8mb4_nopad_bin"),
    ("bytes", "bytea", "longblob"), ("date", "date", "date"), ("time", "time without time zone", "time(6)"),
    ("timestamp", "timestamp without time zone", "datetime(6)"),
    ("timestamptz", "timestamp(3) with time zone", "datetime(6)"), ("uuid", "uuid", "uuid"),
    ("json", "jsonb", "longtext character set utf8mb4 collate utf8mb4_nopad_bin"),
    ("other", "integer[]", "longtext character set utf8mb4 collate utf8mb4_nopad_bin"),
    ("other", "bit(5)", "bit(5)"),  # the same type and text form on both engines
])
def test_another_engines_column_is_created_from_its_neutral_type(neutral: str, declared: str, expected: str) -> None:
    assert sql.column_type(Column("c", neutral, declared)) == expected


def test_foreign_keys_get_bounded_types_and_exact_collations() -> None:
    assert sql.column_type(Column("k", "string", "text", False, 1)) == \
        "varchar(768) character set utf8mb4 collate utf8mb4_nopad_bin"
    assert sql.column_type(Column("k", "bytes", "bytea", False, 1)) == "varbinary(3072)"
    assert sql.catalog_form("varchar(20) character set utf8mb4 collate utf8mb4_nopad_bin") == \
        "varchar(20) collate utf8mb4_nopad_bin"
    assert sql.catalog_form("boolean") == "tinyint"


@pytest.mark.parametrize(("neutral", "declared", "value"), [
    ("timestamptz", "timestamp with time zone", "infinity"),
    ("timestamp", "timestamp without time zone", "2000-01-01 00:00:00 BC"),
    ("date", "date", "10000-01-01"),
    ("time", "time with time zone", "10:00:00+02"),
    ("float64", "double precision", float("nan")),
    ("decimal", "numeric", "NaN"),
])
def test_values_mariadb_cannot_store_are_refused(neutral: str, declared: str, value: object) -> None:
    with pytest.raises(sql.UnrepresentableValue) as err:
        sql.param_converter(Column("c", neutral, declared))(value)  # type: ignore[arg-type]
    assert str(value) not in str(err.value)  # the value itself is never in the message


def test_foreign_values_mariadb_stores() -> None:
    assert sql.param_converter(Column("c", "timestamptz", "timestamp with time zone"))(
        "2024-02-29 23:59:59.123456+00") == "2024-02-29 23:59:59.123456"
    assert sql.param_converter(Column("c", "boolean", "boolean"))(True) == 1
    assert str(sql.param_converter(Column("c", "decimal", "numeric"))("-0.000001")) == "-0.000001"
    assert sql.param_converter(Column("c", "time", "time without time zone"))("24:00:00") == "24:00:00"


def _pg(name: str, attnum: int, *, key: int = 0, nullable: bool = True, missing: str | None = None,
        default: str | None = None) -> Column:
    return Column(name, "int32", "integer", nullable, key, default_expr=default, missing_value=missing,
                  column_id=attnum)


PREVIOUS = TableMeta("s.t", (_pg("id", 1, key=1, nullable=False), _pg("v", 2)), "v1", "0/10")
STANDBY = [StandbyColumn("id", "int", True), StandbyColumn("v", "int", False)]


def _plan(*cols: Column) -> list[str]:
    meta = TableMeta("s.t", cols, "v2", "0/20")
    return plan(meta, STANDBY, ["id"], has_rows=lambda: True, literal=lambda c, v: f"'{v}'",
                previous=PREVIOUS).statements


def test_postgresql_renames_and_adds_are_followed_by_attnum() -> None:
    assert _plan(_pg("id", 1, key=1, nullable=False), _pg("w", 2)) == ["ALTER TABLE `s`.`t` CHANGE COLUMN `v` `w` int"]
    added = _pg("c", 3, nullable=False, missing="7", default="7")
    assert _plan(_pg("id", 1, key=1, nullable=False), _pg("v", 2), added) == [
        "ALTER TABLE `s`.`t` ADD COLUMN `c` int NOT NULL DEFAULT '7'",
        "ALTER TABLE `s`.`t` ALTER COLUMN `c` DROP DEFAULT"]
    assert _plan(_pg("id", 1, key=1, nullable=False), _pg("v", 2), _pg("c", 3)) == [
        "ALTER TABLE `s`.`t` ADD COLUMN `c` int"]


@pytest.mark.parametrize(("cols", "reason"), [
    ((_pg("id", 1, key=1, nullable=False), _pg("v", 2), _pg("c", 3, default="random()")), "DEFAULT random()"),
    ((_pg("id", 1, key=1, nullable=False), _pg("v", 3)), "dropped and added again"),
])
def test_postgresql_changes_that_need_a_resync(cols: tuple[Column, ...], reason: str) -> None:
    with pytest.raises(TableNeedsResync, match=reason):
        _plan(*cols)


def test_updates_that_leave_unchanged_columns_out_run_on_their_own() -> None:
    meta = TableMeta("s.t", (Column("id", "int32", "integer", False, 1), Column("doc", "string", "text")), "v1")
    changes = [RowChange("s.t", Op.UPDATE, [1, "a"]), RowChange("s.t", Op.UPDATE, [2, UNCHANGED]),
               RowChange("s.t", Op.UPDATE, [3, UNCHANGED]), RowChange("s.t", Op.UPDATE, [4, "d"])]
    runs = split_runs({"s.t": meta}, changes)
    assert [(len(r), r.partial) for r in runs] == [(1, False), (2, True), (1, False)]


def test_data_errors_do_not_quote_row_values() -> None:
    from consumers.mariadb.errors import redacted

    text = "Incorrect datetime value: 'secret 2024' for column `d`.`t`.`at` at row 1"
    assert redacted(1292, text) == "Incorrect datetime value for column `d`.`t`.`at` at row 1"
    assert redacted(1062, "Duplicate entry '5' for key 'PRIMARY'") == "Duplicate entry '5' for key 'PRIMARY'"


def test_a_column_gone_without_a_known_id_may_be_a_rename_so_the_table_is_resynced() -> None:
    # The PostgreSQL capture described the previous shape after the rename had already committed: v's attnum was
    # not trusted (0). A new column with a fresh attnum may then be v renamed, or a new one: not guessed.
    previous = TableMeta("s.t", (_pg("id", 1, key=1, nullable=False), _pg("v", 0)), "v1", "0/10")
    meta = TableMeta("s.t", (_pg("id", 1, key=1, nullable=False), _pg("w", 2), _pg("c", 3, missing="1")), "v2",
                     "0/20")
    with pytest.raises(TableNeedsResync, match="cannot be told"):
        plan(meta, STANDBY, ["id"], has_rows=lambda: True, previous=previous)


def test_foreign_decimals_are_never_rounded() -> None:
    exact = sql.param_converter(Column("n", "decimal", "numeric"))  # → decimal(65,30)
    assert str(exact("-12345678901234567890123456789012345.000000000000000000000000000001")) == \
        "-12345678901234567890123456789012345.000000000000000000000000000001"
    with pytest.raises(sql.UnrepresentableValue, match="more than 30 fraction digits"):
        exact("0.0000000000000000000000000000001")
    with pytest.raises(sql.UnrepresentableValue, match="more than 35 integer digits"):
        exact("1" + "0" * 35)
    two = sql.param_converter(Column("n", "decimal", "numeric(12,2)"))
    assert str(two("1.50")) == "1.50" and str(two("-9999999999.99")) == "-9999999999.99"
