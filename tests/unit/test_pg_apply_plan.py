"""Pure tests of the PostgreSQL applier's planning and SQL text (no server)."""

from __future__ import annotations

import pytest

from consumers.errors import DataApplyError
from consumers.postgresql import sql
from consumers.postgresql.ddl import StandbyColumn, adaptation
from consumers.postgresql.plan import merge_truncates, row_params, split_runs, stage_row
from schemas.entries import UNCHANGED, Column, Op, RowChange, TableMeta

T = TableMeta("Sales.Order", (
    Column("Id", "int64", "bigint", nullable=False, key_position=1),
    Column("note", "string", "text"),
    Column("amount", "decimal", "numeric(12,2)"),
), version="1")
U = TableMeta("public.u", (
    Column("a", "int32", "integer", nullable=False, key_position=2),
    Column("b", "int32", "integer", nullable=False, key_position=1),
    Column("v", "string", "text"),
), version="1")
METAS = {T.table: T, U.table: U}


def upd(key: int, note: object = "n", amount: object = "1.00", old: list[object] | None = None) -> RowChange:
    return RowChange(T.table, Op.UPDATE, [key, note, amount], old)  # type: ignore[list-item]


def test_quoting_of_odd_identifiers() -> None:
    assert sql.quote_ident("Order") == '"Order"'
    assert sql.quote_ident('we"ird') == '"we""ird"'
    assert sql.qualified("Sales.Order") == '"Sales"."Order"'
    assert sql.qualified("plain") == '"public"."plain"'
    with pytest.raises(ValueError):
        sql.quote_ident("a\x00b")


def test_create_table_sql_quotes_and_keys() -> None:
    assert sql.create_table_sql(T) == ('CREATE TABLE "Sales"."Order" ("Id" bigint NOT NULL, "note" text, '
                                       '"amount" numeric(12,2), PRIMARY KEY ("Id"))')
    # key order follows key_position, not column order
    assert sql.create_table_sql(U).endswith('PRIMARY KEY ("b", "a"))')
    bad = TableMeta("s.t", (Column("x", "other", "int; DROP TABLE y"),), version="1")
    with pytest.raises(ValueError):
        sql.create_table_sql(bad)


def test_neutral_type_fallback_when_no_source_type() -> None:
    col = Column("x", "timestamptz", "")
    assert sql.pg_type(col) == "timestamp with time zone"


def test_runs_split_on_repeated_key_and_keep_order() -> None:
    def delete(key: int) -> RowChange:
        return RowChange(T.table, Op.DELETE, [], [key])

    changes = [delete(1), delete(2), delete(1), delete(3)]
    runs = split_runs(METAS, changes)
    assert [r.indexes for r in runs] == [[0, 1], [2, 3]]
    assert all(r.op is Op.DELETE for r in runs)


def test_runs_split_on_table_op_and_present_columns() -> None:
    changes = [
        RowChange(T.table, Op.INSERT, [1, "a", "1.00"]),
        RowChange(T.table, Op.INSERT, [2, "b", "2.00"]),
        upd(1),
        upd(2, note=UNCHANGED),
        upd(3, note=UNCHANGED),
        RowChange(U.table, Op.DELETE, [], [7, 8]),
        RowChange(T.table, Op.DELETE, [], [3]),
    ]
    runs = split_runs(METAS, changes)
    assert [(r.table, r.op, r.cols, r.indexes) for r in runs] == [
        (T.table, Op.INSERT, (0, 1, 2), [0, 1]),
        (T.table, Op.UPDATE, (0, 1, 2), [2]),
        (T.table, Op.UPDATE, (0, 2), [3, 4]),
        (U.table, Op.DELETE, (), [5]),
        (T.table, Op.DELETE, (), [6]),
    ]
    # UNCHANGED columns are left out of the values and of the SET list
    assert runs[2].values == [[2, "1.00"], [3, "1.00"]]
    assert sql.update_sql(T, runs[2].cols, False) == (
        'UPDATE "Sales"."Order" SET "amount" = %s WHERE "Id" = %s RETURNING 1')
    assert row_params(T, runs[2], 0) == ["1.00", "2"]
    assert runs[3].keys == [(7, 8)]


