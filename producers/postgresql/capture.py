"""PostgreSQL capture: pgoutput (protocol v1) over the streaming replication protocol.

Positions are LSNs: ``Position(text="X/Y", key=lsn.to_bytes(8, "big"))``.

* ``TxnBegin.commit`` / ``TxnEnd.commit``: the LSN of the commit record (pgoutput's final_lsn).
* ``TxnEnd.confirm``: commit LSN + 1. Confirming it makes the slot skip exactly this transaction
  (PostgreSQL skips commits whose record starts before confirmed_flush_lsn) and nothing after it,
  since WAL records start 8-byte aligned. Unlike the commit's end LSN it is derived from the commit
  position that Kafka holds, which makes the gap check exact (see :meth:`PostgresCapture.stream`).
* ``Idle.position``: between transactions, the server's WAL position from the last keepalive or
  commit; everything before it that the publication covers has been yielded. ``None`` inside a
  transaction.

The slot advances only through :meth:`PostgresCapture.confirm` (see walstream.py for why psycopg2's
``read_message`` is not used). What the status updates say, and why (issue 19):

* ``write``: the WAL position received (the server's ``wal_end``). At shutdown a walsender exits only
  once the client's flush, or its write when the flush is invalid, equals what it sent.
* ``flush``: InvalidXLogRecPtr (0), except in the update of a confirm, which carries the confirmed
  position. PostgreSQL moves a logical slot only for a valid flush (``ProcessStandbyReplyMessage``
  calls ``LogicalConfirmReceivedLocation`` for it alone), so the slot still moves only on a confirm,
  and never backwards; and the walsender compares its position with ``write``, which it reaches.
  Reporting the (older) confirmed position as flush held every shutdown of the primary until
  ``wal_sender_timeout``, with the walsender spinning on pings.
* ``apply``: the confirmed position (``pg_stat_replication.replay_lsn``): what Kafka holds and the
  slot may forget once the retransmit window has passed over it.

Nothing of Ark keeps a regular session open on an idle primary: the catalog connection (relation
details, new-table discovery) is closed after ``META_IDLE_S`` unused, since a smart shutdown waits for
every regular session to end. :mod:`producers.postgresql.shutdown_watch` covers a stream loop that
cannot answer the walsender in time.

Table shapes and DDL (issue 9): Ark's DDL hook (:mod:`.hooks`) puts the catalog facts of every DDL in the
WAL, at the DDL's place (pgoutput 'M' messages, prefix ``ark.ddl``, requested with ``messages``), and keeps
them in ``ark_capture.shapes`` keyed by LSN. A Relation message is described with the facts in force at
its LSN (a message decoded earlier in this stream, else the recorded shapes), never the live catalog,
which may be ahead of the WAL being decoded; a hook message becomes a :class:`SchemaChange` at its place
(:mod:`.ddl_steps`). Without the hook (or before its first record), the live catalog is the fallback.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2

from common.config import ArkConfig
from common.engines.postgresql import IDENTITY_SQL, identity_from_row
from common.engines.postgresql_objects import replicated_objects, sequence_values
from common.errors import PrerequisiteError, SourceError
from common.identity import DatabaseIdentity
from producers.base import CaptureEvent, Idle, LogCapture, Problem, TxnBegin, TxnEnd
from producers.errors import SlotGapError, SourceDown
from producers.postgresql import catalog, hooks, pgoutput, policy, setup, wal
from producers.postgresql.ddl_steps import Scope, build_change
from producers.postgresql.describe import matching_relations
from producers.postgresql.hooks_sql import PREFIX
from producers.postgresql.pgoutput import lsn_from_text, lsn_to_text, row_relid
from producers.postgresql.relations import Rel, build_relation, row_change
from producers.postgresql.shapes import details_from_facts
from producers.postgresql.shutdown_watch import ShutdownWatch
from producers.postgresql.walstream import Keepalive, StreamError, WalStream
from schemas.entries import Op, Position, RowChange, SchemaChange, SequenceValue, SequenceValues

log = logging.getLogger(__name__)

POLL_S = 0.05  # longest wait on the socket before a drained Idle event (caught up, checkpoints of an idle source)
IDLE_EVERY_S = 0.5  # an Idle event at least this often, even while data flows
STATUS_EVERY_S = 10.0  # status updates keep the walsender from timing out
DISCOVER_EVERY_S = 2.0  # how often new tables are looked for (table-list publications only gain them so)
SEQUENCES_REFRESH_S = 30.0  # how often the set of replicated sequences is looked up again (and at each shape change)
META_IDLE_S = 0.25  # the catalog connection is closed after this long unused (a smart shutdown waits for it)
PRUNE_EVERY_S = 60.0  # how often recorded shapes no slot can decode again are forgotten
_ROW_TAGS = frozenset(b"IUD")


def lsn_position(lsn: int) -> Position:
    """The Position of an LSN."""
    return Position(lsn_to_text(lsn), lsn.to_bytes(8, "big"))


def position_lsn(position: Position) -> int:
    """The LSN of a Position made by :func:`lsn_position`."""
    return int.from_bytes(position.key, "big")


class PostgresCapture(LogCapture):
    """:class:`producers.base.LogCapture` for PostgreSQL (>= 10; built and tested on 15)."""

    engine = "postgresql"

    def __init__(self, cfg: ArkConfig) -> None:
        """Nothing is opened until a method needs the source."""
        self.cfg = cfg
        self._meta_conn: Any = None
        self._repl_conn: Any = None
        self._ws: WalStream | None = None
        self._confirmed = 0
        self._types: dict[int, str] = {}
        self._discovered_at = 0.0
        self._meta_used = 0.0
        self._sequences: tuple[str, ...] | None = None  # the replicated sequences, looked up now and then
        self._sequences_at = 0.0
        self._table_list = True  # the main publication lists its tables (set at set-up and stream start)
        self._hooked = False  # Ark's DDL hook is installed (its shapes are read at stream start)
        #: Facts of objects from hook messages decoded in this stream: oid -> (message LSN, facts).
        self._facts: dict[int, tuple[int, dict[str, Any]]] = {}
        self._policy_errors: set[str] = set()
        self._pruned_at = 0.0
        self.setup_actions: list[str] = []
        # Held while a connection is closed, and by the shutdown watch while it cuts sockets: a
        # descriptor is never cut after it was closed (and maybe reused by another socket).
        self._conn_lock = threading.Lock()

    # -- plumbing ----------------------------------------------------------------------------------
    def _meta(self) -> Any:
        if self._meta_conn is None or self._meta_conn.closed:
            self._close_meta()  # a lost connection is released under the lock, never by the collector
            self._meta_conn = catalog.connect(self.cfg)
        self._meta_used = time.monotonic()
        return self._meta_conn

    def _close_meta(self) -> None:
        with self._conn_lock:
            conn, self._meta_conn = self._meta_conn, None
            if conn is not None and not conn.closed:
                try:
                    conn.close()
                except psycopg2.Error:
                    log.debug("closing the catalog connection failed", exc_info=True)

    def _close_idle_meta(self, now: float) -> None:
        if self._meta_conn is not None and now - self._meta_used >= META_IDLE_S:
            self._close_meta()

    def _slot_state(self) -> catalog.SlotState | None:
        """The slot's row; a lost catalog connection (server restarted) is a SourceError, and dropped."""
        try:
            return catalog.slot_state(self._meta(), catalog.slot_of(self.cfg))
        except psycopg2.Error as exc:
            self._close_meta()
            raise catalog.source_error(self.cfg, exc) from None

    def _open_sockets(self) -> list[int]:
        """Descriptors of the open connections (for the shutdown watch; called under ``_conn_lock``)."""
        return [int(c.fileno()) for c in (self._repl_conn, self._meta_conn) if c is not None and not c.closed]

    def _where(self) -> str:
        p = self.cfg.primary
        return f"{p.user}@{p.host}:{p.port}/{p.dbname}"

    def _send_status(self, confirming: bool = False) -> None:
        """A status update: write = received, flush = invalid (the confirmed position on a confirm),
        apply = confirmed. See the module docstring for why."""
        ws = self._ws
        if ws is not None:
            c = self._confirmed
            ws.send_status(max(ws.received, c), c if confirming else 0, c)

    # -- LogCapture --------------------------------------------------------------------------------
    def nudge(self) -> None:
        """A status update asking for a reply: the walsender answers with a keepalive carrying its WAL end."""
        ws = self._ws
        if ws is not None:
            c = self._confirmed
            ws.send_status(max(ws.received, c), 0, c, reply_requested=True)

    def check_prerequisites(self) -> list[Problem]:
        """See :mod:`producers.postgresql.setup` for the rules."""
        try:
            return setup.problems(self._meta(), self.cfg)
        except psycopg2.Error as exc:
            raise catalog.source_error(self.cfg, exc) from None

    def log_report(self, *, settings: bool = True) -> tuple[str, list[Problem]]:
        """WAL the slot holds back, max_slot_wal_keep_size, free disk under pg_wal (see :mod:`.wal`)."""
        try:
            facts = wal.read_facts(self._meta(), catalog.slot_of(self.cfg), self.cfg.primary.host,
                                   self.cfg.capture.retransmit_window_s)
        except psycopg2.Error as exc:
            raise catalog.source_error(self.cfg, exc) from None
        return wal.summary(facts), wal.warnings(facts, settings=settings)

    def identity(self) -> DatabaseIdentity:
        """The cluster's system identifier and the database's oid."""
        try:
            return identity_from_row(catalog.query(self._meta(), IDENTITY_SQL)[0])
        except psycopg2.Error as exc:
            raise catalog.source_error(self.cfg, exc) from None

    def ensure_setup(self) -> list[str]:
        """Hooks, keyless policy, publications and slot (see :func:`setup.ensure`); refuse while a fatal
        prerequisite fails. Returns what it did to which tables."""
        fatal = [p for p in self.check_prerequisites() if p.fatal]
        if fatal:
            more = f" (and {len(fatal) - 1} more problems: run 'ark check')" if len(fatal) > 1 else ""
            raise PrerequisiteError(fatal[0].what + more, fix=fatal[0].fix)
        try:
            self.setup_actions = setup.ensure(self._meta(), self.cfg)
        except psycopg2.Error as exc:
            raise catalog.source_error(self.cfg, exc) from None
        return self.setup_actions

    def protection(self) -> list[Problem]:
        """Every table of ``primary.tables`` that is not fully protected, and a primary without the DDL hook."""
        try:
            conn = self._meta()
            superuser, _ = catalog.role_flags(conn)
            return policy.protection(conn, self.cfg) + setup.hook_problems(conn, superuser)
        except psycopg2.Error as exc:
            raise catalog.source_error(self.cfg, exc) from None

    def slot_positions(self) -> tuple[Position | None, Position | None]:
        """The slot's (confirmed_flush_lsn, restart_lsn); (None, None) when it does not exist."""
        state = self._slot_state()
        if state is None:
            return None, None
        flushed, restart = state.confirmed_flush_lsn, state.restart_lsn
        return (self.parse_position(flushed) if flushed else None,
                self.parse_position(restart) if restart else None)

    def retained_from(self) -> str:
        """The slot's confirmed_flush_lsn: the slot re-sends nothing that committed before it."""
        confirmed, _restart = self.slot_positions()
        return confirmed.text if confirmed is not None else ""

    def gap_after(self, resume_after: Position) -> str | None:
        """Why the slot can no longer supply everything after ``resume_after``, or None."""
        return self._hole(self._slot_state(), resume_after)

    def _hole(self, state: catalog.SlotState | None, resume_after: Position) -> str | None:
        slot, where = catalog.slot_of(self.cfg), self._where()
        if state is None:
            return (f"replication slot {slot} does not exist on {where}, but Kafka holds transactions up to "
                    f"{resume_after.text}: the history after it is lost")
        if state.wal_status == "lost":
            return f"replication slot {slot} on {where} was invalidated: its WAL after {resume_after.text} is gone"
        flushed = lsn_from_text(state.confirmed_flush_lsn or "0/0")
        # Our confirm positions are commit LSN + 1, so a slot that never went past what Kafka holds
        # stands at or below resume_after + 1. Beyond that, the slot skipped commits Kafka lacks.
        if flushed > position_lsn(resume_after) + 1:
            return (f"replication slot {slot} on {where} starts at {lsn_to_text(flushed)} but Kafka ends at "
                    f"{resume_after.text}: transactions committed in between are lost (slot dropped and recreated?)")
        return None

    def parse_position(self, text: str) -> Position:
        """``X/Y`` -> Position (ValueError for anything else)."""
        return lsn_position(lsn_from_text(text))

    def confirm(self, position: Position) -> None:
        """Let the slot forget everything before ``position``.

        Sent at once while a stream is open; otherwise kept, and sent when the next stream starts
        (which also skips the transactions it covers).
        """
        lsn = position_lsn(position)
        if lsn > self._confirmed:
            self._confirmed = lsn
            try:
                self._send_status(confirming=True)
            except StreamError as exc:
                raise SourceDown(f"PostgreSQL {self._where()}: {exc}",
                                  fix=f"is PostgreSQL running at {self.cfg.primary.host}:{self.cfg.primary.port}?"
                                  ) from None

    def close(self) -> None:
        """Close both connections (safe to call twice)."""
        self._ws = None
        with self._conn_lock:
            for conn in (self._repl_conn, self._meta_conn):
                if conn is not None and not conn.closed:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        log.debug("closing a source connection failed", exc_info=True)
            self._repl_conn = self._meta_conn = None

    # -- streaming ---------------------------------------------------------------------------------
    def _start(self, resume_after: Position | None) -> WalStream:
        slot, where = catalog.slot_of(self.cfg), self._where()
        state = self._slot_state()
        if state is None and resume_after is None:
            raise SourceError(f"replication slot {slot} does not exist on {where}",
                              fix="let capture create it (ensure_setup, run by 'ark capture')")
        hole = self._hole(state, resume_after) if resume_after is not None else None
        if hole is not None:
            raise SlotGapError(hole, fix="nothing after the gap is published. If the loss is accepted: "
                               "'ark capture --accept-gap' (capture resumes past it), then 'ark resync <standby>' "
                               "for every standby (each stops at the gap by itself)")
        assert state is not None
        flushed = lsn_from_text(state.confirmed_flush_lsn or "0/0")
        self._confirmed = max(self._confirmed, flushed)
        conn = catalog.connect(self.cfg, replication=True)
        self._repl_conn = conn
        # Start where Kafka ends: the server then skips (decodes, but neither formats nor sends) every
        # transaction that commits before it, instead of sending up to the retransmit window of WAL again
        # for the runner to skip. The slot's confirmed_flush_lsn is not changed by this (only a confirm
        # moves it); below it the server starts at it anyway.
        start_lsn = position_lsn(resume_after) if resume_after is not None else 0
        publications = self._publications()
        try:
            conn.cursor().start_replication(
                slot_name=slot, decode=False, start_lsn=start_lsn,
                options={"proto_version": "1", "publication_names": ",".join(publications), "messages": "true"})
        except psycopg2.Error as exc:
            text = " ".join(str(exc).split())
            if "is active for pid" in text.lower():
                raise SourceError(f"replication slot {slot} on {where} is in use: {text}",
                                  fix="another capture of this group is running; stop it first") from None
            if "publication" in text.lower() and "does not exist" in text.lower():
                raise SourceError(f"{where}: {text}", fix="let capture create it (ensure_setup)") from None
            raise catalog.source_error(self.cfg, exc) from None
        log.info("streaming slot %s from %s (publications %s; DDL hook %s)", slot, lsn_to_text(flushed),
                 ", ".join(publications), "installed" if self._hooked else "not installed: shapes from the catalog")
        ws = WalStream(conn)
        ws.received = flushed  # the walsender starts sending at the slot's confirmed_flush_lsn
        if self._confirmed > flushed:  # confirmed while no stream was open: tell the slot now
            c = self._confirmed
            ws.send_status(c, c, c)
        return ws

    def stream(self, resume_after: Position | None) -> Iterator[CaptureEvent]:
        """Yield events from the slot's confirmed position; see the module docstring for positions.

        Transactions whose commit is before ``resume_after`` (or before a position confirmed to
        this object) are skipped here; one whose commit
        equals it cannot be told from a new one at that very LSN (an Idle position may equal the
        next commit's LSN), so the runner skips it by comparing with Kafka.

        Raises SlotGapError when the slot is gone, invalidated, or stands past ``resume_after``
        (``resume_after`` must be the highest position durably recorded in Kafka: the last
        commit, or a confirmed Idle position the runner recorded). SourceError when the source
        cannot be reached.
        """
        ws = self._start(resume_after)
        self._ws = ws
        conn = self._repl_conn
        watch = ShutdownWatch(lambda: catalog.going_down(self.cfg), self._open_sockets, self._where(),
                              self._conn_lock).start()
        try:
            # Below the slot or below a position confirmed to this object, Kafka already has it.
            floor = self._confirmed if resume_after is None else max(self._confirmed, position_lsn(resume_after))
            yield from self._events(ws, floor, watch)
        except StreamError as exc:
            text = str(exc)
            if "invalidated" in text or "requested WAL segment" in text:
                raise SlotGapError(f"PostgreSQL {self._where()}: {text}",
                                   fix="run 'ark sync' to rebuild the standbys") from None
            p = self.cfg.primary
            if "invalid memory alloc request size" in text or "enlarge string buffer" in text:
                # PostgreSQL's own limit: a row sent as text must fit in 1 GB (README, "Values of any size").
                raise SourceError(f"PostgreSQL {self._where()} cannot send a row through logical decoding: it is "
                                  f"larger than 1 GB as text (a bytea value over about 512 MB is sent as hex, twice "
                                  f"its size); native logical replication stops there too ({text})",
                                  fix="the capture cannot pass this transaction: stop it, drop the slot so that it "
                                      f"starts after it (SELECT pg_drop_replication_slot('{catalog.slot_of(self.cfg)}')"
                                      "), run 'ark capture --accept-gap', then 'ark resync STANDBY' for every standby; "
                                      "keep such values in files beside the database (filesync)") from None
            if watch.cut_at is not None or _server_stopping(text):
                raise SourceDown(f"PostgreSQL {self._where()} ended the replication stream, shutting down or "
                                  f"restarting ({text}): capture resumes by itself once it is back",
                                  fix=f"nothing to do while PostgreSQL restarts; otherwise start it at "
                                      f"{p.host}:{p.port}") from None
            raise SourceDown(f"replication stream from {self._where()} failed: {text}",
                              fix=f"is PostgreSQL running at {p.host}:{p.port}?") from None
        finally:  # only this stream's own connection: an abandoned generator may be collected late
            watch.stop()
            if self._ws is ws:
                self._ws = None
            with self._conn_lock:
                if self._repl_conn is conn:
                    self._repl_conn = None
                if not conn.closed:
                    try:
                        conn.close()
                    except psycopg2.Error:
                        log.debug("closing the replication connection failed", exc_info=True)

    def _events(self, ws: WalStream, skip_below: int, watch: ShutdownWatch) -> Iterator[CaptureEvent]:
        rels: dict[int, Rel] = {}
        # Relation messages not described yet: the walsender sends them with no WAL position (only the row that
        # follows carries its LSN), and the shape is the one in force at that LSN.
        pending: dict[int, pgoutput.Relation] = {}
        announced: set[int] = set()
        parse, read = pgoutput.parse, ws.read
        wal_end, in_txn, skipping = self._confirmed, False, False
        ddl_seq = 0  # hook messages of the current transaction (numbers its schema changes)
        # A transaction is announced with its first event: one with nothing this capture publishes (a DDL on an
        # object out of scope) is not published at all, as pgoutput skips empty transactions.
        begin: TxnBegin | None = None
        commit_pos: Position | None = None
        last_idle = last_status = time.monotonic()
        fd = ws.fileno()
        count = 0
        unsaid = False  # transaction data was read since the last Idle
        while True:
            msg = read()
            if msg is None:
                watch.drained()
                if unsaid and not in_txn:
                    # Everything the server has sent is read, between transactions: say so at once (the session
                    # commits its Kafka transaction now, issue 13). No fixed window when the primary is quiet;
                    # under load more arrives while that commit runs, and the next batch groups it.
                    # Drained as much as the wait below: everything sent is read and (once the session commits) in
                    # Kafka; under steady load the 50 ms of silence below may never come, and the capture would never
                    # say it caught up with its source (lag measured from the source would grow while it keeps up).
                    unsaid = False
                    yield Idle(lsn_position(wal_end), drained=True)
                    continue
                if not select.select([fd], [], [], POLL_S)[0]:
                    last_idle = time.monotonic()
                    yield Idle(None if in_txn else lsn_position(wal_end), drained=not in_txn)
                    self._discover_tables(last_idle)
                    self._close_idle_meta(last_idle)
                    if last_idle - last_status >= STATUS_EVERY_S:
                        self._send_status()
                        last_status = last_idle
                continue
            count += 1
            if count & 255 == 0:
                now = time.monotonic()
                if now - last_idle >= IDLE_EVERY_S:
                    last_idle = now
                    yield Idle(None if in_txn else lsn_position(wal_end))
                    self._discover_tables(now)
                    self._close_idle_meta(now)
                if now - last_status >= STATUS_EVERY_S:
                    self._send_status()
                    last_status = now
            if isinstance(msg, Keepalive):
                wal_end = max(wal_end, msg.wal_end)
                if msg.reply:  # answered once per request: PostgreSQL sets the pace (no ping-pong)
                    self._send_status()
                    last_status = time.monotonic()
                # Not data: a keepalive answering a nudge must not turn the next drained Idle into an early one
                # (a reader that nudges on every Idle, as ark reinstate's decoder does, would never see it drained).
                continue
            unsaid = True
            payload = msg.payload
            if payload[0] in _ROW_TAGS:
                if skipping:
                    continue
                relid = row_relid(payload)
                if relid in pending:
                    rels[relid] = self._relation(pending.pop(relid), commit_pos, msg.data_start)
                rel = rels[relid]
                if begin is not None:
                    yield begin
                    begin = None
                if relid not in announced:
                    announced.add(relid)
                    yield rel.meta
                change = row_change(rel, parse(payload, rel.convs))  # type: ignore[arg-type]
                # A large message is a view of libpq's memory: let it go before the row is published.
                payload = msg = None  # type: ignore[assignment]
                yield change
                continue
            m = parse(payload)
            if isinstance(m, pgoutput.Begin):
                in_txn = True
                watch.txn_since = time.monotonic()
                skipping = m.final_lsn < skip_below
                commit_pos = lsn_position(m.final_lsn)
                ddl_seq = 0
                begin = None if skipping else TxnBegin(str(m.xid), commit_pos, pgoutput.pg_time_to_unix_us(m.commit_ts))
            elif isinstance(m, pgoutput.Commit):
                in_txn = False
                watch.txn_since = None
                wal_end = max(wal_end, m.end_lsn)
                if not skipping and commit_pos is not None and begin is None:
                    yield TxnEnd(commit_pos, lsn_position(m.commit_lsn + 1))
                skipping, begin = False, None
            elif isinstance(m, pgoutput.Relation):
                pending[m.relid] = m  # described at the LSN of the row or truncate that follows it
                announced.discard(m.relid)
            elif isinstance(m, pgoutput.Truncate):
                if not skipping:
                    if begin is not None:
                        yield begin
                        begin = None
                    for relid in m.relids:
                        if relid in pending:
                            rels[relid] = self._relation(pending.pop(relid), commit_pos, msg.data_start)
                        if relid not in announced:
                            announced.add(relid)
                            yield rels[relid].meta
                        yield RowChange(rels[relid].table, Op.TRUNCATE, [])
            elif isinstance(m, pgoutput.TypeInfo):
                self._types[m.oid] = f"{m.namespace}.{m.name}"
            elif isinstance(m, pgoutput.Message) and m.prefix == PREFIX and m.transactional and commit_pos:
                schema_change = self._hook_message(m, commit_pos, ddl_seq, skipping)
                ddl_seq += 1
                if schema_change is not None:
                    if begin is not None:
                        yield begin
                        begin = None
                    yield schema_change
            # Origin messages and other prefixes carry nothing Ark replicates.

    def sequence_values(self, refresh: bool = False) -> SequenceValues | None:
        """The replicated sequences' values (``pg_sequences``: no lock a writer waits for), on the catalog
        connection. Which sequences is looked up again every ``SEQUENCES_REFRESH_S`` and when ``refresh``."""
        now = time.monotonic()
        try:
            conn = self._meta()

            def query(sql: str, params: Any) -> list[tuple[Any, ...]]:
                return catalog.query(conn, sql, params)

            if refresh or self._sequences is None or now - self._sequences_at >= SEQUENCES_REFRESH_S:
                roots = [f"{nsp}.{rel}" for _oid, nsp, rel, _i in matching_relations(conn, self.cfg.primary.tables)]
                self._sequences = replicated_objects(query, roots).sequences
                self._sequences_at = now
            read_us, position, values = sequence_values(query, self._sequences)
        except psycopg2.Error as exc:
            self._close_meta()
            log.warning("could not read the sequences' values (published again at the next try): %s",
                        " ".join(str(exc).split()))
            return None
        return SequenceValues(read_us, tuple(SequenceValue(n, v) for n, v in values), position)

    def _discover_tables(self, now: float) -> None:
        """Every DISCOVER_EVERY_S: the keyless policy and new tables (the fallback of the DDL hook, which does it
        in the DDL's own transaction), the DDL the hook could not record, and old recorded shapes."""
        if now - self._discovered_at < DISCOVER_EVERY_S:
            return
        self._discovered_at = now
        try:
            conn = self._meta()
            done = policy.enforce(conn, self.cfg, self._table_list, may_resync=True)
            self._resync_failures(conn)
            if self._hooked and now - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = now
                pruned = hooks.prune(conn)
                if pruned:
                    log.debug("forgot %d recorded table shapes no slot can decode again", pruned)
        except (psycopg2.Error, SourceError) as exc:
            self._close_meta()
            text = " ".join(str(exc).split())
            # A server stopping or restarting ends the stream by itself: nothing to warn about. A lost
            # connection is opened again at the next look.
            lost = isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError, SourceError))
            level = logging.DEBUG if _server_stopping(text) else logging.INFO if lost else logging.WARNING
            log.log(level, "could not look for new tables to capture: %s", text)
            return
        for action in done.actions:
            log.info("keyless policy and new tables: %s", action)
        for failed in done.failed:
            if failed not in self._policy_errors:
                self._policy_errors.add(failed)
                log.warning("keyless policy: could not change %s (tried again every %g s)", failed, DISCOVER_EVERY_S)
        if done.resync:
            self._mark_resync(done.resync, "rows were written to it before the capture published it")

    def _mark_resync(self, tables: list[str], reason: str, failure: int | None = None) -> None:
        """Put a resync marker in the primary's WAL: every standby resyncs ``tables`` when it reaches it."""
        try:
            lsn = hooks.emit_resync(self._meta(), tables, reason, failure)
        except psycopg2.Error as exc:
            self._close_meta()
            log.error("could not request the resync of %s (%s); it is tried again", ", ".join(tables),
                      " ".join(str(exc).split()))
            return
        log.warning("%s: %s; every standby resyncs it (marker in the WAL at %s, recorded on the control topic by "
                    "each applier)", ", ".join(tables), reason, lsn)

    def _resync_failures(self, conn: Any) -> None:
        """DDL the hook could neither describe nor record in the WAL: resync the tables it named."""
        if not self._hooked:
            return
        for failure in hooks.failures(conn):
            tables = [t for t in failure.tables if any(fnmatch.fnmatchcase(t, p) for p in self.cfg.primary.tables)]
            log.error("Ark's DDL hook could not record a %s (%s)", failure.tag, failure.error)
            self._mark_resync(tables, f"Ark's DDL hook could not record a {failure.tag} on it", failure.id)

    def _publications(self) -> list[str]:
        """The publications to stream (main, and the insert-only one when it exists); notes the hook's state."""
        main, inserts = catalog.publication_of(self.cfg), hooks.inserts_publication_of(self.cfg)
        try:
            conn = self._meta()
            names = [main] + [inserts] if catalog.publication_tables(conn, inserts) is not None else [main]
            self._hooked = hooks.hook_state(conn).installed
            self._table_list = not catalog.query(conn, "SELECT 1 FROM pg_publication_namespace pn JOIN pg_publication "
                                                       "p ON p.oid = pn.pnpubid WHERE p.pubname = %s", (main,))
        except psycopg2.Error as exc:
            self._close_meta()
            raise catalog.source_error(self.cfg, exc) from None
        self._facts.clear()
        return names

    # -- hook messages and table shapes --------------------------------------------------------------
    def _hook_message(self, m: pgoutput.Message, commit: Position, seq: int, skipping: bool) -> SchemaChange | None:
        """Remember the facts a hook message carries; its SchemaChange (None when skipping or nothing to follow)."""
        try:
            payload = json.loads(m.content.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise SourceError(f"a message of Ark's DDL hook at {lsn_to_text(m.lsn)} is not readable JSON ({exc})",
                              fix="report this as a bug; the capture publishes nothing past it") from None
        for oid, facts in (payload.get("objects") or {}).items():
            if isinstance(facts, dict) and facts.get("kind") in ("table", "type", "sequence"):
                self._facts[int(oid)] = (m.lsn, facts)
        if skipping:
            return None
        scope = Scope(self.cfg.primary.tables, frozenset(self._publication_names()))
        change, notes = build_change(payload, commit=commit, seq=seq, scope=scope, type_names=self._types,
                                     before=lambda oid: self._facts_before(oid, m.lsn))
        for note in notes:
            log.info("%s", note)
        for problem in (a for a in payload.get("policy") or () if a.get("error")):
            log.warning("Ark's DDL hook could not apply the keyless policy to %s (%s): the capture does within %g s",
                        problem.get("table"), problem.get("error"), DISCOVER_EVERY_S)
        return change if change.steps or change.tables else None

    def _publication_names(self) -> list[str]:
        return [catalog.publication_of(self.cfg), hooks.inserts_publication_of(self.cfg)]

    def _facts_before(self, oid: int, lsn: int) -> dict[str, Any] | None:
        """The facts of ``oid`` in force just before WAL position ``lsn`` (None when unknown)."""
        return self._facts_at(oid, lsn - 1)

    def _facts_at(self, oid: int, lsn: int) -> dict[str, Any] | None:
        """The facts of ``oid`` in force at WAL position ``lsn``: from this stream's hook messages, else the
        recorded shapes, else None (the hook is not installed, or recorded nothing that old)."""
        known = self._facts.get(oid)
        if known is not None and known[0] <= lsn:
            return known[1]
        if not self._hooked:
            return None
        try:
            return hooks.shape_at(self._meta(), oid, lsn_to_text(lsn))
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._close_meta()
            raise catalog.source_error(self.cfg, exc) from None
        except psycopg2.Error as exc:
            log.warning("recorded shapes unreadable (%s): the live catalog describes relation %d", exc, oid)
            return None

    def _relation(self, r: pgoutput.Relation, at: Position | None, lsn: int) -> Rel:
        facts = self._facts_at(r.relid, lsn)
        if facts is not None and not facts.get("unknown"):
            return build_relation(r, details_from_facts(facts), self._types, at.text if at else "")
        details: catalog.ColumnDetails | None = None
        try:
            details = catalog.column_details(self._meta(), r.relid)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            # The connection is lost (the server is restarting): publishing the table without its
            # details would announce a different table. End the session; the next one reads it again.
            self._close_meta()
            raise catalog.source_error(self.cfg, exc) from None
        except psycopg2.Error as exc:
            log.warning("no catalog details for %s.%s (%s): nullability and key from the stream only",
                        r.namespace, r.name, exc)
        return build_relation(r, details, self._types, at.text if at else "")


def _server_stopping(text: str) -> bool:
    """True when an error's text says the server is stopping, restarting, or ended the stream so."""
    low = text.lower()
    return any(s in low for s in ("shutting down", "starting up", "ended the replication stream",
                                  "administrator command", "immediate shutdown"))
