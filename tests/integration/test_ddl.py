"""DDL mid-stream (issue 3, item 3), against real Kafka and real PostgreSQL with capture and apply running.

pgoutput carries no DDL: a table's new shape arrives (as a Relation message, turned into a
TableMeta entry) with the first row change after the DDL. So every step below changes a row after
its DDL, then compares primary and standby row by row, including the rows that existed before.
"""

from __future__ import annotations

import time

import psycopg
import pytest

from deploy.compare import TableDiff
from tests.support.replication import Group, sql, wait_for

ITEMS = ["public.items"]


def _running(make_group, tables: tuple[str, ...] = ("public.*",)) -> Group:
    group: Group = make_group(tables=tables)
    sql(group.primary_dsn, "CREATE TABLE items (id int PRIMARY KEY, a text, b int, v varchar(10))")
    sql(group.primary_dsn, "CREATE TABLE other (id int PRIMARY KEY, n int NOT NULL)")
    sql(group.primary_dsn, "INSERT INTO items SELECT g, 'row ' || g, g, 'v' || g FROM generate_series(1, 50) g")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    return group


def _wait_equal(group: Group, tables: list[str], timeout: float = 60) -> list[TableDiff]:
    """group.wait_equal, but a comparison that races the standby's DDL (a column renamed between reading
    the catalog and the rows) is simply retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            diffs = group.diffs("standby", tables)
        except psycopg.Error:
            diffs = []
        if (diffs and all(d.equal for d in diffs)) or time.monotonic() > deadline:
            return diffs
        group.assert_agents_alive()
        time.sleep(0.3)


def _step(group: Group, *statements: str, tables: list[str] = ITEMS) -> None:
    for stmt in statements:
        sql(group.primary_dsn, stmt)
    diffs = _wait_equal(group, tables)
    assert diffs and all(d.equal for d in diffs), f"after {statements}: {diffs}"


def _standby_columns(group: Group, table: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in sql(group.standby("standby").dsn,
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (table,))]


def test_add_drop_alter_and_rename_are_followed(make_group) -> None:
    group = _running(make_group)
    _step(group, "INSERT INTO items VALUES (100, 'warm', 0, 'w')")
    # ADD COLUMN, nullable, no default: old rows are NULL on both sides.
    _step(group, "ALTER TABLE items ADD COLUMN c1 int", "INSERT INTO items (id, c1) VALUES (101, 1)")
    # ADD COLUMN with a constant default: the old rows read 7 on the primary without any row change.
    _step(group, "ALTER TABLE items ADD COLUMN c2 int DEFAULT 7", "INSERT INTO items (id) VALUES (102)")
    # NOT NULL DEFAULT, with a quote and a comma in it; the shape arrives with an UPDATE this time.
    _step(group, "ALTER TABLE items ADD COLUMN c3 text NOT NULL DEFAULT 'it''s, \"x\"'",
          "UPDATE items SET a = 'touched' WHERE id = 1")
    # A stable default is evaluated once (fast default): the standby gets the very same value.
    _step(group, "ALTER TABLE items ADD COLUMN c4 timestamptz DEFAULT now()", "INSERT INTO items (id) VALUES (103)")
    # Two DDLs before the next row change, in one transaction.
    _step(group, "BEGIN; ALTER TABLE items ADD COLUMN c5 numeric(10,2) DEFAULT 3.5; "
                 "ALTER TABLE items ADD COLUMN c6 int[] DEFAULT '{1,2}'; COMMIT",
          "DELETE FROM items WHERE id = 2")
    _step(group, "ALTER TABLE items DROP COLUMN b", "INSERT INTO items (id, a) VALUES (104, 'after drop')")
    _step(group, "ALTER TABLE items ALTER COLUMN c1 TYPE bigint, ALTER COLUMN v TYPE varchar(50)",
          "INSERT INTO items (id, v) VALUES (105, repeat('z', 40))")
    # RENAME keeps the column's data (followed by attnum, not as drop + add).
    _step(group, "ALTER TABLE items RENAME COLUMN a TO a2", "UPDATE items SET c1 = 5 WHERE id = 3")
    cols = dict(_standby_columns(group, "public.items"))
    assert "a" not in cols and cols["a2"] == "text" and cols["c1"] == "bigint" and cols["v"] == "character varying(50)"
    old_row = sql(group.standby("standby").dsn, "SELECT a2, c2, c3 FROM items WHERE id = 4")
    assert old_row == [("row 4", 7, 'it\'s, "x"')]
    # Drop and re-add under the same name: a new column, NULL for every old row.
    _step(group, "ALTER TABLE items DROP COLUMN c2", "ALTER TABLE items ADD COLUMN c2 int",
          "INSERT INTO items (id, c2) VALUES (106, 6)")
    # SET NOT NULL / DROP NOT NULL.
    _step(group, "UPDATE items SET c1 = 0 WHERE c1 IS NULL", "ALTER TABLE items ALTER COLUMN c1 SET NOT NULL",
          "INSERT INTO items (id, c1) VALUES (107, 7)")
    _step(group, "ALTER TABLE items ALTER COLUMN c1 DROP NOT NULL", "INSERT INTO items (id) VALUES (108)")
    group.assert_agents_alive()


def _said(group: Group, expect: str, timeout: float = 60) -> str:
    """Wait until the apply agent's log has a line containing ``expect``; return it."""
    log = group.workdir / "logs" / "apply-standby.log"
    found: list[str] = []

    def said() -> bool:
        found[:] = [ln for ln in log.read_text(errors="replace").splitlines() if expect in ln]
        return bool(found)

    wait_for(said, timeout, f"the applier to say: {expect}")
    return found[0]


