"""The capture runner: source log events → Kafka transactions → confirmation to the source.

Order of durability (ARCHITECTURE.md guarantee 3): entries are produced inside a Kafka
transaction; only after ``commit_transaction`` returns is the source told it may forget that part
of its log. On any failure the Kafka transaction is aborted and the source re-sends from its last
confirmed position; :class:`~producers.resume.ResumePoint` skips what is already in Kafka.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from common.config import ArkConfig
from common.errors import ConfigError, FencedError, PrerequisiteError
from common.heartbeat import HeartbeatPublisher
from common.kafka import ensure_topic
from producers.base import Idle, LogCapture, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from producers.publisher import RedoPublisher
from producers.resume import ResumePoint, find_resume_point
from schemas.entries import Position, RedoEntry, RowChange, TableMeta, TxnChunk
from schemas.positions import just_before
from schemas.topics import redo_topic

log = logging.getLogger(__name__)

#: Publish a checkpoint of an idle source at most this often, so its log can be recycled.
CHECKPOINT_INTERVAL_S = 10.0
_FATAL = (ConfigError, PrerequisiteError, FencedError, SlotGapError)


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
        self._publisher: RedoPublisher | None = None

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
        ensure_topic(self.cfg.kafka, redo_topic(self.cfg.group), retention_ms=self.cfg.kafka.redo_retention_ms)
        heartbeat = HeartbeatPublisher(self.cfg.kafka, self.cfg.group, agent="capture", name=self._node,
                                       role="primary", snapshot=self.snapshot,
                                       interval=self.cfg.capture.heartbeat_interval_s)
        heartbeat.start()
        backoff = 1.0
        try:
            while not self._stop.is_set():
                try:
                    self._session()
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

    # One session: a fresh producer, a fresh resume point, a fresh source stream.
    def _session(self) -> None:
        publisher = RedoPublisher(self.cfg)
        self._publisher = publisher
        point = find_resume_point(self.cfg.kafka, publisher.topic)
        self.epoch = point.epoch
        self.published_position = point.complete_position
        capture = self._factory()
        try:
            resume_after = capture.parse_position(point.complete_confirm) if point.complete_confirm else None
            log.info("capture resuming after %s (offset %d)%s", point.complete_position or "the start",
                     point.end_offset,
                     f", inside a transaction at row {point.partial_rows_done}" if point.partial_key else "")
            self.state, self.message = "running", ""
            self._pump(capture, publisher, point, resume_after)
        finally:
            publisher.abort()
            capture.close()

    def _pump(self, capture: LogCapture, publisher: RedoPublisher, point: ResumePoint,
              resume_after: Position | None) -> None:
        group, engine = self.cfg.group, self.cfg.primary.engine
        chunk_rows = self.cfg.capture.chunk_rows
        metas: dict[str, TableMeta] = {}
        published_versions: dict[str, str] = {}
        txn: _Txn | None = None
        skipping = False
        pending_confirm: Position | None = None
        batch_txns = 0
        batch_started = time.monotonic()
        last_checkpoint = time.monotonic()
        confirmed_key = b""

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

        def commit_batch() -> None:
            nonlocal pending_confirm, batch_txns, confirmed_key
            publisher.commit()
            if pending_confirm is not None:
                capture.confirm(pending_confirm)
                confirmed_key = pending_confirm.key
                pending_confirm = None
            batch_txns = 0

        for event in capture.stream(resume_after):
            publisher.poll()
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
                txn = None
                batch_txns += 1
                if (batch_txns >= self.cfg.capture.batch_max_txns
                        or (time.monotonic() - batch_started) * 1000 >= self.cfg.capture.batch_max_ms):
                    commit_batch()
            elif isinstance(event, Idle):
                if txn is None and not skipping:
                    if publisher.in_transaction:
                        commit_batch()
                    elif (event.position is not None and event.position.key > confirmed_key
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
                    self._last_commit_us = 0
                if self._stop.is_set() and txn is None:
                    if publisher.in_transaction:
                        commit_batch()
                    return
            if self._stop.is_set() and txn is None and not skipping and not publisher.in_transaction:
                return
