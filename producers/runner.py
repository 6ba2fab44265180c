"""The capture runner: source log events → Kafka transactions → confirmation to the source.

Order of durability (ARCHITECTURE.md guarantee 3): entries are produced inside a Kafka
transaction; only after ``commit_transaction`` returns is the source told it may forget that part
of its log, and only once that commit is older than the retransmit window (guarantee 4, see
:mod:`producers.retransmit`). On any failure the Kafka transaction is aborted and the source re-sends
from its last confirmed position; :class:`~producers.resume.ResumePoint` skips what is already in Kafka.

A ``retransmit`` intent on the control topic ends the session at the next transaction boundary; the
next session re-reads the source after the requested position and republishes from there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from common.config import ArkConfig
from common.control import ControlReader, SourceGapRecord, source_gaps
from common.errors import ConfigError, FencedError, KafkaUnavailable, PrerequisiteError
from common.heartbeat import HeartbeatPublisher
from common.kafka import ensure_topic
from producers.base import CaptureEvent, Idle, LogCapture, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from producers.gap import resumes_past_gap
from producers.resume import ResumePoint, find_resume_point
from producers.retransmit import (
    ConfirmWindow,
    RequestQueue,
    RetransmitPublisher,
    ServePlan,
    answer_done,
    answer_failed,
    read_backlog,
    resume_position,
    source_floor,
)
from schemas.entries import Position, RedoEntry, RowChange, TableMeta, TxnChunk
from schemas.positions import just_before
from schemas.topics import redo_topic

log = logging.getLogger(__name__)

#: Publish a checkpoint of an idle source at most this often, so its log can be recycled.
CHECKPOINT_INTERVAL_S = 10.0
#: Look for retransmit intents on the control topic this often (between transactions).
CONTROL_POLL_S = 0.5
_FATAL = (ConfigError, PrerequisiteError, FencedError, SlotGapError)


class _SourceRangeGone(Exception):
    """A re-read cannot start where it was asked to: the source has forgotten that part of its log."""


class _Txn:
    """The source transaction being published."""

    def __init__(self, begin: TxnBegin, skip_rows: int, next_chunk: int) -> None:
        self.begin = begin
        self.skip_rows = skip_rows
        self.chunk_index = next_chunk
        self.rows_seen = 0
        self.first_row = skip_rows
        self.buffer: list[RowChange] = []


class CaptureRunner:
    """Runs one group's capture until ``stop()``; restarts the source stream by itself after failures."""

    def __init__(self, cfg: ArkConfig, capture_factory: Callable[[], LogCapture], *, node: str | None = None) -> None:
        self.cfg = cfg
        self._factory = capture_factory
        self._node = node or cfg.primary.name
        self._stop = threading.Event()
        self.state = "starting"
        self.message = ""
        self.epoch = 0
        self.published_position = ""
        self.published_txns = 0
        self.published_rows = 0
        self._last_commit_us = 0
        self._publisher: RetransmitPublisher | None = None
        # Kept across sessions: positions durable in Kafka that the source may forget once old enough.
        self._window = ConfirmWindow(cfg.capture.retransmit_window_s)
        self._requests = RequestQueue()
        self._gaps: list[SourceGapRecord] = []

    def stop(self) -> None:
        """Ask the runner to finish at the next safe point."""
        self._stop.set()

    def snapshot(self) -> dict[str, Any]:
        """Heartbeat fields."""
        lag = 0.0
        if self.state == "running" and self._last_commit_us:
            lag = max(0.0, time.time() - self._last_commit_us / 1e6)
        return {
            "epoch": self.epoch, "state": self.state, "message": self.message,
            "source_position": self.published_position,
            "produced_offset": self._publisher.last_offset if self._publisher else -1,
            "lag_seconds": lag if self.state == "running" else 0.0,
            "metrics": {"txns": float(self.published_txns), "rows": float(self.published_rows)},
        }

    def run(self) -> None:
        """Capture until stopped. Fatal errors (config, prerequisites, fencing, log gaps) propagate."""
        control = self._attach()
        if control is None:
            return
        heartbeat = HeartbeatPublisher(self.cfg.kafka, self.cfg.group, agent="capture", name=self._node,
                                       role="primary", snapshot=self.snapshot,
                                       interval=self.cfg.capture.heartbeat_interval_s)
        heartbeat.start()
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._session(control)
                    backoff = 1.0
                except _FATAL as exc:
                    self.state, self.message = "error", str(exc)
                    heartbeat.beat_now()
                    raise
                except Exception as exc:  # noqa: BLE001 - loop boundary: retry anything else with backoff
                    self.state, self.message = "retrying", f"{type(exc).__name__}: {exc}"
                    log.warning("capture session ended: %s; retrying in %.0f s", self.message, backoff)
                    heartbeat.beat_now()
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
        finally:
            self.state = "stopped"
            heartbeat.stop()
            control.close()

    def _attach(self) -> ControlReader | None:
        """Create the redo topic, read the control backlog; retried while the broker is away (None if stopped).

        The CLI checked that the broker answered once; losing it after that (a broker restart at the
        same moment) is waited out like any later outage (guarantee 7), not turned into an exit.
        """
        backoff = 1.0
        while not self._stop.is_set():
            try:
                ensure_topic(self.cfg.kafka, redo_topic(self.cfg.group), retention_ms=self.cfg.kafka.redo_retention_ms)
                control = ControlReader(self.cfg.kafka, self.cfg.group)
                backlog = read_backlog(self.cfg, control)
            except KafkaUnavailable as exc:
                self.state, self.message = "retrying", str(exc)
                log.warning("capture cannot reach Kafka yet: %s; retrying in %.0f s", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self._requests.add(backlog)  # requests made while capture was down are served too
            self._gaps = source_gaps(backlog)
            return control
        return None

    # One session: a fresh producer, a fresh resume point, a fresh source stream.
    def _session(self, control: ControlReader) -> None:
        publisher = RetransmitPublisher(self.cfg)
        self._publisher = publisher
        point = find_resume_point(self.cfg.kafka, publisher.topic)
        self.epoch = point.epoch
        self.published_position = point.complete_position
        plan = self._requests.plan(point)
        if plan is not None and self.cfg.capture.retransmit_window_s <= 0:
            answer_failed(self.cfg, plan.requests, "retransmission is disabled (capture.retransmit_window_s is 0): "
                          "the source may already have forgotten that log", "")
            self._requests.answered(plan.requests)
            plan = None
        capture = self._factory()
        try:
            if plan is not None:
                self._serve(capture, publisher, point, plan, control)
                return
            resume_after = capture.parse_position(point.complete_confirm) if point.complete_confirm else None
            if resume_after is not None and resumes_past_gap(self._gaps, point):
                log.warning("resuming past the accepted gap after %s: from where the slot stands now",
                            point.complete_position)
                resume_after = None
            log.info("capture resuming after %s (offset %d)%s", point.complete_position or "the start",
                     point.end_offset,
                     f", inside a transaction at row {point.partial_rows_done}" if point.partial_key else "")
            self.state, self.message = "running", ""
            self._pump(capture, publisher, point, resume_after, control)
        finally:
            publisher.abort()
            capture.close()

    def _serve(self, capture: LogCapture, publisher: RetransmitPublisher, point: ResumePoint, plan: ServePlan,
               control: ControlReader) -> None:
        """Re-read the source after ``plan.key`` and republish, tagged, up to and past the topic's tail."""
        try:
            resume_after = resume_position(capture, plan)
        except ValueError as exc:
            failed = RequestQueue.lowest_group(plan)
            answer_failed(self.cfg, failed, str(exc), "")
            self._requests.answered(failed)
            return
        self.state, self.message = "retransmitting", plan.describe()
        log.warning("%s; Kafka holds up to %s", plan.describe(), point.complete_position or "nothing")
        run_point = ResumePoint(complete_key=plan.key, complete_position=plan.position,
                                complete_confirm=plan.resume_text, epoch=point.epoch, end_offset=point.end_offset)
        try:
            self._pump(capture, publisher, run_point, resume_after, control, plan, point.complete_key)
        except _SourceRangeGone as exc:
            # The source restarts from its own confirmed position when asked for an older one: refuse
            # rather than republish a partial range.
            failed, floor = RequestQueue.lowest_group(plan), source_floor(capture)
            answer_failed(self.cfg, failed, f"the source no longer holds its log after {plan.position}"
                          + ("" if floor else f" ({exc})"), floor)
            self._requests.answered(failed)

    def _pump(self, capture: LogCapture, publisher: RetransmitPublisher, point: ResumePoint,
              resume_after: Position | None, control: ControlReader, plan: ServePlan | None = None,
              upto: bytes = b"") -> None:
        """Publish the source's events; with ``plan``, a re-read tagged until it passes ``upto``."""
        group, engine = self.cfg.group, self.cfg.primary.engine
        chunk_rows = self.cfg.capture.chunk_rows
        metas: dict[str, TableMeta] = {}
        published_versions: dict[str, str] = {}
        txn: _Txn | None = None
        skipping = False
        pending_confirm: Position | None = None
        batch_txns = 0
        batch_started = time.monotonic()
        last_checkpoint = last_control = time.monotonic()
        queued_key = b""  # the newest position handed to the retransmit window
        tail: bytes | None = None  # the newest position durable at the tail of the redo topic
        marker = plan is not None  # a re-read starts with a tagged checkpoint at its start key
        answered = plan is None

        def emit(body: TxnChunk | TableMeta) -> None:
            publisher.publish(RedoEntry(group=group, engine=engine, epoch=self.epoch, body=body), self.epoch)

        def flush_chunk(last: bool, confirm: str = "") -> None:
            assert txn is not None
            emit(TxnChunk(txn_id=txn.begin.txn_id, commit=txn.begin.commit, commit_time_us=txn.begin.commit_time_us,
                          chunk_index=txn.chunk_index, last=last, changes=txn.buffer, first_row=txn.first_row,
                          confirm=confirm))
            txn.first_row += len(txn.buffer)
            txn.chunk_index += 1
            txn.buffer = []

        def release() -> None:
            due = self._window.due(time.monotonic(), tail)
            if due is not None:
                capture.confirm(due)

        def commit_batch() -> None:
            nonlocal pending_confirm, batch_txns, queued_key, tail, answered
            publisher.commit()
            if pending_confirm is not None:
                self._window.push(time.monotonic(), pending_confirm)
                queued_key = tail = pending_confirm.key
                pending_confirm = None
            release()
            batch_txns = 0
            if not answered and not marker and plan is not None:
                answered = True  # the tagged start of the re-read is durable: the appliers can start on it
                answer_done(self.cfg, plan)
                self._requests.answered(plan.requests)

        def caught_up() -> None:
            if publisher.retransmit_from is not None:
                publisher.retransmit_from = None
                self.state, self.message = "running", ""
                log.info("retransmission caught up with what Kafka held; capture goes on normally")

        def new_requests() -> bool:
            """Poll the control topic; True when a request not served by this session is waiting."""
            nonlocal last_control
            now = time.monotonic()
            if now - last_control < CONTROL_POLL_S:
                return False
            last_control = now
            self._requests.add(control.poll())
            return len(self._requests) > (0 if answered or plan is None else len(plan.requests))

        for event in self._events(capture, resume_after, plan is not None):
            publisher.poll()
            if marker and plan is not None:
                # The source delivers from the start key: mark the start of the re-read in the topic.
                publisher.retransmit_from = plan.key.hex()
                emit(TxnChunk(txn_id="", commit=Position(plan.position, plan.key),
                              commit_time_us=time.time_ns() // 1000, chunk_index=0, last=True, changes=[],
                              confirm=plan.resume_text))
                pending_confirm = resume_after
                marker = False
            if isinstance(event, RowChange):
                if skipping or txn is None:
                    continue
                txn.rows_seen += 1
                if txn.rows_seen <= txn.skip_rows:
                    continue
                meta = metas.get(event.table)
                if meta is not None and published_versions.get(event.table) != meta.version:
                    if txn.buffer:
                        flush_chunk(last=False)
                    emit(meta)
                    published_versions[event.table] = meta.version
                txn.buffer.append(event)
                if len(txn.buffer) >= chunk_rows:
                    flush_chunk(last=False)
                    if publisher.should_commit_midway():
                        publisher.commit()  # nothing confirmed: the source transaction is not complete
            elif isinstance(event, TableMeta):
                metas[event.table] = event
            elif isinstance(event, TxnBegin):
                decision, skip_rows, next_chunk = point.decide(event.commit)
                skipping = decision == "skip"
                txn = None if skipping else _Txn(event, skip_rows, next_chunk)
                if not publisher.in_transaction:
                    batch_started = time.monotonic()
            elif isinstance(event, TxnEnd):
                if skipping or txn is None:
                    skipping = False
                    continue
                flush_chunk(last=True, confirm=event.confirm.text)
                self.published_txns += 1
                self.published_rows += txn.first_row
                self.published_position = txn.begin.commit.text
                self._last_commit_us = txn.begin.commit_time_us
                pending_confirm = event.confirm
                if event.commit.key >= upto:
                    caught_up()
                txn = None
                batch_txns += 1
                if (batch_txns >= self.cfg.capture.batch_max_txns
                        or (time.monotonic() - batch_started) * 1000 >= self.cfg.capture.batch_max_ms):
                    commit_batch()
                if new_requests():
                    commit_batch()
                    return  # the next session serves it, from a transaction boundary
            elif isinstance(event, Idle):
                if txn is None and not skipping:
                    if event.position is not None and event.position.key > upto:
                        caught_up()
                    if publisher.in_transaction:
                        commit_batch()
                    elif (event.position is not None and event.position.key > queued_key
                          and event.position.key > point.complete_key
                          and time.monotonic() - last_checkpoint >= CHECKPOINT_INTERVAL_S):
                        # An idle source still writes WAL (other tables, vacuum): record a checkpoint in
                        # Kafka first, then let the source recycle its log up to it.
                        # Its commit key sits just below the idle position: a transaction whose commit
                        # record starts exactly there must still be published after a restart.
                        emit(TxnChunk(txn_id="", commit=just_before(event.position),
                                      commit_time_us=time.time_ns() // 1000, chunk_index=0, last=True, changes=[],
                                      confirm=event.position.text))
                        pending_confirm = event.position
                        commit_batch()
                        last_checkpoint = time.monotonic()
                    else:
                        release()  # positions age out of the window while the source is idle
                    self._last_commit_us = 0
                    if new_requests():
                        commit_batch()
                        return
                if self._stop.is_set() and txn is None:
                    if publisher.in_transaction:
                        commit_batch()
                    return
            if self._stop.is_set() and txn is None and not skipping and not publisher.in_transaction:
                return

    @staticmethod
    def _events(capture: LogCapture, resume_after: Position | None, retransmit: bool) -> Iterator[CaptureEvent]:
        """The source's events; for a re-read, a source that cannot start there is :class:`_SourceRangeGone`."""
        stream = capture.stream(resume_after)
        if retransmit:
            try:
                first = next(stream)  # the adapter checks where its log starts before it streams
            except SlotGapError as exc:
                raise _SourceRangeGone(exc.message) from None
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
