"""Never harm a primary: a standby entry that names the wrong database is refused before anything is written.

Real PostgreSQL and Kafka, real ``ark`` processes. After every refusal the primary is checked: no database
setting (``pg_db_role_setting``), no schema ``ark``, its data unchanged, and a write on it succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.exit_codes import ExitCode
from deploy.workload import create_bank
from tests.support.replication import Group, sql, wait_for


def _standby_at(group: Group, name: str, host: str, port: int, dbname: str, **extra: Any) -> Path:
    """The group's config with one more standby entry (same database name by default)."""
    doc = yaml.safe_load(group.config.read_text())
    doc["standbys"].append({"name": name, "engine": "postgresql", "host": host, "port": port, "dbname": dbname,
                            "user": "postgres", **extra})
    path = group.workdir / f"{group.name}-{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _primary_untouched(group: Group, rows_before: int) -> None:
    dsn = group.primary_dsn
    assert sql(dsn, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                    "WHERE d.datname = current_database()") == [(0,)], "a database setting was changed"
    assert sql(dsn, "SELECT count(*) FROM pg_namespace WHERE nspname IN ('ark', 'ark_resync')") == [(0,)]
    assert sql(dsn, "SELECT count(*) FROM accounts")[0][0] == rows_before
    sql(dsn, "UPDATE accounts SET balance = balance WHERE id = 1")  # the application can still write
    sql(dsn, "BEGIN; INSERT INTO history (from_id, to_id, amount, note) VALUES (1, 2, 0, 'still writable'); "
             "ROLLBACK")


def _refused(res: Any, code: ExitCode, *needles: str) -> None:
    out = res.stdout + res.stderr
    assert res.returncode == code, out
    assert "Traceback" not in out and "error:" in res.stderr and "fix:" in res.stderr, out
    for needle in needles:
        assert needle in out, f"{needle!r} not in {out}"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.0.0.2"])
def test_the_primary_under_any_address_is_refused(make_group: Any, pg_factory: Any, host: str) -> None:
    group = make_group()
    if host == "127.0.0.2":  # a second address of the same server: a primary that also listens there
        primary = pg_factory("twoaddr", extra_listen=("127.0.0.2",))
        primary.create_database(group.dbname)
        group.primary = primary
        group.write_config()
    create_bank(group.primary_dsn, accounts=10)
    rows = sql(group.primary_dsn, "SELECT count(*) FROM accounts")[0][0]
    bad = _standby_at(group, "typo", host, group.primary.port, group.dbname)
    res = group.ark("check", config=bad)
    _refused(res, ExitCode.CHECK_FAILED, "primary's own database")
    _refused(group.ark("sync", "typo", config=bad), ExitCode.SAME_DATABASE, "standby typo", "primary's own database")
    _refused(group.ark("apply", "typo", config=bad, timeout=60), ExitCode.SAME_DATABASE, "primary's own database")
    _primary_untouched(group, rows)


