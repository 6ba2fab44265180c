"""Switchover and failover, step by step (ARCHITECTURE.md, "Roles, epochs and failover").

**Switchover** (planned, nothing lost, nothing diverges):

1. the old primary is fenced: read-only, writing sessions given a grace, then ended (``node-fenced``);
2. the capture drains it to the fenced position and publishes the end-of-epoch marker (``end-epoch`` asks,
   ``epoch-ended`` answers with the marker's offset M);
3. the target applies up to M;
4. sequences are set on the target from the old primary, forward only;
5. the old primary's slot and publication go (it becomes a standby);
6. the target is promoted (its slot is created while it is still read-only, then the guard goes) and
   ``epoch-begun`` names it primary of epoch E+1: the capture follows it and publishes the start marker;
7. ``standby-from`` M+1 makes the old primary a standby that applies from there, with no resync.

**Failover** (the primary is gone): the old primary is fenced if it answers; the epoch is closed by a marker
written here with the group's ``transactional.id``, which fences in Kafka any capture still publishing for it;
the target applies everything up to that marker (every transaction that reached Kafka), is promoted, and the
old primary is left *demoted* until ``ark reinstate``.

Every step is recorded on the control topic (``handover`` records) and said to the operator as it happens.
Until the end-of-epoch marker exists, a switchover that fails is undone (the old primary writable again);
after it, the only way is forward, and the error says which command completes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord
from common.errors import ArkError, ConfigError, FencedError, HandoverFailed, HandoverRefused
from common.node_ops import NodeOps, node_ops
from common.redo_kafka import KafkaRedoLog
from common.roles import Roles, nodes, roles_of
from failover.divergence import fill_group_rows, publish, read_divergence, write_report
from failover.plan import Decision, NodeView, decide_failover, decide_switchover
from failover.view import HeartbeatView
from schemas import envelope
from schemas.control import (
    ApplyUntil,
    EndEpoch,
    EpochBegun,
    EpochCut,
    EpochEnded,
    HandoverStep,
    NodeFenced,
    SetDelay,
    StandbyFrom,
    TableResynced,
)
from schemas.entries import REDO_SCHEMA, EpochMarker, Position, RedoEntry, TxnChunk, from_record, to_record

log = logging.getLogger(__name__)

Say = Callable[[str], None]

#: In a failover, the old primary gets this long to answer a connection (it is probably gone).
OLD_PRIMARY_TIMEOUT_S = 3
#: How long ``ark switchover``/``ark failover`` wait, after the promotion, for a capture to begin the new epoch.
CAPTURE_WAIT_S = 60.0


@dataclass
class Report:
    """What a handover did, with the seconds of each phase."""

    action: str
    epoch: int
    previous: str
    primary: str
    marker_offset: int = -1
    phases: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """The whole handover."""
        return round(sum(self.phases.values()), 3)


class Handover:
    """The group's state for one handover: roles, heartbeats, the control channel."""

    def __init__(self, cfg: ArkConfig, say: Say, *, timeout_s: float = 120.0,
                 capture_wait_s: float = CAPTURE_WAIT_S) -> None:
        self.cfg = cfg
        self.say = say
        self.timeout_s = timeout_s
        #: How long a handover waits, after the promotion, for a capture to begin the new epoch (0: it only
        #: looks once). ``ark controller`` passes 0: its tick must go on (a capture is supervised on its own host
        #: and follows the primary; the controller sees its heartbeat anyway).
        self.capture_wait_s = capture_wait_s
        self.channel = ControlChannel.for_config(cfg)
        self.roles: Roles = roles_of(cfg, self.channel.replay())
        #: Records that arrived since start-up (waits look for answers among them).
        self.seen: list[ControlRecord] = []
        self.view = HeartbeatView(cfg)
        self.view.catch_up()  # a heartbeat a second from every agent: look at the last ones
        self._last = time.monotonic()
        #: Old primaries that did not answer this failover's fence: not asked again (each try waits out the
        #: connect timeout, OLD_PRIMARY_TIMEOUT_S, when the host is gone, and the failover waits with it).
        self._silent: set[str] = set()

    def close(self) -> None:
        """Release the channel and the view."""
        self.view.close()
        self.channel.close()

    # -- views -----------------------------------------------------------------------------------------
    def node_views(self) -> dict[str, NodeView]:
        """Every node, as roles and heartbeats show it now."""
        out = {}
        for n in nodes(self.cfg):
            beat = self.view.applier(n.name)
            rate = 0.0
            out[n.name] = NodeView(
                name=n.name, role=self.roles.role_of(n.name), engine=n.engine,
                applier_state=beat.state if beat else "not running", applied_offset=beat.applied_offset if beat else -1,
                epoch=beat.epoch if beat else 0, delay_seconds=beat.delay_seconds if beat else 0.0, apply_rate=rate)
        return out

    def _poll(self) -> None:
        records = self.channel.poll()
        self.seen += records
        self.roles.update(records)
        self.view.refresh(0.05)

    def _wait(self, what: str, done: Callable[[], bool], timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout_s)
        while not done():
            if time.monotonic() >= deadline:
                raise TimeoutError(what)
            self._poll()
            time.sleep(0.05)

    def _step(self, action: str, epoch: int, phase: str, detail: str, report: Report) -> None:
        now = time.monotonic()
        report.phases[phase] = round(now - self._last, 3)
        self._last = now
        self.channel.publish(HandoverStep(action, epoch, phase, detail, report.phases[phase]), report.primary)
        self.say(f"{phase:>10}  {detail} ({report.phases[phase]:.2f} s)")

    def _applied_to(self, node: str, offset: int, epoch: int) -> Callable[[], bool]:
        def done() -> bool:
            beat = self.view.applier(node)
            return beat is not None and beat.applied_offset >= offset and beat.epoch >= epoch
        return done

    def _refuse(self, decision: Decision) -> None:
        if not decision.go:
            raise HandoverRefused(decision.sentence + "; nothing was changed", fix=decision.fix or "see 'ark topology'")

    # -- switchover ------------------------------------------------------------------------------------
    def switchover(self, target: str, *, grace_s: float) -> Report:
        """Hand the service from the primary to ``target`` (see the module docstring)."""
        roles = self.roles
        capture = self.view.capture()
        decision = decide_switchover(roles, target, self.node_views(),
                                     capture_running=capture is not None and capture.state in ("running",),
                                     capture_state=f"{capture.state} ({capture.message})" if capture else "not running")
        self._refuse(decision)
        old, epoch = roles.primary, roles.epoch
        old_ops, new_ops = _ops(self.cfg, old), _ops(self.cfg, target)  # an engine without them: refused here
        report = Report("switchover", epoch + 1, old, target)
        self._last = time.monotonic()
        self.say(decision.sentence)
        for note in decision.notes:
            self.say(f"  {note}")
        self._step("switchover", epoch + 1, "started", f"{old} -> {target}", report)
        marker = -1
        try:
            fence = old_ops.fence(grace_s)
            self.channel.publish(NodeFenced(epoch, "read-only (switchover)", fence.sessions_ended), old)
            self._step("switchover", epoch + 1, "fenced", f"{old} read-only, {fence.sessions_ended} sessions ended "
                       f"after {grace_s:g} s grace, log at {fence.position}", report)
            self.channel.publish(EndEpoch(epoch, target, fence.position), old)
            marker = self._await_epoch_end(epoch)
            self._step("switchover", epoch + 1, "drained", f"everything {old} committed is in Kafka; end-of-epoch "
                       f"marker at redo offset {marker}", report)
        except (ArkError, TimeoutError) as exc:
            self._undo(old_ops, epoch, exc, report)
            raise AssertionError("unreachable") from None
        report.marker_offset = marker
        try:
            self._finish_switchover(old_ops, new_ops, target, epoch, marker, report)
        except (ArkError, TimeoutError) as exc:
            what = exc.message if isinstance(exc, ArkError) else f"timed out waiting for {exc}"
            self._step("switchover", epoch + 1, "failed", what, report)
            raise HandoverFailed(f"switchover to {target} stopped after the end-of-epoch marker (redo offset {marker}):"
                                 f" {what}", fix=f"fix that, then run 'ark switchover {target}' again: it goes on "
                                                 "from where it stopped") from None
        finally:
            old_ops.close()
            new_ops.close()
        return report

    def _await_epoch_end(self, epoch: int) -> int:
        try:
            self._wait(f"the capture to publish the end of epoch {epoch}", lambda: epoch in self.roles.ended,
                       timeout=min(self.timeout_s, 60.0))
        except TimeoutError:
            self.channel.publish(EndEpoch(epoch, "", ""), self.roles.primary)  # withdrawn
            time.sleep(1.0)
            self._poll()
            if epoch not in self.roles.ended:
                raise
        return self.roles.ended[epoch].marker_offset

    def _undo(self, old_ops: NodeOps, epoch: int, exc: Exception, report: Report) -> None:
        """Before the marker: the old primary takes writes again; nothing else changed."""
        what = exc.message if isinstance(exc, ArkError) else f"timed out waiting for {exc}"
        try:
            old_ops.unfence()
            undone = f"{report.previous} accepts writes again"
        except ArkError as again:
            undone = f"{report.previous} could not be made writable again ({again.message})"
        finally:
            old_ops.close()
        self._step("switchover", epoch + 1, "failed", f"{what}; {undone}", report)
        raise HandoverFailed(f"switchover to {report.primary} gave up before the end of epoch {epoch}: {what}; "
                             f"{undone}", fix="check 'ark status' (is the capture running?) and try again") from None

    def _finish_switchover(self, old_ops: NodeOps, new_ops: NodeOps, target: str, epoch: int, marker: int,
                           report: Report) -> None:
        old = report.previous
        self._wait(f"{target} to apply up to redo offset {marker}", self._applied_to(target, marker, epoch + 1))
        self._step("switchover", epoch + 1, "applied", f"{target} applied up to the marker", report)
        values = old_ops.sequences()
        seq = new_ops.set_sequences(values)
        self._step("switchover", epoch + 1, "sequences", f"{seq.moved} moved forward, {seq.unchanged} already there"
                   + (f", created on {target}: {', '.join(seq.created)}" if seq.created else ""), report)
        dropped = old_ops.drop_source()
        where = new_ops.promote()
        self.channel.publish(EpochBegun(epoch + 1, target, old, "switchover", marker), target)
        self.channel.publish(StandbyFrom(epoch + 1, marker + 1, f"switchover to {target}"), old)
        self._step("switchover", epoch + 1, "promoted", f"{target} is the primary of epoch {epoch + 1} (log at "
                   f"{where}); {old} applies from redo offset {marker + 1}"
                   + (f" (dropped its {', '.join(dropped)})" if dropped else ""), report)
        self._wait_capture(epoch + 1, target, report, "switchover")

    def _wait_capture(self, epoch: int, target: str, report: Report, action: str) -> None:
        def begun() -> bool:
            return any(b.epoch >= epoch and b.state == "running" for b in [self.view.capture()] if b is not None)

        try:
            if self.capture_wait_s <= 0 and not begun():
                self._step(action, epoch, "done", f"{target} is the primary; its capture begins epoch {epoch} when it "
                           "next reconnects (not waited for)", report)
                return
            self._wait("the capture to begin the epoch", begun, timeout=min(self.timeout_s, self.capture_wait_s))
            self._step(action, epoch, "done", f"the capture publishes epoch {epoch} from {target}", report)
        except TimeoutError:
            report.notes.append("no capture began the new epoch yet: start 'ark capture' (it follows the primary)")
            self._step(action, epoch, "done", f"{target} is the primary; no capture was seen beginning epoch {epoch} "
                       "yet: start 'ark capture'", report)

    # -- failover --------------------------------------------------------------------------------------
    def failover(self, target: str, *, force: bool, until_us: int = 0) -> Report:
        """``target`` takes over from a primary that is gone (see the module docstring). With ``until_us``, a
        point-in-time failover: ``target`` (a delayed standby) applies only what was committed before it."""
        roles = self.roles
        views = self.node_views()
        decision = decide_failover(roles, target, views, force=force or bool(until_us))
        self._refuse(decision)
        old, epoch = roles.primary, roles.epoch
        new_ops = _ops(self.cfg, target)  # an engine without them: refused here
        report = Report("failover", epoch + 1, old, target)
        self._last = time.monotonic()
        self.say(decision.sentence)
        for note in decision.notes:
            self.say(f"  {note}")
        self._step("failover", epoch + 1, "started", f"{old} -> {target}"
                   + (f", up to {_iso(until_us)}" if until_us else ""), report)
        try:
            if until_us:
                self._cut_at(target, epoch, until_us, report)
            elif views[target].delay_seconds > 0:  # the new primary applies everything, now
                self.channel.publish(SetDelay(0.0), target)
            self._fence_if_reachable(old, epoch, report)
            marker = self._close_epoch_in_kafka(epoch, target)
            report.marker_offset = marker
            self.channel.publish(EpochEnded(epoch, target, marker, ""), old)
            self._step("failover", epoch + 1, "fenced", f"epoch {epoch} closed by the marker at redo offset {marker}: "
                       "no capture can publish for it any more", report)
            self._wait(f"{target} to apply everything up to redo offset {marker}",
                       self._applied_to(target, marker, epoch + 1))
            self._step("failover", epoch + 1, "applied", f"{target} applied everything Kafka held"
                       + (f" up to {_iso(until_us)}" if until_us else ""), report)
            self.sync_sequences(target, new_ops, report)
            where = new_ops.promote()
            self.channel.publish(EpochBegun(epoch + 1, target, old, "failover", marker), target)
            self._step("failover", epoch + 1, "promoted", f"{target} is the primary of epoch {epoch + 1} (log at "
                       f"{where}); {old} is demoted until 'ark reinstate {old}'", report)
            self._wait_capture(epoch + 1, target, report, "failover")
        except (ArkError, TimeoutError) as exc:
            what = exc.message if isinstance(exc, ArkError) else f"timed out waiting for {exc}"
            self._step("failover", epoch + 1, "failed", what, report)
            raise HandoverFailed(f"failover to {target} stopped: {what}",
                                 fix=f"fix that, then run 'ark failover {target}' again") from None
        finally:
            new_ops.close()
        return report

    def _cut_at(self, target: str, epoch: int, until_us: int, report: Report) -> None:
        """A point-in-time failover: hold ``target`` at the first transaction committed at or after ``until_us``,
        then cut the epoch there (consumers/recovery.py) and let it go on to the end-of-epoch marker."""
        beat = self.view.applier(target)
        applied_us = int(beat.record.get("applied_commit_time_us", 0)) if beat else 0
        if applied_us >= until_us:
            raise HandoverRefused(f"{target} already applied a transaction committed at {_iso(applied_us)}, not "
                                  f"before {_iso(until_us)}: it cannot go back",
                                  fix="choose a more delayed standby, or a later --until")
        self.channel.publish(ApplyUntil(until_us), target)

        def held() -> bool:
            b = self.view.applier(target)
            return b is not None and (b.state == "held" or (int(b.record.get("lag_entries", 1)) == 0
                                                            and b.state in ("running", "delayed")))

        self._wait(f"{target} to apply everything committed before {_iso(until_us)}", held)
        now = self.view.applier(target)
        assert now is not None
        cut = now.applied_offset + 1
        self.channel.publish(EpochCut(epoch, cut, until_us), target)
        self.channel.publish(ApplyUntil(0), target)
        self.channel.publish(SetDelay(0.0), target)
        behind = sorted(n for n, v in self.node_views().items()
                        if n not in (target, report.previous) and v.role == "standby" and v.applied_offset >= cut)
        if behind:
            report.notes.append(f"{', '.join(behind)} applied transactions after {_iso(until_us)}: they stop, and need "
                                f"'ark resync' ({'; '.join(f'ark resync {n}' for n in behind)})")
        self._step("failover", epoch + 1, "cut", f"{target} holds everything committed before {_iso(until_us)}; the "
                   f"rest of epoch {epoch} (redo offset {cut} on) is cut out of the group's history", report)

    def _fence_if_reachable(self, old: str, epoch: int, report: Report) -> None:
        """The old primary, if it answers, is made read-only at once (no grace: it is not the primary any more)."""
        ops = node_ops(self.cfg, old, connect_timeout_s=OLD_PRIMARY_TIMEOUT_S)
        try:
            fence = ops.fence(0.0)
            self.channel.publish(NodeFenced(epoch, "read-only (failover)", fence.sessions_ended), old)
            report.notes.append(f"{old} answered and was made read-only (log at {fence.position})")
        except ArkError as exc:
            self._silent.add(old)
            report.notes.append(f"{old} does not answer ({exc.message}): it was not fenced; Kafka fences its capture")
        finally:
            ops.close()

    def _close_epoch_in_kafka(self, epoch: int, target: str) -> int:
        """Write the end-of-epoch marker with the group's transactional.id: Kafka fences any older producer."""
        def write() -> int:
            writer = KafkaRedoLog(self.cfg.kafka, self.cfg.group).writer()
            try:
                entry = RedoEntry(group=self.cfg.group, engine=self.cfg.primary.engine, epoch=epoch,
                                  body=EpochMarker(new_epoch=epoch + 1, primary=target, position=""))
                env = envelope.encode(REDO_SCHEMA, to_record(entry), epoch=epoch)
                writer.begin()
                writer.produce(env.value, env.headers, env.timestamp_ms)
                writer.commit()
                return writer.last_offset
            finally:
                writer.close()
        return write_unless_fenced(write)

    def sync_sequences(self, target: str, new_ops: NodeOps, report: Report) -> None:
        """Sequences on a failover target: it has the values the redo stream carried (SequenceValues entries,
        applied forward only, about every heartbeat); the old primary's own values, when it still answers, close
        what it handed out since (forward only). When it does not, the note says how to check for a gap.
        """
        old = report.previous
        why_not = f"it did not answer the fence ({OLD_PRIMARY_TIMEOUT_S} s)" if old in self._silent else ""
        if not why_not:
            ops = node_ops(self.cfg, old, connect_timeout_s=OLD_PRIMARY_TIMEOUT_S)
            try:
                seq = new_ops.set_sequences(ops.sequences())
                detail = f"{seq.moved} moved forward from {old}, {seq.unchanged} already there"
            except ArkError as exc:
                why_not = exc.message
            finally:
                ops.close()
        if why_not:
            detail = (f"not copied: {old} does not answer ({why_not}); {target} has the values the redo stream "
                      f"carried, up to about a second behind: run 'ark check --promotable {target}' and the setval "
                      "it gives before the application inserts rows that take values from them")
            report.notes.append(detail)
        self._step("failover", report.epoch, "sequences", detail, report)