@pytest.mark.parametrize("ddl, expect", [
    ("ALTER TABLE items ADD COLUMN e double precision DEFAULT random()",
     "a column was added with a default computed row by row (volatile): its values are not in the log"),
    ("ALTER TABLE items ADD COLUMN e timestamptz NOT NULL DEFAULT clock_timestamp()",
     "a column was added with a default computed row by row (volatile)"),
    ("ALTER TABLE items ALTER COLUMN a TYPE int USING length(a)",
     "a column changed type with a USING expression: the converted values are not in the log"),
    # A USING that PostgreSQL could also do without it (int to bigint): the values differ, so it is a resync too.
    ("ALTER TABLE items ALTER COLUMN b TYPE bigint USING b * 2",
     "a column changed type with a USING expression"),
])
def test_what_cannot_be_followed_needs_a_table_resync(make_group, ddl: str, expect: str) -> None:
    """The applier names the table and why (Ark's DDL hook marks the rewrite at its place in the stream); only that
    table is resynced, the others go on."""
    group = _running(make_group)
    _step(group, "INSERT INTO items VALUES (100, 'warm', 0, 'w')")
    sql(group.primary_dsn, ddl)
    sql(group.primary_dsn, "INSERT INTO items (id) VALUES (101)")
    line = _said(group, expect)
    assert "public.items" in line
    for i in range(5):  # the other table keeps applying
        _step(group, f"INSERT INTO other VALUES ({i}, {i})", tables=["public.other"])
    diffs = _wait_equal(group, ["public.items", "public.other"], timeout=120)  # the resync converges
    assert diffs and all(d.equal for d in diffs), diffs


def test_create_table_first_rows_in_the_same_transaction(make_group) -> None:
    group = _running(make_group)
    _step(group, "BEGIN; CREATE TABLE fresh (id int PRIMARY KEY, t text NOT NULL DEFAULT 'd'); "
                 "INSERT INTO fresh (id) SELECT generate_series(1, 20); INSERT INTO items VALUES (200, 'x', 1, 'y'); "
                 "COMMIT", tables=["public.items"])
    wait_for(lambda: bool(sql(group.standby("standby").dsn, "SELECT to_regclass('public.fresh')")[0][0]), 30,
             "table fresh on the standby")
    _step(group, "INSERT INTO fresh VALUES (21, 'later')", tables=["public.fresh", "public.items"])
    # A table created empty, then altered before its first row: the standby follows trivially.
    _step(group, "CREATE TABLE later (id int PRIMARY KEY)", "ALTER TABLE later ADD COLUMN r float8 DEFAULT random()",
          "INSERT INTO later (id) VALUES (1)", tables=["public.later"])


def test_truncate_single_several_restart_identity_cascade(make_group) -> None:
    group = _running(make_group)
    sql(group.primary_dsn, "CREATE TABLE parent (id serial PRIMARY KEY, t text)")
    sql(group.primary_dsn, "CREATE TABLE child (id serial PRIMARY KEY, parent_id int REFERENCES parent (id))")
    tables = ["public.items", "public.other", "public.parent", "public.child"]
    _step(group, "INSERT INTO other VALUES (1, 1), (2, 2)", "INSERT INTO parent (t) VALUES ('p1'), ('p2')",
          "INSERT INTO child (parent_id) VALUES (1), (2)", tables=tables)
    _step(group, "TRUNCATE items", "INSERT INTO items VALUES (1, 'again', 1, 'v')", tables=tables)
    _step(group, "TRUNCATE items, other", "INSERT INTO other VALUES (3, 3)", tables=tables)
    _step(group, "TRUNCATE parent RESTART IDENTITY CASCADE", "INSERT INTO parent (t) VALUES ('new')",
          "INSERT INTO child (parent_id) VALUES (1)", tables=tables)
    assert sql(group.standby("standby").dsn, "SELECT id, t FROM parent") == [(1, "new")]
    # TRUNCATE and rows in one transaction.
    _step(group, "BEGIN; INSERT INTO other VALUES (4, 4); TRUNCATE other; INSERT INTO other VALUES (5, 5); COMMIT",
          tables=tables)


def test_drop_table_keeps_the_standby_table_and_the_rest_applying(make_group) -> None:
    group = _running(make_group)
    _step(group, "INSERT INTO other VALUES (1, 1)", tables=["public.items", "public.other"])
    sql(group.primary_dsn, "DROP TABLE items")
    _step(group, "INSERT INTO other VALUES (2, 2)", tables=["public.other"])
    # Kept, with its last rows: dropping a standby table is the DBA's decision (the standby may be
    # someone's report source); pgoutput does not even carry the DROP.
    assert sql(group.standby("standby").dsn, "SELECT count(*) FROM items") == [(50,)]
    # Re-created under the same name: a new relation, created anew on the standby only if it is empty there.
    group.assert_agents_alive()


def test_new_table_outside_a_schema_publication_is_added(make_group) -> None:
    """With a table-list publication (pattern not of the form schema.*), capture adds new matching tables."""
    group = _running(make_group, tables=("public.items", "public.other", "public.new_*"))
    _step(group, "INSERT INTO other VALUES (1, 1)", tables=["public.other"])
    sql(group.primary_dsn, "CREATE TABLE new_one (id int PRIMARY KEY, t text)")
    sql(group.primary_dsn, "CREATE TABLE ignored (id int PRIMARY KEY)")

    def published() -> bool:
        return bool(sql(group.primary_dsn, "SELECT 1 FROM pg_publication_tables WHERE tablename = 'new_one'"))

    wait_for(published, 30, "capture to add new_one to the publication")
    time.sleep(0.5)
    _step(group, "INSERT INTO new_one VALUES (1, 'first')", tables=["public.new_one", "public.other"])
    assert not sql(group.primary_dsn, "SELECT 1 FROM pg_publication_tables WHERE tablename = 'ignored'")
