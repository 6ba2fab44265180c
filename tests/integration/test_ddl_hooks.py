"""Ark's hooks on the primary cannot break the user's work (issue 18, item 2), and what they carry (issue 9, item 1).

Each failure path of the DDL event trigger is forced on a real primary while the capture and an applier run:
the user's DDL must commit every time, and the capture must resync the table it was not told about.
"""

from __future__ import annotations

import psycopg
import pytest

from tests.support.replication import Group, sql, wait_for

ITEMS = ["public.items"]


def _running(make_group) -> Group:
    group: Group = make_group()
    sql(group.primary_dsn, "CREATE TABLE items (id int PRIMARY KEY, a text)")
    sql(group.primary_dsn, "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 50) g")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    return group


def _equal(group: Group, tables: list[str], timeout: float = 120) -> None:
    standby = group.standby("standby").dsn
    wait_for(lambda: all(sql(standby, "SELECT to_regclass(%s) IS NOT NULL", (t,))[0][0] for t in tables), timeout,
             f"{tables} on the standby")
    diffs = group.wait_equal("standby", tables, timeout=timeout)
    assert all(d.equal for d in diffs), diffs


def _log(group: Group, agent: str) -> str:
    return (group.workdir / "logs" / f"{agent}.log").read_text(errors="replace")


def _ddl(dsn: str, statement: str) -> list[str]:
    """Run the user's DDL; return the server's notices and warnings (the DDL must not fail)."""
    notices: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda d: notices.append(f"{d.severity}: {d.message_primary}"))
        conn.execute(statement)  # type: ignore[arg-type]
    return notices


def test_describing_fails_the_ddl_commits_and_the_table_is_resynced(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, "CREATE OR REPLACE FUNCTION ark_capture.table_facts(rel oid) RETURNS jsonb LANGUAGE plpgsql "
                 "AS $$ BEGIN RAISE EXCEPTION 'forced failure of the facts'; END $$")
    _ddl(primary, "ALTER TABLE items ADD COLUMN b int DEFAULT 5")
    assert sql(primary, "SELECT count(*) FROM items WHERE b = 5") == [(50,)]  # the user's DDL committed
    sql(primary, "INSERT INTO items (id, a, b) VALUES (51, 'after', 6)")
    wait_for(lambda: "Ark's DDL hook could not describe it" in _log(group, "apply-standby"), 60,
             "the applier to resync items because the hook could not describe it")
    _equal(group, ITEMS)


def test_recording_fails_the_ddl_commits_and_the_capture_resyncs_from_the_failure_row(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    # The WAL message is written, but keeping the shape fails: the whole record rolls back (never half done).
    sql(primary, "ALTER TABLE ark_capture.shapes ADD CONSTRAINT ark_test_broken CHECK (false) NOT VALID")
    _ddl(primary, "ALTER TABLE items ADD COLUMN c text DEFAULT 'x'")
    assert sql(primary, "SELECT count(*) FROM items WHERE c = 'x'") == [(50,)]
    failures = sql(primary, "SELECT tag, objects, error FROM ark_capture.failures")
    assert failures and failures[0][0] == "ALTER TABLE" and "public.items" in failures[0][1], failures
    assert "ark_test_broken" in failures[0][2]
    sql(primary, "INSERT INTO items (id, a) VALUES (51, 'after')")
    wait_for(lambda: sql(primary, "SELECT bool_and(handled) FROM ark_capture.failures") == [(True,)], 60,
             "the capture to handle the failure row")
    # The capture asked for the resync (the failure row, handled); the standby may already have set the table aside
    # by itself at the shape it could not follow (the recorded shapes lack this DDL): either way items is resynced.
    assert "could not record a ALTER TABLE on it" in _log(group, "capture")
    wait_for(lambda: "public.items resynced" in _log(group, "apply-standby"), 60, "the applier to resync items")
    _equal(group, ITEMS)


def test_nothing_can_be_recorded_the_ddl_still_commits_with_a_warning(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, "ALTER TABLE ark_capture.shapes ADD CONSTRAINT ark_test_broken CHECK (false) NOT VALID")
    sql(primary, "DROP TABLE ark_capture.failures")
    notices = _ddl(primary, "ALTER TABLE items ADD COLUMN d int")
    assert any(n.startswith("WARNING: Ark could not record ALTER TABLE") for n in notices), notices
    assert sql(primary, "SELECT count(*) FROM pg_attribute WHERE attrelid = 'items'::regclass AND attname = 'd'") \
        == [(1,)]
    # And the primary's own work goes on: keyless tables still get their replica identity.
    _ddl(primary, "CREATE TABLE loose (v int)")
    sql(primary, "INSERT INTO loose VALUES (1), (1); UPDATE loose SET v = 2; DELETE FROM loose")
    group.assert_agents_alive()


@pytest.mark.parametrize("broken", [
    "CREATE OR REPLACE FUNCTION ark_capture.apply_policy(rel oid) RETURNS jsonb LANGUAGE plpgsql "
    "AS $$ BEGIN RAISE EXCEPTION 'forced failure of the policy'; END $$",
    "DROP FUNCTION ark_capture.apply_policy(oid)",
])
def test_policy_fails_in_the_hook_the_capture_applies_it_within_seconds(make_group, broken: str) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, broken)
    _ddl(primary, "CREATE TABLE loose (v int)")  # commits; the hook says it could not apply the policy
    wait_for(lambda: sql(primary, "SELECT relreplident FROM pg_class WHERE relname = 'loose'") == [("f",)], 30,
             "the capture to set REPLICA IDENTITY FULL on loose")
    sql(primary, "INSERT INTO loose VALUES (1), (1), (2); UPDATE loose SET v = 3 WHERE v = 2; "
                 "DELETE FROM loose WHERE v = 3")
    _equal(group, ["public.loose", *ITEMS])


def test_ddl_of_an_application_role_that_is_no_superuser(make_group) -> None:
    """The hook runs as its owner (SECURITY DEFINER): an application role's DDL is described and its keyless
    table gets REPLICA IDENTITY FULL, although that role may not write to ark_capture at all."""
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, "DO $$ BEGIN CREATE ROLE ark_test_app LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    sql(primary, "GRANT CREATE, USAGE ON SCHEMA public TO ark_test_app")
    app = group.primary.dsn(group.dbname, user="ark_test_app")
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("CREATE TABLE app_events (kind text, n int)")
        conn.execute("INSERT INTO app_events VALUES ('x', 1), ('x', 1), ('y', 2)")
        conn.execute("UPDATE app_events SET n = 5 WHERE kind = 'x'")
        conn.execute("DELETE FROM app_events WHERE kind = 'y'")
        conn.execute("CREATE INDEX app_events_kind ON app_events (kind)")
    _equal(group, ["public.app_events"])
    standby = group.standby("standby").dsn
    wait_for(lambda: bool(sql(standby, "SELECT to_regclass('public.app_events_kind')")[0][0]), 30,
             "the application's index on the standby")
