"""``ark agent NODE``: checks one database node every second, restarts it locally first, and says how it is.

One agent per node, on the agent skeleton (common/agent.py): its heartbeat (``agent="node"``, ``name=NODE``,
about once a second, and at once on every change of state) carries ``state``:

* ``healthy``: every check passes (disk warnings ride in the message);
* ``restarting``: a check failed ``agent.failures_before_restart`` rounds in a row and the agent runs the
  configured restart command, try k of ``agent.restart_tries``, waiting ``agent.restart_backoff_s`` (doubling)
  between tries;
* ``failed``: the restarts are used up, or no restart command is configured, or the failure is one a restart
  does not fix (a primary that refuses writes). The controller (``ark controller``) may fail over then.
* ``fenced``: the primary is read-only on purpose: a handover fenced it, or the agent fenced it itself because
  no heartbeat reached Kafka for ``agent.fence_lease_s`` (shorter than the controller's ttl: a standby is never
  promoted while this primary still takes writes). A self-fence is never undone on the agent's own judgement (a
  failover may have happened meanwhile); it is recorded on the control topic (``node-fenced``) once Kafka answers
  again, and it ends when a newer epoch names this node primary, or when the active controller asks for it
  (``lift-fence``: Kafka back, nobody promoted, no standby that could take over) within the lease of its asking.

Each change into ``failed`` or ``restarting``, and back to ``healthy`` from one of them, is also recorded on the
control topic (a ``node-state`` record, queued so the checks never wait for Kafka): ``ark status`` lists it
among the group's events and the active controller may run the alert command for it (failover/alerts.py).

A node that passes every check for ``agent.stable_s`` gets its restarts back. A database that the roles say a
handover demoted or fenced is never restarted (it is stopped on purpose): the message says so instead. The
checks and the state function live in common/node_health.py; this module only runs them, and the commands.
The health checks and restarts go on while Kafka is away (only the heartbeat waits for the broker).
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord
from common.engines import engine, load
from common.errors import ArkError, ConfigError, KafkaUnavailable
from common.monitor import redact
from common.node_health import (
    DATABASE,
    Check,
    Decision,
    HealthProbe,
    RestartBook,
    backoff_s,
    decide,
    disk_checks,
    listener_check,
    service_checks,
)
from common.node_ops import node_ops
from common.roles import Roles, node, roles_of
from common.service_address import ServiceAddress, ServiceAddressError, service_address
from failover.controller import SELF_FENCE_WHY
from schemas.control import ControllerDecision, HandoverStep, NodeFenced, NodeState

log = logging.getLogger(__name__)

Runner = Callable[..., subprocess.CompletedProcess[str]]
#: Fences this node's database now; returns the client sessions it ended (ArkError when it cannot).
Fencer = Callable[[], int]


def hold_reason(roles: Roles, name: str) -> str:
    """Why the database of ``name`` must not be restarted now ('' when it may be): a handover stopped or fenced it."""
    role = roles.role_of(name)
    if role == "demoted":
        return (f"{name} stopped being the primary in epoch {roles.lost_primacy_at(name)} and is demoted: it is "
                f"down or fenced on purpose until 'ark reinstate {name}'")
    fenced = roles.fenced.get(name)
    if role == "primary" and fenced is not None and fenced[0] >= roles.epoch:
        return f"it was fenced in epoch {fenced[0]}: {fenced[1]}"
    return ""


def health_probe(cfg: ArkConfig, name: str) -> HealthProbe | None:
    """The engine's checks of node ``name`` (None: the engine has none; the generic checks still run)."""
    db = node(cfg, name)
    path = engine(db.engine).health
    return load(path)(cfg, db) if path else None


