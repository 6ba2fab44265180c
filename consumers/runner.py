"""The apply runner: redo topic → CRC check → delay gate → grouped, exactly-once apply.

Exactly once (guarantee 2): the standby's state row (next offset, commit position, epoch) is written
in the same database transaction as the data, and the runner resumes from it. Consumer-group
offsets are committed afterwards for lag tools only. Delayed apply (guarantee 5) holds at most one
message: while it is not due, the partition is paused (librdkafka drops its prefetch) and nothing
is spooled, so the delay can change at run time, even backwards, within retention.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from common.config import ArkConfig, StandbySettings
from common.control import ControlReader, current_delay, is_paused
from common.errors import ArkError, ConfigError, TargetError
from common.heartbeat import HeartbeatPublisher
from common.kafka import make_consumer, watermarks
from consumers.base import Applier, ApplyState
from consumers.errors import DataApplyError, TableNeedsResync, TransientApplyError
from consumers.gaps import SourceGap, SourceGaps
from consumers.gate import BatchLimits, batch_full, lag_seconds, wait_seconds
from consumers.hold import VerifyHold
from consumers.quarantine import RetransmitFailed, RetransmitPending, Retransmits
from consumers.retention import RetentionGap, check_retention
from consumers.table_resync import TableResyncs, unanswered_requests
from schemas import envelope, positions
from schemas.entries import REDO_SCHEMA, EpochMarker, RowChange, TableMeta, TxnChunk, from_record
from schemas.errors import CorruptEntry
from schemas.topics import redo_topic

log = logging.getLogger(__name__)


class NotSynced(ArkError):
    """The standby has no state row: it was never brought up with an initial sync."""

    exit_code = 10


class _Stop(Exception):
    pass


class ApplyRunner:
    """Applies one group's redo topic to one standby until ``stop()``."""

    def __init__(self, cfg: ArkConfig, standby: StandbySettings, applier_factory: Callable[[], Applier]) -> None:
        self.cfg = cfg
        self.standby = standby
        self.topic = redo_topic(cfg.group)
        self._factory = applier_factory
        self._stop = threading.Event()
        self.delay = standby.delay_seconds
        self.paused = False
        self.state = "starting"
        self.message = ""
        self.applied: ApplyState | None = None
        self.end_offset = 0
        self.max_epoch = 0
        self.applied_rows = 0
        self._limits = BatchLimits(standby.batch_max_txns, standby.batch_max_rows)
        self._heartbeat: HeartbeatPublisher | None = None
        self.retransmits = Retransmits(cfg, standby.name, self)  # corrupt entries (consumers/quarantine.py)
        self.hold = VerifyHold(cfg.kafka, cfg.group, standby.name)  # ark verify (consumers/hold.py)
        self.resyncs = TableResyncs(cfg, standby, applier_factory, self.topic,  # consumers/table_resync.py
                                    committed=lambda: self.applied.next_offset if self.applied else -1)
        self.current_offset = -1  # the redo offset being handled (named in data errors)
        self.gaps = SourceGaps(standby.name)  # accepted holes in the source's log (consumers/gaps.py)
        self.precise_until = -1  # up to this offset, one source transaction per target transaction

    def settings_changed(self) -> None:
        """Publish a heartbeat now, so that status shows an operator's change at once."""
        if self._heartbeat is not None:
            self._heartbeat.beat_now()

    def stop(self) -> None:
        """Finish the current batch and stop."""
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        """Heartbeat fields."""
        st = self.applied
        next_offset = st.next_offset if st else -1
        return {
            "epoch": self.max_epoch, "state": self.state,
            "message": "; ".join(m for m in (self.message, self.resyncs.describe()) if m),
            "source_position": st.position if st else "",
            "applied_offset": next_offset - 1 if st else -1,
            "applied_commit_time_us": st.commit_time_us if st else 0,
            "lag_entries": max(0, self.end_offset - next_offset) if st else 0,
            "lag_seconds": lag_seconds(st.commit_time_us, next_offset, self.end_offset, time.time()) if st else 0.0,
            "delay_seconds": self.delay,
            "metrics": {"rows": float(self.applied_rows), "txns": float(st.applied_txns if st else 0)},
        }

    def run(self) -> None:
        """Apply until stopped. Data errors and missing sync propagate; transient errors are retried."""
        heartbeat = HeartbeatPublisher(self.cfg.kafka, self.cfg.group, agent="apply", name=self.standby.name,
                                       role="standby", snapshot=self.snapshot)
        heartbeat.start()
        self._heartbeat = heartbeat
        control = ControlReader(self.cfg.kafka, self.cfg.group)
        records = control.replay()
        self.delay = current_delay(records, self.standby.name, self.standby.delay_seconds)
        self.paused = is_paused(records, self.standby.name)
        self.resyncs.on_control(unanswered_requests(records, self.standby.name))
        self.gaps.on_control(records)
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._session(control)
                    backoff = 1.0
                except (ConfigError, NotSynced, DataApplyError, CorruptEntry, TableNeedsResync, RetentionGap,
                        RetransmitFailed, SourceGap) as caught:
                    exc = self._recover(caught)
                    if exc is None:
                        continue  # a table resync takes over, or the failing transaction is looked for
                    self.state, self.message = "error", str(exc)
                    heartbeat.beat_now()
                    if exc is caught:
                        raise
                    raise exc from None
                except (TransientApplyError, TargetError) as exc:
                    self._retry_wait(heartbeat, exc, backoff)
                    backoff = min(backoff * 2, 30.0)
                except Exception as exc:  # noqa: BLE001 - loop boundary: anything else is retried
                    self._retry_wait(heartbeat, exc, backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.state = "stopped"
            self.resyncs.close()
            heartbeat.stop()
            control.close()

    def _recover(self, exc: Exception) -> Exception | None:
        """None when a failed session may go on; else the error to stop with (policy on_data_error)."""
        if isinstance(exc, TableNeedsResync):
            if not self.resyncs.may_resync(exc.table, self.applied):
                return exc  # the same table again from the same offset: stop rather than loop
            self.resyncs.request(exc.table, exc.reason, offset=self.current_offset)
            return None
        if not isinstance(exc, DataApplyError):
            return exc
        if self.standby.on_data_error == "resync-table" and self.resyncs.may_resync(exc.table, self.applied):
            self.resyncs.request(exc.table, f"data error: {exc.message}", offset=self.current_offset)
            return None
        if ".." in exc.txn_id and self.precise_until < self.current_offset:
            # The failure is somewhere in a group of source transactions: apply them one at a time to name it.
            log.warning("data error in grouped transactions %s; re-applying them one by one", exc.txn_id)
            self.precise_until = self.current_offset
            return None
        return DataApplyError(f"{exc.message} [redo entry {self.topic}[0]@{self.current_offset}]", fix=exc.fix,
                              table=exc.table, txn_id=exc.txn_id, position=exc.position, key=exc.key)

    def _retry_wait(self, heartbeat: HeartbeatPublisher, exc: BaseException, backoff: float) -> None:
        self.state, self.message = "retrying", f"{type(exc).__name__}: {exc}"
        log.warning("apply to %s interrupted: %s; retrying in %.0f s", self.standby.name, self.message, backoff)
        heartbeat.beat_now()
        self._stop.wait(backoff)

    def _session(self, control: ControlReader) -> None:
        applier = self._factory()
        consumer: Consumer | None = None
        try:
            applier.prepare()
            state = applier.load_state(self.cfg.group, self.standby.name)
            if state is None:
                raise NotSynced(f"standby {self.standby.name} has never been synced for group {self.cfg.group}",
                                fix=f"run 'ark sync {self.standby.name}' first (online; the primary keeps running)")
            self.applied = state
            metas = applier.load_table_metas(self.cfg.group)
            self.resyncs.attach(applier, metas)
            consumer = make_consumer(self.cfg.kafka, group_id=f"ark-apply-{self.cfg.group}-{self.standby.name}")
            check_retention(consumer, self.topic, self.standby.name, state)
            consumer.assign([TopicPartition(self.topic, 0, state.next_offset)])
            self.state, self.message = "running", ""
            _Session(self, applier, consumer, control, metas, state).loop()
        except (_Stop, RetransmitPending):
            return  # after RetransmitPending the next session awaits the retransmission
        finally:
            applier.rollback()
            applier.close()
            if consumer is not None:
                consumer.close()


class _Entry:
    """A verified, decoded redo entry (decoded once, even when held for the delay)."""

    __slots__ = ("body", "epoch", "source_position")

    def __init__(self, dec: envelope.Decoded) -> None:
        self.body = from_record(dec.record).body
        self.epoch = dec.epoch
        self.source_position = dec.source_position


class _Session:
    """One connection's worth of applying; rebuilt from the state row after any failure."""

    def __init__(self, runner: ApplyRunner, applier: Applier, consumer: Consumer, control: ControlReader,
                 metas: dict[str, TableMeta], state: ApplyState) -> None:
        self.r = runner
        self.applier = applier
        self.consumer = consumer
        self.control = control
        self.metas = metas
        self.state = state
        self.tp = TopicPartition(runner.topic, 0)
        self.open = False            # a target transaction is open
        self.in_txn: TxnChunk | None = None  # a multi-chunk source transaction is being applied
        self.batch_txns = 0
        self.batch_rows = 0
        self.batch_started = 0.0
        self.pending = state
        self.last_control = 0.0
        self.last_watermark = 0.0
        self._paused = False
        # Rows of complete small transactions of the open batch, applied together at flush.
        self.buffer: list[RowChange] = []
        self.buffer_from: TxnChunk | None = None
        self.buffer_to: TxnChunk | None = None

    def loop(self) -> None:
        held: tuple[int, _Entry] | None = None  # (offset, decoded entry) not yet due
        while True:
            self._housekeeping()
            if self.in_txn is None and self.r.hold.needs_ack():
                self._commit()  # verify: answer from a committed state, then nothing new until P is known
                self.r.hold.ack(self.pending)
            if self.in_txn is None:
                self.r.resyncs.at_boundary(self.applier, self.metas, self.pending, self._begin, self._commit)
            if self.r._stop.is_set() and self.in_txn is None:
                self._commit()
                raise _Stop
            if self.r.paused and self.in_txn is None:
                self._commit()
                self.r.state = "paused"
                time.sleep(0.2)
                continue
            if held is not None:
                offset, dec = held
                wait = self._wait_for(dec)
                if wait > 0:
                    self._pause()
                    self.r.state = "delayed"
                    time.sleep(min(wait, 0.2))  # wake up for control intents (delay changes) and stop
                    continue
                held = None
                self._unpause(offset)
                self._handle(offset, dec)
                continue
            msg = self._next(0.0 if self.open else 0.2)
            if self.r.retransmits.awaiting is not None and self.r.retransmits.skip(msg, self.state.position_key):
                continue  # awaiting a retransmission: nothing is applied, the state row does not move
            if msg is None:
                if self.in_txn is None:
                    self._commit()
                continue
            offset = msg.offset() or 0
            dec = self._decode(msg)
            if self.in_txn is None and self._wait_for(dec) > 0:
                self._commit()  # make what is applied durable and visible before waiting
                held = (offset, dec)
                continue
            self._handle(offset, dec)

    def _wait_for(self, dec: _Entry) -> float:
        """Seconds until a decoded entry is due (0 for anything but the start of a new transaction)."""
        body = dec.body
        if not isinstance(body, TxnChunk) or body.is_checkpoint or body.chunk_index != 0:
            return 0.0
        if self.pending.position_key and body.commit.key <= self.pending.position_key:
            return 0.0
        return wait_seconds(body.commit_time_us, self.r.delay, time.time())

    def _pause(self) -> None:
        if not self._paused:
            self.consumer.pause([self.tp])  # drops the prefetched backlog: nothing is spooled
            self._paused = True

    def _unpause(self, held_offset: int) -> None:
        if self._paused:
            self.consumer.resume([self.tp])
            self.consumer.seek(TopicPartition(self.r.topic, 0, held_offset + 1))
            self._paused = False

    def _next(self, timeout: float) -> Message | None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return None
        error = msg.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.warning("redo topic: %s", error)
            elif self.in_txn is None and self.r.retransmits.awaiting is None \
                    and (msg.offset() or 0) > self.pending.next_offset:
                # Transaction markers take offsets too: at the end of the log, everything below the
                # end offset has been consumed, so the state may point past trailing markers.
                self._advance_offset_only((msg.offset() or 0) - 1)
            return None
        return msg

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now - self.last_control >= self.r.hold.control_interval:
            self.last_control = now
            records = self.control.poll()
            if records:
                self.r.hold.on_control(records)
                self.r.resyncs.on_control(records)
                self.r.gaps.on_control(records)
                self.r.delay = current_delay(records, self.r.standby.name, self.r.delay)
                self.r.paused = is_paused(records, self.r.standby.name, self.r.paused)
                if self.r.paused is False and self.r.state == "paused":
                    self.r.state = "running"
                self.r.settings_changed()
        if now - self.last_watermark >= 1.0:
            self.last_watermark = now
            with contextlib.suppress(ArkError):
                self.r.end_offset = watermarks(self.consumer, self.r.topic, 0, timeout=2.0)[1]

    def _decode(self, msg: Message) -> _Entry:
        return _Entry(self._decode_raw(msg))

    @staticmethod
    def _verified(msg: Message) -> envelope.Decoded:
        return envelope.decode(msg.value(), msg.headers(), topic=msg.topic(), partition=msg.partition(),
                               offset=msg.offset(), expect=REDO_SCHEMA)

    def _decode_raw(self, msg: Message) -> envelope.Decoded:
        try:
            return self._verified(msg)
        except CorruptEntry as first:
            # Re-read once from the broker: the damage may have been in transit or in memory.
            log.warning("%s; re-reading it", first)
            offset = msg.offset() or 0
            self.consumer.seek(TopicPartition(self.r.topic, 0, offset))
            again = self.consumer.poll(10.0)
            if again is not None and not again.error() and again.offset() == offset:
                try:
                    return self._verified(again)
                except CorruptEntry as second:
                    msg, first = again, second
            # Still corrupt: never applied. Quarantine it, ask the capture for it again, and end the session
            # (its open transaction rolls back); the next one awaits the retransmission.
            raise self.r.retransmits.request(msg, first, self.state) from None

    def _handle(self, offset: int, dec: _Entry) -> None:
        """Apply one decoded entry (it is due)."""
        body = dec.body
        self.r.current_offset = offset
        self.r.gaps.check(offset, self.pending.position_key, self.r.topic)
        if isinstance(body, EpochMarker):
            self.r.max_epoch = max(self.r.max_epoch, body.new_epoch)
            self._advance(offset, None)
            return
        if dec.epoch < self.r.max_epoch:
            log.warning("rejecting entry at offset %d from epoch %d (newest epoch %d)", offset, dec.epoch,
                        self.r.max_epoch)
            self._advance(offset, None)
            return
        if isinstance(body, TableMeta):
            previous = self.metas.get(body.table)
            if previous is not None and self._already_in_force(body):
                self._advance(offset, None)
                return
            if self.r.resyncs.shape_changed(body, previous, offset):  # a resyncing table: not adapted here
                self.metas[body.table] = body
                self._advance(offset, None)
                return
            if previous is None or previous.version != body.version:
                self._flush()  # rows before a shape change are applied with the old shape
                if not self.applier.transactional_ddl:
                    self._commit()  # the engine's DDL commits by itself: make what precedes it durable first
                self._begin()
                self.applier.apply_table_meta(self.r.cfg.group, body, previous)
                self.metas[body.table] = body
            self._advance(offset, None)
            return
        if isinstance(body, TxnChunk):
            self._handle_chunk(offset, body)

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
                                   topic=self.r.topic, partition=0, offset=offset,
                                   source_position=chunk.commit.text)
            if self.r.hold.blocks(chunk):  # ark verify: stop at this boundary (consumers/hold.py)
                self._commit()
                self.r.hold.wait(chunk, self.pending, self._housekeeping, self.r, self.r._stop)
        elif chunk.commit.key != self.in_txn.commit.key or chunk.chunk_index != self.in_txn.chunk_index + 1:
            raise CorruptEntry(f"expected chunk {self.in_txn.chunk_index + 1} of transaction {self.in_txn.txn_id}, "
                               f"found chunk {chunk.chunk_index} of {chunk.txn_id}", topic=self.r.topic,
                               partition=0, offset=offset, source_position=chunk.commit.text)
        if self.in_txn is None and not chunk.last and not self.applier.transactional_ddl:
            # A multi-chunk transaction may meet a shape change between its chunks: its target transaction
            # must then hold nothing of earlier source transactions (see Applier.transactional_ddl).
            self._commit()
        self._begin()
        changes = self.r.resyncs.skip(offset, chunk, self.r.max_epoch)  # rows of resyncing tables wait
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
        if precise or batch_full(self.batch_txns, self.batch_rows, time.monotonic() - self.batch_started,
                                 self.r._limits):
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
        if len(tables) > 1 and self.applier.independent_tables(tables):
            order = {t: i for i, t in enumerate(dict.fromkeys(c.table for c in changes))}
            changes = sorted(changes, key=lambda c: order[c.table])
        first, last = self.buffer_from, self.buffer_to
        assert first is not None and last is not None
        txns = first.txn_id if first is last else f"{first.txn_id}..{last.txn_id}"
        where = first.commit.text if first is last else f"{first.commit.text}..{last.commit.text}"
        self.buffer, self.buffer_from, self.buffer_to = [], None, None
        self.applier.apply_rows(self.metas, changes, txns, where)

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
        self.applier.save_state(self.pending)
        self.applier.commit()
        self.open = False
        self.state = self.pending
        self.r.applied = self.pending
        self.batch_txns = self.batch_rows = 0
        try:
            self.consumer.commit(offsets=[TopicPartition(self.r.topic, 0, self.pending.next_offset)],
                                 asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - informational offsets only
            log.debug("consumer offset commit skipped: %s", exc)
