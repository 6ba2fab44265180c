"""The capture agent: one group's source log → its redo topic, session after session.

Each session (:mod:`producers.session`) reads where Kafka's tail says to resume (Kafka is the capture's
checkpoint, :mod:`producers.resume`), publishes in Kafka transactions, and confirms to the source only
what is durable and older than the retransmit window. On any failure the Kafka transaction is aborted
and the next session re-reads the source from its last confirmed position; what is already in Kafka
is skipped. A ``retransmit`` intent on the control channel ends the session at the next transaction
boundary; the next session re-reads the source after the requested position and republishes from
there (:mod:`producers.retransmit`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord, source_gaps
from common.errors import ConfigError, FencedError, PrerequisiteError
from common.guard import GuardRefusal, Recorded, recorded_identities, source_refusal
from common.redo import RedoLog
from producers.base import LogCapture
from producers.errors import EntryTooLarge, SlotGapError, SourceDown
from producers.gap import resumes_past_gap
from producers.publisher import RedoPublisher
from producers.resume import ResumePoint, find_resume_point
from producers.retransmit import (
    ConfirmWindow,
    RequestQueue,
    ServePlan,
    answer_done,
    answer_failed,
    resume_position,
    source_floor,
)
from producers.session import CaptureProgress, CaptureSession, SessionHooks, SourceRangeGone
from schemas.control import NodeIdentity, PublishSequences, SequencesPublished, SourceGap
from schemas.entries import SequenceValues

log = logging.getLogger(__name__)

#: Look for retransmit intents on the control channel this often (between transactions).
CONTROL_POLL_S = 0.5
_FATAL = (ConfigError, PrerequisiteError, FencedError, SlotGapError, GuardRefusal, EntryTooLarge)


class CaptureRunner(AgentBody):
    """The capture's :class:`~common.agent.AgentBody` (run it with :func:`common.heartbeat.agent_on_kafka`)."""

    kind = "capture"
    role = "primary"

    def __init__(self, cfg: ArkConfig, capture_factory: Callable[[], LogCapture], redo: RedoLog, *,
                 node: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self._factory = capture_factory
        self.redo = redo
        self.name = node or cfg.primary.name
        self.progress = CaptureProgress()
        self._publisher: RedoPublisher | None = None
        # Kept across sessions: positions durable in Kafka that the source may forget once old enough.
        self._window = ConfirmWindow(cfg.capture.retransmit_window_s)
        self._requests = RequestQueue()
        self._gaps: list[SourceGap] = []
        self._channel: ControlChannel | None = None
        self._last_control = 0.0
        self._recorded = Recorded()
        self._identity_recorded = False
        self._sequence_requests: list[str] = []  # publish-sequences requests not answered yet

    # -- AgentBody ---------------------------------------------------------------------------------
    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        self._channel = channel
        self._requests.add(backlog)  # requests made while capture was down are served too
        self._take_sequence_requests(backlog)
        self._gaps = source_gaps(backlog)
        self._recorded = recorded_identities(backlog)
        self.redo.ensure()

    def recover(self, exc: Exception) -> Retry | Exception:
        if isinstance(exc, _FATAL):
            return exc
        return Retry.SOON if isinstance(exc, SourceDown) else Retry.LATER

    def heartbeat(self) -> dict[str, Any]:
        p = self.progress
        lag = 0.0
        if p.state == "running" and p.last_commit_us:
            lag = max(0.0, time.time() - p.last_commit_us / 1e6)
        return {
            "epoch": p.epoch, "state": self.state if self.state in ("retrying", "error", "stopped") else p.state,
            "message": self.message if self.state in ("retrying", "error") else p.message,
            "source_position": p.position,
            "produced_offset": self._publisher.last_offset if self._publisher else -1,
            "lag_seconds": lag if p.state == "running" else 0.0,
            "caught_up_at_us": p.caught_up_at_us, "caught_up_offset": p.caught_up_offset,
            "metrics": {"txns": float(p.txns), "rows": float(p.rows)},
        }

    def session(self, channel: ControlChannel) -> None:
        """One session: a fresh writer, a fresh resume point, a fresh source stream."""
        self.state = "running"
        limit = self.redo.message_limit()
        publisher = RedoPublisher(self.redo.writer(), limit)
        self._publisher = publisher
        point = find_resume_point(self.redo)
        self.progress.epoch = point.epoch
        self.progress.position = point.complete_position
        plan = self._requests.plan(point)
        if plan is not None and self.cfg.capture.retransmit_window_s <= 0:
            answer_failed(channel, plan.requests, "retransmission is disabled (capture.retransmit_window_s is 0): "
                          "the source may already have forgotten that log", "")
            self._requests.answered(plan.requests)
            plan = None
        capture = self._factory()
        try:
            self._record_identity(capture, channel)
            if plan is not None:
                self._serve(capture, publisher, point, plan)
                return
            resume_after = capture.parse_position(point.complete_confirm) if point.complete_confirm else None
            if resume_after is not None and resumes_past_gap(self._gaps, point):
                log.warning("resuming past the accepted gap after %s: from where the slot stands now",
                            point.complete_position)
                resume_after = None
            log.info("capture resuming after %s (offset %d)%s", point.complete_position or "the start",
                     point.end_offset,
                     f", inside a transaction at row {point.partial_rows_done}" if point.partial_key else "")
            self.progress.state, self.progress.message = "running", ""
            self._session(capture, publisher, point).run(resume_after)
        finally:
            publisher.abort()
            publisher.writer.close()
            capture.close()

    # -- helpers -----------------------------------------------------------------------------------
    def _take_sequence_requests(self, records: list[ControlRecord]) -> None:
        """Note publish-sequences requests; forget those a sequences-published record answers."""
        for rec in records:
            if isinstance(rec.body, PublishSequences) and rec.request_id not in self._sequence_requests:
                self._sequence_requests.append(rec.request_id)
            elif isinstance(rec.body, SequencesPublished) and rec.body.request in self._sequence_requests:
                self._sequence_requests.remove(rec.body.request)

    def _record_identity(self, capture: LogCapture, channel: ControlChannel) -> None:
        """Refuse a primary that is one of the group's standbys; record the primary's identity once."""
        if self._identity_recorded:
            return
        live = capture.identity()
        refusal = source_refusal(self.cfg.group, self.name, live, self._recorded)
        if refusal is not None:
            raise refusal
        if self._recorded.nodes.get(self.name) != ("primary", live):
            channel.publish(NodeIdentity("primary", live.key, live.label), self.name)
            log.info("recorded the identity of primary %s: %s", self.name, live)
        self._identity_recorded = True


    def _session(self, capture: LogCapture, publisher: RedoPublisher, point: ResumePoint,
                 plan: ServePlan | None = None, upto: bytes = b"") -> CaptureSession:
        assert self._channel is not None
        channel = self._channel

        def new_requests() -> bool:
            """Poll the control channel; True when a request this session does not serve is waiting."""
            now = time.monotonic()
            if now - self._last_control < CONTROL_POLL_S:
                return False
            self._last_control = now
            records = channel.poll()
            self._requests.add(records)
            self._take_sequence_requests(records)
            served = session.plan.requests if session.plan is not None and not session.answered else ()
            return len(self._requests) > len(served)

        def started(served: ServePlan) -> None:
            answer_done(channel, served)
            self._requests.answered(served.requests)

        def sequences_published(ids: list[str], body: SequenceValues, offset: int) -> None:
            for request in ids:
                channel.publish(SequencesPublished(request, body.position, offset, len(body.values)), self.name)
            self._sequence_requests = [r for r in self._sequence_requests if r not in ids]
            log.info("published %d sequence values at offset %d for %s", len(body.values), offset, ", ".join(ids))

        def sequence_requests() -> list[str]:
            return list(self._sequence_requests)  # new_requests() polls the channel and notes them

        session = CaptureSession(self.cfg.group, self.cfg.primary.engine, self.cfg.capture, capture, publisher, point,
                                 self._window, self.progress,
                                 SessionHooks(new_requests, started, self.stopping.is_set, sequence_requests,
                                              sequences_published),
                                 plan=plan, upto=upto, message_limit=publisher.limit)
        return session

    def _serve(self, capture: LogCapture, publisher: RedoPublisher, point: ResumePoint, plan: ServePlan) -> None:
        """Re-read the source after ``plan.key`` and republish, tagged, up to and past the topic's tail."""
        assert self._channel is not None
        try:
            resume_after = resume_position(capture, plan)
        except ValueError as exc:
            failed = RequestQueue.lowest_group(plan)
            answer_failed(self._channel, failed, str(exc), "")
            self._requests.answered(failed)
            return
        self.progress.state, self.progress.message = "retransmitting", plan.describe()
        log.warning("%s; Kafka holds up to %s", plan.describe(), point.complete_position or "nothing")
        run_point = ResumePoint(complete_key=plan.key, complete_position=plan.position,
                                complete_confirm=plan.resume_text, epoch=point.epoch, end_offset=point.end_offset)
        try:
            self._session(capture, publisher, run_point, plan, point.complete_key).run(resume_after)
        except SourceRangeGone as exc:
            # The source restarts from its own confirmed position when asked for an older one: refuse
            # rather than republish a partial range.
            failed, floor = RequestQueue.lowest_group(plan), source_floor(capture)
            answer_failed(self._channel, failed, f"the source no longer holds its log after {plan.position}"
                          + ("" if floor else f" ({exc})"), floor)
            self._requests.answered(failed)