def test_key_change_uses_old_key_and_touches_both_keys() -> None:
    changes = [upd(10, old=[1]), upd(11, old=[2]), upd(12, old=[10])]
    runs = split_runs(METAS, changes)
    assert [r.indexes for r in runs] == [[0, 1], [2]]
    assert runs[0].key_change and runs[0].keys == [(1,), (2,)]
    assert sql.update_sql(T, runs[0].cols, True) == (
        'UPDATE "Sales"."Order" SET "Id" = %s, "note" = %s, "amount" = %s WHERE "Id" = %s RETURNING 1')
    assert row_params(T, runs[0], 0) == ["10", "n", "1.00", "1"]
    assert stage_row(runs[0], 1) == [11, "n", "1.00", 2, 1]
    # an old key equal to the new key is not a key change
    same = split_runs(METAS, [upd(5, old=[5])])
    assert not same[0].key_change


def test_unchanged_key_column_is_filled_from_old_key() -> None:
    runs = split_runs(METAS, [RowChange(U.table, Op.UPDATE, [UNCHANGED, 9, "v"], [1, 2])])
    # key order is (b, a): old key b=1, a=2 → a keeps 2, b becomes 9
    assert runs[0].key_change and runs[0].values == [[2, 9, "v"]]


def test_truncates_merge_and_break_runs() -> None:
    changes = [RowChange(T.table, Op.TRUNCATE), RowChange(U.table, Op.TRUNCATE),
               RowChange(T.table, Op.INSERT, [1, "a", None]), RowChange(T.table, Op.TRUNCATE)]
    items = merge_truncates(split_runs(METAS, changes))
    assert isinstance(items[0], list) and items[0] == [T.table, U.table]
    assert not isinstance(items[1], list) and items[1].op is Op.INSERT
    assert items[2] == [T.table]
    assert sql.truncate_sql([T.table, U.table]) == 'TRUNCATE "Sales"."Order", "public"."u"'


def test_bad_changes_are_data_errors() -> None:
    with pytest.raises(DataApplyError) as err:
        split_runs(METAS, [RowChange("public.nope", Op.INSERT, [1])], txn_id="t1", position="0/1")
    assert err.value.table == "public.nope" and err.value.txn_id == "t1"
    with pytest.raises(DataApplyError):
        split_runs(METAS, [RowChange(T.table, Op.INSERT, [1, "a"])])
    keyless = TableMeta("s.k", (Column("x", "int32", "integer"),), version="1")
    with pytest.raises(DataApplyError, match="no key"):
        split_runs({"s.k": keyless}, [RowChange("s.k", Op.DELETE, [], [1])])
    # inserts into a keyless table are fine and never split on "repeated" keys
    runs = split_runs({"s.k": keyless}, [RowChange("s.k", Op.INSERT, [1]), RowChange("s.k", Op.INSERT, [1])])
    assert len(runs) == 1


def test_param_text() -> None:
    assert [sql.param_text(v) for v in (None, True, False, 5, 1.5, "x", b"\x01\xff")] == [
        None, "t", "f", "5", "1.5", "x", "\\x01ff"]
    assert sql.param_text(float("nan")) == "NaN" and sql.param_text(float("-inf")) == "-Infinity"


