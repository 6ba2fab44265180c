"""Classified data errors, table-level resync while the other tables keep applying, and the retention gap.

Real Kafka, real PostgreSQL, real ``ark`` processes. A standby is damaged on purpose by a superuser
session that turns the read-only guard off for itself (``default_transaction_read_only`` is only the
database default, see consumers/postgresql/applier.py).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg

from common.config import KafkaSettings, load_config
from common.control import ControlChannel
from common.kafka import delete_records_below, end_offset
from deploy.workload import BankWorkload, create_bank, total_balance
from schemas.positions import pg_lsn
from schemas.topics import redo_topic
from tests.support.replication import ROOT, sql, wait_for

BANK = ["public.accounts", "public.history"]


def _damage(dsn: str, statement: str) -> int:
    """Run ``statement`` on the standby past its read-only guard; returns the affected row count."""
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        return conn.execute(statement).rowcount


def _applier_state(group: Any) -> str:
    res = group.ark("status", "--json")
    if res.returncode != 0:
        return ""
    return str(next(s["state"] for s in json.loads(res.stdout)["standbys"] if s["name"] == "standby"))


def _table_state(dsn: str, table: str) -> str:
    rows = sql(dsn, "SELECT state FROM ark.table_state WHERE \"table\" = %s", (table,))
    return str(rows[0][0]) if rows else "none"


def _applied(dsn: str) -> tuple[int, int]:
    row = sql(dsn, "SELECT next_offset, applied_txns FROM ark.apply_state")[0]
    return int(row[0]), int(row[1])


def _decisions(group: Any) -> list[Any]:
    channel = ControlChannel.for_config(load_config(group.config))
    try:
        return channel.replay()
    finally:
        channel.close()


def _bank_group(make_group: Any, filler: int) -> tuple[Any, Any]:
    """A synced bank group with ``filler`` extra history rows (so a copy of history takes a while)."""
    group = make_group()
    invariant = create_bank(group.primary_dsn, accounts=100)
    sql(group.primary_dsn, "INSERT INTO history (from_id, to_id, amount, note) "
                           f"SELECT 1, 2, 0, 'filler ' || g FROM generate_series(1, {filler}) g")
    group.ark_ok("sync", "standby")
    return group, invariant


def _assert_converged(group: Any) -> None:
    diffs = group.wait_equal("standby", BANK, timeout=120)
    assert all(d.equal for d in diffs), diffs
    standby = group.standby("standby").dsn
    assert sql(standby, "SELECT count(*) - count(DISTINCT id) FROM history") == [(0,)]
    assert sql(standby, "SELECT count(*) FROM history") == sql(group.primary_dsn, "SELECT count(*) FROM history")


def test_table_resync_while_other_tables_keep_applying(make_group) -> None:
    group, invariant = _bank_group(make_group, filler=400_000)
    standby = group.standby("standby").dsn
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=3).start()
    try:
        wait_for(lambda: _applied(standby)[1] > 50, 60, "the standby applying the workload")
        damaged = _damage(standby, "DELETE FROM history WHERE id % 7 = 0")
        assert damaged > 1000
        # (history state, next_offset, applied_txns, accounts' newest update, when)
        samples: list[tuple[str, int, int, Any, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                try:
                    state = _table_state(standby, "public.history")
                    offset, txns = _applied(standby)
                    newest = sql(standby, "SELECT max(updated_at) FROM accounts")[0][0]
                    samples.append((state, offset, txns, newest, time.monotonic()))
                except psycopg.Error:
                    pass
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        out = group.ark_ok("resync", "standby", "--table", "public.history", timeout=300)
        took = time.monotonic() - started
        stop.set()
        sampler.join()
    finally:
        committed = workload.stop()
    print(out)
    for needle in ("resync started", "snapshot taken at", "rows copied", "swapped in", "caught up"):
        assert needle in out, out
    during = [s for s in samples if s[0] == "resyncing"]
    # From the start of the resync to the first sample after it ended: the longest time the state row stood still.
    first = samples.index(during[0])
    window = samples[first:first + len(during) + 1]
    stall, last_change = 0.0, window[0][4]
    for prev, cur in zip(window, window[1:], strict=False):
        if cur[1] != prev[1]:
            stall, last_change = max(stall, cur[4] - last_change), cur[4]
    print(f"resync took {took:.1f} s; {len(during)} samples while resyncing over {during[-1][4] - during[0][4]:.1f} s: "
          f"offsets {during[0][1]}..{during[-1][1]}, txns {during[0][2]}..{during[-1][2]}; "
          f"longest time without an applied commit: {stall:.2f} s")
    assert len(during) >= 3, samples
    assert during[-1][1] > during[0][1] and during[-1][2] > during[0][2], "apply paused during the table resync"
    assert during[-1][3] > during[0][3], "accounts did not advance during the resync of history"
    assert stall < 5.0, f"the other tables stood still for {stall:.1f} s during the resync"
    assert committed > 100 and workload.errors == 0
    _assert_converged(group)
    assert total_balance(standby) == invariant
    assert _table_state(standby, "public.history") == "ok"
    kinds = [(r.kind, getattr(r.body, "table", None)) for r in _decisions(group)]
    assert ("table-resync-started", "public.history") in kinds and ("table-resynced", "public.history") in kinds
    assert sql(standby, "SELECT count(*) FROM pg_tables WHERE schemaname = 'ark_resync'") == [(0,)]


def test_kill9_of_apply_in_mid_resync(make_group) -> None:
    group, _invariant = _bank_group(make_group, filler=1_000_000)
    standby = group.standby("standby").dsn
    group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    try:
        time.sleep(2)
        _damage(standby, "DELETE FROM history WHERE id % 5 = 0")
        out = group.ark_ok("resync", "standby", "--table", "public.history", "--no-wait")
        assert "requested" in out
        wait_for(lambda: _table_state(standby, "public.history") == "resyncing", 30, "history set aside for its resync")
        time.sleep(1.0)  # inside the copy of a million rows
        assert _table_state(standby, "public.history") == "resyncing"
        apply.kill9()
        time.sleep(1)
        apply.start()
        wait_for(lambda: _table_state(standby, "public.history") == "ok", 180, "history resynced after the restart",
                 interval=0.5)
        time.sleep(2)
    finally:
        workload.stop()
    _assert_converged(group)
    assert "starting its copy again from scratch" in apply.tail(400)


def _set_policy(group: Any, policy: str) -> None:
    group.standby_extra = {"on_data_error": policy}
    group.write_config()


def test_policy_stop_names_transaction_table_key_and_position(make_group) -> None:
    group = make_group()
    _set_policy(group, "stop")
    sql(group.primary_dsn, "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL)")
    sql(group.primary_dsn, "INSERT INTO t SELECT g, 0 FROM generate_series(1, 10) g")
    group.ark_ok("sync", "standby")
    standby = group.standby("standby").dsn
    group.start("capture")
    apply = group.start("apply", "standby")
    _damage(standby, "DELETE FROM t WHERE id = 7")
    group.ark_ok("pause", "standby")
    time.sleep(1.5)
    # Three transactions in one batch: the first is fine, the second updates the deleted row.
    sql(group.primary_dsn, "INSERT INTO t VALUES (100, 1)")
    with psycopg.connect(group.primary_dsn) as conn:
        xid = conn.execute("SELECT txid_current()").fetchone()[0]  # type: ignore[index]
        conn.execute("UPDATE t SET v = 5 WHERE id = 7")
    lsn_after = sql(group.primary_dsn, "SELECT pg_current_wal_lsn()::text")[0][0]
    sql(group.primary_dsn, "INSERT INTO t VALUES (200, 2)")
    time.sleep(1.0)  # all three are published
    group.ark_ok("resume", "standby")
    code = apply.wait_exit(60)
    log = apply.tail(60)
    print(log)
    assert code == 9, log
    error = next(line for line in log.splitlines() if "error:" in line)
    assert "update of a missing row in public.t" in error and "key [7]" in error, error
    assert f"source transaction {xid} " in error, error
    assert "redo entry ark." in error and "]@" in error, error
    # the position named is the failing transaction's commit: after what the standby applied, before lsn_after
    named = re.search(r" at ([0-9A-F]+/[0-9A-F]+) \[redo", error)
    assert named, error
    applied = sql(standby, "SELECT position_key FROM ark.apply_state")[0][0]
    assert bytes(applied) < pg_lsn(named.group(1)).key < pg_lsn(lsn_after).key
    assert "fix:" in log and "resync" in log
    # the transaction before the failing one was applied, nothing after it
    assert sql(standby, "SELECT id FROM t WHERE id IN (100, 200) ORDER BY id") == [(100,)]
    assert sql(standby, "SELECT v FROM t WHERE id = 5") == [(0,)]


def test_policy_resync_table_heals_a_data_error(make_group) -> None:
    group, invariant = _bank_group(make_group, filler=10_000)
    _set_policy(group, "resync-table")
    standby = group.standby("standby").dsn
    group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    try:
        time.sleep(2)
        # Damage the standby only while its applier holds no lock: paused, its batch committed. (Deleting rows
        # the applier is updating at that moment is a deadlock between the test and the applier.)
        group.ark_ok("pause", "standby")
        wait_for(lambda: _applier_state(group) == "paused", 30, "the applier to pause", interval=0.3)
        assert _damage(standby, "DELETE FROM accounts WHERE id IN (5, 6, 7)") == 3
        group.ark_ok("resume", "standby")
        wait_for(lambda: "is being resynced" in apply.tail(400), 60, "accounts set aside after the data error")
        wait_for(lambda: _table_state(standby, "public.accounts") == "ok", 120, "accounts resynced", interval=0.5)
        time.sleep(2)
    finally:
        workload.stop()
    _assert_converged(group)
    assert total_balance(standby) == invariant
    assert apply.alive()
    decisions = [r for r in _decisions(group) if getattr(r.body, "table", None) == "public.accounts"]
    reasons = [r.body.reason for r in decisions if r.kind == "table-resync-started"]  # type: ignore[union-attr]
    assert reasons and "missing row" in reasons[0] and "public.accounts" in reasons[0], reasons
    assert any(r.kind == "table-resynced" for r in decisions)


def test_standby_down_within_retention_resumes_and_a_gap_names_what_is_missing(make_group) -> None:
    group, _invariant = _bank_group(make_group, filler=0)
    standby = group.standby("standby").dsn
    group.start("capture")
    apply = group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    try:
        time.sleep(2)
        apply.stop()
        time.sleep(4)  # down while the workload runs, within retention
        apply.start()
        time.sleep(2)
    finally:
        workload.stop()
    _assert_converged(group)  # resumed by itself
    apply.stop()
    BankWorkload(group.primary_dsn, accounts=100, clients=2).run_for(2)
    topic = redo_topic(group.name)
    settings = KafkaSettings(bootstrap=group.kafka)
    time.sleep(1.5)
    next_offset = _applied(standby)[0]
    high = end_offset(settings, topic)
    assert high > next_offset + 10
    cut = next_offset + (high - next_offset) // 2
    assert delete_records_below(settings, topic, cut) == cut
    res = group.ark("apply", "standby", timeout=120)
    text = res.stdout + res.stderr
    print(text)
    assert res.returncode == 13, text
    assert f"{topic}[0]@{next_offset}..{cut - 1}" in text and f"offset {cut}" in text, text
    assert "ark resync standby" in text
    # the fix works: rebuild the whole standby while the primary runs, then stream again
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2).start()
    try:
        out = group.ark_ok("resync", "standby")
        assert "replacing its data" in out
        apply.start()
        time.sleep(3)
    finally:
        workload.stop()
    _assert_converged(group)


def test_whole_resync_refuses_while_apply_runs(make_group) -> None:
    group, _invariant = _bank_group(make_group, filler=0)
    group.start("capture")
    group.start("apply", "standby")
    wait_for(lambda: "running" in group.ark_ok("status"), 30, "the applier's heartbeat")
    res = subprocess.run([sys.executable, "-m", "ops", "-c", str(group.config), "resync", "standby"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert res.returncode != 0 and "is running" in res.stderr and "stop 'ark apply standby'" in res.stderr, res.stderr
