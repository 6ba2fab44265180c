"""One description of a table, from its source: the standby finds rows by the stream's replica identity
after an initial sync, a table resync and a whole resync alike.

Regression for the wrong-row delete: a table whose replica identity is a unique index other than its
primary key (``(id PK, ext UNIQUE)`` with ``REPLICA IDENTITY USING INDEX``): after ``ark resync --table``,
``DELETE ... WHERE id = 1`` on the primary used to delete the row with ``id = 2`` on the standby, because
the snapshot described the table by its primary key and the stream by its replica identity. And a table
with ``REPLICA IDENTITY FULL`` and no unique key at all, with identical rows, changed by the identity.
"""

from __future__ import annotations

import json
from typing import Any

from tests.support.replication import TICK_TABLE, Group, create_tick_table, sql, ticking, wait_for

TABLES = ["public.t", "public.bag"]


def _schema(dsn: str) -> None:
    sql(dsn, "CREATE TABLE t (id int PRIMARY KEY, ext int NOT NULL UNIQUE, v text)")
    sql(dsn, "ALTER TABLE t REPLICA IDENTITY USING INDEX t_ext_key")
    sql(dsn, "INSERT INTO t VALUES (1, 2, 'a'), (2, 1, 'b'), (3, 30, 'c'), (4, 40, 'd')")
    sql(dsn, "CREATE TABLE bag (a int, b text)")
    sql(dsn, "ALTER TABLE bag REPLICA IDENTITY FULL")
    sql(dsn, "INSERT INTO bag VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, NULL), (2, NULL), (3, 'y')")


def _changes(dsn: str, round_: int) -> None:
    """Deletes and updates by the identity, including one that moves the identity (ext) itself."""
    base = 100 * round_
    sql(dsn, f"INSERT INTO t VALUES ({base + 10}, {base + 11}, 'new'), ({base + 11}, {base + 10}, 'new2')")
    sql(dsn, f"DELETE FROM t WHERE id = {base + 10}")
    sql(dsn, f"UPDATE t SET v = 'upd{round_}' WHERE id = {base + 11}")
    sql(dsn, f"UPDATE t SET ext = ext + 1000 WHERE id = {base + 11}")
    sql(dsn, "INSERT INTO bag VALUES (1, 'x'), (2, NULL)")
    sql(dsn, "DELETE FROM bag WHERE ctid = (SELECT min(ctid) FROM bag WHERE a = 1)")
    sql(dsn, "UPDATE bag SET b = 'z' WHERE ctid = (SELECT min(ctid) FROM bag WHERE a = 2)")


def _equal(group: Group) -> None:
    diffs = group.wait_equal("standby", TABLES, timeout=90)
    assert all(d.equal for d in diffs), [d for d in diffs if not d.equal]


def _verify_equal(group: Group) -> None:
    res = group.ark("verify", "standby", "--json", timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert {t["table"]: t["verdict"] for t in doc["tables"]} == {"public.bag": "equal", "public.t": "equal",
                                                                 TICK_TABLE: "equal"}


def test_identity_is_the_streams_after_sync_table_resync_and_whole_resync(make_group: Any) -> None:
    group = make_group()
    _schema(group.primary_dsn)
    create_tick_table(group.primary_dsn)
    group.ark_ok("sync", "standby")
    group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby").dsn
    with ticking(group.primary_dsn):  # resyncs and verify get their positions at once
        _identity_after_sync_and_resyncs(group, apply, standby)


def _identity_after_sync_and_resyncs(group: Group, apply: Any, standby: str) -> None:
    # 1. After the initial sync: the wrong-row case itself.
    sql(group.primary_dsn, "DELETE FROM t WHERE id = 1")
    _changes(group.primary_dsn, 1)
    _equal(group)
    assert sql(standby, "SELECT id, ext, v FROM t WHERE id IN (1, 2) ORDER BY id") == [(2, 1, "b")]

    # 2. After a table resync of each table (the copy comes from a snapshot).
    for table in TABLES:
        group.ark_ok("resync", "standby", "--table", table, timeout=300)
    sql(group.primary_dsn, "DELETE FROM t WHERE id = 2")
    _changes(group.primary_dsn, 2)
    _equal(group)

    # 3. After a whole-standby resync (apply stopped meanwhile, as the command requires).
    apply.stop()
    wait_for(lambda: not apply.alive(), 30, "the applier to stop")
    group.ark_ok("resync", "standby", timeout=300)
    group.start("apply", "standby")
    sql(group.primary_dsn, "DELETE FROM t WHERE id = 3")
    _changes(group.primary_dsn, 3)
    _equal(group)
    assert sql(standby, "SELECT count(*) FROM t WHERE id <= 4") == [(1,)]

    # And verify agrees: the keyed table by its identity, the keyless one as a multiset.
    _verify_equal(group)