def test_set_based_sql() -> None:
    stage = "_ark_stage_1"
    assert sql.stage_columns(T, "UPDATE", (0, 2), False) == ["Id", "amount", "_ark_n"]
    assert sql.stage_columns(T, "DELETE", (), False) == ["Id", "_ark_n"]
    assert sql.stage_columns(T, "UPDATE", (0, 1, 2), True) == ["Id", "note", "amount", "_ark_old_0", "_ark_n"]
    create = sql.create_stage_sql(T, stage, "UPDATE", (0, 1, 2), True)
    assert create.startswith('CREATE TEMP TABLE "_ark_stage_1" ON COMMIT DROP AS SELECT "Id", "note", '
                             '"amount", "Id" AS "_ark_old_0", 0::int AS "_ark_n" FROM "Sales"."Order"')
    upd_sql = sql.set_update_sql(T, stage, (0, 2), False, 500)
    assert 'UPDATE "Sales"."Order" AS t SET "amount" = s."amount" FROM "_ark_stage_1" AS s ' \
           'WHERE t."Id" = s."Id" RETURNING s."_ark_n"' in upd_sql
    assert "c.n < 500" in upd_sql
    key_sql = sql.set_update_sql(T, stage, (0, 1, 2), True, 10)
    assert 'SET "Id" = s."Id"' in key_sql and 't."Id" = s."_ark_old_0"' in key_sql
    assert 'DELETE FROM "Sales"."Order" AS t USING "_ark_stage_1" AS s WHERE t."Id" = s."Id"' in \
        sql.set_delete_sql(T, stage, 10)
    assert sql.set_insert_sql(T, stage, (0, 1, 2)) == (
        'INSERT INTO "Sales"."Order" ("Id", "note", "amount") OVERRIDING SYSTEM VALUE SELECT "Id", "note", "amount" '
        'FROM "_ark_stage_1"')
    two = sql.set_delete_sql(U, stage, 3)
    assert 't."b" = s."b" AND t."a" = s."a"' in two


def test_ddl_adaptation() -> None:
    assert adaptation(T, None, (None, []))[0] == 'CREATE SCHEMA IF NOT EXISTS "Sales"'
    current = [StandbyColumn("Id", "bigint", True), StandbyColumn("note", "character varying(5)", False),
               StandbyColumn("gone", "text", False)]
    stmts = adaptation(T, current, ("Order_pkey", ["Id"]))
    assert stmts == ['ALTER TABLE "Sales"."Order" ALTER COLUMN "note" TYPE text',
                     'ALTER TABLE "Sales"."Order" DROP COLUMN "gone", ADD COLUMN "amount" numeric(12,2)']
    same = [StandbyColumn("Id", "bigint", True), StandbyColumn("note", "text", False),
            StandbyColumn("amount", "numeric(12,2)", False)]
    assert adaptation(T, same, ("Order_pkey", ["Id"])) == []
    assert adaptation(T, same, ("p", ["note"])) == [
        'ALTER TABLE "Sales"."Order" DROP CONSTRAINT "p", ADD PRIMARY KEY ("Id")']


def test_repeated_full_updates_of_a_row_collapse_to_the_last_image() -> None:
    changes = [upd(1, "a"), upd(2, "b"), upd(1, "c"), upd(1, "d"), upd(3, "e")]
    runs = split_runs(METAS, changes)
    assert len(runs) == 1
    assert runs[0].keys == [(1,), (2,), (3,)]
    assert [v[1] for v in runs[0].values] == ["d", "b", "e"]
    assert runs[0].indexes == [3, 1, 4]


@pytest.mark.parametrize("changes, n_runs", [
    # a different present-column set is another shape: no collapse across it
    ([upd(1, "a"), upd(1, UNCHANGED), upd(1, "c")], 3),
    # a key change in between splits the run
    ([upd(1, "a"), upd(5, "b", old=[1]), upd(5, "c")], 3),
    # a delete in between keeps order: update, delete, then the re-insert is another run
    ([upd(1, "a"), RowChange(T.table, Op.DELETE, [], [1]), RowChange(T.table, Op.INSERT, [1, "x", "2"])], 3),
])
def test_collapse_never_crosses_a_different_shape(changes: list[RowChange], n_runs: int) -> None:
    assert len(split_runs(METAS, changes)) == n_runs