class Reinstate:
    """``ark reinstate OLD``: the divergence ledger, then OLD rejoins as a standby (failover/divergence.py)."""

    def __init__(self, handover: Handover) -> None:
        self.h = handover

    def run(self, old: str, report_path: Path | None) -> Report:
        h = self.h
        roles = h.roles
        if roles.role_of(old) != "demoted":
            raise HandoverRefused(f"{old} is {roles.role_of(old)}, not a demoted former primary: nothing to reinstate",
                                  fix="'ark topology' shows the roles")
        lost = roles.lost_primacy_at(old)
        assert lost is not None
        reign = next(r for r in roles.reigns if r.epoch == lost)
        marker, epoch = reign.marker_offset, lost - 1
        report = Report("reinstate", roles.epoch, old, roles.primary, marker_offset=marker)
        h._last = time.monotonic()
        h._step("reinstate", roles.epoch, "started", f"{old}, primary of epoch {epoch} until the marker at redo offset "
                f"{marker}", report)
        old_ops, primary_ops = node_ops(h.cfg, old), node_ops(h.cfg, roles.primary)
        try:
            fence = old_ops.fence(0.0)
            h.channel.publish(NodeFenced(epoch, "read-only (reinstate)", fence.sessions_ended), old)
            cut = roles.cuts.get(epoch)  # a point-in-time failover: the group's history of that epoch ends there
            after = _last_published(h.cfg, epoch, cut.from_offset if cut is not None else marker)
            txns = read_divergence(h.cfg, old, after, old_ops.log_position())
            fill_group_rows(txns, primary_ops)
            tables = sorted({t for txn in txns for t in txn.tables})
            topic = publish(h.cfg, old, epoch, txns)
            path = report_path or Path(f"divergence-{h.cfg.group}-{old}-epoch{epoch}.txt")
            write_report(path, h.cfg.group, old, epoch, txns)
            report.notes.append(f"divergence report: {path} ({len(txns)} transactions; mode 0600, it holds rows)")
            h._step("reinstate", roles.epoch, "recorded", f"{len(txns)} transactions of {old} after "
                    f"{after.text if after else 'the start'} never reached Kafka: recorded on {topic} and in {path}"
                    + (f"; tables touched: {', '.join(tables)}" if tables else ""), report)
            dropped = old_ops.drop_source()
            h.channel.publish(StandbyFrom(lost, marker + 1, f"reinstated after the failover of epoch {lost}",
                                          tuple(tables)), old)
            h._step("reinstate", roles.epoch, "rejoined", f"{old} applies from redo offset {marker + 1}"
                    + (f", resyncing {', '.join(tables)} from {roles.primary}" if tables else ", no resync needed")
                    + (f" (dropped its {', '.join(dropped)})" if dropped else ""), report)
            self._await_rejoin(old, tables, report)
        except (ArkError, TimeoutError) as exc:
            what = exc.message if isinstance(exc, ArkError) else str(exc)
            h._step("reinstate", roles.epoch, "failed", what, report)
            raise HandoverFailed(f"reinstating {old} stopped: {what}", fix=f"fix that, then run 'ark reinstate {old}' "
                                 "again (nothing was thrown away)") from None
        finally:
            old_ops.close()
            primary_ops.close()
        return report

    def _await_rejoin(self, old: str, tables: list[str], report: Report) -> None:
        h = self.h
        done: set[str] = set()

        def caught_up() -> bool:
            done.update(r.body.table for r in h.seen if isinstance(r.body, TableResynced) and r.target == old)
            beat = h.view.applier(old)
            return beat is not None and beat.state == "running" and set(tables) <= done

        try:
            h._wait(f"{old} to rejoin", caught_up, timeout=h.timeout_s)
            h._step("reinstate", h.roles.epoch, "done", f"{old} is a standby of {h.roles.primary}"
                    + (f"; {', '.join(tables)} resynced" if tables else ""), report)
        except TimeoutError:
            report.notes.append(f"{old} has not caught up yet: is 'ark apply {old}' running? ('ark status')")
            h._step("reinstate", h.roles.epoch, "done", f"{old} may rejoin as a standby; its applier was not seen "
                    "caught up yet", report)


