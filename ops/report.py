"""``ark report``: replication statistics per hour and per table, for the people operators report to.

Everything comes from Kafka, over a window (``--since``, 24 h by default):

* **the redo topic** (the archive): transactions, rows (by operation) and bytes per hour and per table,
  from the entries themselves; a transaction republished by a retransmission is counted once (its
  commit position was already seen) and counted as republished;
* **the heartbeats**: per standby and hour, lag percentiles (p50, p95, p99, max, as each applier
  measures it: from its last applied commit, 0 at the topic's end), the apply rate, the delay in force,
  seconds spent in an error or retrying state, and the database server log's ERROR/FATAL/PANIC lines.
  Heartbeats are kept one day, so a longer window has them for its last day only (the report says so);
* **the control topic**: quarantines, retransmissions, table resyncs, accepted gaps, operators'
  intents (delays, pauses), refused records;
* **the archive**: the redo topic's offsets, the commit times it spans, and its size.

:class:`Tally` does the arithmetic (pure; tests feed it directly); :func:`collect` reads Kafka.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common.config import ArkConfig
from common.control import ControlRecord
from common.errors import ArkError
from common.kafka import make_consumer, offset_for_time, read_range, topic_exists, watermarks
from schemas import envelope
from schemas.control import (
    Pause,
    Resume,
    ResyncTable,
    Retransmit,
    RetransmitDone,
    RetransmitFailed,
    SetDelay,
    SourceGap,
    TableResynced,
    TableResyncStarted,
)
from schemas.entries import REDO_SCHEMA, TxnChunk, from_record
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import heartbeat_topic, redo_topic

log = logging.getLogger(__name__)

HOUR_S = 3600
#: A heartbeat in one of these states counts as a second of trouble.
TROUBLE_STATES = frozenset({"error", "retrying", "awaiting-retransmit", "stopped"})


def hour_of(ts_s: float) -> str:
    """The hour a moment falls in, ISO-8601 UTC (``2026-12-01T10:00Z``)."""
    return datetime.fromtimestamp(int(ts_s // HOUR_S * HOUR_S), UTC).strftime("%Y-%m-%dT%H:00Z")


def iso(ts_s: float | None) -> str | None:
    return None if not ts_s else datetime.fromtimestamp(ts_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]


@dataclass
class _TableHour:
    transactions: int = 0
    rows: int = 0
    bytes: float = 0.0
    ops: Counter[str] = field(default_factory=Counter)


@dataclass
class _StandbyHour:
    lags: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)
    delays: list[float] = field(default_factory=list)
    trouble_beats: int = 0
    last_trouble: str = ""


class Tally:
    """Adds up entries, heartbeats and control records of one window (see the module docstring)."""

    def __init__(self, group: str, since_s: float, until_s: float) -> None:
        self.group, self.since_s, self.until_s = group, since_s, until_s
        self.by_table_hour: dict[tuple[str, str], _TableHour] = defaultdict(_TableHour)
        self.hour_txns: Counter[str] = Counter()
        self.hour_bytes: Counter[str] = Counter()
        self.entries = 0
        self.republished = 0
        self.epochs: set[int] = set()
        self._newest_key = b""
        self._skipping: str | None = None
        self._txn_tables: dict[str, set[str]] = {}
        self.standby_hours: dict[tuple[str, str], _StandbyHour] = defaultdict(_StandbyHour)
        self._last_rows: dict[tuple[str, str], tuple[float, float]] = {}
        self._log_counts: dict[tuple[str, str], dict[str, float]] = {}
        self.log_lines: Counter[tuple[str, str]] = Counter()  # (node, severity) -> lines in the window
        self.events: Counter[str] = Counter()
        self.intents: list[dict[str, Any]] = []
        self.beats = 0
        self.first_beat_s: float | None = None

    # -- the redo topic --------------------------------------------------------------------------------
    def add_entry(self, ts_ms: int, size: int, body: Any, epoch: int) -> None:
        """One redo entry (its message timestamp is the source commit time)."""
        self.entries += 1
        self.epochs.add(epoch)
        hour = hour_of(ts_ms / 1000)
        self.hour_bytes[hour] += size
        if not isinstance(body, TxnChunk) or body.is_checkpoint:
            return
        if body.chunk_index == 0:
            # A retransmission republishes what the topic already holds: count each transaction once.
            republished = bool(body.commit.key) and body.commit.key <= self._newest_key
            self._skipping = body.txn_id if republished else None
            self.republished += republished
            self._newest_key = max(self._newest_key, body.commit.key)
        if self._skipping == body.txn_id:
            return
        tables = self._txn_tables.setdefault(body.txn_id, set())
        if body.part is not None:
            self.by_table_hour[(hour, body.part.table)].bytes += size
            tables.add(body.part.table)
        per_row = size / len(body.changes) if body.changes else 0.0
        for change in body.changes:
            th = self.by_table_hour[(hour, change.table)]
            th.rows += 1
            th.bytes += per_row
            th.ops[str(change.op)] += 1
            tables.add(change.table)
        if body.last:
            self.hour_txns[hour] += 1
            for table in self._txn_tables.pop(body.txn_id, set()):
                self.by_table_hour[(hour, table)].transactions += 1

    # -- heartbeats ------------------------------------------------------------------------------------
    def add_beat(self, beat: dict[str, Any]) -> None:
        """One heartbeat (in the order they were sent)."""
        at = beat["sent_at_us"] / 1e6
        if not self.since_s <= at <= self.until_s:
            return
        self.beats += 1
        self.first_beat_s = at if self.first_beat_s is None else min(self.first_beat_s, at)
        key = (beat["agent"], beat["name"])
        metrics = beat.get("metrics") or {}
        hour = hour_of(at)
        if beat["agent"] == "apply":
            sh = self.standby_hours[(beat["name"], hour)]
            sh.lags.append(float(beat.get("lag_seconds", 0.0)))
            sh.delays.append(float(beat.get("delay_seconds", 0.0)))
            rows = float(metrics.get("rows", 0.0))
            last = self._last_rows.get(key)
            if last is not None and at > last[0] and rows >= last[1]:
                sh.rates.append((rows - last[1]) / (at - last[0]))
            self._last_rows[key] = (at, rows)
            if beat["state"] in TROUBLE_STATES:
                sh.trouble_beats += 1
                sh.last_trouble = beat.get("message", "")
        node = beat["name"]
        before = self._log_counts.get(key)
        now = {s: float(metrics.get(f"log.{s.lower()}", 0.0)) for s in ("PANIC", "FATAL", "ERROR")}
        if before is not None:
            for severity, value in now.items():
                # counters restart with the agent: a drop means a restart, and the new value is all new
                grew = value - before[severity] if value >= before[severity] else value
                self.log_lines[(node, severity)] += int(grew)
        self._log_counts[key] = now

    # -- control records --------------------------------------------------------------------------------
    def add_record(self, rec: ControlRecord) -> None:
        at = rec.issued_at_us / 1e6
        if not self.since_s <= at <= self.until_s:
            return
        body = rec.body
        kinds = {Retransmit: "quarantines", RetransmitDone: "retransmissions", RetransmitFailed: "retransmits_failed",
                 TableResyncStarted: "resyncs_started", TableResynced: "resyncs_done", SourceGap: "gaps_accepted"}
        for cls, name in kinds.items():
            if isinstance(body, cls):
                self.events[name] += 1
        if isinstance(body, SetDelay | Pause | Resume | ResyncTable):
            what = {SetDelay: lambda b: f"delay {b.seconds:g} s", Pause: lambda b: "pause",
                    Resume: lambda b: "resume", ResyncTable: lambda b: f"resync {b.table}"}[type(body)](body)
            self.intents.append({"at": iso(at), "by": rec.issued_by, "target": rec.target or "all", "intent": what})

    # -- the document ----------------------------------------------------------------------------------
    def document(self, archive: dict[str, Any], refused: dict[str, int] | None = None) -> dict[str, Any]:
        # every hour of the window, empty ones too (a chart's hours are contiguous), and any entry's hour
        window = [hour_of(t) for t in range(int(self.since_s // HOUR_S * HOUR_S), int(self.until_s) + 1, HOUR_S)]
        hours = sorted(set(window) | {h for h, _t in self.by_table_hour} | set(self.hour_txns) | set(self.hour_bytes))
        tables: dict[str, _TableHour] = defaultdict(_TableHour)
        hourly_tables = []
        for (hour, table), th in sorted(self.by_table_hour.items()):
            total = tables[table]
            total.transactions += th.transactions
            total.rows += th.rows
            total.bytes += th.bytes
            total.ops.update(th.ops)
            hourly_tables.append({"hour": hour, "table": table, "transactions": th.transactions, "rows": th.rows,
                                  "bytes": round(th.bytes)})
        rows_by_hour: Counter[str] = Counter()
        for (hour, _table), th in self.by_table_hour.items():
            rows_by_hour[hour] += th.rows
        standbys: dict[str, list[dict[str, Any]]] = defaultdict(list)
        all_lags: dict[str, list[float]] = defaultdict(list)
        for (name, hour), sh in sorted(self.standby_hours.items()):
            all_lags[name].extend(sh.lags)
            standbys[name].append({
                "hour": hour, "lag_p50_s": percentile(sh.lags, 0.5), "lag_p95_s": percentile(sh.lags, 0.95),
                "lag_p99_s": percentile(sh.lags, 0.99), "lag_max_s": max(sh.lags, default=None),
                "apply_rows_per_s": round(sum(sh.rates) / len(sh.rates), 1) if sh.rates else None,
                "apply_rows_per_s_max": round(max(sh.rates), 1) if sh.rates else None,
                "delay_s": max(sh.delays, default=None), "error_s": sh.trouble_beats, "last_error": sh.last_trouble})
        notes = []
        if self.first_beat_s is None:
            notes.append("no heartbeats in the window: lag, apply rate and errors are unknown")
        elif self.first_beat_s > self.since_s + 2 * HOUR_S:
            notes.append(f"heartbeats are kept one day: lag and apply rate cover {iso(self.first_beat_s)} onwards")
        return {
            "group": self.group, "generated_at": iso(time.time()), "since": iso(self.since_s),
            "until": iso(self.until_s),
            "totals": {"transactions": sum(self.hour_txns.values()), "rows": sum(t.rows for t in tables.values()),
                       "bytes": sum(self.hour_bytes.values()), "entries": self.entries,
                       "republished_transactions": self.republished, "tables": len(tables),
                       "epochs": sorted(self.epochs)},
            "hours": [{"hour": h, "transactions": self.hour_txns[h], "rows": rows_by_hour[h],
                       "bytes": self.hour_bytes[h]} for h in hours],
            "tables": [{"table": t, "transactions": v.transactions, "rows": v.rows, "inserts": v.ops["INSERT"],
                        "updates": v.ops["UPDATE"], "deletes": v.ops["DELETE"], "truncates": v.ops["TRUNCATE"],
                        "bytes": round(v.bytes)} for t, v in sorted(tables.items())],
            "hourly_tables": hourly_tables,
            "standbys": [{"name": n, "lag_p50_s": percentile(all_lags[n], 0.5),
                          "lag_p99_s": percentile(all_lags[n], 0.99), "lag_max_s": max(all_lags[n], default=None),
                          "error_s": sum(h["error_s"] for h in hs), "hours": hs} for n, hs in sorted(standbys.items())],
            "events": {k: self.events[k] for k in ("quarantines", "retransmissions", "retransmits_failed",
                                                   "resyncs_started", "resyncs_done", "gaps_accepted")},
            "intents": self.intents,
            "control_refused": dict(refused or {}),
            "server_log": [{"node": n, "severity": s, "lines": int(c)} for (n, s), c in sorted(self.log_lines.items())
                           if c],
            "archive": archive,
            "notes": notes,
        }


# -- reading Kafka -------------------------------------------------------------------------------------
def _read_redo(cfg: ArkConfig, tally: Tally, since_s: float, progress: Any) -> dict[str, Any]:
    topic = redo_topic(cfg.group)
    archive: dict[str, Any] = {"topic": topic}
    if not topic_exists(cfg.kafka, topic):
        archive["message"] = "the redo topic does not exist yet"
        return archive
    consumer = make_consumer(cfg.kafka, group_id="ark-report")
    try:
        low, high = watermarks(consumer, topic)
        start = max(low, offset_for_time(cfg.kafka, topic, int(since_s * 1000)))
        archive.update(low_offset=low, high_offset=high, entries_in_window=0)
        first_ts = last_ts = None
        seen, shown = 0, time.monotonic()
        for msg in read_range(consumer, topic, start, high, timeout=30):
            value = msg.value() or b""
            size = len(value) + sum(len(h[0]) + len(h[1] or b"") for h in msg.headers() or [])
            _kind, ts = msg.timestamp()
            first_ts = ts if first_ts is None else first_ts
            last_ts = ts
            seen += 1
            try:
                dec = envelope.decode(value, msg.headers(), topic=topic, partition=0, offset=msg.offset(),
                                      expect=REDO_SCHEMA)
                entry = from_record(dec.record)
            except CorruptEntry:
                tally.events["corrupt_entries_seen"] += 1
                continue
            tally.add_entry(ts, size, entry.body, entry.epoch)
            if time.monotonic() - shown >= 2.0:
                progress(f"read {seen} of {high - start} redo entries")
                shown = time.monotonic()
        archive["entries_in_window"] = seen
        window_bytes = sum(tally.hour_bytes.values())
        archive["bytes_in_window"] = window_bytes
        total = high - low
        if start <= low:
            archive["bytes"], archive["bytes_estimated"] = window_bytes, False
        elif seen:
            archive["bytes"], archive["bytes_estimated"] = round(window_bytes / seen * total), True
        archive["oldest_commit"] = iso(_oldest_ts(consumer, topic, low, high, first_ts if start <= low else None))
        archive["newest_commit"] = iso(last_ts / 1000) if last_ts else None
        oldest, newest = archive["oldest_commit"], archive["newest_commit"]
        if oldest and newest:
            span = datetime.fromisoformat(newest).timestamp() - datetime.fromisoformat(oldest).timestamp()
            archive["span_hours"] = round(span / 3600, 2)
    finally:
        consumer.close()
    return archive


def _oldest_ts(consumer: Any, topic: str, low: int, high: int, known_ms: int | None) -> float | None:
    if known_ms is not None:
        return known_ms / 1000
    for msg in read_range(consumer, topic, low, high, timeout=10):
        return float(msg.timestamp()[1]) / 1000
    return None


def _read_heartbeats(cfg: ArkConfig, tally: Tally, since_s: float) -> None:
    topic = heartbeat_topic(cfg.group)
    if not topic_exists(cfg.kafka, topic):
        return
    key = cfg.control_key_bytes()
    consumer = make_consumer(cfg.kafka, group_id="ark-report")
    try:
        low, high = watermarks(consumer, topic)
        start = max(low, offset_for_time(cfg.kafka, topic, int(since_s * 1000)))
        for msg in read_range(consumer, topic, start, high, timeout=30):
            try:
                envelope.check_signature(msg.value(), msg.headers(), key)
                beat = envelope.decode(msg.value(), msg.headers(), topic=topic, offset=msg.offset()).record
            except (NotAuthentic, CorruptEntry):
                continue
            tally.add_beat(beat)
    finally:
        consumer.close()


def collect(cfg: ArkConfig, since_s: float, until_s: float | None = None, progress: Any = None) -> dict[str, Any]:
    """The report document for the window ``[now - since_s, until]`` (reads Kafka)."""
    from common.control import ControlChannel
    from schemas.topics import control_topic

    until = time.time() if until_s is None else until_s
    since = until - since_s
    note = progress or (lambda _text: None)
    tally = Tally(cfg.group, since, until)
    note("reading the redo topic")
    archive = _read_redo(cfg, tally, since, note)
    note("reading heartbeats")
    _read_heartbeats(cfg, tally, since)
    refused: dict[str, int] = {}
    if topic_exists(cfg.kafka, control_topic(cfg.group)):
        channel = ControlChannel.for_config(cfg)
        try:
            for rec in channel.replay(timeout=60):
                tally.add_record(rec)
            refused = dict(channel.refused)
        finally:
            channel.close()
    doc = tally.document(archive, refused)
    if tally.events["corrupt_entries_seen"]:
        doc["events"]["corrupt_entries_seen"] = tally.events["corrupt_entries_seen"]
    return doc


# -- output --------------------------------------------------------------------------------------------
CSV_COLUMNS = ["section", "hour", "name", "transactions", "rows", "bytes", "lag_p50_s", "lag_p95_s", "lag_p99_s",
               "lag_max_s", "apply_rows_per_s", "delay_s", "error_s"]


def to_csv(doc: dict[str, Any]) -> str:
    """One CSV: a ``total`` row per hour, a ``table`` row per hour and table, a ``standby`` row per hour and
    standby (``name`` is the table or the standby)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for h in doc["hours"]:
        writer.writerow({"section": "total", "name": "", **h})
    for row in doc["hourly_tables"]:
        writer.writerow({"section": "table", "name": row["table"], **row})
    for sb in doc["standbys"]:
        for h in sb["hours"]:
            writer.writerow({"section": "standby", "name": sb["name"], **h})
    return out.getvalue()