class NodeAgent(AgentBody):
    """The node agent's body (see the module docstring)."""

    kind = "node"

    def __init__(self, cfg: ArkConfig, name: str, *, probe: HealthProbe | None = None, run: Runner = subprocess.run,
                 clock: Callable[[], float] = time.monotonic, fencer: Fencer | None = None,
                 unfencer: Callable[[], None] | None = None, address: ServiceAddress | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.cfg = cfg
        self.name = name
        self.db = node(cfg, name)
        self.settings = self.db.agent
        self.probe = probe if probe is not None else health_probe(cfg, name)
        self.roles = Roles(cfg.primary.name)
        self.role = self.roles.role_of(name)
        self.book = RestartBook()
        self.checks: list[Check] = []
        self._run = run
        self._clock = clock
        self._healthy_since: float | None = None
        self._last_try: dict[str, float] = {}
        self._restarts = 0
        commands = {DATABASE: self.settings.restart_command}
        commands.update({f"service:{s.name}": s.restart_command for s in self.settings.services})
        self._commands = {t: c for t, c in commands.items() if c}
        self._fence = fencer or self._fence_through_node_ops
        self._unfence = unfencer or self._unfence_through_node_ops
        self._wall = wall
        #: Since when the session runs (the Kafka lease counts from here until a beat is acknowledged).
        self._contact_since = clock()
        #: Set once the agent fenced its database itself: (epoch, why, sessions ended); recorded on the control
        #: topic (``node-fenced``) once Kafka answers again.
        self.self_fenced: tuple[int, str, int] | None = None
        self._fence_recorded = False
        #: When (wall clock) the agent fenced itself, and the newest lift-fence request for it: (epoch, asked at).
        self._self_fenced_at = 0.0
        self._lift_asked: tuple[int, float] | None = None
        #: The epoch in which this demoted node's data directory was fenced while its database was down (-1: not).
        self._offline_fenced = -1
        #: The group's service address (config ``service_address``), held while this node is a working primary.
        self.address = address if address is not None else (
            service_address(cfg.service_address, node=name, group=cfg.group) if cfg.service_address else None)
        #: What was last done with it: True claimed, False released, None not yet (or the last try failed).
        self.address_held: bool | None = None
        self._channel: ControlChannel | None = None

    # -- AgentBody ---------------------------------------------------------------------------------------
    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        self.roles = roles_of(self.cfg, backlog)
        self.role = self.roles.role_of(self.name)

    def session(self, channel: ControlChannel) -> None:
        self._channel = channel
        self._contact_since = self._clock()
        while not self.stopping.is_set():
            records = channel.poll()
            self._note_lift_requests(records)
            if self.roles.update(records) or self.roles.role_of(self.name) != self.role:
                self.role = self.roles.role_of(self.name)
                log.info("node %s: %s; this node is %s", self.name, self.roles.describe(), self.role)
            started = self._clock()
            self.round()
            self._record_self_fence(channel)
            self.stopping.wait(max(0.0, self.settings.check_interval_s - (self._clock() - started)))

    def recover(self, exc: Exception) -> Retry | Exception:
        return exc if isinstance(exc, ConfigError) else Retry.SOON

    def heartbeat(self) -> dict[str, Any]:
        failed = [c for c in self.checks if not c.ok]
        return {"state": self.state, "message": self.message, "role": self.role, "epoch": self.roles.epoch,
                "db_healthy": not any(c.target == DATABASE and not c.warning for c in failed),
                "metrics": {"agent.restarts": float(self._restarts), "agent.failed_checks": float(len(failed)),
                            "agent.service_address_held": 1.0 if self.address_held else 0.0,
                            "agent.failing_rounds": float(self.book.failing_rounds)}}

    # -- one round ---------------------------------------------------------------------------------------
    def run_checks(self) -> list[Check]:
        """Every check of this node now."""
        s = self.settings
        primary = self.role in ("primary", "demoted")  # a demoted node is checked for writes too: it must take none
        checks = [listener_check(self.db, s.check_timeout_s)]
        if self.probe is not None:
            checks += self.probe.checks(primary=primary, timeout_s=s.check_timeout_s)
        dirs = self.probe.directories() if self.probe is not None else []
        dirs += [d for d in (s.data_dir, s.wal_dir) if d and d not in dirs]
        checks += disk_checks(dirs, s.disk_min_free_pct)
        checks += service_checks(s.services, s.check_timeout_s)
        return checks

    def round(self) -> Decision:
        """One round: check, judge and restart (:meth:`_judge`), then hold or release the service address."""
        self._end_self_fence_once_promoted()
        self._lift_self_fence_when_asked()
        decision = self._judge()
        self._apply_address(decision.state)
        return decision

    def _apply_address(self, state: str) -> None:
        """Hold the service address while this node is the primary and neither failed nor fenced; release it
        otherwise (a standby's agent starting up releases what a crash may have left). Only changes run the
        commands; a failed claim or release is tried again next round and said in the heartbeat's message.
        The order is the one of a handover: the old primary is fenced (and releases) before the roles name the
        new one, whose agent claims only then."""
        if self.address is None:
            return
        want = self.role == "primary" and state not in ("failed", "fenced")
        if self.address_held is want:
            return
        try:
            if want:
                self.address.claim()
            else:
                self.address.release()
        except ServiceAddressError as exc:
            self.address_held = None
            self.message = f"{self.message}; service address: {exc.message}"
            log.warning("node %s: %s (%s)", self.name, exc.message, exc.fix)
            self.beat_now()
            return
        self.address_held = want
        log.info("node %s (%s, %s): service address %s %s", self.name, self.role, state, self.address.describe(),
                 "held" if want else "released")
        self.beat_now()

    def _judge(self) -> Decision:
        """Check, judge, restart when the judgement says so; the new state is beaten at once when it changed."""
        lease_lost = self._keep_lease()
        fenced = self._fenced_why()
        self.checks = self.run_checks()
        if self.role == "demoted":
            self._keep_demoted_read_only()
        # Read-only on purpose is not a failure. A fence record whose node takes writes again (a switchover given up
        # and undone) is stale: the node is then healthy, but its database is still never restarted.
        read_only = bool(fenced) and any(c.name == "writable" and not c.ok for c in self.checks)
        if read_only:
            self.checks = [Check(c.name, True, f"read-only on purpose ({fenced})", c.target)
                           if c.name == "writable" and not c.ok else c for c in self.checks]
        now = self._clock()
        if any(not c.ok and not c.warning for c in self.checks):
            self.book.failing_rounds += 1
            self._healthy_since = None
        else:
            self.book.failing_rounds = 0
            self._healthy_since = now if self._healthy_since is None else self._healthy_since
            if self.book.tries and now - self._healthy_since >= self.settings.stable_s:
                log.info("node %s: healthy for %.0f s; its restart count starts over", self.name,
                         now - self._healthy_since)
                self.book.tries.clear()
                self._last_try.clear()
        # Never restart a primary cut off from Kafka past its lease: a standby may be promoted meanwhile.
        decision = decide(self.checks, self.book, self.settings,
                          hold=lease_lost or fenced or hold_reason(self.roles, self.name),
                          restartable=frozenset(self._commands), previous=self.state)
        if lease_lost and decision.state != "failed":
            decision = Decision("failed", f"{lease_lost}; {decision.message}")
        elif (read_only or self.self_fenced is not None) and decision.state == "healthy":
            decision = Decision("fenced", f"{fenced}; {decision.message}")
        message = decision.message
        if decision.restart is not None:
            target = decision.restart
            done = self.book.tries.get(target, 0)
            last = self._last_try.get(target)
            wait = 0.0 if last is None else backoff_s(self.settings, done) - (now - last)
            if wait > 0:
                message = f"{message} in {wait:.0f} s"
            else:
                self._say(decision.state, message)
                self._restart(target, done + 1)
                return decision
        self._say(decision.state, message)
        return decision

    def _say(self, state: str, message: str) -> None:
        changed, previous = state != self.state, self.state
        self.state, self.message = state, message
        if changed:
            (log.info if state == "healthy" else log.warning)("node %s: %s: %s", self.name, state, message)
            self.beat_now()
            self._record_state(state, previous, message)

    def _record_state(self, state: str, previous: str, message: str) -> None:
        """A change into trouble, or out of it, goes on the control topic as an event (queued: a check round never
        waits for Kafka; while Kafka is away the record is lost, and the heartbeat says the state when it is back)."""
        trouble = ("failed", "restarting")
        if self._channel is None or not (state in trouble or (state == "healthy" and previous in trouble)):
            return
        self._channel.publish_later(NodeState(state, previous, self.role, self.roles.epoch, message[:500]),
                                    self.name)

    def _restart(self, target: str, attempt: int) -> None:
        """Run ``target``'s restart command (try ``attempt``); its argv and output stay out of the logs but for
        the exit status and the last line of its error output, values redacted."""
        self.book.tries[target] = attempt
        self._restarts += 1
        argv = list(self._commands[target])
        log.warning("node %s: restarting the %s (try %d of %d)", self.name, target, attempt,
                    self.settings.restart_tries)
        self.beat_now()  # each try is news for the controller, even when the state stays 'restarting'
        try:
            res = self._run(argv, capture_output=True, text=True, timeout=self.settings.restart_timeout_s,
                            stdin=subprocess.DEVNULL, check=False)
            outcome = f"exited {res.returncode}"
            detail = (res.stderr or res.stdout or "").strip().splitlines()
            if res.returncode != 0 and detail:
                outcome += f": {redact(detail[-1])}"
        except subprocess.TimeoutExpired:
            outcome = f"did not finish in {self.settings.restart_timeout_s:g} s (killed)"
        except OSError as exc:
            outcome = f"could not run: {exc.strerror or exc}"
        self._last_try[target] = self._clock()
        log.warning("node %s: restart command of the %s %s", self.name, target, outcome)
        self.message = f"{self.message}; the restart command {outcome}"

    # -- self-fencing ------------------------------------------------------------------------------------
    def _fenced_why(self) -> str:
        """Why this primary is read-only on purpose ('' when it is not): it fenced itself, or the roles say so."""
        if self.self_fenced is not None:
            return self.self_fenced[1]
        return hold_reason(self.roles, self.name) if self.role in ("primary", "demoted") else ""

    def _keep_demoted_read_only(self) -> None:
        """A demoted node (failed over while it was down or cut off, not reinstated yet) never takes writes: when
        its database is down, its data directory is fenced so that it starts read-only (a restart by hand or by
        the service manager); when it is up and writable (started before this agent could do that), it is fenced
        at once, its writing sessions ended. 'ark reinstate' then makes it a standby."""
        why = f"demoted in epoch {self.roles.lost_primacy_at(self.name)}: read-only until 'ark reinstate {self.name}'"
        writable = any(c.name == "writable" and c.ok for c in self.checks)
        down = any(c.name in ("listener", "query") and not c.ok for c in self.checks)
        if writable:
            try:
                ended = self._fence()
            except ArkError as exc:
                log.warning("node %s: %s, but its database takes writes and the fence failed: %s", self.name, why,
                            exc.message)
                return
            log.warning("node %s: %s, but its database took writes: fenced, %d sessions ended", self.name, why, ended)
            self.checks = self.run_checks()
        elif down and self.probe is not None and self._offline_fenced != self.roles.epoch:
            done = self.probe.fence_offline(why)
            if done:
                self._offline_fenced = self.roles.epoch
                log.warning("node %s: %s; its database is down: %s", self.name, why, done)

    def _end_self_fence_once_promoted(self) -> None:
        """A self-fence belongs to its epoch: once a newer epoch names this node primary again (reinstated, then
        promoted by a handover, which lifted the fence in the database), it is over. Kept until it is on the control
        topic, so that the record of it is never lost; else a controller would read the stale 'fenced' of the new
        primary as a reason to fail over again."""
        fenced = self.self_fenced
        if fenced is None or not self._fence_recorded or self.role != "primary" or self.roles.epoch <= fenced[0]:
            return
        log.info("node %s: primary again in epoch %d: the fence it put on itself in epoch %d is over", self.name,
                 self.roles.epoch, fenced[0])
        self.self_fenced = None
        self._fence_recorded = False

    def _note_lift_requests(self, records: list[ControlRecord]) -> None:
        for rec in records:
            body = rec.body
            if isinstance(body, ControllerDecision) and body.action == "lift-fence" and rec.target == self.name:
                self._lift_asked = (body.epoch, rec.issued_at_us / 1e6)

    def _lift_self_fence_when_asked(self) -> None:
        """The active controller asked to lift the self-fence (failover/controller.py: Kafka is back and nobody was
        promoted, a broker outage rather than a partition): done when the request is for this epoch, came after the
        fence, and is younger than the lease. The controller makes no failover for its ttl (longer than the lease)
        after asking, so the fence of a later failover never comes before this lift and is never undone by it."""
        asked, fenced = self._lift_asked, self.self_fenced
        if asked is None or fenced is None or self.role != "primary":
            return
        self._lift_asked = None
        epoch, at = asked
        age = self._wall() - at
        if epoch != fenced[0] or epoch != self.roles.epoch or at < self._self_fenced_at:
            return
        if age > self.settings.fence_lease_s:
            log.warning("node %s: the controller's request to lift the self-fence is %.1f s old (lease %g s): not "
                        "acted on; it asks again", self.name, age, self.settings.fence_lease_s)
            return
        try:
            self._unfence()
        except ArkError as exc:
            log.warning("node %s: could not lift the self-fence: %s", self.name, exc.message)
            return
        log.warning("node %s: the self-fence of epoch %d is lifted at the controller's request (Kafka is back and "
                    "nobody was promoted): the database takes writes again", self.name, epoch)
        self.self_fenced = None
        self._fence_recorded = False
        self._contact_since = self._clock()
        if self._channel is not None:
            try:
                self._channel.publish(HandoverStep("lift-fence", epoch, "done", f"{self.name} takes writes again "
                                                   "(self-fence lifted at the controller's request)", 0.0), self.name)
            except KafkaUnavailable:
                log.warning("node %s: the lift of its self-fence could not be recorded yet", self.name)

    def _keep_lease(self) -> str:
        """On the primary: when no heartbeat reached Kafka for ``fence_lease_s``, fence the database (a controller
        that stops hearing this node for its ttl, longer than the lease, may promote a standby meanwhile).
        Returns why the lease is lost while the fence could not be made ('' otherwise)."""
        s = self.settings
        if not s.self_fence or self.role != "primary" or self.self_fenced is not None:
            return ""
        contact = max(self._contact_since, self.beat_delivered_at() or self._contact_since)
        silent = self._clock() - contact
        if silent <= s.fence_lease_s:
            return ""
        why = (f"{SELF_FENCE_WHY}: no heartbeat reached Kafka for {silent:.1f} s (lease {s.fence_lease_s:g} s), so "
               "a controller may promote a standby")
        try:
            ended = self._fence()
        except ArkError as exc:
            log.warning("node %s: %s; the fence failed: %s", self.name, why, exc.message)
            return f"no heartbeat reached Kafka for {silent:.1f} s and the fence failed ({exc.message}; tried again " \
                   "each round)"
        self.self_fenced = (self.roles.epoch, why, ended)
        self._self_fenced_at = self._wall()
        log.warning("node %s: %s; the database is read-only now, %d client sessions ended", self.name, why, ended)
        return ""

    def _fence_through_node_ops(self) -> int:
        """The switchover's own fence (NodeOps.fence), with no grace: the sessions that could write end now."""
        ops = node_ops(self.cfg, self.name, connect_timeout_s=max(2, int(self.settings.check_timeout_s)))
        try:
            return ops.fence(0.0).sessions_ended
        finally:
            ops.close()

    def _unfence_through_node_ops(self) -> None:
        ops = node_ops(self.cfg, self.name, connect_timeout_s=max(2, int(self.settings.check_timeout_s)))
        try:
            ops.unfence()
        finally:
            ops.close()

    def _record_self_fence(self, channel: ControlChannel) -> None:
        """Once Kafka answers again, the self-fencing goes on the control topic (a ``node-fenced`` record)."""
        if self.self_fenced is None or self._fence_recorded:
            return
        epoch, _why, ended = self.self_fenced
        try:
            channel.publish(NodeFenced(epoch, "read-only (self-fenced: Kafka unreachable)", ended), self.name)
        except KafkaUnavailable:
            return
        self._fence_recorded = True
