"""MariaDB capture alone, against a real MariaDB 10.11: events, values, DDL, resume, purged binlog.

No Kafka here: the capture's events are read directly from :meth:`MariaDBCapture.stream`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from common.config import ArkConfig, parse_config
from producers.base import CaptureEvent, Idle, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from producers.mariadb.capture import MariaDBCapture
from producers.mariadb.snapshot import MariaDBSnapshotSource
from schemas.entries import NAME_ID_BASE, Op, Position, RowChange, TableMeta, name_column_id

TYPES_DDL = """
CREATE TABLE {db}.t (
  id int PRIMARY KEY, ti tinyint, tu tinyint unsigned, si smallint, su smallint unsigned, mi mediumint,
  mu mediumint unsigned, i int, iu int unsigned, bi bigint, bu bigint unsigned, f float, d double,
  n decimal(30,10), n0 decimal(5,0), vc varchar(40), ch char(5), tx text, lt longtext, bn binary(4), vb varbinary(8),
  bl blob, dt date, dtt datetime(6), dt0 datetime, ts timestamp(3) NULL, tm time(6), tm2 time(2), yr year,
  bt bit(10), en enum('a','b','c'), st set('x','y','z'), js json, lat varchar(10) CHARACTER SET latin1)
"""
TYPES_ROWS = [
    "(1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295, -9223372036854775808, "
    "18446744073709551615, 3.4e38, -1.7976931348623157e308, -12345678901234567890.0123456789, 99999, "
    "'héllo 😀 𝄞', 'ab', 'text', repeat('x', 70000), x'00ff', x'', x'deadbeef', '0000-00-00', "
    "'2024-03-31 01:59:59.999999', '1000-01-01 00:00:00', '2038-01-19 03:14:07.999', '-838:59:59', '00:00:00.5', "
    "2155, b'1010101010', 'c', 'z,x', '{\"a\": [1, 2.5]}', 'café')",
    "(2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0, -1.5, 5e-324, 0.0000000001, -1, "
    "'', '', '', '', x'00000000', x'00', x'', '9999-12-31', '0000-00-00 00:00:00', '9999-12-31 23:59:59', "
    "'1970-01-01 00:00:01', '838:59:59.999999', '-00:00:01.25', 0, b'0', 'a', '', '[]', '')",
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
]


def _config(port: int, db: str) -> ArkConfig:
    return parse_config({"group": f"g{db}", "control_key": {"env": "ARK_CONTROL_KEY"},
                         "primary": {"name": "p", "engine": "mariadb", "port": port, "tables": [f"{db}.*"]}})


def _events(capture: MariaDBCapture, resume: Position | None, until: int, timeout: float = 30) -> list[CaptureEvent]:
    """Events (without Idle) until ``until`` transactions ended, then two more idle rounds."""
    out: list[CaptureEvent] = []
    ends = 0
    deadline = time.monotonic() + timeout
    stream: Iterator[CaptureEvent] = capture.stream(resume)
    idle_after = 0
    for ev in stream:
        assert time.monotonic() < deadline, f"only {ends} of {until} transactions within {timeout} s"
        if isinstance(ev, Idle):
            if ends >= until:
                idle_after += 1
                if idle_after >= 2:
                    break
            continue
        out.append(ev)
        if isinstance(ev, TxnEnd):
            ends += 1
    stream.close()  # type: ignore[attr-defined]
    return out


def _rows(events: list[CaptureEvent]) -> list[RowChange]:
    return [e for e in events if isinstance(e, RowChange)]


def test_values_stream_equals_snapshot(fresh_mariadb) -> None:
    """Every type's edge values arrive exactly, and the binlog and a snapshot give the same values and shape."""
    db, prim = fresh_mariadb.name, fresh_mariadb.primary
    prim.sql(TYPES_DDL.format(db=db))
    start = MariaDBCapture(_config(prim.port, db))
    begin = start.current_position()
    prim.sql(f"INSERT INTO {db}.t VALUES {', '.join(TYPES_ROWS)}")
    events = _events(start, begin, until=1)
    start.close()
    metas = [e for e in events if isinstance(e, TableMeta)]
    inserted = _rows(events)
    assert len(metas) == 1 and len(inserted) == 3
    snap = MariaDBSnapshotSource(_config(prim.port, db).primary).open()
    try:
        (snap_meta,) = snap.tables([f"{db}.*"])
        snap_rows = sorted(snap.rows(snap_meta).values(), key=lambda r: r[0])  # type: ignore[arg-type, return-value]
    finally:
        snap.close()
    stream_meta = metas[0]
    assert snap_meta.version == stream_meta.version and snap_meta.columns == stream_meta.columns
    names = [c.name for c in stream_meta.columns]
    for got, want in zip([r.values for r in inserted], snap_rows, strict=True):
        assert {n: v for n, v, w in zip(names, got, want, strict=True) if v != w} == {}, \
            {n: w for n, v, w in zip(names, got, want, strict=True) if v != w}
    by_name = dict(zip([c.name for c in stream_meta.columns], inserted[0].values, strict=True))
    assert by_name["bu"] == "18446744073709551615" and by_name["n"] == "-12345678901234567890.0123456789"
    assert by_name["vc"] == "héllo 😀 𝄞" and by_name["dt"] == "0000-00-00" and by_name["tm"] == "-838:59:59"
    assert by_name["dtt"] == "2024-03-31 01:59:59.999999" and by_name["ts"] == "2038-01-19 03:14:07.999+00"
    assert by_name["bt"] == "1010101010" and by_name["st"] == "x,z" and by_name["lat"] == "café"
    assert by_name["f"] == pytest.approx(3.4e38, rel=1e-7) and by_name["d"] == -1.7976931348623157e308
    assert by_name["bn"] == b"\x00\xff\x00\x00" and by_name["vb"] == b"" and len(by_name["lt"]) == 70000
    assert dict(zip([c.name for c in stream_meta.columns], inserted[1].values, strict=True))["tm2"] == "-00:00:01.25"
    types = {c.name: (c.type, c.source_type) for c in stream_meta.columns}
    assert types["bu"] == ("decimal", "bigint unsigned") and types["ts"] == ("timestamptz", "timestamp(3)")
    assert types["en"] == ("string", "enum('a','b','c') collate utf8mb4_general_ci")


