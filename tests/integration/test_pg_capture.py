"""PostgresCapture against a real PostgreSQL 15: order, types, keys, idle, confirm, restart, gaps, checks."""

from __future__ import annotations

import gc
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import pytest

from common.config import ArkConfig, parse_config
from common.errors import PrerequisiteError, SourceError
from producers.base import CaptureEvent, Idle, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from producers.postgresql.capture import PostgresCapture
from producers.postgresql.catalog import publication_of, slot_of
from schemas.entries import UNCHANGED, Op, Position, RowChange, SchemaChange, TableMeta


def make_cfg(port: int, dbname: str, group: str, tables: tuple[str, ...] = ("public.*",), **primary: Any) -> ArkConfig:
    return parse_config({"group": group, "control_key": {"env": "ARK_CONTROL_KEY"},
                         "primary": {"name": "p", "engine": "postgresql", "host": "127.0.0.1",
                                                     "port": port, "dbname": dbname, "tables": list(tables),
                                                     **primary}})


def run_sql(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for stmt in statements:
                cur.execute(stmt)
    finally:
        conn.close()


def slot_flush(dsn: str, slot: str) -> str:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            return row[0] if row else ""
    finally:
        conn.close()


@dataclass
class Txn:
    begin: TxnBegin
    rows: list[RowChange] = field(default_factory=list)
    metas: list[TableMeta] = field(default_factory=list)
    ddl: list[SchemaChange] = field(default_factory=list)
    end: TxnEnd | None = None


def take_txns(events: Iterator[CaptureEvent], n: int, timeout: float = 30.0) -> list[Txn]:
    """Read events until ``n`` complete transactions; check they never interleave."""
    txns: list[Txn] = []
    cur: Txn | None = None
    deadline = time.monotonic() + timeout
    while len(txns) < n:
        assert time.monotonic() < deadline, f"only {len(txns)} of {n} transactions arrived"
        ev = next(events)
        if isinstance(ev, TxnBegin):
            assert cur is None, "transactions interleave"
            cur = Txn(ev)
        elif isinstance(ev, TxnEnd):
            assert cur is not None and ev.commit == cur.begin.commit
            cur.end = ev
            txns.append(cur)
            cur = None
        elif isinstance(ev, RowChange):
            assert cur is not None, "row outside a transaction"
            cur.rows.append(ev)
        elif isinstance(ev, TableMeta):
            assert cur is not None
            cur.metas.append(ev)
        elif isinstance(ev, SchemaChange):
            assert cur is not None and ev.commit == cur.begin.commit, "a schema change outside its transaction"
            cur.ddl.append(ev)
        else:
            assert isinstance(ev, Idle)
            assert cur is None or ev.position is None, "Idle inside a transaction must not offer a position"
    return txns


@pytest.fixture
def capture_for(fresh_db: Any, unique_group: str) -> Iterator[Any]:
    made: list[PostgresCapture] = []

    def make(tables: tuple[str, ...] = ("public.*",), group: str | None = None) -> PostgresCapture:
        cap = PostgresCapture(make_cfg(fresh_db.primary.port, fresh_db.name, group or unique_group, tables))
        made.append(cap)
        return cap

    yield make
    for cap in made:
        cap.close()


BIG = "é" * 20 + "x" * 200_000


def test_transactions_whole_ordered_and_typed(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    run_sql(dsn,
            "CREATE TABLE acct (id int PRIMARY KEY, bal numeric(12,2), blob bytea, at timestamptz, "
            "note text, big text, f float8, ok bool)",
            "CREATE TABLE hist (hid bigint PRIMARY KEY, acct int, amount numeric)")
    cap = capture_for()
    assert cap.check_prerequisites() == []
    cap.ensure_setup()
    cap.ensure_setup()  # idempotent
    run_sql(dsn,
            "BEGIN; INSERT INTO acct VALUES (1, 100.50, '\\x00ff', '2024-05-06 07:08:09.123456+02', 'héllo ☃', "
            f"'{BIG}', 'NaN', true), (2, NULL, NULL, NULL, NULL, NULL, -1.5, false); "
            "INSERT INTO hist VALUES (10, 1, 0.000001); COMMIT",
            "UPDATE acct SET bal = bal + 1 WHERE id = 1",  # big stays TOASTed and unchanged
            "UPDATE acct SET id = 3 WHERE id = 2",  # key change
            "DELETE FROM hist WHERE hid = 10",
            "TRUNCATE acct, hist")
    events = cap.stream(None)
    t1, t2, t3, t4, t5 = take_txns(events, 5)
    commits = [t.begin.commit for t in (t1, t2, t3, t4, t5)]
    assert commits == sorted(commits) and len(set(commits)) == 5
    assert [m.table for m in t1.metas] == ["public.acct", "public.hist"]
    acct = t1.metas[0]
    assert [(c.name, c.type, c.source_type) for c in acct.columns][:4] == [
        ("id", "int32", "integer"), ("bal", "decimal", "numeric(12,2)"), ("blob", "bytes", "bytea"),
        ("at", "timestamptz", "timestamp with time zone")]
    assert acct.key_indexes == (0,) and not acct.columns[0].nullable and acct.columns[1].nullable
    r1, r2, h = t1.rows
    assert (r1.table, r1.op) == ("public.acct", Op.INSERT)
    assert r1.values[:5] == [1, "100.50", b"\x00\xff", "2024-05-06 05:08:09.123456+00", "héllo ☃"]
    assert r1.values[5] == BIG and r1.values[6] != r1.values[6] and r1.values[7] is True  # NaN
    assert r2.values == [2, None, None, None, None, None, -1.5, False]
    assert (h.table, h.values) == ("public.hist", [10, 1, "0.000001"])
    (u,) = t2.rows
    assert u.op == Op.UPDATE and u.values[1] == "101.50" and u.values[5] is UNCHANGED and u.old_key is None
    (k,) = t3.rows
    assert k.op == Op.UPDATE and k.values[0] == 3 and k.old_key == [2]
    (d,) = t4.rows
    assert (d.table, d.op, d.values, d.old_key) == ("public.hist", Op.DELETE, [], [10])
    assert sorted((r.table, r.op) for r in t5.rows) == [("public.acct", Op.TRUNCATE), ("public.hist", Op.TRUNCATE)]
    assert t1.begin.commit_time_us > (time.time() - 600) * 1e6
    assert all(t.end is not None and t.end.confirm.key > t.begin.commit.key for t in (t1, t5))


def test_schema_publication_picks_up_new_tables_and_explicit_lists_do_not(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    run_sql(dsn, "CREATE TABLE a (id int PRIMARY KEY)", "CREATE TABLE b (id int PRIMARY KEY)")
    only_a = capture_for(("public.a",), group=f"g{uuid.uuid4().hex[:8]}")
    only_a.ensure_setup()
    whole = capture_for()
    whole.ensure_setup()
    run_sql(dsn, "CREATE TABLE c (id int PRIMARY KEY)", "INSERT INTO b VALUES (1)", "INSERT INTO c VALUES (2)",
            "INSERT INTO a VALUES (3)")
    create, *txns = take_txns(whole.stream(None), 4)
    assert not create.rows and [t.object for d in create.ddl for t in d.steps if t.action == "table"] == ["public.c"]
    assert [t.rows[0].table for t in txns] == ["public.b", "public.c", "public.a"]
    (only,) = take_txns(only_a.stream(None), 1)  # the CREATE TABLE of c is nothing to it: not even a transaction
    assert only.rows[0].table == "public.a"


def test_idle_and_slot_moves_only_on_confirm(pg_factory: Any, unique_group: str) -> None:
    pg = pg_factory("walsnd", extra_conf={"wal_sender_timeout": "4s"})  # keepalive replies every ~2 s
    run_sql(pg.dsn(), "CREATE TABLE t (id int PRIMARY KEY)", "CREATE TABLE other (id int)")
    cfg = make_cfg(pg.port, "postgres", unique_group, ("public.t",))
    cap = PostgresCapture(cfg)
    try:
        cap.ensure_setup()
        start = slot_flush(pg.dsn(), slot_of(cfg))
        run_sql(pg.dsn(), "INSERT INTO t VALUES (1)")
        events = cap.stream(None)
        (t1,) = take_txns(events, 1)
        # ~6 s of streaming with WAL traffic (unpublished table) and keepalives, without confirm.
        idles, last, gaps = 0, time.monotonic(), []
        deadline = time.monotonic() + 6
        n = 0
        while time.monotonic() < deadline:
            ev = next(events)
            if isinstance(ev, Idle):
                now = time.monotonic()
                gaps.append(now - last)
                last, idles = now, idles + 1
                assert ev.position is not None and ev.position.key >= t1.end.confirm.key  # type: ignore[union-attr]
                n += 1
                if n % 5 == 0:
                    run_sql(pg.dsn(), f"INSERT INTO other VALUES ({n})")
        assert idles >= 10 and max(gaps) < 0.6
        assert slot_flush(pg.dsn(), slot_of(cfg)) == start, "the slot moved without confirm()"
        assert t1.end is not None
        cap.confirm(t1.end.confirm)
        for _ in range(20):  # confirm() sends at once; the walsender records it on receipt
            next(events)
            if slot_flush(pg.dsn(), slot_of(cfg)) == t1.end.confirm.text:
                break
        assert slot_flush(pg.dsn(), slot_of(cfg)) == t1.end.confirm.text
        flushed, restart = cap.slot_positions()
        assert flushed == t1.end.confirm and restart is not None
    finally:
        cap.close()


def test_psycopg2_read_message_would_advance_the_slot(pg_factory: Any, unique_group: str) -> None:
    """Why walstream.py exists: psycopg2's read_message() confirms keepalive positions on its own."""
    from psycopg2.extras import LogicalReplicationConnection

    pg = pg_factory("psy")
    cfg = make_cfg(pg.port, "postgres", unique_group, ("public.t",))
    run_sql(pg.dsn(), "CREATE TABLE t (id int PRIMARY KEY)")
    PostgresCapture(cfg).ensure_setup()
    start = slot_flush(pg.dsn(), slot_of(cfg))
    conn = psycopg2.connect(pg.dsn(), connection_factory=LogicalReplicationConnection)
    try:
        cur = conn.cursor()
        cur.start_replication(slot_name=slot_of(cfg), decode=False, status_interval=1,
                              options={"proto_version": "1", "publication_names": publication_of(cfg)})
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and slot_flush(pg.dsn(), slot_of(cfg)) == start:
            run_sql(pg.dsn(), "CREATE TABLE IF NOT EXISTS other (id int)", "INSERT INTO other VALUES (1)")
            for _ in range(5):
                assert cur.read_message() is None  # nothing published; never send_feedback()
                time.sleep(0.1)
        moved = slot_flush(pg.dsn(), slot_of(cfg)) != start
    finally:
        conn.close()
    assert moved, "psycopg2 no longer auto-advances flush_lsn: walstream.py could be simplified"


def test_restart_redelivers_unconfirmed_and_skips_before_resume(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    run_sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    cap = capture_for()
    cap.ensure_setup()
    run_sql(dsn, *(f"INSERT INTO t VALUES ({i})" for i in range(1, 5)))
    t = take_txns(cap.stream(None), 4)
    cap.confirm(t[0].end.confirm)
    cap.close()
    again = take_txns(cap.stream(None), 3)
    assert [x.rows[0].values for x in again] == [[2], [3], [4]]
    assert [m.table for m in again[0].metas] == ["public.t"]  # shape announced again after restart
    cap.close()
    # Kafka holds up to txn 3: txn 2 is skipped here; txn 3 (commit == resume_after) is the runner's.
    later = take_txns(cap.stream(t[2].begin.commit), 2)
    assert [x.rows[0].values for x in later] == [[3], [4]]
    assert later[0].metas and later[0].metas[0].table == "public.t"
    cap.close()
    # A confirm that reaches the slot while streaming: a new process (new object) starts after it.
    events = cap.stream(None)
    mid = take_txns(events, 2)
    assert [x.rows[0].values for x in mid] == [[2], [3]]
    cap.confirm(mid[0].end.confirm)  # commit LSN + 1 of txn 2
    deadline = time.monotonic() + 10
    while slot_flush(dsn, slot_of(cap.cfg)) != mid[0].end.confirm.text:
        assert time.monotonic() < deadline
        next(events)
    cap.close()
    fresh = capture_for()
    assert [x.rows[0].values for x in take_txns(fresh.stream(None), 2)] == [[3], [4]]
    fresh.close()
    # The abandoned generator of an earlier stream, collected late, must not touch the current one.
    current = cap.stream(None)
    assert take_txns(current, 1)[0].rows[0].values == [3]
    del events
    gc.collect()
    run_sql(dsn, "INSERT INTO t VALUES (5)")
    assert [x.rows[0].values for x in take_txns(current, 2)] == [[4], [5]]


def test_gap_when_slot_recreated(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    run_sql(dsn, "CREATE TABLE t (id int PRIMARY KEY)")
    cap = capture_for()
    cap.ensure_setup()
    run_sql(dsn, "INSERT INTO t VALUES (1)")
    (t1,) = take_txns(cap.stream(None), 1)
    cap.confirm(t1.end.confirm)
    cap.close()
    slot = slot_of(cap.cfg)
    run_sql(dsn, f"SELECT pg_drop_replication_slot('{slot}')")
    with pytest.raises(SlotGapError, match="does not exist"):
        next(cap.stream(t1.begin.commit))
    run_sql(dsn, "INSERT INTO t VALUES (2)")  # lost: no slot holds it
    cap.ensure_setup()
    run_sql(dsn, "INSERT INTO t VALUES (3)")
    with pytest.raises(SlotGapError) as err:
        next(cap.stream(t1.begin.commit))
    assert t1.begin.commit.text in str(err.value)
    assert "ark capture --accept-gap" in err.value.fix and "ark resync" in err.value.fix
    cap.close()
    (t3,) = take_txns(cap.stream(None), 1)  # an empty topic has no gap
    assert t3.rows[0].values == [3]


def test_prerequisites(fresh_db: Any, capture_for: Any, pg_factory: Any, unique_group: str) -> None:
    dsn = fresh_db.primary_dsn
    cap = capture_for()
    (warn,) = cap.check_prerequisites()
    assert not warn.fatal and "no table matches" in warn.what
    run_sql(dsn, "CREATE TABLE nopk (a int)", "CREATE UNLOGGED TABLE unl (id int PRIMARY KEY)",
            "CREATE TABLE full_nokey (a int)", "ALTER TABLE full_nokey REPLICA IDENTITY FULL",
            "CREATE TABLE full_uniq (a int NOT NULL UNIQUE, b text)", "ALTER TABLE full_uniq REPLICA IDENTITY FULL",
            "CREATE TABLE good (id int PRIMARY KEY)", "CREATE ROLE norepl LOGIN")
    problems = {p.what.split()[1]: p for p in cap.check_prerequisites()}
    assert set(problems) == {"public.unl", "public.full_nokey"}
    assert "SET LOGGED" in problems["public.unl"].fix and problems["public.unl"].fatal
    # No key is not a refusal any more (issue 18): the keyless policy handles it, and it is listed as such.
    protection = {p.what.split()[1]: p for p in cap.protection() if p.what.startswith("table ")}
    assert "REPLICA IDENTITY FULL" in protection["public.nopk"].what and not protection["public.nopk"].fatal
    # FULL without any unique key replicates (full-row match on the standby): a warning, not a refusal.
    assert not problems["public.full_nokey"].fatal and "one row per change" in problems["public.full_nokey"].what
    with pytest.raises(PrerequisiteError):
        cap.ensure_setup()
    weak = PostgresCapture(make_cfg(fresh_db.primary.port, fresh_db.name, unique_group, ("public.good",),
                                    user="norepl"))
    try:
        (p,) = weak.check_prerequisites()
        assert "REPLICATION" in p.what and p.fix == 'ALTER ROLE "norepl" REPLICATION'
    finally:
        weak.close()
        run_sql(dsn, "DROP ROLE norepl")
    replica = pg_factory("replica", extra_conf={"wal_level": "replica"})
    run_sql(replica.dsn(), "CREATE TABLE ok (id int PRIMARY KEY)")
    rcap = PostgresCapture(make_cfg(replica.port, "postgres", unique_group))
    try:
        (p,) = rcap.check_prerequisites()
        assert "wal_level is replica" in p.what and "ALTER SYSTEM SET wal_level = logical" in p.fix
    finally:
        rcap.close()


def test_wrong_password_and_unreachable(pg_factory: Any, unique_group: str, monkeypatch: Any) -> None:
    secret = "Corr3ct-Horse"
    pg = pg_factory("pw", password=secret)
    monkeypatch.setenv("ARK_TEST_PG_PW", "wr0ng-Battery")
    cfg = make_cfg(pg.port, "postgres", unique_group, password={"env": "ARK_TEST_PG_PW"})
    cap = PostgresCapture(cfg)
    with pytest.raises(SourceError) as err:
        cap.check_prerequisites()
    text = f"{err.value} {err.value.fix}"
    assert "password authentication failed" in text and "{env: ARK_TEST_PG_PW}" in err.value.fix
    assert f"127.0.0.1:{pg.port}" in text and "postgres@" in text
    assert secret not in text and "wr0ng-Battery" not in text and "\n" not in text
    with pytest.raises(SourceError):
        next(cap.stream(None))
    monkeypatch.setenv("ARK_TEST_PG_PW", secret)
    assert PostgresCapture(cfg).check_prerequisites()  # logs in now (warning: no tables)
    down = PostgresCapture(make_cfg(1, "postgres", unique_group))
    with pytest.raises(SourceError) as err:
        down.check_prerequisites()
    assert "is PostgreSQL running at 127.0.0.1:1?" in err.value.fix


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_large_transaction_streams_with_bounded_memory(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    rows = 200_000
    run_sql(dsn, "CREATE TABLE big (id int PRIMARY KEY, amount numeric(12,2), note text, at timestamptz)")
    cap = capture_for()
    cap.ensure_setup()
    run_sql(dsn, f"INSERT INTO big SELECT g, g / 100.0, repeat('x', 80) || g, now() FROM generate_series(1, {rows}) g")
    events = cap.stream(None)
    base = peak = _rss_mb()
    count, t0, cpu0, began = 0, time.perf_counter(), time.process_time(), False
    for ev in events:
        if isinstance(ev, TxnBegin):
            began = True
        elif isinstance(ev, RowChange):
            count += 1
            if count % 10_000 == 0:
                peak = max(peak, _rss_mb())
        elif isinstance(ev, TxnEnd):
            break
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    growth = peak - base
    print(f"\n200k-row transaction: {count / elapsed:,.0f} rows/s end to end ({count / cpu:,.0f} rows per "
          f"capture CPU second), RSS {base:.0f} MB -> peak {peak:.0f} MB (+{growth:.1f} MB)")
    assert began and count == rows
    assert growth < 40, f"RSS grew {growth:.1f} MB while streaming"


def test_parse_position(capture_for: Any) -> None:
    cap = capture_for()
    p = cap.parse_position("1/A0")
    assert p == Position("1/A0", bytes.fromhex("00000001000000a0"))
    assert cap.parse_position("0/FF") < p
    with pytest.raises(ValueError):
        cap.parse_position("nope")


def test_replica_identity_full_uses_the_real_key(fresh_db: Any, capture_for: Any) -> None:
    dsn = fresh_db.primary_dsn
    run_sql(dsn, "CREATE TABLE f (a int, id int PRIMARY KEY, v text)", "ALTER TABLE f REPLICA IDENTITY FULL",
            "CREATE TABLE u (code text NOT NULL UNIQUE, v int)", "ALTER TABLE u REPLICA IDENTITY FULL")
    cap = capture_for()
    assert cap.check_prerequisites() == []
    cap.ensure_setup()
    run_sql(dsn, "INSERT INTO f VALUES (1, 10, 'x')", "UPDATE f SET v = 'y'", "UPDATE f SET id = 11",
            "DELETE FROM f", "INSERT INTO u VALUES ('k', 1)", "UPDATE u SET code = 'k2'")
    ins, upd, key, dele, uins, ukey = take_txns(cap.stream(None), 6)
    meta = ins.metas[0]
    assert [c.key_position for c in meta.columns] == [0, 1, 0] and meta.key_indexes == (1,)
    assert upd.rows[0].values == [1, 10, "y"] and upd.rows[0].old_key is None
    assert key.rows[0].values == [1, 11, "y"] and key.rows[0].old_key == [10]
    assert dele.rows[0].old_key == [11]
    assert uins.metas[0].key_indexes == (0,) and ukey.rows[0].old_key == ["k"]
