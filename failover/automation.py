"""``ark controller``: the agent that watches the group and fails over by itself (issue 11).

Every tick (:data:`TICK_S`) it reads the heartbeats and the control topic into a
:class:`~failover.controller.ControllerView` and asks the pure :func:`~failover.controller.tick` what to do. Only
the holder of the group's lease (failover/lease.py) acts; the others watch, ready to take over. The decision
sentence is logged when it changes (other than in its numbers: a lag, seconds of silence) and every
:data:`LOG_EVERY_S` otherwise, so the log stays readable.

A failover goes through the same code path as ``ark failover TARGET`` (the ``run_failover`` callable, which
ops/ binds to ops/handover.run_failover: failover/handover.Handover), and is recorded on the control topic
(``controller-decision``: failover, failover-done, failover-failed) where ``ark status`` and the console show
it. The anti-flapping window counts from the last failover-done, read back from the control topic, so a
restarted controller, or another one taking over the lease, knows it too.

While it holds the lease it also runs the group's alert command (config ``alerts``) once per event of the
configured kinds, in a worker thread that never holds the tick up (failover/alerts.py says why here, and how an
event is not alerted twice across restarts and takeovers).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from collections.abc import Callable
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord
from common.errors import ArkError, ConfigError, KafkaUnavailable
from common.events import Event
from common.roles import Roles, nodes, roles_of
from failover.alerts import AlertCursor, Alerter, Outcome, sent_record
from failover.controller import (
    AGENT_ALIVE,
    ApplierInfo,
    BeatInfo,
    ControllerView,
    NodeInfo,
    Settings,
    Tick,
    tick,
    watching_from,
)
from failover.lease import KafkaLease
from failover.view import HeartbeatView
from schemas.control import ControllerDecision, SetMaintenance

log = logging.getLogger(__name__)

TICK_S = 0.25
#: The same sentence is logged again after this long (a readable log that still shows the controller is alive).
LOG_EVERY_S = 60.0
#: After a failed automatic failover, the next attempt waits twice the ttl, doubled after each failure in a row up to
#: this long (a broker back after an outage is retried within seconds; a target that keeps failing is not hammered).
RETRY_FAILED_MAX_S = 120.0


def retry_delay(ttl_s: float, failed_in_a_row: int) -> float:
    """How long the next automatic failover waits after ``failed_in_a_row`` failed ones (1 or more)."""
    return min(RETRY_FAILED_MAX_S, 2 * ttl_s * 2 ** max(0, failed_in_a_row - 1))
#: How far back the heartbeat view starts: the primary's last heartbeats before this controller started.
LOOKBACK_S = 120.0
#: How long a controller waits to read back its failover decision before it runs the failover (for its alert).
CATCH_UP_S = 1.0
#: The same session error is recorded (and alerted) again only after this long.
ERROR_REPEAT_S = 600.0
#: Capture states that vouch for the primary (it reads the primary's log).
CAPTURE_ALIVE = ("running", "retransmitting")
_NUMBERS = re.compile(r"(?<!epoch )\b\d+(\.\d+)?")


class Automation:
    """What the control topic says about automation: maintenance, the last automatic failover."""

    def __init__(self) -> None:
        self.maintenance = False
        self.maintenance_by = ""
        self.last_failover_at = 0.0
        self.last_failover_to = ""
        self.last_decision: ControlRecord | None = None
        #: The last ``failover`` decision, and whether a ``failover-done``/``failover-failed`` came after it.
        self.failover_decision: ControlRecord | None = None
        self.failover_settled = True
        #: Whether what came after it was ``failover-failed``.
        self.failover_failed = False

    def update(self, records: list[ControlRecord]) -> None:
        """Fold newer control records in."""
        for rec in records:
            if isinstance(rec.body, SetMaintenance):
                self.maintenance = rec.body.mode == "on"
                self.maintenance_by = rec.issued_by if self.maintenance else ""
            elif isinstance(rec.body, ControllerDecision):
                self.last_decision = rec
                if rec.body.action == "failover":
                    self.failover_decision, self.failover_settled, self.failover_failed = rec, False, False
                elif rec.body.action in ("failover-done", "failover-failed"):
                    self.failover_settled = True
                    self.failover_failed = rec.body.action == "failover-failed"
                if rec.body.action == "failover-done":
                    self.last_failover_at, self.last_failover_to = rec.issued_at_us / 1e6, rec.target


def automation_of(records: list[ControlRecord]) -> Automation:
    """The automation state after ``records``."""
    found = Automation()
    found.update(records)
    return found


class Controller(AgentBody):
    """The controller agent (see the module docstring)."""

    kind = "controller"
    role = "controller"

    def __init__(self, cfg: ArkConfig, run_failover: Callable[[str], Any], *, settings: Settings,
                 name: str | None = None) -> None:
        super().__init__()
        if settings.ttl_s <= 0 or settings.anti_flapping_s < 0:
            raise ConfigError(f"controller ttl {settings.ttl_s:g} s / anti-flapping {settings.anti_flapping_s:g} s: "
                              "the ttl must be positive and the window not negative", fix="e.g. --ttl 5 --window 300")
        self.cfg = cfg
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.settings = settings
        self._run_failover = run_failover
        self.roles: Roles = Roles(cfg.primary.name)
        self.automation = Automation()
        self.sentence = ""
        self._alive_at: dict[tuple[str, str, int], float] = {}
        self._logged: tuple[str, float] = ("", 0.0)
        self._retry_at = 0.0
        self._failed_in_a_row = 0
        self._lift_asked_at = 0.0  # when this controller last asked the primary to lift its self-fence
        self._was_active = False
        self.lease: KafkaLease | None = None
        self.alerter: Alerter | None = None
        self.alert_cursor: AlertCursor | None = None
        self._channel: ControlChannel | None = None
        self._last_error: tuple[str, float] = ("", 0.0)

    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        self.roles = roles_of(self.cfg, backlog)
        self.automation = automation_of(backlog)
        self._channel = channel
        alerts = self.cfg.alerts
        if alerts is not None:
            self.alert_cursor = AlertCursor.of(alerts.kinds, backlog, channel.bus.position())
            self.alerter = Alerter(alerts, self.cfg.group, record=self._record_alert, may_run=self._holds_lease)
            log.info("controller %s: alerts for %s go to %s (timeout %g s); %d event(s) not alerted yet", self.name,
                     ", ".join(alerts.kinds), alerts.command[0], alerts.timeout_s, len(self.alert_cursor.due()))

    def _holds_lease(self) -> bool:
        lease = self.lease
        return lease is not None and lease.active()

    def _record_alert(self, event: Event, outcome: Outcome) -> None:
        """From the alert worker: the event is handled; recorded so that no controller alerts it again."""
        if self._channel is not None:
            self._channel.publish_later(sent_record(event, outcome, self.name), event.node)

    def _fold(self, records: list[ControlRecord]) -> None:
        """Fold newer control records into the roles, the automation state and the events waiting for an alert."""
        self.roles.update(records)
        self.automation.update(records)
        if self.alert_cursor is not None:
            self.alert_cursor.update(records)

    def _offer_alerts(self, active: bool) -> None:
        """Hand the events that wait to the alert worker while active (it never blocks)."""
        if self.alert_cursor is None or self.alerter is None or not active:
            return
        for event in self.alert_cursor.due():
            self.alerter.offer(event)

    def _catch_up(self, channel: ControlChannel, request_id: str, timeout_s: float = CATCH_UP_S) -> None:
        """Read the control topic up to the record this controller just wrote (bounded), so that its event is
        alerted now rather than after the failover the tick is about to run."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = channel.poll()
            self._fold(records)
            if any(r.request_id == request_id for r in records):
                return
            time.sleep(0.02)

    # -- the view ----------------------------------------------------------------------------------------
    def _remember_alive(self, view: HeartbeatView) -> None:
        """Keep, per agent and epoch, when it last said the primary was alive (the view keeps only the newest
        beat, which may be a retrying one)."""
        for (agent, name), beat in view.beats.items():
            alive = (agent == "capture" and beat.state in CAPTURE_ALIVE) or (agent == "node" and beat.state in
                                                                             AGENT_ALIVE)
            if alive:
                key = (agent, name, beat.epoch if agent == "capture" else 0)
                self._alive_at[key] = max(self._alive_at.get(key, 0.0), beat.sent_at)

    def view_of(self, beats: HeartbeatView, watching_since: float) -> ControllerView:
        """The tick's view, from the heartbeats and the control records folded so far."""
        self._remember_alive(beats)
        infos = {}
        for n in nodes(self.cfg):
            agent = beats.beats.get(("node", n.name))
            ap = beats.beats.get(("apply", n.name))
            infos[n.name] = NodeInfo(
                n.name, n.engine,
                agent=BeatInfo(agent.state, agent.sent_at, agent.message, agent.epoch,
                               self._alive_at.get(("node", n.name, 0), 0.0)) if agent else None,
                applier=ApplierInfo(ap.state, ap.sent_at, ap.applied_offset, int(ap.record.get("lag_entries", 0)),
                                    ap.delay_seconds, ap.epoch) if ap else None)
        captures = [b for (agent, _n), b in beats.beats.items() if agent == "capture"]
        cap = max(captures, key=lambda b: b.sent_at) if captures else None
        # Only a capture running *for the current epoch* vouches: the last running beat of the epoch before is not
        # news of the new primary (the capture's first beats of a new epoch may still be starting up).
        capture = BeatInfo(cap.state, cap.sent_at, cap.message, cap.epoch,
                           self._alive_at.get(("capture", cap.name, self.roles.epoch), 0.0)) if cap else None
        auto = self.automation
        reigns = self.roles.reigns
        # A failover decided and never done, while this controller holds the lease, is over and nobody will finish
        # it but this one: another controller decided it and lost the lease (died, or was cut off) in the middle of
        # it; or it failed; or this controller decided it: a failover runs inside this controller's tick, so none of
        # its own is running while it looks. Its steps on the control topic may say it is still in progress: when
        # Kafka itself was what failed (the broker killed mid-failover), the 'failed' step was never recorded.
        dec = auto.failover_decision
        mine_or_failed = (dec is not None and isinstance(dec.body, ControllerDecision)
                          and (dec.body.holder == self.name or auto.failover_failed))
        abandoned = (dec is not None and (not auto.failover_settled or auto.failover_failed)
                     and isinstance(dec.body, ControllerDecision) and self.lease is not None and self.lease.active())
        return ControllerView(roles=self.roles, nodes=infos, capture=capture, lift_asked_at=self._lift_asked_at,
                              maintenance=auto.maintenance,
                              maintenance_by=auto.maintenance_by, last_failover_at=auto.last_failover_at,
                              last_failover_to=auto.last_failover_to, watching_since=watching_since,
                              epoch_since=reigns[-1].since_us / 1e6 if reigns else 0.0, settings=self.settings,
                              abandoned_by=dec.body.holder if abandoned and dec is not None
                              and isinstance(dec.body, ControllerDecision) else "",
                              abandoned_to=dec.target if abandoned and dec is not None else "",
                              abandoned_since=dec.issued_at_us / 1e6 if abandoned and dec is not None else 0.0,
                              abandoned_ended=abandoned and mine_or_failed)

    # -- the loop ----------------------------------------------------------------------------------------
    def session(self, channel: ControlChannel) -> None:
        self.state, self.message = "starting", "reading heartbeats"
        lease = KafkaLease(self.cfg, self.name, self.settings.ttl_s)
        beats = HeartbeatView(self.cfg, lookback_s=LOOKBACK_S)
        self.lease = lease
        try:
            beats.catch_up()
            lease.start()
            watching_since = time.time()
            while not self.stopping.is_set():
                self._fold(channel.poll())
                heard_before = beats.last_heard
                beats.refresh(0.1)
                watching_since = watching_from(watching_since, heard_before, beats.last_heard)
                decided = tick(self.view_of(beats, watching_since), time.time())
                self._step(channel, lease, decided)
                self._offer_alerts(self._was_active)
                self.stopping.wait(TICK_S)
        finally:
            self.lease = None
            lease.close()
            beats.close()

    def _step(self, channel: ControlChannel, lease: KafkaLease, decided: Tick) -> None:
        active = lease.active()
        self.state = "active" if active else "standby"
        if active != self._was_active:
            self._was_active = active
            self.beat_now()
            if active:
                log.info("controller %s: %s", self.name, lease.describe())
                channel.publish(ControllerDecision("active", self.roles.epoch, f"{self.name} is the active controller "
                                                   f"({lease.describe()})", self.name))
            else:
                log.warning("controller %s: %s", self.name, lease.describe())
                if self.alerter is not None:
                    self.alerter.forget()  # the next holder alerts what still waits
        sentence = decided.sentence if active else f"{lease.describe()}; {decided.sentence}"
        now = time.monotonic()
        if decided.acts and active and time.time() < self._retry_at:
            sentence += f" (the last attempt failed: trying again in {self._retry_at - time.time():.0f} s)"
        self._say(sentence, now)
        self.sentence, self.message = sentence, sentence[:300]
        if decided.acts and active and time.time() >= self._retry_at:
            self._failover(channel, lease, decided)
        elif decided.action == "lift-fence" and active:
            # The agent acts on it only within its lease of it, and this controller makes no failover for the ttl
            # after it (failover/controller.py): a failover's fence never comes before the lift and is never undone.
            self._lift_asked_at = time.time()
            channel.publish(ControllerDecision("lift-fence", self.roles.epoch, decided.sentence, self.name),
                            decided.target)
            self.beat_now()

    def _say(self, sentence: str, now: float) -> None:
        """Log the sentence when it says something new: numbers alone (a lag, seconds of silence) changing
        is not news, or the log would get a line per tick under load."""
        shape = _NUMBERS.sub("#", sentence)
        last, at = self._logged
        if shape != last or now - at >= LOG_EVERY_S:
            log.info("%s", sentence)
            self._logged = (shape, now)

    def _failover(self, channel: ControlChannel, lease: KafkaLease, decided: Tick) -> None:
        epoch = self.roles.epoch
        request = channel.publish(ControllerDecision("failover", epoch, decided.sentence, self.name), decided.target)
        if self.alerter is not None:  # page at the decision: the failover below holds the tick for seconds
            self._catch_up(channel, request)
            self._offer_alerts(lease.active())
        if not lease.active():  # the publish took long enough for the lease to run out: someone else decides
            log.warning("controller %s lost the lease before failing over to %s: not acting", self.name,
                        decided.target)
            return
        self.state, self.message = "failing-over", decided.sentence[:300]
        self.beat_now()
        started = time.monotonic()
        try:
            self._run_failover(decided.target)
        except ArkError as exc:
            self._failed_in_a_row += 1
            delay = retry_delay(self.settings.ttl_s, self._failed_in_a_row)
            self._retry_at = time.time() + delay
            log.error("automatic failover to %s failed: %s (fix: %s); trying again in %.0f s if still needed",
                      decided.target, exc.message, exc.fix, delay)
            channel.publish(ControllerDecision("failover-failed", epoch, exc.message, self.name), decided.target)
            return
        seconds = time.monotonic() - started
        self._failed_in_a_row = 0
        log.info("automatic failover to %s done in %.1f s", decided.target, seconds)
        channel.publish(ControllerDecision("failover-done", epoch + 1, f"{decided.target} is the primary of epoch "
                                           f"{epoch + 1} ({seconds:.1f} s after the decision)", self.name),
                        decided.target)

    def recover(self, exc: Exception) -> Retry | Exception:
        self._record_error(exc)
        if isinstance(exc, ConfigError):
            return exc
        return Retry.LATER

    def _record_error(self, exc: Exception) -> None:
        """A session that failed is a ``controller-error`` event (queued; the same error again within
        :data:`ERROR_REPEAT_S` is not, or a controller retrying every minute would page every minute). A controller
        that lost Kafka cannot record anything: its heartbeat stops, which ``ark status`` shows."""
        if self._channel is None or isinstance(exc, KafkaUnavailable):
            return
        what = exc.message if isinstance(exc, ArkError) else f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        last, at = self._last_error
        if what == last and now - at < ERROR_REPEAT_S:
            return
        self._last_error = (what, now)
        sentence = f"controller {self.name}: {what}"[:500]
        self._channel.publish_later(ControllerDecision("error", self.roles.epoch, sentence, self.name))

    def heartbeat(self) -> dict[str, Any]:
        metrics = {"lease_term": float(self.lease.book.term) if self.lease else 0.0}
        if self.alerter is not None:
            metrics.update({f"alerts.{k}": float(v) for k, v in self.alerter.counts.items()})
        return {"epoch": self.roles.epoch, "state": self.state, "message": self.message, "metrics": metrics}

    def close(self) -> None:
        if self.alerter is not None:
            self.alerter.idle(5.0)  # a clean stop lets the queued alerts run (bounded)
            self.alerter.close()