def test_two_standby_entries_for_one_database_and_a_capture_source(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=10)
    group.ark_ok("sync", "standby")
    twin = group.standby("standby")
    bad = _standby_at(group, "twin", "localhost", twin.instance.port, twin.dbname)
    _refused(group.ark("sync", "twin", config=bad), ExitCode.SAME_DATABASE, "same database as standby standby")
    _refused(group.ark("apply", "twin", config=bad, timeout=60), ExitCode.SAME_DATABASE, "standby standby")
    # A standby database that a capture reads (it holds a publication) is refused unless declared a chain.
    twin.instance.create_database("feeder")
    sql(twin.instance.dsn("feeder"), "CREATE TABLE x (id int PRIMARY KEY)")
    sql(twin.instance.dsn("feeder"), "CREATE PUBLICATION other_group FOR TABLE x")
    src = _standby_at(group, "feeder", "127.0.0.1", twin.instance.port, "feeder")
    _refused(group.ark("sync", "feeder", config=src), ExitCode.IS_A_SOURCE, "publication other_group", "chain: true")
    assert sql(twin.instance.dsn("feeder"), "SELECT count(*) FROM pg_namespace WHERE nspname = 'ark'") == [(0,)]
    chained = _standby_at(group, "feeder", "127.0.0.1", twin.instance.port, "feeder", chain=True)
    res = group.ark("sync", "feeder", "--overwrite", config=chained)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_replaced_standby_stops_and_asks_for_sync(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=10)
    group.ark_ok("sync", "standby")
    group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby")
    wait_for(lambda: sql(standby.dsn, "SELECT count(*) FROM accounts")[0][0] == 10, 60, "the standby applying")
    apply.stop()
    # The database behind the same address is replaced by another one (dropped and created again).
    standby.instance.drop_database(standby.dbname)
    standby.instance.create_database(standby.dbname)
    res = group.ark("apply", "standby", timeout=120)
    _refused(res, ExitCode.IDENTITY_CHANGED, "not the database that was synced", "ark sync standby")
    assert sql(standby.dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'ark'") == [(0,)]
    group.ark_ok("sync", "standby")  # the fix works
    group.start("apply", "standby")
    sql(group.primary_dsn, "UPDATE accounts SET balance = balance + 1 WHERE id = 3")
    diffs = group.wait_equal("standby", ["public.accounts", "public.history"], timeout=90)
    assert all(d.equal for d in diffs), diffs


def test_sync_onto_foreign_data_needs_overwrite(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=10)
    standby = group.standby("standby")
    sql(standby.dsn, "CREATE TABLE accounts (id int PRIMARY KEY, note text)")
    sql(standby.dsn, "INSERT INTO accounts SELECT g, 'theirs' FROM generate_series(1, 42) g")
    res = group.ark("sync", "standby")
    _refused(res, ExitCode.NOT_EMPTY, "public.accounts (42 rows)", "--overwrite")
    assert sql(standby.dsn, "SELECT count(*) FROM accounts") == [(42,)]  # nothing half-done
    assert sql(standby.dsn, "SELECT count(*) FROM pg_namespace WHERE nspname = 'ark'") == [(0,)]
    assert sql(standby.dsn, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                            "WHERE d.datname = current_database()") == [(0,)]
    group.ark_ok("sync", "standby", "--overwrite")
    assert sql(standby.dsn, "SELECT count(*) FROM accounts") == [(10,)]
    group.ark_ok("sync", "standby")  # its own data now: a second sync needs no --overwrite


def test_a_loopback_standby_in_the_primarys_cluster_replicates(make_group: Any) -> None:
    group = make_group()
    create_bank(group.primary_dsn, accounts=10)
    group.primary.create_database(f"{group.dbname}_copy")
    loop = _standby_at(group, "loop", "127.0.0.1", group.primary.port, f"{group.dbname}_copy")
    res = group.ark("check", config=loop)
    assert "standby loop" in res.stdout and "its own database" in res.stdout, res.stdout + res.stderr
    res = group.ark("sync", "loop", config=loop)
    assert res.returncode == 0, res.stdout + res.stderr
    group.start("capture", config=loop)
    group.start("apply", "loop", config=loop, name="apply-loop")
    sql(group.primary_dsn, "UPDATE accounts SET balance = balance + 5 WHERE id = 2")
    copy = group.primary.dsn(f"{group.dbname}_copy")
    wait_for(lambda: sql(copy, "SELECT balance FROM accounts WHERE id = 2") ==
             sql(group.primary_dsn, "SELECT balance FROM accounts WHERE id = 2"), 60, "the loopback standby")
    assert sql(group.primary_dsn, "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d "
                                  "ON d.oid = s.setdatabase WHERE d.datname = current_database()") == [(0,)]
    group.stop_all()
    group.primary.drop_database(f"{group.dbname}_copy")