def test_transactions_large_and_truncate(fresh_mariadb) -> None:
    """Whole transactions in commit order, key changes as old keys, a 20k-row transaction, TRUNCATE."""
    db, prim = fresh_mariadb.name, fresh_mariadb.primary
    prim.sql(f"CREATE TABLE {db}.a (id int PRIMARY KEY, v varchar(10)); CREATE TABLE {db}.other (id int PRIMARY KEY)")
    capture = MariaDBCapture(_config(prim.port, db))
    begin = capture.current_position()
    prim.sql(f"INSERT INTO {db}.a VALUES (1, 'a'), (2, 'b'); "
             f"BEGIN; UPDATE {db}.a SET id = 10, v = 'z' WHERE id = 1; DELETE FROM {db}.a WHERE id = 2; COMMIT; "
             f"INSERT INTO {db}.a SELECT seq + 100, 'big' FROM {db}.seq_1_to_20000; "
             f"TRUNCATE TABLE {db}.a")
    events = _events(capture, begin, until=4, timeout=60)
    capture.close()
    begins = [e for e in events if isinstance(e, TxnBegin)]
    assert len(begins) == 4, [b.txn_id for b in begins]
    assert [b.commit.key for b in begins] == sorted(b.commit.key for b in begins)
    rows = _rows(events)
    assert rows[2] == RowChange(f"{db}.a", Op.UPDATE, [10, "z"], [1])
    assert rows[3] == RowChange(f"{db}.a", Op.DELETE, [], [2])
    assert sum(1 for r in rows if r.op is Op.INSERT and r.values[1] == "big") == 20000
    assert rows[-1] == RowChange(f"{db}.a", Op.TRUNCATE, [])