def write_report(cfg: ArkConfig, *, since_s: float, fmt: str, path: Path | None, progress: Any = None) -> str:
    """Collect and render the report as ``fmt`` (json, csv, html, text); write it to ``path`` when given."""
    doc = collect(cfg, since_s, progress=progress)
    if fmt == "json":
        text = json.dumps(doc, indent=2)
    elif fmt == "csv":
        text = to_csv(doc)
    elif fmt == "html":
        from ops.report_html import render_html

        text = render_html(doc)
    else:
        from ops.report_html import render_text

        text = render_text(doc)
    if path is not None:
        try:
            path.write_text(text)
        except OSError as exc:
            raise ArkError(f"cannot write the report to {path}: {exc.strerror or exc}",
                           fix="give a writable path") from None
    return text


def run_every(cfg: ArkConfig, *, since_s: float, every: str, to_dir: Path, progress: Any = None) -> None:
    """Write an HTML and a JSON report into ``to_dir`` every ``every``, until interrupted (apscheduler)."""
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    from ops.context import console, report_error
    from ops.purge import parse_duration
    from ops.report_html import render_html

    interval = parse_duration(every)
    try:
        to_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArkError(f"cannot create {to_dir}: {exc.strerror or exc}", fix="give a writable --to DIR") from None

    def round_() -> None:
        try:
            doc = collect(cfg, since_s, progress=progress)
            stem = to_dir / f"ark-report-{cfg.group}-{datetime.now(UTC).strftime('%Y%m%dT%H%MZ')}"
            stem.with_suffix(".html").write_text(render_html(doc))
            stem.with_suffix(".json").write_text(json.dumps(doc, indent=2))
            console.print(f"wrote {stem}.html and .json; next report in {every}", soft_wrap=True)
        except ArkError as exc:
            report_error(exc)
        except OSError as exc:
            console.print(f"could not write the report: {exc}; trying again in {every}", soft_wrap=True)

    scheduler = BlockingScheduler()
    scheduler.add_job(round_, IntervalTrigger(seconds=interval), next_run_time=datetime.now(UTC), max_instances=1,
                      coalesce=True, misfire_grace_time=int(interval))
    scheduler.start()