def _ops(cfg: ArkConfig, name: str) -> NodeOps:
    """The node's operations; an engine that has none yet refuses the handover before anything changes."""
    try:
        return node_ops(cfg, name)
    except ConfigError as exc:
        raise HandoverRefused(exc.message + "; nothing was changed", fix=exc.fix) from None


def _iso(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + f".{us % 1_000_000 // 1000:03d}Z"


def _last_published(cfg: ArkConfig, epoch: int, before: int) -> Position | None:
    """The commit position of the last complete transaction (or checkpoint) of ``epoch`` below redo offset
    ``before``: what the old primary's log is decoded after."""
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    low, _high = redo.watermarks()
    window = 256
    while True:
        start = max(low, before - window)
        found: Position | None = None
        for rec in redo.read_range(start, before):
            dec = envelope.decode(rec.value, rec.headers, expect=REDO_SCHEMA)
            body = from_record(dec.record).body
            if dec.epoch == epoch and isinstance(body, TxnChunk) and body.last:
                found = body.commit
        if found is not None or start <= low:
            return found
        window *= 8


def topology_lines(cfg: ArkConfig, roles: Roles, view: HeartbeatView) -> list[str]:
    """``ark topology``: who feeds whom, with delays, applied offsets and epochs."""
    capture = view.capture()
    cap = (f"capture {capture.state} (epoch {capture.epoch})" if capture else "capture not running")
    lines = [f"group {cfg.group} · {roles.describe()}", f"{roles.primary} [primary] --{cap}--> ark.{cfg.group}.redo"]
    for n in nodes(cfg):
        if n.name == roles.primary:
            continue
        role = roles.role_of(n.name)
        beat = view.applier(n.name)
        if role == "demoted":
            lines.append(f"  x {n.name} [demoted: former primary, needs 'ark reinstate {n.name}']")
            continue
        what = (f"applier {beat.state}, applied offset {beat.applied_offset}, epoch {beat.epoch}, "
                f"delay {beat.delay_seconds:g} s" if beat else "applier not running")
        lines.append(f"  └─> {n.name} [{role}] ({what})")
    for rec, step in roles.steps[-5:]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec.issued_at_us / 1e6))
        lines.append(f"  {when} {step.action} epoch {step.epoch}: {step.phase} {step.detail}")
    return lines


#: How many times the end-of-epoch marker is written when a capture's writer fences it (see write_unless_fenced).
MARKER_TRIES = 5
MARKER_RETRY_PAUSE_S = 0.2


def write_unless_fenced(write: Callable[[], int], tries: int = MARKER_TRIES,
                        pause_s: float = MARKER_RETRY_PAUSE_S) -> int:
    """``write()`` the end-of-epoch marker, again when a newer writer fenced it. The capture of a dead primary (its
    process alive, its database not) retries every few seconds, and each try opens a writer with the group's
    transactional.id before it finds the source gone: it may fence the marker's writer in the middle of its
    transaction (F22; the failover failed, and the controller waited 30 s to try again). A fenced transaction never
    commits, so the marker is never written twice; once it is in, the capture's next session sees its epoch closed
    and opens no writer."""
    for attempt in range(1, tries + 1):
        try:
            return write()
        except FencedError as exc:
            if attempt == tries:
                raise
            log.warning("the end-of-epoch marker's writer was fenced (%s): writing it again, try %d of %d",
                        exc.message, attempt + 1, tries)
            time.sleep(pause_s)
    raise AssertionError("unreachable")
