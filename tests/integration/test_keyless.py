"""Issue 18: the primary's application never fails because Ark replicates it (tables without a key).

The bug, as a new user met it: with ``tables: ["public.*"]`` (a ``FOR TABLES IN SCHEMA`` publication), the
application created ``applog`` without a primary key, inserted rows, then its ``UPDATE`` and ``DELETE``
failed on the primary ("cannot update table ... because it does not have a replica identity and publishes
updates"). Here the same statements must succeed under every ``primary.keyless`` policy, with the capture
and an applier running, and the standby must hold what the policy says.
"""

from __future__ import annotations

import json
from collections import Counter

import psycopg
import pytest

from tests.support.replication import Group, sql, wait_for

POLICIES = ["full", "insert-only", "skip"]


def _running(make_group, policy: str, tables: tuple[str, ...] = ("public.*",)) -> Group:
    group: Group = make_group(tables=tables)
    group.primary_extra = {"keyless": policy}
    group.write_config()
    sql(group.primary_dsn, "CREATE TABLE warm (id int PRIMARY KEY, v text)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    sql(group.primary_dsn, "INSERT INTO warm VALUES (1, 'up')")
    wait_for(lambda: sql(group.standby("standby").dsn, "SELECT count(*) FROM warm") == [(1,)], 60,
             "the standby to apply a first row")
    return group


def _rows(dsn: str, table: str) -> Counter[tuple[object, ...]]:
    return Counter(tuple(r) for r in sql(dsn, f"SELECT msg FROM {table}"))


def _exists(dsn: str, table: str) -> bool:
    return bool(sql(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0])


@pytest.mark.parametrize("policy", POLICIES)
def test_update_and_delete_of_a_new_keyless_table_never_fail_on_the_primary(make_group, policy: str) -> None:
    group = _running(make_group, policy)
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    errors = 0
    statements = ["CREATE TABLE applog (at timestamptz DEFAULT now(), msg text)",
                  "INSERT INTO applog (msg) VALUES ('a'), ('b'), ('a')",
                  "UPDATE applog SET msg = 'c' WHERE msg = 'a'",
                  "DELETE FROM applog WHERE msg = 'b'",
                  "INSERT INTO applog (msg) VALUES ('d'), ('d')",
                  "DELETE FROM applog WHERE ctid = (SELECT min(ctid) FROM applog WHERE msg = 'd')"]
    with psycopg.connect(primary, autocommit=True) as conn:
        for stmt in statements:
            try:
                conn.execute(stmt)  # type: ignore[arg-type]
            except psycopg.Error as exc:  # what the application would have seen
                errors += 1
                print(f"primary refused {stmt!r}: {exc}")
    assert errors == 0
    sql(primary, "INSERT INTO warm VALUES (2, 'after')")
    wait_for(lambda: sql(standby, "SELECT count(*) FROM warm") == [(2,)], 60, "the standby to catch up")
    if policy == "full":
        assert sql(primary, "SELECT relreplident FROM pg_class WHERE relname = 'applog'") == [("f",)]
        wait_for(lambda: _exists(standby, "public.applog") and _rows(standby, "applog") == _rows(primary, "applog"),
                 60, "applog equal on the standby, duplicates included")
        assert _rows(standby, "applog") == Counter({("c",): 2, ("d",): 1})
    elif policy == "insert-only":
        # every inserted row, as inserted: the updates and deletes stay on the primary
        wait_for(lambda: _exists(standby, "public.applog") and _rows(standby, "applog") == Counter(
            {("a",): 2, ("b",): 1, ("d",): 2}), 60, "every inserted row of applog on the standby")
    else:
        assert not _exists(standby, "public.applog")
    status = json.loads(group.ark_ok("status", "--json"))
    named = [p["what"] for p in status["not_protected"] if "public.applog" in p["what"]]
    if policy == "full":
        assert not named, status["not_protected"]
    else:
        assert named and policy in named[0], status["not_protected"]
        # A promotion would have it incomplete: check --promotable names it (exit 32, NOT_PROMOTABLE).
        res = group.ark("check", "--promotable", "standby", timeout=120)
        assert res.returncode == 32 and "public.applog" in res.stdout + res.stderr, res.stdout + res.stderr
    group.assert_agents_alive()
