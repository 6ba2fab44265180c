"""``ark verify`` and table-level resync on a MariaDB standby, with the bank workload running throughout.

Real Kafka, real MariaDB, real ``ark`` processes. The standby is damaged on purpose as root (whose
READ_ONLY ADMIN passes the read-only guard). Accounts 101..120 exist but the workload only moves money
between 1..100, so damage to them stays put until verify repairs it; ``notes`` has no unique key
(identity "full": compared as a multiset of rows, in hash buckets).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from tests.support.mariadb import BankWorkload, MariaDBGroup, create_bank, query, total_balance

EXTRA_ID = 1_000_000_000


def _group(fresh_mariadb: Any, kafka: str, name: str, tmp: Any, **standby_extra: Any) -> MariaDBGroup:
    group = MariaDBGroup(name, tmp / "groups" / name, kafka, fresh_mariadb.primary, fresh_mariadb.standby,
                         fresh_mariadb.name)
    group.write_config(**standby_extra)
    return group


def _wait(predicate: Any, timeout: float, what: str, group: MariaDBGroup) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        group.assert_agents_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _count(group: MariaDBGroup, table: str) -> int:
    try:
        return int(query(group.standby, f"SELECT COUNT(*) FROM `{group.schema}`.{table}")[0][0])
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def _verify(group: MariaDBGroup, *args: str) -> tuple[int, dict[str, Any]]:
    started = time.monotonic()
    res = group.ark("verify", "standby", "--json", *args, timeout=300)
    print(f"ark verify {' '.join(args)}: exit {res.returncode} in {time.monotonic() - started:.1f} s\n{res.stderr}")
    assert "Traceback" not in res.stderr, res.stderr
    doc = json.loads(res.stdout) if res.stdout.strip().startswith("{") else {}
    return res.returncode, doc


def _table_state(group: MariaDBGroup, table: str) -> str:
    rows = query(group.standby, "SELECT state FROM ark.table_state WHERE `table` = %s", (table,))
    return str(rows[0][0]) if rows else "none"


def _applied_txns(group: MariaDBGroup) -> int:
    rows = query(group.standby, "SELECT applied_txns FROM ark.apply_state WHERE `group` = %s", (group.name,))
    return int(rows[0][0]) if rows else 0


def test_mariadb_verify_finds_and_repairs_damage(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    group = _group(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp)
    db, primary, standby = group.schema, group.primary, group.standby
    invariant = create_bank(primary, db, accounts=120)
    primary.sql(f"CREATE TABLE `{db}`.notes (k int, memo varchar(20)) ENGINE=InnoDB; "
                f"INSERT INTO `{db}`.notes VALUES (1, 'a'), (1, 'a'), (1, 'a'), (2, 'b'), (3, NULL), (4, 'A')")
    group.ark_ok("sync", "standby")
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(primary, db, accounts=100, clients=2).start()
    try:
        _wait(lambda: _count(group, "history") > 50, 90, "history on the standby", group)
        code, doc = _verify(group, "--chunk-rows", "40")
        assert code == 0 and doc["verdict"] == "equal", doc
        tables = {t["table"]: t for t in doc["tables"]}
        assert sorted(tables) == [f"{db}.accounts", f"{db}.history", f"{db}.notes"]
        assert tables[f"{db}.accounts"]["primary_rows"] == tables[f"{db}.accounts"]["standby_rows"] == 120
        assert tables[f"{db}.history"]["chunks"] > 1
        # Damage, as root past the read-only guard: rows the workload never touches again.
        ids = [int(r[0]) for r in query(standby, f"SELECT id FROM `{db}`.history ORDER BY id LIMIT 3 OFFSET 10")]
        query(standby, f"DELETE FROM `{db}`.history WHERE id IN ({', '.join(map(str, ids))})")
        query(standby, f"UPDATE `{db}`.accounts SET balance = balance + 1 WHERE id = 110")
        query(standby, f"DELETE FROM `{db}`.accounts WHERE id = 115")
        query(standby, f"INSERT INTO `{db}`.history VALUES ({EXTRA_ID}, 1, 2, 0, NOW(6))")
        query(standby, f"DELETE FROM `{db}`.notes WHERE k = 1 LIMIT 1")  # one of three identical rows
        query(standby, f"UPDATE `{db}`.notes SET memo = 'a' WHERE k = 4")  # 'A' -> 'a': equal in _ci collations
        code, doc = _verify(group, "--chunk-rows", "40")
        assert code == 11 and doc["verdict"] == "different", doc
        tables = {t["table"]: t for t in doc["tables"]}
        ranges = tables[f"{db}.history"]["ranges"]
        assert sorted(int(k) for r in ranges for k in r["missing_on_standby"]) == ids
        assert [k for r in ranges for k in r["extra_on_standby"]] == [str(EXTRA_ID)]
        accounts = tables[f"{db}.accounts"]["ranges"]
        assert [k for r in accounts for k in r["different"]] == ["110"]
        assert [k for r in accounts for k in r["missing_on_standby"]] == ["115"]
        buckets = tables[f"{db}.notes"]["buckets"]
        assert sum(b["missing_on_standby"] for b in buckets) == 2 and sum(b["extra_on_standby"] for b in buckets) == 1
        code, doc = _verify(group, "--chunk-rows", "40", "--repair")
        assert code == 0, doc
        assert len(doc["repair"]["ranges"]) >= 3
        code, doc = _verify(group, "--chunk-rows", "40")
        assert code == 0 and doc["verdict"] == "equal", doc
    finally:
        committed = workload.stop()
    diffs = group.wait_equal([f"{db}.accounts", f"{db}.history", f"{db}.notes"], timeout=120)
    group.stop_all()
    assert diffs == {}, diffs
    assert committed > 50 and workload.errors == 0
    assert total_balance(standby, db) == invariant
    memos = query(standby, f"SELECT CAST(memo AS BINARY) FROM `{db}`.notes WHERE k = 4")
    assert memos == [(b"A",)]  # repaired byte for byte, not just equal under the collation


def test_mariadb_table_resync_while_other_tables_keep_applying(fresh_mariadb, kafka_bootstrap, unique_group,
                                                             ark_tmp) -> None:
    group = _group(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp)
    db, primary, standby = group.schema, group.primary, group.standby
    invariant = create_bank(primary, db, accounts=100)
    primary.sql(f"INSERT INTO `{db}`.history (src, dst, amount, at) SELECT 1, 2, 0, NOW(6) FROM `{db}`.seq_1_to_200000")
    group.ark_ok("sync", "standby", timeout=600)
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(primary, db, accounts=100, clients=2).start()
    samples: list[tuple[str, int]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append((_table_state(group, f"{db}.history"), _applied_txns(group)))
            except Exception:  # noqa: BLE001 - a sample lost to a busy moment
                pass
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    try:
        _wait(lambda: _applied_txns(group) > 50, 90, "the standby applying the workload", group)
        query(standby, f"DELETE FROM `{db}`.history WHERE id % 7 = 0")
        sampler.start()
        out = group.ark_ok("resync", "standby", "--table", f"{db}.history", timeout=600)
        stop.set()
        sampler.join()
    finally:
        committed = workload.stop()
    print(out)
    for needle in ("resync started", "snapshot taken at", "rows copied", "swapped in", "caught up"):
        assert needle in out, out
    during = [txns for state, txns in samples if state == "resyncing"]
    assert len(during) >= 3 and during[-1] > during[0], "apply paused during the table resync"
    diffs = group.wait_equal([f"{db}.accounts", f"{db}.history"], timeout=120)
    group.stop_all()
    assert diffs == {}, diffs
    assert committed > 50 and workload.errors == 0
    assert total_balance(standby, db) == invariant
    assert _table_state(group, f"{db}.history") == "ok"
    staging = query(standby, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'ark_resync'")
    assert staging == [("0",)]  # the staging copy was dropped after the swap committed


def test_mariadb_data_error_heals_by_table_resync(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp) -> None:
    """Policy ``resync-table``: an UPDATE that finds no row resyncs that table, and apply goes on."""
    group = _group(fresh_mariadb, kafka_bootstrap, unique_group, ark_tmp, on_data_error="resync-table")
    db, primary, standby = group.schema, group.primary, group.standby
    invariant = create_bank(primary, db, accounts=20)
    group.ark_ok("sync", "standby")
    group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(primary, db, accounts=20, clients=2).start()
    try:
        _wait(lambda: _applied_txns(group) > 20, 90, "the standby applying the workload", group)
        query(standby, f"DELETE FROM `{db}`.accounts WHERE id IN (3, 4, 5)")  # the workload updates them soon
        _wait(lambda: "will be resynced" in apply.tail(400), 120, "the data error to start a table resync", group)
    finally:
        workload.stop()
    # The primary is idle from here: the copy's floor is reached through the capture's idle checkpoint.
    _wait(lambda: "accounts resynced:" in apply.tail(400), 120, "accounts resynced after the data error", group)
    diffs = group.wait_equal([f"{db}.accounts", f"{db}.history"], timeout=120)
    group.stop_all()
    assert diffs == {}, diffs
    assert total_balance(standby, db) == invariant
    assert "data error" in apply.tail(400)
