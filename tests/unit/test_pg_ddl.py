"""How the PostgreSQL standby follows DDL: the statements it plans, and what makes a table need a resync."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.errors import TableNeedsResync
from consumers.postgresql.ddl import StandbyColumn, adaptation, plan
from schemas.entries import Column, TableMeta

ID = Column("id", "int32", "integer", False, 1, column_id=1)
A = Column("a", "string", "text", True, 0, column_id=2)
B = Column("b", "int32", "integer", True, 0, column_id=3)
BASE = TableMeta("public.t", (ID, A, B), "v1", "0/10")
STANDBY = [StandbyColumn("id", "integer", True), StandbyColumn("a", "text", False),
           StandbyColumn("b", "integer", False)]
PK = ("t_pkey", ["id"])
T = '"public"."t"'


def meta(*columns: Column, position: str = "0/20") -> TableMeta:
    return TableMeta("public.t", (ID, *columns), "v2", position)


def steps(new: TableMeta, previous: TableMeta | None = BASE, rows: bool = True, nulls: bool = False) -> list[str]:
    return adaptation(new, STANDBY, PK, previous, has_rows=lambda: rows, has_nulls=lambda _: nulls)


@pytest.mark.parametrize("new, expected", [
    # ADD COLUMN without a default: the old rows are NULL.
    (meta(A, B, Column("c", "int32", "integer", column_id=4)), [f'ALTER TABLE {T} ADD COLUMN "c" integer']),
    # ADD COLUMN ... DEFAULT 5 (fast default): the old rows get the missing value; the default goes again.
    (meta(A, B, Column("c", "int32", "integer", False, default_expr="5", missing_value="5", column_id=4)),
     [f"ALTER TABLE {T} ADD COLUMN \"c\" integer DEFAULT '5'::integer NOT NULL",
      f'ALTER TABLE {T} ALTER COLUMN "c" DROP DEFAULT']),
    # A stable default (now()) evaluated once: the missing value is exact, the expression is not re-run.
    (meta(A, B, Column("d", "timestamptz", "timestamp with time zone", default_expr="now()",
                       missing_value="2026-01-02 03:04:05.123456+00", column_id=4)),
     [f"ALTER TABLE {T} ADD COLUMN \"d\" timestamp with time zone DEFAULT '2026-01-02 03:04:05.123456+00'::"
      "timestamp with time zone", f'ALTER TABLE {T} ALTER COLUMN "d" DROP DEFAULT']),
    # A quote in the missing value.
    (meta(A, B, Column("s", "string", "text", default_expr="'it''s'::text", missing_value="it's", column_id=4)),
     [f"ALTER TABLE {T} ADD COLUMN \"s\" text DEFAULT 'it''s'::text",
      f'ALTER TABLE {T} ALTER COLUMN "s" DROP DEFAULT']),
    # NOT NULL column whose old rows are NULL on the standby (catalog ahead of the stream): added nullable.
    (meta(A, B, Column("c", "int32", "integer", False, column_id=4)), [f'ALTER TABLE {T} ADD COLUMN "c" integer']),
    # DROP COLUMN.
    (meta(A), [f'ALTER TABLE {T} DROP COLUMN "b"']),
    # RENAME COLUMN b -> c (same attnum): the data stays.
    (meta(A, Column("c", "int32", "integer", column_id=3)),
     [f'ALTER TABLE {T} RENAME COLUMN "b" TO "_ark_rename_0"',
      f'ALTER TABLE {T} RENAME COLUMN "_ark_rename_0" TO "c"']),
    # Two columns swap names.
    (meta(Column("b", "string", "text", column_id=2), Column("a", "int32", "integer", column_id=3)),
     [f'ALTER TABLE {T} RENAME COLUMN "a" TO "_ark_rename_0"',
      f'ALTER TABLE {T} RENAME COLUMN "b" TO "_ark_rename_1"',
      f'ALTER TABLE {T} RENAME COLUMN "_ark_rename_0" TO "b"',
      f'ALTER TABLE {T} RENAME COLUMN "_ark_rename_1" TO "a"']),
    # b dropped and re-added (new attnum) with no default: the old rows are NULL again.
    (meta(A, Column("b", "int32", "integer", column_id=4)),
     [f'ALTER TABLE {T} DROP COLUMN "b", ADD COLUMN "b" integer']),
    # ALTER TYPE: no USING, so the standby converts exactly like the primary did without one.
    (meta(A, Column("b", "int64", "bigint", column_id=3)), [f'ALTER TABLE {T} ALTER COLUMN "b" TYPE bigint']),
    # SET NOT NULL / DROP NOT NULL.
    (meta(Column("a", "string", "text", False, column_id=2), B), [f'ALTER TABLE {T} ALTER COLUMN "a" SET NOT NULL']),
    (meta(A, B), []),
])
def test_followed(new: TableMeta, expected: list[str]) -> None:
    assert steps(new) == expected


@pytest.mark.parametrize("new, previous, reason", [
    (meta(A, B, Column("e", "float64", "double precision", default_expr="random()", column_id=4)), BASE,
     "column e was added with DEFAULT random()"),
    (meta(A, B, Column("c", "int32", "integer", default_expr="nextval('s'::regclass)", column_id=4)), BASE,
     "DEFAULT nextval('s'::regclass)"),
    (meta(A, B, Column("c", "int32", "integer")), BASE, "no longer described column c"),
    # b gone, c new, the standby's identity of b unknown: a rename cannot be told from drop + add.
    (meta(A, Column("c", "int32", "integer", column_id=5)), TableMeta("public.t", (ID, A, Column("b", "int32",
                                                                     "integer")), "v0", "0/1"),
     "columns b disappeared and c appeared in one step"),
])
def test_needs_resync(new: TableMeta, previous: TableMeta, reason: str) -> None:
    with pytest.raises(TableNeedsResync, match="table public.t needs a resync") as err:
        steps(new, previous)
    assert reason in err.value.reason and err.value.table == "public.t" and err.value.position == "0/20"


def test_an_empty_table_or_a_snapshot_follows_anything() -> None:
    volatile = meta(A, B, Column("e", "float64", "double precision", False, default_expr="random()", column_id=4))
    expected = [f'ALTER TABLE {T} ADD COLUMN "e" double precision NOT NULL']
    assert steps(volatile, rows=False) == expected
    assert steps(TableMeta("public.t", volatile.columns, "v", ""), rows=True) == expected  # from a snapshot


def test_set_not_null_waits_for_the_rows() -> None:
    assert steps(meta(Column("a", "string", "text", False, column_id=2), B), nulls=True) == []


def test_rows_are_only_counted_when_it_matters() -> None:
    def boom() -> bool:
        raise AssertionError("has_rows() called")

    assert plan(meta(A), STANDBY, PK, BASE, has_rows=boom)[0].sql == f'ALTER TABLE {T} DROP COLUMN "b"'


def test_type_change_steps_are_marked() -> None:
    (step,) = plan(meta(A, Column("b", "string", "text", column_id=3)), STANDBY, PK, BASE)
    assert step.type_change and step.what == "column b changed type from integer to text"


# -- the capture side: which catalog details a decoded Relation may use --------------------------------------
def _relation(*cols: tuple[str, int]) -> Any:
    from producers.postgresql import pgoutput

    return pgoutput.Relation(16384, "public", "t", "d", tuple(
        pgoutput.RelationColumn(1 if name == "id" else 0, name, oid, -1) for name, oid in cols))


def _details(*cols: tuple[int, str, int], defaults: dict[str, str] | None = None,
             missing: dict[str, str] | None = None) -> Any:
    from producers.postgresql.catalog import ColumnDetails

    return ColumnDetails({n: n == "id" for _, n, _ in cols}, {}, ("id",), attnums={n: a for a, n, _ in cols},
                         defaults=defaults or {}, missing=missing or {})


@pytest.mark.parametrize("relation, details, expected", [
    # The catalog has the decoded shape: ids, default and missing value.
    (_relation(("id", 23), ("c", 23)), _details((1, "id", 23), (3, "c", 23), defaults={"c": "5"}, missing={"c": "5"}),
     [("id", 1, None, None), ("c", 3, "5", "5")]),
    # Capture re-reads an older shape (c added since): the old columns keep their ids.
    (_relation(("id", 23), ("a", 25)), _details((1, "id", 23), (2, "a", 25), (3, "c", 23), defaults={"c": "5"}),
     [("id", 1, None, None), ("a", 2, None, None)]),
    # c's type changed since: still the same column (attnums survive type changes).
    (_relation(("id", 23), ("c", 1043)), _details((1, "id", 23), (3, "c", 25), missing={"c": "x"}),
     [("id", 1, None, None), ("c", 3, None, "x")]),
    # c was renamed to d since: c is unknown.
    (_relation(("id", 23), ("c", 23)), _details((1, "id", 23), (3, "d", 23), defaults={"d": "5"}),
     [("id", 1, None, None), ("c", 0, None, None)]),
    # b was dropped and re-added since (now after c): nothing is trusted.
    (_relation(("id", 23), ("b", 23), ("c", 23)), _details((1, "id", 23), (4, "b", 23), (3, "c", 23)),
     [("id", 0, None, None), ("b", 0, None, None), ("c", 0, None, None)]),
])
def test_capture_uses_only_catalog_details_of_the_decoded_columns(relation, details, expected) -> None:
    from producers.postgresql.relations import build_relation

    meta = build_relation(relation, details, {}, "0/1").meta
    assert [(c.name, c.column_id, c.default_expr, c.missing_value) for c in meta.columns] == expected
