"""The capture agent: one group's source log → its redo topic, session after session.

Each session (:mod:`producers.session`) reads where Kafka's tail says to resume (Kafka is the capture's
checkpoint, :mod:`producers.resume`), publishes in Kafka transactions, and confirms to the source only
what is durable and older than the retransmit window. On any failure the Kafka transaction is aborted
and the next session re-reads the source from its last confirmed position; what is already in Kafka
is skipped. A ``retransmit`` intent on the control channel ends the session at the next transaction
boundary; the next session re-reads the source after the requested position and republishes from
there (:mod:`producers.retransmit`).

**Roles and epochs** (common/roles.py). The capture publishes for the primary of the current epoch, as the
control topic says, and follows it: after a switchover its next session reads the new primary, first
publishing the epoch's start marker. An ``end-epoch`` request makes it drain the primary up to the fenced
position, publish the end-of-epoch marker, and stop publishing for that epoch. A capture pinned to a node
(``ark capture --node``) that is not the primary refuses (:class:`~common.errors.NotPrimary`); one whose
epoch was ended by someone else (a failover's marker) publishes nothing more for it, and Kafka fences its
producer anyway (the group's ``transactional.id``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord, source_gaps
from common.errors import ArkError, ConfigError, FencedError, NotPrimary, PrerequisiteError
from common.guard import GuardRefusal, Recorded, recorded_identities, source_refusal
from common.redo import RedoLog
from common.roles import Roles, config_under
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
from producers.session import CaptureProgress, CaptureSession, EpochEnd, SessionHooks, SourceRangeGone
from schemas.control import EpochEnded, NodeIdentity, PublishSequences, SequencesPublished, SourceGap
from schemas.entries import EpochMarker, RedoEntry, SequenceValues

log = logging.getLogger(__name__)

#: Look for retransmit intents on the control channel this often (between transactions).
CONTROL_POLL_S = 0.5
_FATAL = (ConfigError, PrerequisiteError, FencedError, SlotGapError, GuardRefusal, EntryTooLarge, NotPrimary)
#: While the epoch has ended and the next has not begun, look for its start this often.
WAIT_ROLE_S = 0.2


class CaptureRunner(AgentBody):
    """The capture's :class:`~common.agent.AgentBody` (run it with :func:`common.heartbeat.agent_on_kafka`)."""

    kind = "capture"
    role = "primary"

    def __init__(self, cfg: ArkConfig, capture_factory: Callable[[], LogCapture], redo: RedoLog, *,
                 node: str | None = None,
                 factory_for: Callable[[ArkConfig], Callable[[], LogCapture]] | None = None,
                 pinned: bool = False) -> None:
        """``factory_for(cfg)`` builds captures for another primary (the capture follows the roles); ``pinned``:
        capture ``node`` only, and refuse when it is not the primary."""
        super().__init__()
        self.cfg = cfg
        self._factory = capture_factory
        self._factory_for = factory_for
        self._pinned = node if pinned else None
        self.roles = Roles(cfg.primary.name)
        self._identity_of = ""  # the node whose identity was recorded
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
        self._window_for = cfg.primary.name  # the node whose positions the retransmit window holds
        self._sequence_requests: list[str] = []  # publish-sequences requests not answered yet

    # -- AgentBody ---------------------------------------------------------------------------------
    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        self._channel = channel
        self._requests.add(backlog)  # requests made while capture was down are served too
        self._take_sequence_requests(backlog)
        self._gaps = source_gaps(backlog)
        self._recorded = recorded_identities(backlog)
        self._backlog = list(backlog)
        self.roles = Roles.replay(self.cfg.primary.name, backlog)
        self.redo.ensure()

    def _take_control(self, records: list[ControlRecord]) -> bool:
        """New control records: requests to serve (sequences too), roles; True when the roles changed."""
        self._requests.add(records)
        self._take_sequence_requests(records)
        self._backlog += [r for r in records if isinstance(r.body, NodeIdentity) or r.kind in (
            "epoch-begun", "standby-from")]
        return self.roles.update(records)

    def recover(self, exc: Exception) -> Retry | Exception:
        if isinstance(exc, FencedError) and self._epoch_moved_on():
            # Fenced by a failover's end-of-epoch marker (same transactional.id): this epoch is over; the next
            # session publishes nothing for it and waits for the next epoch to begin, then follows its primary.
            log.warning("capture fenced: epoch %d was ended by another writer; following the roles",
                        self.progress.epoch)
            return Retry.SOON
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

    def _epoch_moved_on(self) -> bool:
        """Whether the redo topic announces a newer epoch than the one this capture published for."""
        try:
            return find_resume_point(self.redo).epoch > self.progress.epoch
        except ArkError:
            return False

    def _wait_for_roles(self, channel: ControlChannel, why: str) -> None:
        """Publish nothing until the roles change (the next epoch begins) or the agent stops."""
        self.progress.state, self.progress.message = "handed-off", why
        self.beat_now()
        log.info("capture waits: %s", why)
        while not self.stopping.is_set():
            if self._take_control(channel.poll()):
                return
            self.stopping.wait(WAIT_ROLE_S)

    def session(self, channel: ControlChannel) -> None:
        """One session: a fresh writer, a fresh resume point, a fresh source stream."""
        self.state = "running"
        # Until the source answers, this capture vouches for nothing: a session retrying against a dead primary spends
        # seconds opening its Kafka writer, and a 'running' heartbeat meanwhile would tell the controller that the
        # primary is alive (failover/controller.py counts silence from the last running beat). The session says
        # 'running' at the source's first event.
        self.progress.state, self.progress.message = "starting", "connecting to the primary"
        self._take_control(channel.poll())
        roles = self.roles
        primary = roles.primary
        if self._pinned is not None and self._pinned != primary:
            raise NotPrimary(f"node {self._pinned} is not the primary of group {self.cfg.group}: {roles.describe()}; "
                             "a capture there would publish for a reign that ended",
                             fix=f"run 'ark capture' without --node (it follows the primary), or on {primary}")
        point = find_resume_point(self.redo)
        if point.epoch > roles.epoch:
            self._wait_for_roles(channel, f"epoch {roles.epoch} ended in the redo topic; waiting for epoch "
                                 f"{point.epoch} ({point.marker_primary or '?'}) to begin")
            return
        limit = self.redo.message_limit()
        publisher = RedoPublisher(self.redo.writer(), limit)
        self._publisher = publisher
        point = find_resume_point(self.redo)  # again, now that this writer fenced any older one
        if point.epoch > roles.epoch:
            publisher.writer.close()
            return
        self.progress.epoch = roles.epoch
        self.progress.position = point.complete_position
        plan = self._requests.plan(point)
        if plan is not None and self.cfg.capture.retransmit_window_s <= 0:
            answer_failed(channel, plan.requests, "retransmission is disabled (capture.retransmit_window_s is 0): "
                          "the source may already have forgotten that log", "")
            self._requests.answered(plan.requests)
            plan = None
        if primary != self._window_for:
            # Positions of another node mean nothing to this one: never confirm them to its slot. Requests to
            # re-read the old primary's log cannot be served by the new one.
            self._window = ConfirmWindow(self.cfg.capture.retransmit_window_s)
            self._requests = RequestQueue()
            self._window_for = primary
            plan = None
        cfg = config_under(self.cfg, primary)
        factory = self._factory if cfg is self.cfg or self._factory_for is None else self._factory_for(cfg)
        capture = factory()
        try:
            self._record_identity(capture, channel, primary)
            if point.written_epoch < roles.epoch:
                self._begin_epoch(publisher, roles.epoch, primary)
                point = find_resume_point(self.redo)
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
            self.progress.message = f"connecting to {primary}"
            session = self._session(capture, publisher, point)
            session.run(resume_after)
            if session.epoch_ended is not None:
                offset, position = session.epoch_ended
                end = roles.end_requests[roles.epoch]
                channel.publish(EpochEnded(roles.epoch, end.next_primary, offset, position), primary)
                self._wait_for_roles(channel, f"epoch {roles.epoch} ended at redo offset {offset}: "
                                     f"{end.next_primary} is the next primary")
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

    def _record_identity(self, capture: LogCapture, channel: ControlChannel, primary: str) -> None:
        """Refuse a primary that is one of the group's standbys; record the primary's identity once."""
        if self._identity_of == primary:
            return
        self._recorded = recorded_identities(self._backlog)
        live = capture.identity()
        refusal = source_refusal(self.cfg.group, primary, live, self._recorded)
        if refusal is not None:
            raise refusal
        if self._recorded.nodes.get(primary) != ("primary", live):
            channel.publish(NodeIdentity("primary", live.key, live.label), primary)
            log.info("recorded the identity of primary %s: %s", primary, live)
        self._identity_of = primary

    def _begin_epoch(self, publisher: RedoPublisher, epoch: int, primary: str) -> None:
        """The first entry of an epoch: its start marker (appliers then reject anything of an older epoch)."""
        publisher.publish(RedoEntry(group=self.cfg.group, engine=self.cfg.primary.engine, epoch=epoch,
                                    body=EpochMarker(new_epoch=epoch, primary=primary, position="")))
        publisher.commit()
        log.warning("epoch %d begins: %s is the primary (start marker at redo offset %d)", epoch, primary,
                    publisher.last_offset)


    def _session(self, capture: LogCapture, publisher: RedoPublisher, point: ResumePoint,
                 plan: ServePlan | None = None, upto: bytes = b"") -> CaptureSession:
        assert self._channel is not None
        channel = self._channel

        def new_requests() -> bool:
            """Poll the control channel; True when a request this session does not serve is waiting, or the
            roles changed (the next session follows them)."""
            now = time.monotonic()
            if now - self._last_control < CONTROL_POLL_S:
                return False
            self._last_control = now
            if self._take_control(channel.poll()):
                return True
            served = session.plan.requests if session.plan is not None and not session.answered else ()
            return len(self._requests) > len(served)

        def end_epoch() -> EpochEnd | None:
            end = self.roles.end_requests.get(self.roles.epoch)
            if end is None or not end.next_primary or self.roles.epoch in self.roles.ended:  # none, or withdrawn
                return None
            return EpochEnd(end.epoch, end.next_primary, capture.parse_position(end.upto))

        def started(served: ServePlan) -> None:
            answer_done(channel, served)
            self._requests.answered(served.requests)

        def sequences_published(ids: list[str], body: SequenceValues, offset: int) -> None:
            for request in ids:
                channel.publish(SequencesPublished(request, body.position, offset, len(body.values)),
                                self.roles.primary)
            self._sequence_requests = [r for r in self._sequence_requests if r not in ids]
            log.info("published %d sequence values at offset %d for %s", len(body.values), offset, ", ".join(ids))

        def sequence_requests() -> list[str]:
            return list(self._sequence_requests)  # new_requests() polls the channel and notes them

        session = CaptureSession(self.cfg.group, self.cfg.primary.engine, self.cfg.capture, capture, publisher, point,
                                 self._window, self.progress,
                                 SessionHooks(new_requests, started, self.stopping.is_set,
                                              sequence_requests=sequence_requests,
                                              sequences_published=sequences_published, end_epoch=end_epoch),
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
