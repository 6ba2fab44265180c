"""One capture session: the source's events → entries → Kafka transactions → confirmations to the source.

A session has a fresh writer, a fresh resume point and a fresh source stream; the runner
(:mod:`producers.runner`) starts a new one after any failure. Order of durability (guarantee 3):
entries are produced inside a Kafka transaction; only after the commit returns is a position handed to
the retransmit window (:class:`~producers.retransmit.ConfirmWindow`), which confirms it to the source
once it is older than ``capture.retransmit_window_s`` (guarantee 4). A session serving a retransmit
request (``plan``) re-reads the source from the requested position and tags what it republishes
(``ark-retransmit-from``) until it passes what Kafka already held (``upto``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from common.settings import CaptureSettings
from producers.base import CaptureEvent, Idle, LogCapture, TxnBegin, TxnEnd
from producers.errors import EntryTooLarge, SlotGapError
from producers.fragments import parts_of, row_bytes, split
from producers.publisher import HEADROOM_BYTES, MessageTooLarge, RedoPublisher
from producers.resume import ResumePoint
from producers.retransmit import ConfirmWindow, ServePlan
from schemas.entries import (
    EpochMarker,
    Position,
    RedoEntry,
    RowChange,
    SchemaChange,
    SequenceValues,
    TableMeta,
    TxnChunk,
)
from schemas.envelope import H_RETRANSMIT_FROM
from schemas.positions import just_before

log = logging.getLogger(__name__)

#: Publish a checkpoint of an idle source at most this often, so its log can be recycled.
CHECKPOINT_INTERVAL_S = 10.0
#: Sequence values are read about every heartbeat while transactions flow; with none, at most this often.
SEQUENCES_IDLE_S = 10.0
#: Sequences per SequenceValues entry (a few tens of bytes each: far below any message limit).
SEQUENCES_PER_ENTRY = 2000
#: While the source keeps sending (the stream never runs dry between transactions), a batch stays open this many
#: times as long as the last Kafka commit took (at most ``batch_max_ms``): at most a third of the time goes to
#: commits, and a fast broker gives a short window. Issue 13: batch only under load, and only as much as it pays.
COMMIT_WINDOW_FACTOR = 2.0
#: The shortest batch window while the source keeps sending.
MIN_WINDOW_S = 0.005


def batch_window(max_ms: int, commit_s: float, behind_s: float) -> float:
    """Seconds a Kafka transaction stays open for more source transactions while more keep arriving.

    Caught up (the newest transaction read committed less than ``max_ms`` ago): a few commit times, so that the lag
    stays near the broker's round trip. Behind (a backlog, a restart): ``max_ms``, for throughput: the lag is the
    backlog's anyway. ``behind_s`` compares the source's commit time with this host's clock: a clock skew only
    moves the capture between the two (both are bounded by ``max_ms``).
    """
    longest = max_ms / 1000
    if behind_s >= longest:
        return longest
    return min(longest, max(MIN_WINDOW_S, COMMIT_WINDOW_FACTOR * commit_s))


class SourceRangeGone(Exception):
    """A re-read cannot start where it was asked to: the source has forgotten that part of its log."""


@dataclass
class CaptureProgress:
    """What the capture has published, for heartbeats (kept across sessions)."""

    epoch: int = 0
    position: str = ""
    txns: int = 0
    rows: int = 0
    last_commit_us: int = 0
    #: When the capture last had everything its source had committed durable in Kafka, and the redo
    #: end offset then (status measures each standby's lag from the source with these).
    caught_up_at_us: int = 0
    caught_up_offset: int = -1
    state: str = "starting"
    message: str = ""


class _Txn:
    """The source transaction being published."""

    def __init__(self, begin: TxnBegin, skip_rows: int, next_chunk: int) -> None:
        self.begin = begin
        self.skip_rows = skip_rows
        self.chunk_index = next_chunk
        self.rows_seen = 0
        self.first_row = skip_rows
        self.buffer: list[RowChange] = []


@dataclass
class SessionHooks:
    """What the session asks of the runner between transactions."""

    #: True when the control channel holds a request this session does not serve (ends the session).
    new_requests: Callable[[], bool]
    #: The re-read's start is durable in Kafka: tell the appliers.
    retransmit_started: Callable[[ServePlan], None]
    #: True when the runner is stopping.
    stopping: Callable[[], bool]
    #: Ids of publish-sequences requests not answered yet.
    sequence_requests: Callable[[], list[str]] = list
    #: Those requests' values are durable in the redo topic (the entry, its offset): answer them.
    sequences_published: Callable[[list[str], SequenceValues, int], None] = lambda ids, body, offset: None
    #: The end of this epoch that was asked for (drain, then publish the end-of-epoch marker), if any.
    end_epoch: Callable[[], EpochEnd | None] = lambda: None


@dataclass(frozen=True)
class EpochEnd:
    """End the epoch once everything up to ``upto`` is published: a marker naming ``next_primary`` follows."""

    epoch: int
    next_primary: str
    upto: Position


@dataclass
class CaptureSession:
    """Publishes one source stream (see the module docstring)."""

    group: str
    engine: str
    settings: CaptureSettings
    capture: LogCapture
    publisher: RedoPublisher
    point: ResumePoint
    window: ConfirmWindow
    progress: CaptureProgress
    hooks: SessionHooks
    plan: ServePlan | None = None
    #: A re-read republishes tagged until it passes this key (what Kafka held when it started).
    upto: bytes = b""
    #: The redo log's message limit (bytes): chunks stay well below it, larger values travel in parts.
    message_limit: int = 1 << 20
    metas: dict[str, TableMeta] = field(default_factory=dict)
    published_versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.txn: _Txn | None = None
        self.skipping = False
        self.pending_confirm: Position | None = None
        self.batch_txns = 0
        self.batch_started = time.monotonic()
        self.commit_s = 0.0  # how long a Kafka commit takes (moving average): sizes the batch window
        self.committed_at = 0.0  # when the last Kafka commit returned
        self.last_checkpoint = time.monotonic()
        self.queued_key = b""  # the newest position handed to the retransmit window
        self.commit_key = b""  # the newest commit key in the redo topic (a transaction's or a checkpoint's)
        self.tail: bytes | None = None  # the newest position durable at the tail of the redo topic
        self.marker = self.plan is not None  # a re-read starts with a tagged checkpoint at its start key
        self.answered = self.plan is None
        self.retransmit_from: str | None = None  # the tag, while republishing
        room = max(4096, self.message_limit - HEADROOM_BYTES)
        #: Bytes of values per chunk, and per part of a value that does not fit one message.
        self.chunk_bytes = min(self.settings.chunk_bytes or room // 4, room // 2)
        self.part_bytes = room // 2
        self.buffer_bytes = 0
        #: Set when this session published the end-of-epoch marker: (marker offset, last position).
        self.epoch_ended: tuple[int, str] | None = None
        self.last_nudge = 0.0
        self.seq_at = 0.0  # when sequence values were last read
        self.seq_txns = -1  # transactions published by then
        self.seq_shape_changed = True  # a shape change was seen since: the set of sequences may differ
        self.seq_published: dict[str, int] = {}  # what this session published last, per sequence

    # -- publishing --------------------------------------------------------------------------------
    def emit(self, body: TxnChunk | TableMeta | SequenceValues | SchemaChange) -> None:
        """Produce one entry (tagged while republishing)."""
        tag = [] if self.retransmit_from is None else [(H_RETRANSMIT_FROM, self.retransmit_from.encode())]
        # Inside a transaction an entry belongs to it (its shape, its DDL); between transactions it follows the
        # last one published (0 once the source is idle: the read time then). Never later than what comes after
        # it in the stream, so a delayed standby's gate waits on the transactions themselves.
        stream_us = self.txn.begin.commit_time_us if self.txn is not None else self.progress.last_commit_us
        try:
            self.publisher.publish(RedoEntry(group=self.group, engine=self.engine, epoch=self.progress.epoch,
                                             body=body), headers=tag, stream_time_us=stream_us or None)
        except MessageTooLarge as exc:
            raise self._too_large(body, exc) from None

    def _too_large(self, body: TxnChunk | TableMeta | SequenceValues | SchemaChange,
                   exc: MessageTooLarge) -> EntryTooLarge:
        """Which table and key columns (never values) the entry that does not fit was about."""
        if isinstance(body, SequenceValues):
            what, where = f"the values of {len(body.values)} sequences", body.position
        elif isinstance(body, TableMeta):
            what, where = f"the shape of table {body.table}", body.position
        elif isinstance(body, SchemaChange):
            what, where = f"a {body.tag} (its steps and table shapes)", body.commit.text
        else:
            tables = sorted({c.table for c in body.changes})
            keys = {t: [c.name for c in self.metas[t].key_columns] if t in self.metas else [] for t in tables}
            what = ", ".join(f"table {t} (key {', '.join(keys[t]) or 'none'})" for t in tables) or "a value part"
            where = body.commit.text
        return EntryTooLarge(f"{exc}: {what}, source transaction at {where}; rows of a table without a unique key "
                             "carry their whole old row, which cannot travel in parts",
                             fix=f"raise max.message.bytes of ark.{self.group}.redo (kafka-configs.sh --alter "
                                 "--entity-type topics --add-config max.message.bytes=16000000), or give the table a "
                                 "primary key; the capture publishes nothing past this transaction")

    def flush_chunk(self, last: bool, confirm: str = "") -> None:
        """Publish the buffered rows of the open source transaction as its next chunk."""
        txn = self.txn
        assert txn is not None
        self.emit(TxnChunk(txn_id=txn.begin.txn_id, commit=txn.begin.commit, commit_time_us=txn.begin.commit_time_us,
                           chunk_index=txn.chunk_index, last=last, changes=txn.buffer, first_row=txn.first_row,
                           confirm=confirm))
        txn.first_row += len(txn.buffer)
        txn.chunk_index += 1
        txn.buffer = []
        self.buffer_bytes = 0

    def _emit_parts(self, change: RowChange) -> RowChange:
        """Publish the values of ``change`` too large for one message as parts; the row that refers to them."""
        txn = self.txn
        assert txn is not None
        if txn.buffer:
            self.flush_chunk(last=False)
        row = txn.first_row  # the buffer is empty: this row's index in its transaction
        change, large = split(change, row, self.part_bytes)
        for column, data in large:
            for part in parts_of(change.table, row, column, data, self.part_bytes):
                self.emit(TxnChunk(txn_id=txn.begin.txn_id, commit=txn.begin.commit,
                                   commit_time_us=txn.begin.commit_time_us, chunk_index=txn.chunk_index, last=False,
                                   changes=[], first_row=txn.first_row, part=part))
                txn.chunk_index += 1
                if self.publisher.should_commit_midway():
                    self.publisher.commit()  # nothing confirmed: the source transaction is not complete
        return change

    def release(self) -> None:
        """Confirm to the source what has aged out of the retransmit window."""
        due = self.window.due(time.monotonic(), self.tail)
        if due is not None:
            self.capture.confirm(due)

    def commit_batch(self) -> None:
        """Commit the Kafka transaction; then (only then) hand its last position to the window."""
        if self.publisher.in_transaction:
            started = time.monotonic()
            self.publisher.commit()
            self.committed_at = time.monotonic()
            took = self.committed_at - started
            self.commit_s = took if not self.commit_s else 0.8 * self.commit_s + 0.2 * took
        if self.pending_confirm is not None:
            self.window.push(time.monotonic(), self.pending_confirm)
            self.queued_key = self.tail = self.pending_confirm.key
            self.pending_confirm = None
        self.release()
        self.batch_txns = 0
        if not self.answered and not self.marker and self.plan is not None:
            self.answered = True  # the tagged start of the re-read is durable: the appliers can start on it
            self.hooks.retransmit_started(self.plan)

    def _pace(self) -> None:
        """Under load the stream runs dry for a moment between transactions: keep Kafka commits to about a third of
        the time by waiting out the rest of the window since the last commit (more arrives meanwhile and joins the
        next batch). A quiet source waits for nothing: its last commit ended long ago."""
        rest = COMMIT_WINDOW_FACTOR * self.commit_s - (time.monotonic() - self.committed_at)
        if rest > 0:
            time.sleep(min(rest, self.settings.batch_max_ms / 1000))

    def caught_up(self) -> None:
        """The re-read passed what Kafka held: publish untagged from here on."""
        if self.retransmit_from is not None:
            self.retransmit_from = None
            self.progress.state, self.progress.message = "running", ""
            log.info("retransmission caught up with what Kafka held; capture goes on normally")

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, resume_after: Position | None) -> None:
        """Publish the source's events until stopped, a new request, or a failure."""
        for event in self._events(resume_after):
            if self.progress.state == "starting":
                self.progress.state, self.progress.message = "running", ""  # the source answers (runner.session)
            self.publisher.poll()
            if self.marker:
                self._start_reread(resume_after)
            if isinstance(event, RowChange):
                self._row(event)
            elif isinstance(event, TableMeta):
                self.metas[event.table] = event
                self.seq_shape_changed = True  # DDL: publish the sequences at the next boundary
            elif isinstance(event, SchemaChange):
                self.seq_shape_changed = True
                self._schema_change(event)
            elif isinstance(event, TxnBegin):
                decision, skip_rows, next_chunk = self.point.decide(event.commit)
                self.skipping = decision == "skip"
                self.txn = None if self.skipping else _Txn(event, skip_rows, next_chunk)
                if not self.publisher.in_transaction:
                    self.batch_started = time.monotonic()
            elif isinstance(event, TxnEnd):
                if self._end(event):
                    return
            elif isinstance(event, Idle) and self._idle(event):
                return
            if (self.hooks.stopping() and self.txn is None and not self.skipping
                    and not self.publisher.in_transaction):
                return

    def _start_reread(self, resume_after: Position | None) -> None:
        """The source delivers from the start key: mark the start of the re-read in the topic."""
        plan = self.plan
        assert plan is not None
        self.retransmit_from = plan.key.hex()
        self.emit(TxnChunk(txn_id="", commit=Position(plan.position, plan.key), commit_time_us=time.time_ns() // 1000,
                           chunk_index=0, last=True, changes=[], confirm=plan.resume_text))
        self.pending_confirm = resume_after
        self.marker = False

    def _row(self, event: RowChange) -> None:
        txn = self.txn
        if self.skipping or txn is None:
            return
        txn.rows_seen += 1
        if txn.rows_seen <= txn.skip_rows:
            return
        meta = self.metas.get(event.table)
        if meta is not None and self.published_versions.get(event.table) != meta.version:
            if txn.buffer:
                self.flush_chunk(last=False)
            self.emit(meta)
            self.published_versions[event.table] = meta.version
        size = row_bytes(event)
        if size > self.part_bytes:
            event = self._emit_parts(event)
            size = row_bytes(event)
        elif txn.buffer and self.buffer_bytes + size > self.chunk_bytes:
            self.flush_chunk(last=False)
        txn.buffer.append(event)
        self.buffer_bytes += size
        if len(txn.buffer) >= self.settings.chunk_rows or self.buffer_bytes >= self.chunk_bytes:
            self.flush_chunk(last=False)
            if self.publisher.should_commit_midway():
                self.publisher.commit()  # nothing confirmed: the source transaction is not complete

    def _schema_change(self, change: SchemaChange) -> None:
        """A DDL at its place in the open transaction: after the rows before it, and always after the
        transaction's chunk 0, so that a standby applies it inside the transaction (its delay, exactly once
        with the state row). A capture that restarted inside the transaction publishes again only what may
        not be in Kafka yet (the standby applies each (commit, seq) once)."""
        txn = self.txn
        if self.skipping or txn is None or txn.rows_seen < txn.skip_rows:
            return  # a row after it is already in Kafka: so is it
        if txn.buffer or txn.chunk_index == 0:
            self.flush_chunk(last=False)
        self.emit(change)
        for meta in change.tables:
            self.metas[meta.table] = meta
            self.published_versions[meta.table] = meta.version

    def _end(self, event: TxnEnd) -> bool:
        """A source transaction is complete; True when the session must end here (a new request)."""
        txn = self.txn
        self.commit_key = max(self.commit_key, event.commit.key)
        if self.skipping or txn is None:
            self.skipping = False
            return False
        self.flush_chunk(last=True, confirm=event.confirm.text)
        p = self.progress
        p.txns += 1
        p.rows += txn.first_row
        p.position = txn.begin.commit.text
        p.last_commit_us = txn.begin.commit_time_us
        self.pending_confirm = event.confirm
        if event.commit.key >= self.upto:
            self.caught_up()
        self.txn = None
        self.batch_txns += 1
        behind = time.time() - txn.begin.commit_time_us / 1e6
        window = batch_window(self.settings.batch_max_ms, self.commit_s, behind)
        if self.batch_txns >= self.settings.batch_max_txns or time.monotonic() - self.batch_started >= window:
            self.commit_batch()
        self.sequences()  # after the commit: reading them (a catalog query) does not hold back what was read
        if self.hooks.new_requests():
            self.commit_batch()
            return True  # the next session serves it, from a transaction boundary
        return False

    def _end_epoch(self, event: Idle) -> bool:
        """With an end of epoch asked for: once the source is drained past its ``upto``, publish the
        end-of-epoch marker (True: the session ends; nothing more of this epoch is ever published)."""
        end = self.hooks.end_epoch()
        if end is None or self.retransmit_from is not None or end.epoch != self.progress.epoch:
            return False
        if not (event.drained and event.position is not None and event.position.key >= end.upto.key):
            now = time.monotonic()
            if now - self.last_nudge >= 0.2:  # ask the source where its log stands now, not in seconds
                self.last_nudge = now
                self.capture.nudge()
            return False
        self.publisher.publish(RedoEntry(group=self.group, engine=self.engine, epoch=self.progress.epoch,
                                         body=EpochMarker(new_epoch=end.epoch + 1, primary=end.next_primary,
                                                          position=self.progress.position)))
        self.commit_batch()
        self.epoch_ended = (self.publisher.last_offset, self.progress.position)
        log.warning("epoch %d ended at redo offset %d after %s: %s is the next primary", end.epoch,
                    self.publisher.last_offset, self.progress.position or "nothing", end.next_primary)
        return True

    def _idle(self, event: Idle) -> bool:
        """Nothing to read right now; True when the session must end (a new request, or stopping)."""
        if self.txn is None and not self.skipping and self._end_epoch(event):
            return True
        if self.txn is None and not self.skipping:
            if event.position is not None and event.position.key > self.upto:
                self.caught_up()
            # Commit what was read first (issue 13: no wait when the source is quiet), then read the sequences (a
            # catalog query, about once a second while transactions flow) and commit them too if they moved.
            had_batch = self.publisher.in_transaction
            if had_batch:
                self._pace()
                self.commit_batch()
            self.sequences()
            if self.publisher.in_transaction:
                self.commit_batch()
            elif had_batch:
                pass  # committed above (which released what aged out of the window)
            elif (event.position is not None and event.position.key > self.point.complete_key
                  and (event.position.key > self.queued_key or just_before(event.position).key > self.commit_key)
                  and time.monotonic() - self.last_checkpoint >= CHECKPOINT_INTERVAL_S):
                # An idle source still writes log (other tables, vacuum): record a checkpoint in Kafka
                # first, then let the source recycle its log up to it. Its commit key sits just below the
                # idle position: a transaction whose commit record starts exactly there must still be
                # published after a restart. An idle source whose log did not move past the last commit
                # gets one checkpoint too: it tells the standbys they hold everything up to here, which a
                # table resync's copy taken at this position waits for (its floor, just below it).
                self.commit_key = just_before(event.position).key
                self.emit(TxnChunk(txn_id="", commit=just_before(event.position),
                                   commit_time_us=time.time_ns() // 1000, chunk_index=0, last=True, changes=[],
                                   confirm=event.position.text))
                self.pending_confirm = event.position
                self.commit_batch()
                self.last_checkpoint = time.monotonic()
            else:
                self.release()  # positions age out of the window while the source is idle
            self.progress.last_commit_us = 0
            if event.drained and self.retransmit_from is None and not self.publisher.in_transaction:
                self.progress.caught_up_at_us = time.time_ns() // 1000
                # The redo end then: what this session published (+1 for the commit marker), else the end
                # found at its start.
                last = self.publisher.last_offset
                self.progress.caught_up_offset = max(self.point.end_offset, last + 2 if last >= 0 else 0)
            if self.hooks.new_requests():
                self.commit_batch()
                return True
        if self.hooks.stopping() and self.txn is None:
            if self.publisher.in_transaction:
                self.commit_batch()
            return True
        return False

    def sequences(self) -> None:
        """Publish the sequences' values when due (between transactions, never while re-reading).

        Due about every heartbeat while transactions flow (at most every SEQUENCES_IDLE_S without), after a
        shape change (DDL), and at once for a publish-sequences request (then every value, committed, and
        answered). After a shape change every value travels; otherwise only values that moved since this session's
        last publication."""
        if self.retransmit_from is not None or self.txn is not None or self.skipping:
            return
        now = time.monotonic()
        requests = self.hooks.sequence_requests()
        elapsed = now - self.seq_at
        due = bool(requests) or self.seq_shape_changed or (
            elapsed >= self.settings.heartbeat_interval_s and (self.seq_txns != self.progress.txns
                                                               or elapsed >= SEQUENCES_IDLE_S))
        if not due:
            return
        shape_changed = self.seq_shape_changed
        values = self.capture.sequence_values(refresh=shape_changed or bool(requests))
        self.seq_at, self.seq_txns, self.seq_shape_changed = now, self.progress.txns, False
        if values is None:
            return
        # After a shape change every value travels again, moved or not: the values are read from the live catalog,
        # so while the capture is behind (restarted, catching up) a sequence's value can be published before the
        # DDL that creates the sequence on the standby (which then leaves it alone); a sequence that does not move
        # afterwards (a table no longer written, a standalone one) would stay at its start there for good.
        moved = tuple(v for v in values.values
                      if requests or shape_changed or self.seq_published.get(v.name) != v.last_value)
        if not moved and not requests:
            return
        request = ",".join(requests)
        body = values
        for start in range(0, max(len(moved), 1), SEQUENCES_PER_ENTRY):
            body = replace(values, values=moved[start:start + SEQUENCES_PER_ENTRY], request=request)
            self.emit(body)
        self.seq_published.update((v.name, v.last_value) for v in moved)
        if requests:
            self.commit_batch()
            self.hooks.sequences_published(requests, replace(body, values=moved), self.publisher.last_offset)
            # Whoever asks waits for the standbys to hold everything up to now (a switchover, a verify, a cutover
            # whose source is fenced and idle): the next idle checkpoint says so at once, not up to
            # CHECKPOINT_INTERVAL_S later.
            self.last_checkpoint = float("-inf")

    def _events(self, resume_after: Position | None) -> Iterator[CaptureEvent]:
        """The source's events; for a re-read, a source that cannot start there is :class:`SourceRangeGone`."""
        stream = self.capture.stream(resume_after)
        if self.plan is not None:
            try:
                first = next(stream)  # the adapter checks where its log starts before it streams
            except SlotGapError as exc:
                raise SourceRangeGone(exc.message) from None
            except StopIteration:
                return
            try:
                yield first
            except GeneratorExit:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
                raise
        yield from stream
