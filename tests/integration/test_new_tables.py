"""New tables never lose rows (issue 9, item 9).

With a table-list publication (patterns that are not ``schema.*``), a new table is published when Ark adds
it. The DDL hook adds it inside its CREATE's own transaction (nothing can be missed); a table whose rows were
written before it was published (CREATE TABLE AS, a table renamed into scope, a primary without the hook)
is resynced on every standby, automatically, and each applier records that on the control topic.
"""

from __future__ import annotations

from common.config import load_config
from common.control import ControlChannel
from schemas.control import TableResynced, TableResyncStarted
from tests.support.replication import Group, sql, wait_for

PATTERNS = ("public.orders", "public.orders_*")


def _running(make_group) -> Group:
    group: Group = make_group(tables=PATTERNS)
    sql(group.primary_dsn, "CREATE TABLE orders (id int PRIMARY KEY, v text)")
    sql(group.primary_dsn, "INSERT INTO orders SELECT g, 'o' || g FROM generate_series(1, 20) g")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    log = group.workdir / "logs" / "capture.log"
    wait_for(lambda: "streaming slot" in log.read_text(errors="replace"), 60, "the capture to stream (set-up done)")
    return group


def _control(group: Group) -> list[object]:
    channel = ControlChannel.for_config(load_config(group.config))
    try:
        return [r.body for r in channel.replay()]
    finally:
        channel.close()


def _equal(group: Group, table: str, timeout: float = 120) -> None:
    standby = group.standby("standby").dsn
    wait_for(lambda: bool(sql(standby, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0]), timeout,
             f"{table} on the standby")
    diffs = group.wait_equal("standby", [table], timeout=timeout)
    assert all(d.equal for d in diffs), diffs


def _resynced(group: Group, table: str) -> str:
    """The reason the applier recorded on the control topic for resyncing ``table`` (waits for the record)."""
    found: list[str] = []

    def recorded() -> bool:
        bodies = _control(group)
        found[:] = [b.reason for b in bodies if isinstance(b, TableResyncStarted) and b.table == table]
        return bool(found) and any(isinstance(b, TableResynced) and b.table == table for b in bodies)

    wait_for(recorded, 120, f"table-resync records of {table} on the control topic")
    return found[0]


def test_a_new_table_with_rows_in_its_creating_transaction_is_published_with_them(make_group) -> None:
    group = _running(make_group)
    sql(group.primary_dsn, "BEGIN; CREATE TABLE orders_2024 (id int PRIMARY KEY, v text); "
                           "INSERT INTO orders_2024 SELECT g, 'x' FROM generate_series(1, 30) g; COMMIT")
    _equal(group, "public.orders_2024")
    assert not any(isinstance(b, TableResyncStarted) for b in _control(group))  # nothing was missed


def test_create_table_as_and_a_table_renamed_into_scope_are_resynced(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, "CREATE TABLE orders_copy AS SELECT id, v FROM orders")
    sql(primary, "ALTER TABLE orders_copy ADD PRIMARY KEY (id)")
    sql(primary, "CREATE TABLE staging (id int PRIMARY KEY, v text)")
    sql(primary, "INSERT INTO staging SELECT g, 's' FROM generate_series(1, 15) g")
    sql(primary, "ALTER TABLE staging RENAME TO orders_staged")
    sql(primary, "INSERT INTO orders_staged VALUES (100, 'after')")
    _equal(group, "public.orders_copy")
    _equal(group, "public.orders_staged")
    assert "before it was published" in _resynced(group, "public.orders_staged")
    assert "before it was published" in _resynced(group, "public.orders_copy")


def test_without_the_ddl_hook_a_late_table_is_resynced_automatically(make_group) -> None:
    group = _running(make_group)
    primary = group.primary_dsn
    sql(primary, "DROP EVENT TRIGGER ark_capture_ddl")  # as on a primary where the capture may not install it
    sql(primary, "CREATE TABLE orders_late (id int PRIMARY KEY, v text)")
    sql(primary, "INSERT INTO orders_late SELECT g, 'l' FROM generate_series(1, 40) g")
    # The capture adds it within seconds; the 40 rows written before that are copied by a table resync.
    wait_for(lambda: bool(sql(primary, "SELECT count(*) FROM pg_publication_tables WHERE tablename = 'orders_late'")
                          [0][0]), 30, "the capture to publish orders_late")
    sql(primary, "INSERT INTO orders_late VALUES (41, 'after')")
    _equal(group, "public.orders_late")
    assert "before the capture published it" in _resynced(group, "public.orders_late")
