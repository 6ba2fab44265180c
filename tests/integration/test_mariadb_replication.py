"""MariaDB -> Kafka -> MariaDB: the applier alone, and the whole path with real ``ark`` processes.

The end-to-end test syncs a standby online from a busy primary (``ark sync``), streams with ``ark capture``
and ``ark apply``, kills both with -9 in the middle, runs DDL mid-stream, and compares every table row by
row; a sampler checks that the standby never shows a partial transfer.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any

import pytest

from common.config import parse_config
from consumers.base import ApplyState
from consumers.errors import DataApplyError
from consumers.mariadb.applier import MariaDBApplier
from schemas.entries import Column, Op, RowChange, TableMeta
from tests.support.mariadb import (
    BankWorkload,
    MariaDBGroup,
    create_bank,
    query,
    total_balance,
)

BANK = ["accounts", "history"]


def _standby_settings(port: int):  # noqa: ANN202 - the engine's own settings model
    cfg = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                        "primary": {"name": "p", "engine": "mariadb", "port": 1, "tables": ["x.*"]},
                        "standbys": [{"name": "s", "engine": "mariadb", "port": port}]})
    return cfg.standbys[0]


def _state(offset: int, position: str) -> ApplyState:
    return ApplyState(group="g", standby="s", topic="ark.g.redo", partition=0, next_offset=offset,
                      position=position, position_key=position.encode(), epoch=0, commit_time_us=1,
                      applied_at_us=2)


def test_applier_exactly_once_state_and_data_errors(fresh_mariadb) -> None:
    """Rows and the state row commit together; a missing row is a data error naming the key; set-based runs."""
    db, sb = fresh_mariadb.name, fresh_mariadb.standby
    table = f"{db}.t"
    meta = TableMeta(table, (Column("id", "int32", "int", False, 1), Column("v", "string", "varchar(20) collate "
                                                                              "utf8mb4_bin")), "v1", "")
    applier = MariaDBApplier(_standby_settings(sb.port), set_threshold=10)
    try:
        applier.prepare()
        assert query(sb, "SELECT @@global.read_only")[0][0] == "1"
        applier.begin()
        applier.apply_table_meta("g", meta, None)
        inserts = [RowChange(table, Op.INSERT, [i, f"v{i}"]) for i in range(100)]
        applier.apply_rows({table: meta}, inserts, "t1", "p1")
        updates = [RowChange(table, Op.UPDATE, [i, "u"]) for i in range(0, 100, 2)]
        deletes = [RowChange(table, Op.DELETE, [], [i]) for i in range(1, 100, 2)]
        applier.apply_rows({table: meta}, [*updates, *deletes, RowChange(table, Op.UPDATE, [0, "k"], [0])],
                           "t2", "p2")
        applier.save_state(_state(5, "p2"))
        applier.commit()
        assert query(sb, f"SELECT COUNT(*), MIN(v), MAX(v) FROM {table}")[0] == ("50", "k", "u")
        applier.begin()
        applier.apply_rows({table: meta}, [RowChange(table, Op.INSERT, [1000, "x"])], "t3", "p3")
        with pytest.raises(DataApplyError) as caught:
            applier.apply_rows({table: meta}, [RowChange(table, Op.DELETE, [], [7])], "t3", "p3")
        assert "key [7]" in caught.value.message and "t3" in caught.value.message
        # the failed transaction rolled back as a whole: neither its insert nor a new state row
        assert query(sb, f"SELECT COUNT(*) FROM {table} WHERE id = 1000")[0][0] == "0"
        state = applier.load_state("g", "s")
        assert state is not None and state.next_offset == 5 and state.position == "p2"
        applier.begin()
        with pytest.raises(DataApplyError):  # set-based path: one missing key among many
            applier.apply_rows({table: meta}, [RowChange(table, Op.UPDATE, [i, "z"]) for i in range(40)],
                               "t4", "p4")
    finally:
        applier.close()
        sb.sql("SET GLOBAL read_only = OFF")


def _sample(group: MariaDBGroup, invariant: Decimal, stop: threading.Event, seen: list[Decimal]) -> None:
    while not stop.is_set():
        try:
            seen.append(total_balance(group.standby, group.schema))
        except Exception:  # noqa: BLE001 - the standby table may not exist yet; only totals matter
            pass
        time.sleep(0.05)


def _applied_waiter(group: MariaDBGroup):  # noqa: ANN202 - a closure
    """``wait(n)``: block until the standby applied ``n`` more source transactions (its state row says so)."""
    last = [0]

    def count() -> int:
        rows = query(group.standby, "SELECT applied_txns FROM ark.apply_state WHERE `group` = %s", (group.name,))
        return int(rows[0][0]) if rows else 0

    def wait(n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while count() < last[0] + n:
            group.assert_agents_alive()
            assert time.monotonic() < deadline, f"the standby did not apply {n} more transactions in {timeout} s"
            time.sleep(0.1)
        last[0] = count()

    return wait


def test_bank_sync_stream_kill9_ddl(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    """Online sync under load, streaming through kill -9 of capture and apply, DDL mid-stream, tables equal."""
    db = fresh_mariadb.name
    group = MariaDBGroup(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, fresh_mariadb.primary,
                         fresh_mariadb.standby, db)
    group.write_config()
    tables = [f"{db}.{t}" for t in BANK]
    invariant = create_bank(group.primary, db, accounts=100)
    workload = BankWorkload(group.primary, db, accounts=100, clients=2).start()
    stop, seen = threading.Event(), []
    sampler = threading.Thread(target=_sample, args=(group, invariant, stop, seen))
    try:
        time.sleep(1.0)
        out = group.ark_ok("sync", "standby")  # online: the workload keeps committing
        assert "synced" in out
        assert total_balance(group.standby, db) == invariant  # the snapshot is consistent
        capture = group.start("capture")
        apply = group.start("apply", "standby")
        sampler.start()
        applied = _applied_waiter(group)
        applied(50)  # streaming has started: kill the capture in the middle of it
        capture.kill9()
        capture.start()
        applied(50)
        apply.kill9()
        apply.start()
        applied(50)
        group.primary.sql(f"ALTER TABLE `{db}`.accounts ADD COLUMN note varchar(20) NOT NULL DEFAULT 'n/a'; "
                          f"ALTER TABLE `{db}`.accounts RENAME COLUMN note TO memo; "
                          f"ALTER TABLE `{db}`.history MODIFY amount decimal(16,2) NOT NULL")
        applied(50)
    finally:
        committed = workload.stop()
    diffs = group.wait_equal(tables, timeout=120)
    stop.set()
    if sampler.is_alive():
        sampler.join()
    status = group.ark("status", "--json")
    check = group.ark("check")
    group.stop_all()
    assert status.returncode == 0 and '"name": "standby"' in status.stdout, status.stdout + status.stderr
    assert check.returncode == 0, check.stdout + check.stderr
    assert committed > 100 and workload.errors == 0
    assert diffs == {}, diffs
    assert len(seen) > 20 and set(seen) == {invariant}, f"partial transaction visible: {set(seen)}"
    cols = query(group.standby, "SELECT COLUMN_NAME, COLUMN_TYPE FROM information_schema.COLUMNS WHERE "
                                "TABLE_SCHEMA = %s AND TABLE_NAME IN ('accounts', 'history') ORDER BY 1", (db,))
    assert ("memo", "varchar(20)") in cols and ("amount", "decimal(16,2)") in cols, cols
    state = query(group.standby, "SELECT applied_txns FROM ark.apply_state WHERE `group` = %s", (unique_group,))
    assert state and int(state[0][0]) > 0


def test_mariadb_refusals_write_nothing(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    """A MariaDB standby entry that names the primary (under another address) or a server holding data Ark did not
    put there is refused before anything is written (common/guard.py)."""
    import yaml

    from common.exit_codes import ExitCode

    db = fresh_mariadb.name
    group = MariaDBGroup(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, fresh_mariadb.primary,
                         fresh_mariadb.standby, db)
    group.write_config()
    create_bank(group.primary, db, accounts=5)
    doc = yaml.safe_load(group.config.read_text())
    doc["standbys"][0]["host"] = "localhost"  # the standby entry points at the primary, by another name
    doc["standbys"][0]["port"] = group.primary.port
    group.config.write_text(yaml.safe_dump(doc, sort_keys=False))
    res = group.ark("sync", "standby")
    assert res.returncode == ExitCode.SAME_DATABASE, res.stdout + res.stderr
    assert "primary's own database" in res.stderr and "Traceback" not in res.stderr
    assert query(group.primary, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'ark'") \
        == [("0",)], "the refused sync created database ark on the primary"
    assert query(group.primary, "SELECT @@global.read_only") == [("0",)]
    # A standby that already holds the replicated tables with rows Ark did not put there.
    group.write_config()
    group.standby.sql(f"CREATE DATABASE `{db}`; CREATE TABLE `{db}`.accounts (id int PRIMARY KEY, balance "
                      f"decimal(14,2) NOT NULL); INSERT INTO `{db}`.accounts VALUES (1, 5)")
    res = group.ark("sync", "standby")
    assert res.returncode == ExitCode.NOT_EMPTY, res.stdout + res.stderr
    assert f"{db}.accounts (1 rows)" in res.stderr and "--overwrite" in res.stderr
    assert query(group.standby, f"SELECT balance FROM `{db}`.accounts") == [("5.00",)]
    group.ark_ok("sync", "standby", "--overwrite")
    assert group.differences([f"{db}.accounts"]) == {}


def test_mariadb_values_larger_than_a_message(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    """Values over a Kafka message (1 MB) travel in parts and come back whole on a MariaDB standby: blob and
    multi-byte text, inserted, updated beside (MariaDB resends the whole row), updated, and deleted."""
    db = fresh_mariadb.name
    group = MariaDBGroup(unique_group, ark_tmp / "groups" / unique_group, kafka_bootstrap, fresh_mariadb.primary,
                         fresh_mariadb.standby, db)
    group.write_config()
    group.primary.sql(f"CREATE TABLE `{db}`.docs (id int PRIMARY KEY, body longblob, note longtext, n int) "
                      f"ENGINE=InnoDB; INSERT INTO `{db}`.docs VALUES (1, 'x', 'y', 0)")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    group.primary.sql(f"INSERT INTO `{db}`.docs VALUES (2, RANDOM_BYTES(1024) , REPEAT('aé€𝄞', 300000), 1); "
                      f"UPDATE `{db}`.docs SET body = REPEAT(RANDOM_BYTES(1000), 3000) WHERE id = 2; "
                      f"INSERT INTO `{db}`.docs VALUES (3, REPEAT(RANDOM_BYTES(999), 1200), REPEAT('z', 1100000), 3); "
                      f"UPDATE `{db}`.docs SET n = 30 WHERE id = 3; "
                      f"INSERT INTO `{db}`.docs VALUES (4, 'gone', REPEAT('g', 2000000), 4); "
                      f"DELETE FROM `{db}`.docs WHERE id = 4")

    def prints(inst: Any) -> list[tuple[Any, ...]]:
        return query(inst, f"SELECT id, LENGTH(body), MD5(body), CHAR_LENGTH(note), MD5(note), n FROM `{db}`.docs "
                           "ORDER BY id")

    deadline = time.monotonic() + 120
    while prints(group.standby) != prints(group.primary):
        group.assert_agents_alive()
        assert time.monotonic() < deadline, (prints(group.standby), prints(group.primary))
        time.sleep(0.5)
    group.stop_all()
    assert [r[1] for r in prints(group.standby)] == ["1", "3000000", "1198800"]
