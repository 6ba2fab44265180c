"""MariaDB capture: the binary log (ROW format, full images, full row metadata) read as a replica.

Positions (:func:`schemas.positions.mariadb_position`): ``binlog.000003:1234 gtid=0-1-42``; the key
is the file's sequence number and the offset, binlog order being commit order on one server, and the
GTID state is the server's at that offset (``BINLOG_GTID_POS``): what was written before it.

* ``TxnBegin.commit`` / ``TxnEnd.commit``: where the transaction's GTID event starts. The binlog
  writes a transaction whole at commit, so start positions increase in commit order too, and,
  unlike the end, the start is known before the first row (rows are yielded as they are decoded;
  a large transaction is never held whole).
* ``TxnEnd.confirm``: the end of its XID (commit) event, where the next transaction starts: the
  stream resumes there after a restart.
* ``Idle.position``: between transactions, where the reader stands in the binlog (heartbeats every
  ``primary.heartbeat_s`` wake it when the primary is idle).
* A snapshot at ``Binlog_snapshot_file:Binlog_snapshot_position`` P holds exactly the transactions
  that start before P (:mod:`.snapshot`); the sync floor sits just below P, as for PostgreSQL.

MariaDB has no replication slot: :meth:`MariaDBCapture.confirm` keeps nothing on the server, and the
binlog is kept by time (``binlog_expire_logs_seconds``). When the binlog the capture needs has
been purged, :meth:`MariaDBCapture.gap_after` names the missing GTID range and the capture refuses
to go on (exit 8), exactly as for a recreated PostgreSQL slot.

Transactions that touch no captured table produce no entry (an Idle checkpoint covers them);
TRUNCATE (DDL in MariaDB, carried as a statement) becomes a transaction with one TRUNCATE change;
shapes and DDL: :mod:`.shapes`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pymysql

from common.config import ArkConfig
from common.engines.mariadb import IDENTITY_SQL, identity_from_row
from common.errors import PrerequisiteError, SourceError
from common.identity import DatabaseIdentity
from producers.base import CaptureEvent, Idle, LogCapture, Problem, TxnBegin, TxnEnd
from producers.errors import SlotGapError, UnsupportedChange
from producers.mariadb import binlog, catalog, sequences
from producers.mariadb.gaps import gap_sentence, gtid_state_text, oldest_gtid_list, start_point
from producers.mariadb.node_ops import START_DB, START_TABLE
from producers.mariadb.rows import row_changes, rows_table_id
from producers.mariadb.setup import problems
from producers.mariadb.shapes import Shapes
from producers.mariadb.values import ValueDecodeError
from schemas.entries import Op, Position, RowChange, SequenceValues
from schemas.positions import mariadb_position, parse_mariadb

log = logging.getLogger(__name__)

IDLE_EVERY_S = 0.5  # an Idle event at least this often while data flows
SEQUENCES_REFRESH_S = 30.0  # how often the set of replicated sequences is looked up again (and at each shape change)
_GAP_FIX = ("nothing after the gap is published. Keep binlogs longer (binlog_expire_logs_seconds) than the "
            "longest capture outage. If the loss is accepted: 'ark capture --accept-gap', then 'ark resync "
            "<standby>' for every standby")


class MariaDBCapture(LogCapture):
    """:class:`producers.base.LogCapture` for MariaDB (built and tested on 10.11)."""

    engine = "mariadb"

    def __init__(self, cfg: ArkConfig) -> None:
        """Nothing is opened until a method needs the source."""
        self.cfg = cfg
        self.primary: Any = cfg.primary
        self._ctl: Any = None
        self._stream: binlog.BinlogStream | None = None
        self._confirmed: Position | None = None
        self._sequences: list[tuple[str, str]] | None = None  # (schema, name) of the replicated SEQUENCEs
        self._sequences_at = 0.0

    # -- plumbing ----------------------------------------------------------------------------------
    def _conn(self) -> Any:
        if self._ctl is None or not self._ctl.open:
            self._ctl = catalog.connect(self.primary)
        return self._ctl

    def _query(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        try:
            return catalog.query(self._conn(), sql, params)
        except pymysql.err.Error as exc:
            self._ctl = None
            raise catalog.source_error(self.primary, exc) from None

    # -- LogCapture --------------------------------------------------------------------------------
    def check_prerequisites(self) -> list[Problem]:
        """Binlog settings, privileges and table keys (see :mod:`.setup`)."""
        try:
            return problems(self._conn(), self.primary)
        except pymysql.err.Error as exc:
            raise catalog.source_error(self.primary, exc) from None

    def ensure_setup(self) -> None:
        """Nothing to create (no slot); refuses while a fatal prerequisite fails."""
        fatal = [p for p in self.check_prerequisites() if p.fatal]
        if fatal:
            more = f" (and {len(fatal) - 1} more problems: run 'ark check')" if len(fatal) > 1 else ""
            raise PrerequisiteError(fatal[0].what + more, fix=fatal[0].fix)

    def identity(self) -> DatabaseIdentity:
        """Which server this is (:data:`common.engines.mariadb.IDENTITY_SQL`: MariaDB has no server UUID)."""
        return identity_from_row(self._query(IDENTITY_SQL)[0])

    def parse_position(self, text: str) -> Position:
        """``FILE:OFFSET gtid=STATE`` -> Position (ValueError for anything else)."""
        file, offset, gtid = parse_mariadb(text.removeprefix("<"))
        return mariadb_position(file, offset, gtid)

    def current_position(self) -> Position:
        """Where the binlog ends now (``SHOW MASTER STATUS`` and ``@@gtid_binlog_pos``)."""
        rows = self._query("SHOW MASTER STATUS")
        if not rows:
            raise SourceError(f"MariaDB {catalog.where(self.primary)} has no binary log",
                              fix="start the server with log_bin (and binlog_format=ROW)")
        gtid = self._query("SELECT @@gtid_binlog_pos")[0][0] or ""
        return mariadb_position(str(rows[0][0]), int(rows[0][1]), str(gtid))

    def gap_after(self, resume_after: Position) -> str | None:
        """Why the server can no longer supply everything after ``resume_after``, or None."""
        try:
            return gap_sentence(self._conn(), self.primary, resume_after.text)
        except pymysql.err.Error as exc:
            self._ctl = None
            raise catalog.source_error(self.primary, exc) from None

    def retained_from(self) -> str:
        """Where the oldest binlog the server still holds starts (its GTID list is the state there)."""
        try:
            files = catalog.binary_logs(self._conn())
            if not files:
                return ""
            gtid = gtid_state_text(oldest_gtid_list(self._conn(), files[0]))
        except pymysql.err.Error as exc:
            self._ctl = None
            raise catalog.source_error(self.primary, exc) from None
        return mariadb_position(files[0], 4, gtid).text

    def confirm(self, position: Position) -> None:
        """Remember ``position``: MariaDB keeps its binlog by time, whatever its readers confirm."""
        if self._confirmed is None or position.key > self._confirmed.key:
            self._confirmed = position

    def sequence_values(self, refresh: bool = False) -> SequenceValues | None:
        """The replicated MariaDB SEQUENCEs' values (:func:`producers.mariadb.sequences.read_values`), on the
        control connection; which sequences is looked up again every ``SEQUENCES_REFRESH_S`` and when
        ``refresh``. None when they cannot be read now (logged; tried again next time); empty when there are none."""
        now = time.monotonic()
        try:
            conn = self._conn()
            if refresh or self._sequences is None or now - self._sequences_at >= SEQUENCES_REFRESH_S:
                self._sequences = sequences.replicated(conn, self.primary.tables)
                self._sequences_at = now
            # None of them is an answer too (an empty publication): a publish-sequences request (ark verify,
            # cutover, switchover) must be answered, or the capture asks the catalog again at every transaction.
            return sequences.read_values(conn, self._sequences)
        except (pymysql.err.Error, SourceError) as exc:
            self._ctl = None
            log.warning("could not read the sequences' values (published again at the next try): %s",
                        " ".join(str(exc).split()))
            return None

    def close(self) -> None:
        """Close both connections (safe to call twice)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._ctl is not None:
            try:
                self._ctl.close()
            except pymysql.err.Error:
                log.debug("closing the control connection failed", exc_info=True)
            self._ctl = None

    # -- streaming ---------------------------------------------------------------------------------
    def stream(self, resume_after: Position | None) -> Iterator[CaptureEvent]:
        """Yield events from just after ``resume_after`` (from the oldest binlog held when None).

        Raises SlotGapError when the binlog after ``resume_after`` was purged (or reset), naming the
        missing range; SourceError when the source cannot be reached.
        """
        conn = self._conn()
        if resume_after is None:
            resume_after = self._promoted_at()
        if resume_after is not None:
            hole = self.gap_after(resume_after)
            if hole is not None:
                raise SlotGapError(hole, fix=_GAP_FIX)
        file, pos, gtid = start_point(conn, resume_after.text if resume_after else None)
        if resume_after is None:
            log.info("no position in Kafka yet: reading the binlog from its oldest file %s (standbys skip what "
                     "their snapshot holds)", file)
        settings = self.primary
        stream = binlog.BinlogStream(catalog.connect_kwargs(settings), server_id=settings.server_id_for(self.cfg.group),
                                     heartbeat_s=settings.heartbeat_s)
        self._stream = stream
        try:
            stream.start(file, pos)
            log.info("reading the binlog of %s from %s:%d (GTID state %s)", catalog.where(settings), file, pos,
                     gtid or "empty")
            yield from self._events(stream, file, pos, gtid)
        except binlog.BinlogError as exc:
            if exc.code == 1236:
                hole = self.gap_after(resume_after) if resume_after is not None else None
                raise SlotGapError(hole or f"MariaDB {catalog.where(settings)}: {exc}", fix=_GAP_FIX) from None
            raise SourceError(f"binlog stream from {catalog.where(settings)} failed: {exc}",
                              fix="see the MariaDB error log") from None
        except pymysql.err.Error as exc:
            raise catalog.source_error(settings, exc) from None
        finally:
            if self._stream is stream:
                self._stream = None
            stream.close()

    def _promoted_at(self) -> Position | None:
        """Where this node's promotion (a switchover or failover) says its capture starts, when Kafka holds nothing
        of the epoch yet: the binlog position read while the node was still read-only (producers/mariadb/
        node_ops.py). MariaDB has no slot that would hold it, and its binlog before that point holds what the
        applier wrote as a standby, which the group has already. None on a node never promoted for the group."""
        found = self._query("SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                            (START_DB, "source_start"))
        rows = self._query(f"SELECT position FROM {START_TABLE} WHERE `group` = %s", (self.cfg.group,)) if found else []
        if not rows:
            return None
        text = rows[0][0].decode() if isinstance(rows[0][0], bytes) else str(rows[0][0])
        log.info("no position of this epoch in Kafka yet: starting where the promotion of %s recorded, %s",
                 self.primary.name, text)
        return self.parse_position(text)

    def _events(self, stream: binlog.BinlogStream, file: str, pos: int, gtid_text: str) -> Iterator[CaptureEvent]:
        shapes = Shapes(self._conn(), self.primary.tables, catalog.collations(self._conn()))
        gtids = dict(_parse_state(gtid_text))
        group_start: Position | None = None  # where the current GTID group starts (None between groups)
        group: binlog.Gtid | None = None
        begun = False  # a TxnBegin was yielded for the current group
        commit_us = 0
        last_idle = time.monotonic()
        while True:
            ev = stream.read()
            if ev is None:
                raise SourceError(f"MariaDB {catalog.where(self.primary)} ended the binlog stream",
                                  fix="the server is shutting down or killed the connection; capture retries")
            etype = ev.type
            if etype == binlog.ROTATE:
                file, pos = binlog.parse_rotate(ev.body)
                continue
            if etype == binlog.HEARTBEAT:
                if group is None:  # the server had nothing to send for heartbeat_s: drained
                    last_idle = time.monotonic()
                    yield Idle(mariadb_position(file, pos, gtid_state_text(gtids)), drained=True)
                continue
            start = pos
            if ev.next_pos and not ev.flags & binlog.ARTIFICIAL:
                pos = ev.next_pos
            if etype == binlog.GTID:
                group = binlog.parse_gtid(ev)
                if group.xa:
                    raise UnsupportedChange(f"XA transaction {group.text} at {file}:{start}: Ark does not capture "
                                            "XA transactions", fix="commit without XA on the primary")
                # A position's GTID state is the server's there (BINLOG_GTID_POS): before this transaction.
                group_start = mariadb_position(file, start, gtid_state_text(gtids))
                gtids[group.domain] = (group.server_id, group.seq)
                begun = False
                commit_us = min(time.time_ns() // 1000, (ev.timestamp + 1) * 1_000_000)
            elif etype == binlog.TABLE_MAP:
                meta = shapes.table_map(ev.body, group_start.text if group_start else "")
                if meta is not None:
                    if not begun and group is not None and group_start is not None:
                        begun = True  # a new shape belongs to its transaction, before the rows that use it
                        yield TxnBegin(group.text, group_start, commit_us)
                    yield meta
            elif etype in binlog.ROW_EVENTS:
                state = shapes.by_id.get(rows_table_id(ev.body))
                if state is None or group is None or group_start is None:
                    continue
                if not begun:
                    begun = True
                    yield TxnBegin(group.text, group_start, commit_us)
                try:
                    yield from row_changes(etype, ev.body, state)
                except ValueDecodeError as exc:
                    raise UnsupportedChange(f"{state.meta.table} at {file}:{start} ({group.text}): {exc}",
                                            fix="correct the value on the primary; the capture stops here") from None
            elif etype == binlog.XID or (etype == binlog.QUERY and _is_commit(ev.body)):
                if begun and group_start is not None:
                    yield TxnEnd(group_start, mariadb_position(file, pos, gtid_state_text(gtids)))
                    if stream.dry():
                        # Everything the server sent is read, between transactions: say so at once, so that the
                        # session commits its Kafka transaction now (issue 13: no fixed window when the primary is
                        # quiet; under load more arrives during that commit and the next batch groups it).
                        last_idle = time.monotonic()
                        yield Idle(mariadb_position(file, pos, gtid_state_text(gtids)), drained=True)
                group, group_start, begun = None, None, False
            elif etype == binlog.QUERY:
                query = binlog.parse_query(ev.body)
                if query.sql in ("BEGIN", "XA START"):
                    continue
                truncated = shapes.query(query, group_start.text if group_start else "")
                if truncated and group is not None and group_start is not None:
                    yield TxnBegin(group.text, group_start, commit_us)
                    for table in truncated:
                        yield RowChange(table, Op.TRUNCATE, [])
                    yield TxnEnd(group_start, mariadb_position(file, pos, gtid_state_text(gtids)))
                if group is not None and group.standalone:
                    group, group_start, begun = None, None, False
            elif etype in binlog.COMPRESSED:
                raise UnsupportedChange(f"compressed binlog event at {file}:{start}",
                                        fix="SET GLOBAL log_bin_compress = OFF on the primary")
            if group is None:
                now = time.monotonic()
                if now - last_idle >= IDLE_EVERY_S:
                    last_idle = now
                    yield Idle(mariadb_position(file, pos, gtid_state_text(gtids)))


def _is_commit(body: bytes) -> bool:
    sql = binlog.parse_query(body).sql.strip().upper()
    return sql in ("COMMIT", "ROLLBACK")


def _parse_state(text: str) -> Iterator[tuple[int, tuple[int, int]]]:
    for part in filter(None, (p.strip() for p in text.split(","))):
        domain, server, seq = (int(x) for x in part.split("-"))
        yield domain, (server, seq)
