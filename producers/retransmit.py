"""Capture side of CRC retransmission (guarantee 4): the retransmit window and the re-read of a range.

When an applier finds an entry that is still corrupt after a re-read, it quarantines it and writes a
``retransmit`` intent on the control topic (:mod:`consumers.quarantine`). The capture then re-reads
the source log after the standby's last applied commit and republishes every transaction above it.
Three pieces make that possible:

* **The retransmit window** (:class:`ConfirmWindow`). The source may forget its log only up to a
  position whose Kafka commit is older than ``capture.retransmit_window_s`` (default 900 s). For
  PostgreSQL this keeps the slot's ``confirmed_flush_lsn`` (and so its WAL) that far back: the slot
  retains about window × WAL rate more WAL on disk (e.g. 15 min at 20 MB/s of WAL ≈ 18 GB), and a
  capture restart re-decodes up to that much WAL, which :class:`producers.resume.ResumePoint` skips.
  A standby with an apply delay longer than the window cannot be healed by retransmission (it gets
  a clear ``retransmit-failed`` and is resynced instead).
* **Requests and their answers** (:class:`RequestQueue`). A re-read serves every pending request at
  once: it starts at the lowest requested key, so it covers all requests with a key at or above it.
  The capture answers ``retransmit-done`` once the first republished entry is durable in Kafka, or
  ``retransmit-failed`` when the source can no longer supply the range (never a partial range).
* **The tag** (:class:`RetransmitPublisher`). Every republished entry, up to what was already
  published, carries ``ark-retransmit-from`` = hex of the exclusive start key. From the first tagged
  entry on, the topic holds every commit above that key, in order; an awaiting applier starts there.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from common.config import ArkConfig
from common.control import (
    RETRANSMIT,
    RETRANSMIT_DONE,
    RETRANSMIT_FAILED,
    ControlReader,
    ControlRecord,
    publish_intent,
)
from common.kafka import end_offset
from producers.base import LogCapture
from producers.publisher import RedoPublisher
from producers.resume import ResumePoint
from schemas.entries import Position
from schemas.envelope import H_RETRANSMIT_FROM
from schemas.topics import control_topic

log = logging.getLogger(__name__)


class ConfirmWindow:
    """Positions durable in Kafka, held until their Kafka commit is older than the window.

    ``push`` after each Kafka commit; ``due`` returns the newest position that may be confirmed to
    the source now (or None). A window of 0 confirms at once (no retransmission possible).
    """

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._held: deque[tuple[float, Position]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def push(self, now: float, position: Position) -> None:
        """Record that ``position`` became durable in Kafka at monotonic time ``now``."""
        self._held.append((now, position))

    def due(self, now: float, ceiling: bytes | None) -> Position | None:
        """The highest position whose commit is at least ``window_s`` old and whose key is at most
        ``ceiling`` (None: nothing), removed with the older ones.

        ``ceiling`` is the newest position at the tail of the redo topic: while a re-read republishes
        older transactions the tail stands below positions pushed earlier, and those must wait, or a
        restart would find the source past the topic's tail (a gap).
        """
        best: Position | None = None
        kept: list[tuple[float, Position]] = []
        while self._held and now - self._held[0][0] >= self.window_s:
            entry = self._held.popleft()
            if ceiling is None or entry[1].key > ceiling:
                kept.append(entry)
            elif best is None or entry[1].key > best.key:
                best = entry[1]
        self._held.extendleft(reversed(kept))
        return best


@dataclass(frozen=True)
class RetransmitRequest:
    """One ``retransmit`` intent of an applier: republish every commit with a key above ``after_key``."""

    request_id: str
    standby: str
    after_position: str
    after_key: bytes
    offset: int
    reason: str

    @classmethod
    def from_record(cls, rec: ControlRecord) -> RetransmitRequest | None:
        """The request of a control record (None for other kinds, or an unreadable key)."""
        if rec.kind != RETRANSMIT:
            return None
        try:
            key = bytes.fromhex(rec.args.get("after_key", ""))
            offset = int(rec.args.get("offset", "-1"))
        except ValueError:
            log.error("ignoring retransmit request %s with an unreadable after_key/offset: %s", rec.request_id,
                      rec.args)
            return None
        return cls(rec.request_id, rec.target, rec.args.get("after_position", ""), key, offset,
                   rec.args.get("reason", ""))


@dataclass(frozen=True)
class ServePlan:
    """One re-read: republish every commit with a key above ``key``, from source position ``resume_text``."""

    key: bytes
    position: str
    resume_text: str
    requests: tuple[RetransmitRequest, ...]

    @property
    def request_ids(self) -> str:
        """The served request ids, comma-separated (control record args are strings)."""
        return ",".join(r.request_id for r in self.requests)

    @property
    def standbys(self) -> str:
        """The standbys served, comma-separated."""
        return ",".join(sorted({r.standby for r in self.requests}))

    def describe(self) -> str:
        """For the heartbeat message and the log."""
        return f"retransmitting from {self.position or 'the start'} for standby {self.standbys} " \
               f"(request {self.request_ids})"


class RequestQueue:
    """Retransmit requests not yet answered, fed from the control topic (replayed at start, then polled)."""

    def __init__(self) -> None:
        self._pending: dict[str, RetransmitRequest] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, records: list[ControlRecord]) -> None:
        """Take new requests and drop the ones an answer (done or failed) names."""
        for rec in records:
            req = RetransmitRequest.from_record(rec)
            if req is not None:
                self._pending[req.request_id] = req
            elif rec.kind in (RETRANSMIT_DONE, RETRANSMIT_FAILED):
                for rid in rec.args.get("request_ids", rec.args.get("request_id", "")).split(","):
                    self._pending.pop(rid, None)

    def answered(self, requests: tuple[RetransmitRequest, ...]) -> None:
        """Forget requests this capture has answered."""
        for req in requests:
            self._pending.pop(req.request_id, None)

    def plan(self, point: ResumePoint) -> ServePlan | None:
        """The re-read that serves every pending request (None when there is none, or while the redo
        topic ends inside a transaction: that one is finished first, so no partial transaction is left
        dangling in front of the republished ones).

        It starts at the lowest requested key, and never above the last complete transaction in
        Kafka: after a restart in the middle of a re-read, everything above Kafka's tail must follow.
        """
        if not self._pending or point.partial_key is not None:
            return None
        low = min(self._pending.values(), key=lambda r: r.after_key)
        if point.complete_key and point.complete_key < low.after_key:
            return ServePlan(point.complete_key, point.complete_position, point.complete_confirm,
                             tuple(self._pending.values()))
        # A checkpoint's commit is just below its idle position ("<X/Y"); the source resumes at X/Y.
        return ServePlan(low.after_key, low.after_position, low.after_position.removeprefix("<"),
                         tuple(self._pending.values()))

    @staticmethod
    def lowest_group(plan: ServePlan) -> tuple[RetransmitRequest, ...]:
        """The requests that a failed re-read of ``plan`` certainly cannot serve: those at the lowest key
        (requests above it may still be served by a later re-read that starts higher)."""
        low = min(r.after_key for r in plan.requests)
        return tuple(r for r in plan.requests if r.after_key == low)


def read_backlog(cfg: ArkConfig, reader: ControlReader, timeout: float = 30.0) -> list[ControlRecord]:
    """Every record the control topic holds now (requests made while the capture was down, and their
    answers), read to the end so that an answered request is never mistaken for a pending one."""
    high = end_offset(cfg.kafka, control_topic(cfg.group))
    out: list[ControlRecord] = []
    deadline = time.monotonic() + timeout
    while high > 0 and (not out or out[-1].offset < high - 1) and time.monotonic() < deadline:
        batch = reader.poll()
        out.extend(batch)
        if not batch:
            time.sleep(0.05)
    return out


def resume_position(capture: LogCapture, plan: ServePlan) -> Position:
    """The source position to restart the stream after (ValueError when it does not parse)."""
    if not plan.resume_text:
        raise ValueError("the standby has no applied source position to re-read from")
    position = capture.parse_position(plan.resume_text)
    if position.key < plan.key:
        raise ValueError(f"source position {plan.resume_text} is below the requested key {plan.key.hex()}")
    return position


def source_floor(capture: LogCapture) -> str:
    """Where the source's retained log starts, when the adapter can tell; empty otherwise."""
    try:
        return capture.retained_from()
    except Exception as exc:  # noqa: BLE001 - only for the message of a failure report
        log.debug("source log start unavailable: %s", exc)
        return ""


