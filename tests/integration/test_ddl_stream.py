"""DDL in the stream (issue 9, item 1): shapes from the DDL's own place in the WAL, and every object a standby needs.

The regression of issue 9: ``ALTER TABLE ... RENAME COLUMN`` while the capture was behind stopped the standby
in one run of three ("a rename cannot be told from a drop and add"), because the capture described older WAL
with the primary's *current* catalog. Here the capture is stopped, rows are written, the table is renamed,
dropped-and-added and retyped, more rows are written, and the capture resumes (re-reading the WAL of its
retransmit window, older shapes included): the standby must follow exactly, five runs out of five.
"""

from __future__ import annotations

import psycopg

from tests.support.replication import Group, sql, wait_for


def _running(make_group, **extra: object) -> Group:
    group: Group = make_group()
    if extra:
        group.standby_extra = dict(extra)
        group.write_config()
    sql(group.primary_dsn, "CREATE TABLE items (id int PRIMARY KEY, t int, c_0 text, d_0 int)")
    sql(group.primary_dsn, "INSERT INTO items SELECT g, g, 'c' || g, g FROM generate_series(1, 100) g")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    return group


def _columns(dsn: str, table: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in sql(dsn, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                                  "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                                                  "ORDER BY attnum", (table,))]


def _wait_equal(group: Group, tables: list[str], timeout: float = 120) -> None:
    standby = group.standby("standby").dsn
    deadline_error: list[str] = []

    def equal() -> bool:
        group.assert_agents_alive()
        try:
            diffs = group.diffs("standby", tables)
        except psycopg.Error as exc:  # a table or column the standby does not have yet
            deadline_error[:] = [str(exc)]
            return False
        deadline_error[:] = [str([d for d in diffs if not d.equal])] + [
            f"{t}: primary {_columns(group.primary_dsn, t)}, standby {_columns(standby, t)}" for t in tables]
        return all(d.equal for d in diffs) and all(_columns(group.primary_dsn, t) == _columns(standby, t)
                                                   for t in tables)

    try:
        wait_for(equal, timeout, f"{tables} equal on the standby, columns included")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {deadline_error}") from None


def test_rename_drop_add_and_retype_while_the_capture_is_stopped_five_of_five(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    capture = group.agents[0]
    for run in range(5):
        capture.stop()
        sql(primary, f"INSERT INTO items (id, t, c_{run}, d_{run}) SELECT g, g, 'pre', g FROM "
                     f"generate_series({1000 * (run + 1)}, {1000 * (run + 1) + 9}) g")
        sql(primary, f"UPDATE items SET c_{run} = 'touched' WHERE mod(id, 7) = {run}")
        sql(primary, f"ALTER TABLE items RENAME COLUMN c_{run} TO c_{run + 1}")
        sql(primary, f"INSERT INTO items (id, t, c_{run + 1}) VALUES ({1000 * (run + 1) + 100}, 1, 'renamed')")
        # dropped and added again under the same name, with another type: a new column (its old values are gone)
        sql(primary, f"ALTER TABLE items DROP COLUMN d_{run}")
        sql(primary, f"ALTER TABLE items ADD COLUMN d_{run + 1} text DEFAULT 'new {run}'")
        sql(primary, f"ALTER TABLE items ADD COLUMN d_{run} text")
        sql(primary, f"UPDATE items SET d_{run} = 'again' WHERE mod(id, 5) = 0")
        sql(primary, f"ALTER TABLE items DROP COLUMN d_{run}")
        # a type change without USING (the standby converts the same way)
        sql(primary, f"ALTER TABLE items ALTER COLUMN t TYPE {'bigint' if run % 2 == 0 else 'numeric(20,0)'}")
        sql(primary, f"INSERT INTO items (id, t, c_{run + 1}) VALUES ({1000 * (run + 1) + 200}, 2, 'after')")
        capture.start()
        _wait_equal(group, ["public.items"])
    log = (group.workdir / "logs" / "apply-standby.log").read_text(errors="replace")
    assert "needs a resync" not in log and "will be resynced" not in log, "the standby resynced instead of following"


def test_enum_add_and_rename_value_reach_the_standby_before_the_rows_that_use_them(make_group) -> None:
    group = _running(make_group)
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    sql(primary, "CREATE TYPE mood AS ENUM ('ok', 'bad')")
    sql(primary, "CREATE TABLE feel (id int PRIMARY KEY, m mood NOT NULL)")
    sql(primary, "INSERT INTO feel VALUES (1, 'ok'), (2, 'bad')")
    _wait_equal(group, ["public.feel"])
    applier = group.agents[1]
    applier.stop()  # a backlog: the applier then groups these source transactions into one batch
    for i, label in enumerate(("great", "meh", "superb")):
        anchor = "AFTER 'ok'" if i == 0 else "BEFORE 'bad'" if i == 1 else "AFTER 'great'"
        sql(primary, f"ALTER TYPE mood ADD VALUE '{label}' {anchor}")
        sql(primary, f"INSERT INTO feel VALUES ({10 + i}, '{label}')")  # the next transaction uses it
    sql(primary, "ALTER TYPE mood RENAME VALUE 'bad' TO 'awful'")
    sql(primary, "INSERT INTO feel VALUES (20, 'awful')")
    applier.start()
    _wait_equal(group, ["public.feel"])
    labels = "SELECT enumlabel FROM pg_enum WHERE enumtypid = 'mood'::regtype ORDER BY enumsortorder"
    assert sql(standby, labels) == sql(primary, labels)
    assert sql(standby, "SELECT m::text FROM feel WHERE id = 2") == [("awful",)]


def _catalog(dsn: str) -> dict[str, object]:
    """What a promoted standby would need, as the catalog says it (names and definitions)."""
    return {
        "indexes": sorted(r[0] for r in sql(dsn, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'app'")),
        "constraints": sorted((r[0], r[1]) for r in sql(
            dsn, "SELECT conname, pg_get_constraintdef(c.oid) FROM pg_constraint c JOIN pg_namespace n ON "
                 "n.oid = c.connamespace WHERE n.nspname = 'app'")),
        "defaults": sorted((r[0], r[1], r[2]) for r in sql(
            dsn, "SELECT table_name, column_name, column_default FROM information_schema.columns "
                 "WHERE table_schema = 'app' AND column_default IS NOT NULL")),
        "identity": sorted((r[0], r[1]) for r in sql(
            dsn, "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'app' "
                 "AND is_identity = 'YES'")),
        "generated": sorted((r[0], r[1], r[2]) for r in sql(
            dsn, "SELECT table_name, column_name, generation_expression FROM information_schema.columns "
                 "WHERE table_schema = 'app' AND is_generated = 'ALWAYS'")),
        "sequences": sorted(r[0] for r in sql(dsn, "SELECT sequencename FROM pg_sequences WHERE schemaname = 'app'")),
        "types": sorted((r[0], r[1]) for r in sql(
            dsn, "SELECT t.typname, t.typtype FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                 "WHERE n.nspname = 'app' AND t.typtype IN ('e', 'd', 'c', 'r') AND t.typrelid = 0 "
                 "OR (n.nspname = 'app' AND t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid)"
                 " = 'c')")),
        "tables": sorted(r[0] for r in sql(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'app'")),
    }


def test_schema_objects_created_and_changed_mid_stream(make_group) -> None:
    group: Group = make_group(tables=("app.*",))
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    sql(primary, "CREATE SCHEMA app; CREATE TABLE app.seed (id int PRIMARY KEY)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    statements = [
        "CREATE DOMAIN app.positive AS int CHECK (VALUE > 0)",
        "CREATE TYPE app.point2 AS (x float8, y float8)",
        "CREATE TYPE app.span AS RANGE (subtype = int4)",
        "CREATE TYPE app.kind AS ENUM ('a', 'b')",
        "CREATE SEQUENCE app.ticket START 100 INCREMENT 5",
        "CREATE TABLE app.orders (id serial PRIMARY KEY, ref int GENERATED BY DEFAULT AS IDENTITY, "
        "qty app.positive NOT NULL DEFAULT 1, k app.kind DEFAULT 'a', p app.point2, s app.span, "
        "total numeric(10,2) GENERATED ALWAYS AS (qty * 2.5) STORED, note text CHECK (length(note) < 100), "
        "code text UNIQUE, ticket int DEFAULT nextval('app.ticket'))",
        "CREATE TABLE app.lines (id int PRIMARY KEY, order_id int REFERENCES app.orders (id), qty int)",
        "CREATE INDEX orders_note ON app.orders (lower(note)) WHERE note IS NOT NULL",
        "INSERT INTO app.orders (qty, k, p, s, note, code) VALUES (3, 'b', '(1,2)', '[1,5)', 'x', 'c1'), "
        "(4, 'a', NULL, NULL, NULL, 'c2')",
        "INSERT INTO app.lines VALUES (1, 1, 3)",
        "ALTER TABLE app.lines ADD CONSTRAINT lines_qty CHECK (qty >= 0) NOT VALID",
        "ALTER TABLE app.lines VALIDATE CONSTRAINT lines_qty",
        "ALTER TABLE app.orders ALTER COLUMN note SET DEFAULT 'none'",
        "ALTER INDEX app.orders_note RENAME TO orders_note_lower",
        "ALTER TABLE app.orders RENAME CONSTRAINT orders_code_key TO orders_code_unique",
        "ALTER DOMAIN app.positive ADD CONSTRAINT small CHECK (VALUE < 1000000)",
        "CREATE INDEX lines_order ON app.lines (order_id)",
        "DROP INDEX app.lines_order",
        "ALTER TABLE app.lines RENAME TO order_lines",
        "INSERT INTO app.order_lines VALUES (2, 2, 4)",
        "ALTER SEQUENCE app.ticket INCREMENT 10",
        "CREATE TABLE app.scratch (id int PRIMARY KEY)",
        "DROP TABLE app.scratch",  # follow_drop is off: the standby keeps it
    ]
    for stmt in statements:
        sql(primary, stmt)
    _wait_equal(group, ["app.orders", "app.order_lines"])
    want, have = _catalog(primary), _catalog(standby)
    want_tables = set(want.pop("tables")) | {"scratch"}  # type: ignore[arg-type]
    assert set(have.pop("tables")) == want_tables  # type: ignore[arg-type]
    # the dropped table stays on the standby with its key (follow_drop is off); the rest is exactly the primary's
    # (identity columns are BY DEFAULT on the standby, so that the applier can write the primary's values)
    have = {k: [x for x in v if "scratch" not in str(x)] for k, v in have.items()}  # type: ignore[attr-defined]
    assert have == want, f"standby {have}\nprimary {want}"
    assert sql(standby, "SELECT increment_by FROM pg_sequences WHERE sequencename = 'ticket'") == [(10,)]
    group.assert_agents_alive()


def test_drop_table_is_followed_only_with_follow_drop(make_group) -> None:
    group = _running(make_group, follow_drop=True)
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    sql(primary, "CREATE TABLE gone (id int PRIMARY KEY); INSERT INTO gone VALUES (1)")
    _wait_equal(group, ["public.gone"])
    sql(primary, "DROP TABLE gone")
    sql(primary, "INSERT INTO items (id, t) VALUES (5000, 1)")
    wait_for(lambda: not sql(standby, "SELECT to_regclass('public.gone') IS NOT NULL")[0][0], 60,
             "the standby to drop table gone (follow_drop: true)")
    _wait_equal(group, ["public.items"])


def test_a_ddl_the_standby_cannot_run_stops_it_naming_the_object_and_the_fix(make_group) -> None:
    group = _running(make_group)
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    # Something on the standby that the primary's DDL cannot pass: a domain under the name of the primary's enum.
    sql(standby, "BEGIN READ WRITE; CREATE DOMAIN public.shade AS text; COMMIT")
    sql(primary, "CREATE TYPE shade AS ENUM ('light')")
    sql(primary, "ALTER TYPE shade ADD VALUE 'dark'")
    applier = group.agents[1]
    wait_for(lambda: not applier.alive(), 60, "the applier to stop")
    assert applier.proc is not None and applier.proc.returncode == 33
    out = applier.tail(5)
    assert "error: standby standby cannot follow ALTER TYPE" in out and "type public.shade" in out, out
    assert "fix: " in out
