"""One apply session: the redo log → CRC check → delay gate → grouped, exactly-once apply.

Rebuilt from the standby's state row after any failure (:mod:`consumers.runner`). Small complete
transactions are grouped into one target transaction (commit order kept, none split); a transaction
of several chunks is applied chunk by chunk in one open target transaction and commits at its last
chunk. The state row is written in the same target transaction as the data.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from common import monitor
from common.control import ControlChannel
from common.errors import ArkError
from common.redo import EndOfLog, RedoReader, RedoRecord
from consumers.base import Applier, ApplyState
from consumers.gate import batch_full, wait_seconds
from consumers.hooks import Boundary
from consumers.recovery import cut_mark, cut_passed
from consumers.schema_change import Applied, apply_change
from schemas import positions
from schemas.entries import (
    EpochMarker,
    Op,
    RowChange,
    SchemaChange,
    SequenceValues,
    TableMeta,
    TxnChunk,
)
from schemas.errors import CorruptEntry
from schemas.redo_codec import DecodedEntry, decode_entry

if TYPE_CHECKING:
    from consumers.runner import ApplyRunner

log = logging.getLogger(__name__)

#: How long an entry at or after a recovery point waits (the loop looks again every 0.2 s).
HOLD_S = 3600.0
#: Seconds between control polls when no hook is urgent, and between end-offset refreshes.
CONTROL_POLL_S = 0.5
WATERMARK_POLL_S = 1.0


class Stopped(Exception):
    """The agent is stopping; the session ended at a transaction boundary with everything committed."""


class NotAStandby(Exception):
    """The node is the primary of the entry's epoch (its own writes) or no longer a standby: the session ended
    with everything before committed, and applies nothing more until the roles say it is a standby again."""


class _Entry:
    """A verified, decoded redo entry (decoded once, even when held for the delay)."""

    __slots__ = ("body", "commit_time_us", "epoch", "source_position")

    def __init__(self, dec: DecodedEntry) -> None:
        self.body = dec.entry.body
        self.epoch = dec.epoch
        self.source_position = dec.source_position
        self.commit_time_us = dec.commit_time_us  # the envelope's commit time: every kind of entry has one


class ApplySession:
    """One connection's worth of applying (see the module docstring)."""

    def __init__(self, runner: ApplyRunner, applier: Applier, reader: RedoReader, channel: ControlChannel,
                 metas: dict[str, TableMeta], state: ApplyState) -> None:
        self.r = runner
        self.applier = applier
        self.reader = reader
        self.channel = channel
        self.metas = metas
        self.state = state           # what the standby holds (committed)
        self.pending = state         # what the next commit writes
        self.topic = runner.redo.topic
        self.open = False            # a target transaction is open
        self.in_txn: TxnChunk | None = None  # a multi-chunk source transaction is being applied
        self.batch_txns = 0
        self.batch_rows = 0
        self.batch_started = 0.0
        self.last_control = 0.0
        self.last_watermark = 0.0
        self._paused = False
        # Rows of complete small transactions of the open batch, applied together at flush.
        self.buffer: list[RowChange] = []
        self.buffer_from: TxnChunk | None = None
        self.buffer_to: TxnChunk | None = None
        self.ddl_applied = Applied()  # schema changes of the open source transaction (applied once each)
        self.commit_after_txn = False  # a schema change needs its transaction committed before the next one
        self.boundary = Boundary(applier=applier, metas=metas, pending=lambda: self.pending,
                                 committed=lambda: self.state, begin=self._begin, commit=self._commit,
                                 tick=self._housekeeping, stopping=runner.stopping, report=self._report)

    def _report(self, state: str) -> None:
        self.r.state = state
        self.r.beat_now()

    # -- the loop ----------------------------------------------------------------------------------
    def loop(self) -> None:
        held: tuple[int, _Entry] | None = None  # (offset, decoded entry) not yet due
        hooks = self.r.hooks
        while True:
            self._housekeeping()
            if self.in_txn is None:
                for hook in hooks:
                    hook.at_boundary(self.boundary)
                if self.r.stopping.is_set():
                    self._commit()
                    raise Stopped
                if self.r.paused:
                    self._commit()
                    self.r.state = "paused"
                    time.sleep(0.2)
                    continue
            if held is not None:
                offset, dec = held
                wait = self._wait_for(dec)
                if wait > 0:
                    self._pause()
                    self.r.state = "held" if self.r.until_us else "delayed"
                    time.sleep(min(wait, 0.2))  # wake up for control intents (delay changes) and stop
                    continue
                held = None
                self._unpause(offset)
                self._handle(offset, dec)
                continue
            record = self._next(0.0 if self.open else 0.2)
            if not all(hook.admit(record, self.state.position_key) for hook in hooks):
                continue  # e.g. awaiting a retransmission: nothing is applied, the state row does not move
            if record is None:
                if self.in_txn is None:
                    self._commit()
                continue
            dec = self._decode(record)
            if self.in_txn is None and self._wait_for(dec) > 0:
                self._commit()  # make what is applied durable and visible before waiting
                held = (record.offset, dec)
                continue
            self._handle(record.offset, dec)

    def _wait_for(self, dec: _Entry) -> float:
        """Seconds until a decoded entry is due: commit time + delay, for every kind of entry between two
        transactions (a transaction's start, a table's shape, a checkpoint, and any kind added later), so that
        nothing becomes visible on a delayed standby before its commit + D (guarantee 5). An entry the standby
        has already applied (a re-read range) is due at once. With a recovery point (``apply-until``,
        consumers/recovery.py) everything committed before it is due at once, and nothing from it on."""
        body = dec.body
        until = self.r.until_us
        if isinstance(body, TxnChunk):
            if body.chunk_index != 0:
                return 0.0  # the rest of a transaction whose start was due
            if self.pending.position_key and body.commit.key <= self.pending.position_key:
                return 0.0
            if until:
                return HOLD_S if body.commit_time_us >= until else 0.0
            return wait_seconds(body.commit_time_us, self.r.delay, time.time())
        if isinstance(body, EpochMarker):
            # A marker changes nothing visible, and the new primary's first commits can precede its start marker
            # (it is written once the new capture runs): holding it would hold them past commit + D.
            return 0.0
        if until and dec.commit_time_us > 0:
            return HOLD_S if dec.commit_time_us >= until else 0.0
        if not self.r.delay or dec.commit_time_us <= 0:
            return 0.0
        at = positions.parse_text(dec.source_position) if dec.source_position else None
        if at is not None and self.pending.position_key and at.key <= self.pending.position_key:
            return 0.0
        return wait_seconds(dec.commit_time_us, self.r.delay, time.time())

    def _pause(self) -> None:
        if not self._paused:
            self.reader.pause()  # drops the prefetched backlog: nothing is spooled
            self._paused = True

    def _unpause(self, held_offset: int) -> None:
        if self._paused:
            self.reader.resume(held_offset + 1)
            self._paused = False

    def _next(self, timeout: float) -> RedoRecord | None:
        got = self.reader.poll(timeout)
        if isinstance(got, EndOfLog):
            if self.in_txn is None and self.r.retransmits.awaiting is None and got.offset > self.pending.next_offset:
                # Transaction markers take offsets too: at the end of the log, everything below the
                # end offset has been consumed, so the state may point past trailing markers.
                self._advance_offset_only(got.offset - 1)
            return None
        return got

    def _housekeeping(self) -> None:
        now = time.monotonic()
        urgent = any(hook.urgent() for hook in self.r.hooks)
        if now - self.last_control >= (0.01 if urgent else CONTROL_POLL_S):
            self.last_control = now
            records = self.channel.poll()
            if records:
                self.r.on_control(records)
        if now - self.last_watermark >= WATERMARK_POLL_S:
            self.last_watermark = now
            try:
                self.r.end_offset = self.reader.end_hint()
            except ArkError as exc:
                log.debug("end offset not refreshed: %s", exc)

    # -- entries -----------------------------------------------------------------------------------
    def _verified(self, record: RedoRecord) -> DecodedEntry:
        return decode_entry(record.value, record.headers, topic=self.topic, partition=0, offset=record.offset)

    def _decode(self, record: RedoRecord) -> _Entry:
        try:
            return _Entry(self._verified(record))
        except CorruptEntry as first:
            # Read it again: the damage may have been in transit or in memory.
            monitor.count("crc_failures")
            log.warning("%s; re-reading it", first)
            self.reader.seek(record.offset)
            again = self.reader.poll(10.0)
            if isinstance(again, RedoRecord) and again.offset == record.offset:
                try:
                    return _Entry(self._verified(again))
                except CorruptEntry as second:
                    record, first = again, second
            # Still corrupt: never applied. Quarantine it, ask the capture for it again, and end the session
            # (its open transaction rolls back); the next one awaits the retransmission.
            raise self.r.retransmits.request(record, first, self.state) from None

    def _handle(self, offset: int, dec: _Entry) -> None:
        """Apply one decoded entry (it is due)."""
        body = dec.body
        self.r.current_offset = offset
        for hook in self.r.hooks:
            hook.before_entry(offset, self.pending, self.topic)
        if isinstance(body, EpochMarker):
            self._marker(offset, body)
            return
        cut = self.r.roles.cuts.get(dec.epoch)
        if cut is not None and offset >= cut.from_offset and self.in_txn is None:
            # Cut out of the group's history by a point-in-time failover: consumed, never applied.
            self._advance_offset_only(offset)
            self.pending = replace(self.pending, extra={**self.pending.extra, "cut": cut_mark(cut)})
            return
        if dec.epoch < self.r.max_epoch:
            log.warning("rejecting entry at offset %d from epoch %d (newest epoch %d)", offset, dec.epoch,
                        self.r.max_epoch)
            self._advance(offset, None)
            return
        if self._own_epoch(dec.epoch):
            self._commit()
            log.warning("standby %s stops before redo offset %d: epoch %d is its own reign (it is the primary)",
                        self.r.name, offset, dec.epoch)
            raise NotAStandby
        if isinstance(body, TableMeta):
            self._meta(offset, body)
        elif isinstance(body, TxnChunk):
            self._handle_chunk(offset, body)
        elif isinstance(body, SchemaChange):
            self._schema_change(offset, body)
        elif isinstance(body, SequenceValues):
            self._sequences(offset, body)

    def _sequences(self, offset: int, body: SequenceValues) -> None:
        """Move the standby's sequences forward (never back), in the transaction that records the offset."""
        self._flush()
        self._begin()
        moved = self.applier.advance_sequences(body.values)
        log.debug("offset %d: %d of %d sequences moved forward", offset, moved, len(body.values))
        self._advance(offset, None)

    def _own_epoch(self, epoch: int) -> bool:
        """Whether ``epoch`` is this node's own reign (by the markers read, or by the roles)."""
        roles = self.r.roles
        named = self.r.epoch_primaries.get(epoch) or (roles.primary_of(epoch) if 0 < epoch <= roles.epoch else "")
        return named == self.r.name

    def _marker(self, offset: int, marker: EpochMarker) -> None:
        """An epoch marker: the newest epoch (persisted with the state row: older entries are rejected even
        after a restart); a new epoch's positions are its own primary's, so the position floor starts over."""
        p = self.pending
        if marker.new_epoch > p.epoch:
            # A point-in-time cut of the ending epoch is recorded before its marker is written: read the control
            # topic to its end now, so that a standby that applied past the cut is caught here.
            records = self.channel.replay() if self.r.roles.epoch < marker.new_epoch else []
            if records:
                self.r.on_control(records)
            cut = self.r.roles.cuts.get(p.epoch)
            if cut is not None and p.extra.get("cut") != cut_mark(cut) and p.next_offset > cut.from_offset \
                    and self.r.roles.primary_of(cut.epoch + 1) != self.r.name:
                self._commit()
                raise cut_passed(self.r.name, cut, p.next_offset)
        self.r.max_epoch = max(self.r.max_epoch, marker.new_epoch)
        self._begin()
        p = self.pending
        if marker.new_epoch > p.epoch:
            self._flush()
            # The epoch's primary is kept with the state row: after a restart, this node still knows that the
            # entries of an epoch it was named primary of are its own writes.
            self.pending = replace(p, next_offset=offset + 1, epoch=marker.new_epoch, position_key=b"",
                                   position=f"epoch {marker.new_epoch}",
                                   extra={**p.extra, "epoch_primary": f"{marker.new_epoch}:{marker.primary}"})
            log.info("standby %s: epoch %d begins at redo offset %d (primary %s)", self.r.name, marker.new_epoch,
                     offset, marker.primary)
        else:
            self._advance(offset, None)
        self._commit()
        # Known only once applied: a node named primary by a marker it has not applied yet would wait as the primary
        # and never apply it, and the failover waits for it to (F23: the broker died while the control topic was
        # read above, the session started again, and the failover timed out after 120 s).
        self.r.epoch_primaries[marker.new_epoch] = marker.primary

    def _meta(self, offset: int, meta: TableMeta) -> None:
        previous = self.metas.get(meta.table)
        if previous is not None and self._already_in_force(meta):
            self._advance(offset, None)
            return
        if any(hook.on_meta(meta, previous, offset) for hook in self.r.hooks):
            self.metas[meta.table] = meta  # a table being resynced: not adapted here
            self._advance(offset, None)
            return
        if previous is None or previous.version != meta.version:
            self._flush()  # rows before a shape change are applied with the old shape
            if not self.applier.transactional_ddl:
                # The engine's DDL commits by itself (it runs beside the target transaction): make what precedes
                # it durable first, with its state row, so that no crash can leave older rows to be applied
                # again on the new shape. Inside a multi-chunk transaction _commit waits; see _handle_chunk.
                self._commit()
            self._begin()
            self.applier.apply_table_meta(self.r.cfg.group, meta, previous)
            self.metas[meta.table] = meta
        self._advance(offset, None)

    def _schema_change(self, offset: int, change: SchemaChange) -> None:
        """A DDL of the primary, inside its source transaction (consumers/schema_change.py)."""
        txn = self.in_txn
        if txn is None or change.commit.key != txn.commit.key:
            if self.pending.position_key and change.commit.key <= self.pending.position_key:
                self._advance_offset_only(offset)  # its transaction was applied before (or is below the floor)
                return
            raise CorruptEntry(f"a schema change ({change.tag}) of transaction {change.commit.text} outside it",
                               topic=self.topic, partition=0, offset=offset, source_position=change.commit.text)
        if self.ddl_applied.first(change):
            self._flush()
            self._begin()
            self.commit_after_txn |= apply_change(
                change, group=self.r.cfg.group, applier=self.applier, metas=self.metas, hooks=self.r.hooks,
                resyncs=self.r.resyncs, follow_drop=self.r.standby.follow_drop, offset=offset)
        self._advance_offset_only(offset)

    def _already_in_force(self, meta: TableMeta) -> bool:
        """Whether ``meta`` belongs to a transaction the standby has applied (a retransmitted range
        repeats old shapes): this shape, or a newer one, is already in force and must not be re-applied."""
        at = positions.parse_text(meta.position) if meta.position else None
        return at is not None and bool(self.pending.position_key) and at.key <= self.pending.position_key

    def _handle_chunk(self, offset: int, chunk: TxnChunk) -> None:
        if self.in_txn is None:
            if self.pending.position_key and chunk.commit.key <= self.pending.position_key:
                self._advance(offset, None)  # applied before (or below the initial-sync floor)
                return
            if chunk.chunk_index != 0:
                raise CorruptEntry(f"chunk {chunk.chunk_index} of transaction {chunk.txn_id} without its start",
                                   topic=self.topic, partition=0, offset=offset, source_position=chunk.commit.text)
            for hook in self.r.hooks:
                if hook.blocks(chunk):  # e.g. ark verify: stop at this boundary (consumers/hold.py)
                    self._commit()
                    hook.before_txn(chunk, self.boundary)
            if not chunk.last and not self.applier.transactional_ddl:
                # A multi-chunk transaction may meet a shape change between its chunks, when no commit is
                # possible: its target transaction must then hold nothing of earlier source transactions.
                self._commit()
        elif chunk.commit.key != self.in_txn.commit.key or chunk.chunk_index != self.in_txn.chunk_index + 1:
            raise CorruptEntry(f"expected chunk {self.in_txn.chunk_index + 1} of transaction {self.in_txn.txn_id}, "
                               f"found chunk {chunk.chunk_index} of {chunk.txn_id}", topic=self.topic,
                               partition=0, offset=offset, source_position=chunk.commit.text)
        self._begin()
        if chunk.part is not None:
            self._flush()
            self.applier.store_part(chunk.part)  # a part of a large value: its row follows in a later chunk
        changes: Sequence[RowChange] = chunk.changes
        for hook in self.r.hooks:
            changes = hook.rows(offset, chunk, self.r.max_epoch, changes)  # e.g. rows of resyncing tables wait
        precise = offset <= self.r.precise_until
        if changes:
            if chunk.last and chunk.chunk_index == 0 and not precise:
                # A whole small transaction: group it with the others of the batch.
                self.buffer.extend(changes)
                self.buffer_from = self.buffer_from or chunk
                self.buffer_to = chunk
            else:
                self._flush()
                self.applier.apply_rows(self.metas, changes, chunk.txn_id, chunk.commit.text)
            self.batch_rows += len(changes)
            self.r.applied_rows += len(changes)
        if not chunk.last:
            self.in_txn = chunk
            self._advance_offset_only(offset)
            return
        self.in_txn = None
        self.batch_txns += 1
        self._advance(offset, chunk)
        if precise or self.commit_after_txn or batch_full(self.batch_txns, self.batch_rows,
                                                           time.monotonic() - self.batch_started, self.r.limits):
            self._commit()

    def _flush(self) -> None:
        """Apply the buffered rows of the batch's small transactions, in one call.

        Source order is kept per table. When the standby has no foreign keys between the tables
        involved, rows are grouped by table (stable), so that runs become long enough for the
        set-based path; the whole batch commits as one target transaction either way.
        """
        if not self.buffer:
            return
        changes = self.buffer
        tables = {c.table for c in changes}
        truncates = any(c.op is Op.TRUNCATE for c in changes)  # a TRUNCATE checks foreign keys even in a replica
        if len(tables) > 1 and not truncates and self.applier.independent_tables(tables):
            order = {t: i for i, t in enumerate(dict.fromkeys(c.table for c in changes))}
            changes = sorted(changes, key=lambda c: order[c.table])
        first, last = self.buffer_from, self.buffer_to
        assert first is not None and last is not None
        txns = first.txn_id if first is last else f"{first.txn_id}..{last.txn_id}"
        where = first.commit.text if first is last else f"{first.commit.text}..{last.commit.text}"
        self.buffer, self.buffer_from, self.buffer_to = [], None, None
        self.applier.apply_rows(self.metas, changes, txns, where)

    # -- the target transaction and the state row --------------------------------------------------
    def _begin(self) -> None:
        if not self.open:
            self.applier.begin()
            self.open = True
            self.batch_started = time.monotonic()
            if self.r.state in ("delayed", "starting"):
                self.r.state = "running"

    def _advance_offset_only(self, offset: int) -> None:
        self.pending = replace(self.pending, next_offset=offset + 1)

    def _advance(self, offset: int, chunk: TxnChunk | None) -> None:
        if chunk is None:
            self._advance_offset_only(offset)
            return
        p = self.pending
        self.pending = replace(
            p, next_offset=offset + 1, position=chunk.commit.text, position_key=chunk.commit.key,
            epoch=max(p.epoch, self.r.max_epoch), commit_time_us=chunk.commit_time_us,
            applied_at_us=time.time_ns() // 1000, applied_txns=p.applied_txns + (0 if chunk.is_checkpoint else 1))

    def _commit(self) -> None:
        """Save the state row and commit the target transaction (data and position together)."""
        if self.in_txn is not None:
            return
        if not self.open:
            if self.pending.next_offset != self.state.next_offset:
                self.applier.begin()  # only skipped entries: still record the new offset
                self.open = True
            else:
                return
        self._flush()
        self.applier.save_state(self.pending, previous=self.state)  # compare-and-set: never moves it backwards
        self.applier.commit()
        self.open = False
        self.state = self.pending
        self.r.applied = self.pending
        self.batch_txns = self.batch_rows = 0
        self.commit_after_txn = False
        self.reader.report(self.pending.next_offset)  # informational offsets, for lag tools