def answer_done(cfg: ArkConfig, plan: ServePlan) -> None:
    """Tell the appliers (and ``ark status``) that the republication has started and is durable."""
    publish_intent(cfg.kafka, cfg.group, RETRANSMIT_DONE, plan.standbys, request_ids=plan.request_ids,
                   after_position=plan.position, after_key=plan.key.hex())


def answer_failed(cfg: ArkConfig, requests: tuple[RetransmitRequest, ...], why: str, slot_confirmed: str) -> None:
    """Tell the appliers that these requests cannot be served: what is missing, and why."""
    for req in requests:
        log.error("cannot retransmit after %s for standby %s (request %s): %s", req.after_position or "the start",
                  req.standby, req.request_id, why)
        publish_intent(cfg.kafka, cfg.group, RETRANSMIT_FAILED, req.standby, request_id=req.request_id,
                       request_ids=req.request_id, after_position=req.after_position,
                       after_key=req.after_key.hex(), slot_confirmed=slot_confirmed, reason=why)


class _TaggingProducer:
    """The publisher's producer, adding ``ark-retransmit-from`` to what it produces while a tag is set."""

    def __init__(self, inner: Any, owner: RetransmitPublisher) -> None:
        self._inner = inner
        self._owner = owner

    def produce(self, topic: str, value: bytes, *args: Any, headers: list[tuple[str, Any]] | None = None,
                **kwargs: Any) -> None:
        tag = self._owner.retransmit_from
        if tag is not None:
            headers = [*(headers or []), (H_RETRANSMIT_FROM, tag.encode())]
        self._inner.produce(topic, value, *args, headers=headers, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class RetransmitPublisher(RedoPublisher):
    """A :class:`RedoPublisher` whose entries carry ``ark-retransmit-from`` while ``retransmit_from`` is set.

    The tag is added at the producer call, so the entries are otherwise byte-for-byte what the
    publisher makes (same envelope, CRC, positions).
    """

    def __init__(self, cfg: ArkConfig) -> None:
        super().__init__(cfg)
        #: hex of the exclusive start key of the re-read being republished; None when not republishing
        self.retransmit_from: str | None = None
        self._producer = _TaggingProducer(self._producer, self)  # type: ignore[assignment]
