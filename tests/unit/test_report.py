"""``ark report``'s arithmetic (ops/report.py Tally) and rendering, without Kafka."""

from __future__ import annotations

import csv
import io

from common.control import ControlRecord
from ops.report import Tally, hour_of, percentile, to_csv
from ops.report_html import render_html, render_text
from schemas.control import Pause, Retransmit, SetDelay, TableResyncStarted
from schemas.entries import Op, RowChange, TxnChunk, ValuePart
from schemas.positions import pg_lsn

H0 = 1_767_000_000 // 3600 * 3600  # the start of an hour


def _chunk(txn: str, lsn: int, *tables: str, index: int = 0, last: bool = True, part: ValuePart | None = None
           ) -> TxnChunk:
    changes = [RowChange(t, Op.UPDATE if t.endswith("accounts") else Op.INSERT, [1]) for t in tables]
    return TxnChunk(txn, pg_lsn(lsn), 0, index, last, changes, part=part)


def _tally() -> Tally:
    t = Tally("bank", H0 - 10, H0 + 2 * 3600)
    ms = H0 * 1000
    t.add_entry(ms + 1000, 100, _chunk("1", 100, "public.accounts", "public.accounts", "public.history"), 0)
    t.add_entry(ms + 2000, 100, _chunk("2", 200, "public.accounts", "public.history"), 0)
    # a large transaction in two chunks, one of them a value part
    part = ValuePart("public.docs", 0, 1, 0, 1, 10, b"0123456789")
    t.add_entry(ms + 3000, 60, TxnChunk("3", pg_lsn(300), 0, 0, False, [], part=part), 0)
    t.add_entry(ms + 3000, 40, _chunk("3", 300, "public.docs", index=1), 0)
    # a retransmission republishes transaction 2: counted once
    t.add_entry(ms + 2000, 100, _chunk("2", 200, "public.accounts", "public.history"), 0)
    t.add_entry((H0 + 3600) * 1000 + 5, 50, _chunk("4", 400, "public.history"), 0)
    t.add_entry((H0 + 3600) * 1000 + 6, 10, TxnChunk("", pg_lsn(401), 0, 0, True, []), 0)  # a checkpoint
    return t


def test_transactions_rows_and_bytes_per_hour_and_table() -> None:
    doc = _tally().document({"topic": "ark.bank.redo"})
    assert doc["totals"]["transactions"] == 4 and doc["totals"]["rows"] == 7
    assert doc["totals"]["republished_transactions"] == 1 and doc["totals"]["bytes"] == 460
    tables = {r["table"]: r for r in doc["tables"]}
    assert (tables["public.accounts"]["transactions"], tables["public.accounts"]["rows"]) == (2, 3)
    assert tables["public.accounts"]["updates"] == 3 and tables["public.history"]["inserts"] == 3
    assert (tables["public.history"]["transactions"], tables["public.docs"]["transactions"]) == (3, 1)
    assert tables["public.docs"]["bytes"] == 100  # the part and the row's chunk
    assert [(h["hour"], h["transactions"], h["rows"]) for h in doc["hours"]] == [
        (hour_of(H0 - 10), 0, 0), (hour_of(H0), 3, 6), (hour_of(H0 + 3600), 1, 1), (hour_of(H0 + 7200), 0, 0)]


def test_standby_lag_percentiles_rates_errors_and_server_log_lines() -> None:
    t = _tally()
    for i in range(100):
        at = H0 + 60 + i
        state = "retrying" if 50 <= i < 55 else "running"
        t.add_beat({"agent": "apply", "name": "node2", "sent_at_us": int(at * 1e6), "state": state,
                    "message": "broker down" if state == "retrying" else "", "lag_seconds": float(i),
                    "delay_seconds": 30.0, "metrics": {"rows": 10.0 * i, "log.error": float(i // 10)}})
    t.add_beat({"agent": "apply", "name": "node2", "sent_at_us": int((H0 + 500) * 1e6), "state": "running",
                "lag_seconds": 0.0, "metrics": {"rows": 0.0, "log.error": 1.0}})  # the agent restarted
    doc = t.document({"topic": "x"})
    (sb,) = doc["standbys"]
    (hour,) = sb["hours"]
    assert hour["lag_p50_s"] == 49.0 and hour["lag_p99_s"] == 98.0 and hour["lag_max_s"] == 99.0
    assert hour["apply_rows_per_s"] == 10.0 and hour["delay_s"] == 30.0 and hour["error_s"] == 5
    assert hour["last_error"] == "broker down"
    assert doc["server_log"] == [{"node": "node2", "severity": "ERROR", "lines": 10}]
    assert percentile([], 0.5) is None and percentile([3.0], 0.99) == 3.0


def test_control_records_count_quarantines_resyncs_and_list_intents() -> None:
    t = Tally("bank", H0, H0 + 3600)
    at = int((H0 + 10) * 1e6)
    for i, body in enumerate([Retransmit("0/1", b"\x01", 7, "crc"), TableResyncStarted("public.t", "r", "why"),
                              SetDelay(60.0), Pause()]):
        t.add_record(ControlRecord(i, body, "node2", "dba@ops", at, str(i)))
    t.add_record(ControlRecord(9, Pause(), "node2", "dba@ops", int((H0 - 100) * 1e6), "old"))  # before the window
    doc = t.document({"topic": "x"})
    assert doc["events"]["quarantines"] == 1 and doc["events"]["resyncs_started"] == 1
    assert [i["intent"] for i in doc["intents"]] == ["delay 60 s", "pause"]
    assert doc["notes"] == ["no heartbeats in the window: lag, apply rate and errors are unknown"]


def test_csv_html_and_text_outputs() -> None:
    t = _tally()
    t.add_beat({"agent": "apply", "name": "node2", "sent_at_us": int((H0 + 5) * 1e6), "state": "running",
                "lag_seconds": 1.5, "metrics": {"rows": 1.0}})
    doc = t.document({"topic": "ark.bank.redo", "low_offset": 0, "high_offset": 9, "span_hours": 1.0, "bytes": 460})
    rows = list(csv.DictReader(io.StringIO(to_csv(doc))))
    assert {r["section"] for r in rows} == {"total", "table", "standby"}
    assert sum(int(r["transactions"]) for r in rows if r["section"] == "total") == 4
    page = render_html(doc)
    assert page.count("<svg") == 3 and "no data in the window" in page  # one beat: no apply rate yet
    assert "Replication report · group bank" in page and "public.accounts" in page
    assert "<script" not in page and "http" not in page.split("</style>")[1]  # self-contained
    text = render_text(doc)
    assert "4 transactions, 7 rows" in text and "node2" in text
