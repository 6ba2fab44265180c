"""Issue 9, items 3, 4, 5 and 7, against real Kafka and PostgreSQL.

- The standby applies as a replica: its own user triggers and foreign-key actions do not fire on replicated
  rows, and a foreign key does not make apply fail when a batch applies the child's rows before the parent's.
- Uniqueness that holds only at commit or statement end (a DEFERRABLE primary key swapped in one statement,
  two rows exchanging a unique value inside one transaction) never stops the standby; after a table resync
  a DELETE still removes the right row.
- One applier per standby: a second one exits at once (exit 31) naming the holder; a stale one cannot move
  the state row (compare-and-set).
- A delayed standby shows neither a table's new shape nor a table resync before commit + delay.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from common.config import load_config
from common.exit_codes import ExitCode
from consumers.errors import ApplierRunning, StateMoved
from consumers.postgresql.applier import PostgresApplier
from tests.support.replication import Group, create_tick_table, sql, ticking, wait_for


def standby_sql(dsn: str, statement: str) -> list[tuple[Any, ...]]:
    """A statement on the standby from an ordinary (origin) session; the standby is read-only for others."""
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        cur = conn.execute(statement)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def _equal(group: Group, tables: list[str], standby: str = "standby") -> None:
    diffs = group.wait_equal(standby, tables, timeout=90)
    assert all(d.equal for d in diffs), [d for d in diffs if not d.equal]


def test_user_triggers_and_foreign_key_actions_do_not_fire_during_apply(make_group: Any) -> None:
    group = make_group()
    tables = ["public.parent", "public.child", "public.t"]
    p = group.primary_dsn
    sql(p, "CREATE TABLE parent (id int PRIMARY KEY, v text)")
    sql(p, "CREATE TABLE child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES parent ON DELETE CASCADE)")
    sql(p, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(p, "INSERT INTO parent VALUES (0, 'root'), (1, 'one')")
    sql(p, "INSERT INTO child VALUES (10, 1), (11, 1)")
    group.ark_ok("sync", "standby")
    s = group.standby("standby").dsn
    # What an administrator (or Ark's own schema sync) leaves on a standby: a trigger that writes, and the FK.
    standby_sql(s, "CREATE TABLE audit (at timestamptz DEFAULT now(), what text)")
    standby_sql(s, "CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                   "INSERT INTO audit (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME); "
                   "IF TG_OP <> 'DELETE' THEN NEW.v := 'changed by a standby trigger'; END IF; "
                   "RETURN COALESCE(NEW, OLD); END $$")
    standby_sql(s, "CREATE TRIGGER stamp BEFORE INSERT OR UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION stamp()")
    standby_sql(s, "ALTER TABLE child ADD FOREIGN KEY (parent_id) REFERENCES parent ON DELETE CASCADE")
    group.start("capture")
    group.start("apply", "standby")
    sql(p, "INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    sql(p, "UPDATE t SET v = 'a2' WHERE id = 1")
    sql(p, "DELETE FROM t WHERE id = 2")
    # The stream carries the cascade's deletes after the parent's: a cascade on the standby would delete the
    # child rows first and the stream's own deletes would then find nothing (a data error).
    sql(p, "DELETE FROM parent WHERE id = 1")
    # Small transactions are grouped by table in one batch: the child row that needs parent 2 can come first.
    with psycopg.connect(p, autocommit=True) as conn:
        conn.execute("INSERT INTO child VALUES (20, 0)")
        conn.execute("INSERT INTO parent VALUES (2, 'two')")
        conn.execute("INSERT INTO child VALUES (21, 2)")
    _equal(group, tables)
    assert standby_sql(s, "SELECT count(*) FROM audit") == [(0,)]
    assert standby_sql(s, "SELECT v FROM t") == [("a2",)]
    group.assert_agents_alive()


def test_deferrable_key_swap_and_unique_exchange_never_stop_the_standby(make_group: Any) -> None:
    group = make_group()
    tables = ["public.k", "public.u"]
    p = group.primary_dsn
    # A DEFERRABLE primary key is no replica identity (PostgreSQL ignores it): with REPLICA IDENTITY FULL the
    # standby finds rows by their whole old image, one row at a time, duplicates of the key included.
    sql(p, "CREATE TABLE k (id int PRIMARY KEY DEFERRABLE INITIALLY IMMEDIATE, v text)")
    sql(p, "ALTER TABLE k REPLICA IDENTITY FULL")
    sql(p, "INSERT INTO k SELECT g, 'v' || g FROM generate_series(1, 6) g")
    sql(p, "CREATE TABLE u (id int PRIMARY KEY, email text NOT NULL UNIQUE)")
    sql(p, "INSERT INTO u VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    create_tick_table(p)
    group.ark_ok("sync", "standby")
    s = group.standby("standby").dsn
    # The standby's secondary unique constraint, DEFERRABLE as Ark's schema sync creates them.
    standby_sql(s, "ALTER TABLE u ADD CONSTRAINT u_email_standby UNIQUE (email) DEFERRABLE INITIALLY IMMEDIATE")
    group.start("capture")
    apply = group.start("apply", "standby")
    sql(p, "UPDATE k SET id = CASE id WHEN 1 THEN 2 WHEN 2 THEN 1 END WHERE id IN (1, 2)")  # valid at statement end
    with psycopg.connect(p) as conn:  # a deferrable key: 3 and 4 exchange ids in one transaction, two statements
        conn.execute("SET CONSTRAINTS ALL DEFERRED")
        conn.execute("UPDATE k SET id = 4, v = 'was 3' WHERE id = 3")
        conn.execute("UPDATE k SET id = 3, v = 'was 4' WHERE id = 4 AND v = 'v4'")
    with psycopg.connect(p) as conn:  # two rows exchange a unique value in one transaction (through a spare one)
        conn.execute("UPDATE u SET email = 'spare' WHERE id = 1")
        conn.execute("UPDATE u SET email = 'a' WHERE id = 2")
        conn.execute("UPDATE u SET email = 'b' WHERE id = 1")
    _equal(group, tables)
    # After a table resync the standby still finds the right row, by the stream's identity.
    with ticking(p):  # the resync's copy gets its position at once, not at an idle checkpoint
        group.ark_ok("resync", "standby", "--table", "public.k", timeout=300)
    sql(p, "DELETE FROM k WHERE id = 1")
    sql(p, "UPDATE k SET id = CASE id WHEN 5 THEN 6 WHEN 6 THEN 5 END WHERE id IN (5, 6)")
    _equal(group, tables)
    assert sorted(standby_sql(s, "SELECT id, v FROM k")) == sorted(sql(p, "SELECT id, v FROM k"))
    assert apply.alive()


def test_a_second_applier_exits_naming_the_holder_and_a_stale_one_cannot_write(make_group: Any) -> None:
    group = make_group()
    p = group.primary_dsn
    sql(p, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    first = group.start("apply", "standby")
    sql(p, "INSERT INTO t VALUES (1, 'a')")
    _equal(group, ["public.t"])
    second = group.start("apply", "standby", name="apply-second")
    code = second.wait_exit(60)
    assert code == ExitCode.APPLIER_RUNNING, second.tail(20)
    log = second.tail(20)
    assert f"pid {first.pid}" in log and "ark apply standby on" in log and "since" in log, log
    group.agents.remove(second)  # it exited as it should
    sql(p, "INSERT INTO t VALUES (2, 'b')")
    _equal(group, ["public.t"])  # the first one goes on
    assert first.alive()

    # The lock and the compare-and-set, on the applier itself.
    cfg = load_config(group.config)
    settings = cfg.standby("standby")
    first.stop()
    a, b = PostgresApplier(settings), PostgresApplier(settings)
    try:
        a.lock_standby(group.name, "standby")
        with pytest.raises(ApplierRunning) as held:
            b.lock_standby(group.name, "standby")
        assert "holding it since" in held.value.message
        read = a.load_state(group.name, "standby")
        assert read is not None
        a.begin()
        moved = replace(read, next_offset=read.next_offset + 10)
        a.save_state(moved, previous=read)
        a.commit()
        stale = PostgresApplier(settings)  # an applier that read the state before and lost its lock
        stale.begin()
        with pytest.raises(StateMoved):
            stale.save_state(replace(read, next_offset=read.next_offset + 1), previous=read)
        stale.close()
        after = a.load_state(group.name, "standby")
        assert after is not None and after.next_offset == moved.next_offset  # never moved backwards
        a.begin()
        a.save_state(read, previous=moved)  # put it back for the group's teardown
        a.commit()
    finally:
        a.close()
        b.close()


def test_a_delayed_standby_shows_no_shape_change_nor_resync_before_commit_plus_delay(make_group: Any) -> None:
    delay = 8.0
    group = make_group(standbys=[("standby", delay)])
    p = group.primary_dsn
    sql(p, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    sql(p, "INSERT INTO t VALUES (1, 'a')")
    group.ark_ok("sync", "standby")
    s = group.standby("standby").dsn
    group.start("capture")
    group.start("apply", "standby")

    def columns() -> list[str]:
        return [r[0] for r in sql(s, "SELECT attname FROM pg_attribute WHERE attrelid = 't'::regclass "
                                     "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]

    sql(p, "ALTER TABLE t ADD COLUMN extra int")
    sql(p, "INSERT INTO t VALUES (2, 'b', 7)")
    committed = time.time()
    wait_for(lambda: "extra" in columns(), timeout=60, what="the new column on the delayed standby", interval=0.05)
    shown = time.time()
    assert shown - committed >= delay - 0.1, f"the new shape was visible {shown - committed:.2f} s after commit"
    _equal(group, ["public.t"], "standby")

    # A table resync on a delayed standby: the copy stays staged until the standby reaches the snapshot.
    sql(p, "UPDATE t SET v = 'changed' WHERE id = 1")
    changed = time.time()
    group.ark("resync", "standby", "--table", "public.t", "--no-wait")
    wait_for(lambda: sql(s, "SELECT v FROM t WHERE id = 1") == [("changed",)], timeout=120,
             what="the resynced table", interval=0.05)
    visible = time.time()
    assert visible - changed >= delay - 0.1, f"the resync showed the change {visible - changed:.2f} s after commit"
    _equal(group, ["public.t"], "standby")


def test_check_and_status_report_the_wal_the_slot_holds_and_the_free_disk(make_group: Any) -> None:
    import json

    group = make_group()
    sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    sql(group.primary_dsn, "INSERT INTO t SELECT g, 'x' FROM generate_series(1, 1000) g")
    group.start("apply", "standby")
    _equal(group, ["public.t"])
    res = group.ark("check", env={"COLUMNS": "2000"})  # rich wraps table cells at the terminal width
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "max_slot_wal_keep_size is -1" in out and "ALTER SYSTEM SET max_slot_wal_keep_size" in out, out
    assert "of WAL (wal_status" in out and "statvfs of" in out, out
    doc = json.loads(group.ark_ok("status", "--json"))
    log = doc["capture"]["source_log"]
    assert "holds back" in log and "free under it" in log and "statvfs of" in log, log
    assert not [w for w in doc["warnings"] if "max_slot_wal_keep_size" in w]  # advice on settings: 'ark check' only