def test_resume_after_restart_and_purged_binlog(fresh_mariadb) -> None:
    """A new capture resumes exactly after a confirmed position; a purged binlog is a gap naming the GTIDs."""
    db, prim = fresh_mariadb.name, fresh_mariadb.primary
    prim.sql(f"CREATE TABLE {db}.a (id int PRIMARY KEY)")
    capture = MariaDBCapture(_config(prim.port, db))
    begin = capture.current_position()
    for i in range(1, 6):
        prim.sql(f"INSERT INTO {db}.a VALUES ({i})")
    first = _events(capture, begin, until=5)
    ends = [e for e in first if isinstance(e, TxnEnd)]
    capture.close()
    resume = ends[2].confirm  # three transactions are "in Kafka"
    for i in range(6, 8):
        prim.sql(f"INSERT INTO {db}.a VALUES ({i})")
    again = MariaDBCapture(_config(prim.port, db))
    second = _events(again, again.parse_position(resume.text), until=4)
    assert [r.values[0] for r in _rows(second)] == [4, 5, 6, 7]  # nothing lost, nothing repeated
    assert again.gap_after(resume) is None
    prim.sql("FLUSH BINARY LOGS")
    newest = prim.sql("SHOW BINARY LOGS").splitlines()[-1].split("\t")[0]
    prim.sql(f"INSERT INTO {db}.a VALUES (8); PURGE BINARY LOGS TO '{newest}'")
    hole = again.gap_after(resume)
    assert hole is not None and "purged" in hole and "missing GTIDs" in hole, hole
    with pytest.raises(SlotGapError) as caught:
        next(iter(again.stream(resume)))
    assert "missing GTIDs" in caught.value.message
    again.close()


def test_ddl_transition_hints(fresh_mariadb) -> None:
    """ADD (with a default), RENAME, CHANGE, DROP, MODIFY: the next shape says how the old one became it."""
    db, prim = fresh_mariadb.name, fresh_mariadb.primary
    prim.sql(f"CREATE TABLE {db}.a (id int PRIMARY KEY, v varchar(10), w int, gone int)")
    capture = MariaDBCapture(_config(prim.port, db))
    begin = capture.current_position()
    prim.sql(f"INSERT INTO {db}.a VALUES (1, 'x', 2, 3); "
             f"ALTER TABLE {db}.a ADD COLUMN c decimal(6,2) NOT NULL DEFAULT '1.5', RENAME COLUMN v TO vv; "
             f"ALTER TABLE {db}.a DROP COLUMN gone, MODIFY w bigint, ADD COLUMN n int NOT NULL AFTER id, "
             f"ADD COLUMN stamp datetime DEFAULT CURRENT_TIMESTAMP; "
             f"INSERT INTO {db}.a (id, n, vv) VALUES (2, 5, 'y')")
    events = _events(capture, begin, until=2)
    capture.close()
    metas = [e for e in events if isinstance(e, TableMeta)]
    assert len(metas) == 2
    after = {c.name: c for c in metas[1].columns}
    assert [c.name for c in metas[1].columns] == ["id", "n", "vv", "w", "c", "stamp"]
    assert all(c.column_id >= NAME_ID_BASE for c in metas[1].columns)
    assert after["vv"].column_id == name_column_id("v")  # renamed: same column as before
    assert (after["c"].missing_value, after["c"].default_expr) == ("1.50", "'1.5'")
    assert after["n"].missing_value == "0"  # MariaDB's implicit default of a NOT NULL int
    assert after["stamp"].missing_value is None and after["stamp"].default_expr == "CURRENT_TIMESTAMP"
    assert after["w"].source_type == "bigint" and after["w"].column_id == name_column_id("w")
    assert all(c.column_id == 0 for c in metas[0].columns)  # a first sight carries no hints


def test_reset_master_is_a_gap(mariadb_factory) -> None:
    """After RESET MASTER the same file names hold other transactions: the capture says so, not resumes."""
    inst = mariadb_factory("reset")
    inst.sql("RESET MASTER; CREATE DATABASE r; CREATE TABLE r.a (id int PRIMARY KEY)")
    capture = MariaDBCapture(_config(inst.port, "r"))
    begin = capture.current_position()
    inst.sql("INSERT INTO r.a VALUES (1); INSERT INTO r.a VALUES (2)")
    ends = [e for e in _events(capture, begin, until=2) if isinstance(e, TxnEnd)]
    resume = ends[-1].confirm
    assert resume.text.startswith("binlog.000001:") and capture.gap_after(resume) is None
    inst.sql("RESET MASTER; " + "; ".join(f"INSERT INTO r.a VALUES ({i})" for i in range(3, 40)))
    hole = capture.gap_after(resume)
    capture.close()
    inst.stop()
    assert hole is not None and "reset" in hole and "GTID state" in hole, hole
