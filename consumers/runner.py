"""The apply agent: one group's redo log → one standby, exactly once, session after session.

Exactly once (guarantee 2): the standby's state row (next offset, commit position, epoch) is written
in the same database transaction as the data, and every session resumes from it
(:mod:`consumers.session` is the loop). Delayed apply (guarantee 5) holds at most one entry: while it
is not due the reader is paused and nothing is spooled, so the delay can change at run time, even
backwards, within retention. The collaborators (verify hold, CRC retransmission, source gaps, table
resync) plug into the loop as :class:`~consumers.hooks.ApplyHook` objects that live as long as the agent.

**Roles and epochs** (guarantee 6, common/roles.py). The applier of a node applies only while the node is a
standby: while it is the primary, or a former primary not yet given a ``standby-from`` record, it waits and
writes nothing. A ``standby-from`` record (the old primary after a switchover, a reinstated node) sets its
state row to that redo offset: its data already holds everything below. The newest epoch seen is kept in
the state row, so after a restart entries of an older epoch are still rejected; an entry of an epoch whose
primary is this very node is never applied (it is the node's own write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from common.agent import AgentBody, Retry
from common.config import ArkConfig, StandbySettings
from common.control import ControlChannel, ControlRecord, current_delay, is_paused
from common.errors import ArkError, ConfigError, PrerequisiteError, TargetError
from common.exit_codes import ExitCode
from common.guard import GuardRefusal, Situation, first_refusal, recorded_identities
from common.identity import DatabaseIdentity
from common.redo import RedoLog
from common.roles import Roles, as_primary
from common.settings import PrimarySettings
from common.snapshot import SnapshotSource
from consumers.base import Applier, ApplyState
from consumers.continuity import ContinuousReader
from consumers.errors import (
    ApplierRunning,
    DataApplyError,
    SchemaChangeFailed,
    StateMoved,
    TableNeedsResync,
    TransientApplyError,
)
from consumers.gaps import SourceGap, SourceGaps
from consumers.gate import BatchLimits, lag_seconds
from consumers.hold import VerifyHold
from consumers.hooks import ApplyHook
from consumers.quarantine import RetransmitFailed, RetransmitPending, Retransmits
from consumers.recovery import CutPassed, Skips, cut_mark, cut_passed
from consumers.retention import RetentionGap, check_retention
from consumers.session import ApplySession, NotAStandby, Stopped
from consumers.table_resync import TableResyncs, unanswered_requests
from consumers.tables import RESYNCING, TableState
from schemas.control import NodeIdentity
from schemas.errors import CorruptEntry

log = logging.getLogger(__name__)


class NotSynced(ArkError):
    """The standby has no state row: it was never brought up with an initial sync."""

    exit_code = ExitCode.NOT_SYNCED


#: Errors that stop the standby unless :meth:`ApplyRunner.recover` finds a way on (a table resync, ...).
_STOPPING = (ConfigError, NotSynced, DataApplyError, CorruptEntry, TableNeedsResync, RetentionGap, RetransmitFailed,
             SourceGap, GuardRefusal, ApplierRunning, PrerequisiteError, SchemaChangeFailed, CutPassed)


class ApplyRunner(AgentBody):
    """The applier's :class:`~common.agent.AgentBody` (run it with :func:`common.heartbeat.agent_on_kafka`)."""

    kind = "apply"
    role = "standby"

    def __init__(self, cfg: ArkConfig, standby: StandbySettings, applier_factory: Callable[[], Applier],
                 redo: RedoLog, source: SnapshotSource | None = None, *,
                 source_for: Callable[[PrimarySettings], SnapshotSource] | None = None) -> None:
        """``source`` is the primary's snapshot source, for table resyncs (None: they cannot run);
        ``source_for`` builds it for another primary (after a switchover or failover)."""
        super().__init__()
        self.roles = Roles(cfg.primary.name)
        #: epoch -> its primary, as the markers read say (the newest one is kept in the state row).
        self.epoch_primaries: dict[int, str] = {}
        self._source_for = source_for
        self._source_of = cfg.primary.name  # the node ``source`` reads
        self.cfg = cfg
        self.standby = standby
        self.name = standby.name
        self.redo = redo
        self._factory = applier_factory
        self._source = source
        self._identity_records: list[ControlRecord] = []  # node-identity records seen (common/guard.py)
        self._primary: DatabaseIdentity | None = None
        self.delay = standby.delay_seconds
        self.paused = False
        self.applied: ApplyState | None = None
        self.end_offset = 0
        self.max_epoch = 0
        self.applied_rows = 0
        self.limits = BatchLimits(standby.batch_max_txns, standby.batch_max_rows)
        self.current_offset = -1  # the redo offset being handled (named in data errors)
        self.precise_until = -1  # up to this offset, one source transaction per target transaction
        self.retransmits = Retransmits(redo, standby.name, self)  # corrupt entries (consumers/quarantine.py)
        self.hold = VerifyHold(None, standby.name)  # ark verify (consumers/hold.py)
        self.resyncs = TableResyncs(cfg, standby, applier_factory, redo,  # consumers/table_resync.py
                                    committed=lambda: self.applied.next_offset if self.applied else -1,
                                    source=source,
                                    applied_key=lambda: self.applied.position_key if self.applied else b"")
        self.gaps = SourceGaps(standby.name)  # accepted holes in the source's log (consumers/gaps.py)
        self.skips = Skips(standby.name,  # ark skip (consumers/recovery.py)
                           applied=lambda: self.applied.next_offset if self.applied else -1)
        self.hooks: list[ApplyHook] = [self.gaps, self.retransmits, self.hold, self.resyncs, self.skips]

    # -- AgentBody ---------------------------------------------------------------------------------
    def attach(self, channel: ControlChannel, backlog: list[ControlRecord]) -> None:
        self.hold.attach(channel)
        self.retransmits.attach(channel)
        self.resyncs.attach_channel(channel)
        self.delay = current_delay(backlog, self.standby.name, self.standby.delay_seconds)
        self.paused = is_paused(backlog, self.standby.name)
        self.resyncs.on_control(unanswered_requests(backlog, self.standby.name))
        self.gaps.on_control(backlog)
        self.skips.remember(backlog)
        self._identity_records = [r for r in backlog if isinstance(r.body, NodeIdentity) or _moves_roles(r)]
        self.roles = Roles.replay(self.cfg.primary.name, backlog)
        self._follow_primary()

    def on_control(self, records: list[ControlRecord]) -> None:
        """New records: the hooks' and the operator's settings (delay, pause)."""
        for hook in self.hooks:
            hook.on_control(records)
        self._identity_records += [r for r in records if isinstance(r.body, NodeIdentity) or _moves_roles(r)]
        if self.roles.update(records):
            log.info("standby %s: %s", self.standby.name, self.roles.describe())
            self._follow_primary()
        if self.applied is not None:
            self.check_cuts(self.applied)
        delay = current_delay(records, self.standby.name, self.delay)
        paused = is_paused(records, self.standby.name, self.paused)
        if (delay, paused) != (self.delay, self.paused):
            log.info("standby %s: delay %g s, %s", self.standby.name, delay, "paused" if paused else "applying")
        self.delay, self.paused = delay, paused
        if not paused and self.state == "paused":
            self.state = "running"
        self.beat_now()

    def heartbeat(self) -> dict[str, Any]:
        st = self.applied
        next_offset = st.next_offset if st else -1
        notes = "; ".join(m for m in (self.message, *(h.describe() for h in self.hooks)) if m)
        return {
            "epoch": self.max_epoch, "state": self.state, "message": notes,
            "source_position": st.position if st else "",
            "applied_offset": next_offset - 1 if st else -1,
            "applied_commit_time_us": st.commit_time_us if st else 0,
            "lag_entries": max(0, self.end_offset - next_offset) if st else 0,
            "lag_seconds": lag_seconds(st.commit_time_us, next_offset, self.end_offset, time.time()) if st else 0.0,
            "delay_seconds": self.delay,
            "metrics": {"rows": float(self.applied_rows), "txns": float(st.applied_txns if st else 0)},
        }

    def _follow_primary(self) -> None:
        """Table resyncs and the guard look at the primary of the current epoch."""
        primary = self.roles.primary
        if primary == self._source_of:
            return
        self._source_of, self._primary = primary, None
        if self._source_for is not None and primary != self.standby.name:
            self._source = self._source_for(as_primary(self.cfg, primary))
            self.resyncs.use_source(self._source)

    def _wait_while_not_a_standby(self, channel: ControlChannel) -> bool:
        """While this node is the primary or a demoted former primary: write nothing, say why, and wait for
        the roles to change. True when the node is a standby (go on)."""
        role = self._role()
        if role == "standby":
            return True
        self.state = role
        name = self.standby.name
        self.message = (f"{name} is the primary ({self.roles.describe()}): nothing to apply" if role == "primary" else
                        f"{name} was the primary until epoch {self.roles.lost_primacy_at(name)} and may hold "
                        f"transactions that never reached Kafka: run 'ark reinstate {name}' (nothing is applied to "
                        "it until then)")
        self.beat_now()
        log.info("standby %s waits: %s", self.standby.name, self.message)
        while not self.stopping.is_set() and self._role() == role:
            records = channel.poll()
            if records:
                self.on_control(records)
            self.stopping.wait(0.2)
        self.message = ""
        return False

    @property
    def until_us(self) -> int:
        """The point in time this standby applies up to and holds at (0: none)."""
        return self.roles.until.get(self.standby.name, 0)

    def check_cuts(self, state: ApplyState) -> None:
        """Stop when this standby applied entries a point-in-time failover cut out (consumers/recovery.py)."""
        for cut in self.roles.cuts.values():
            if (state.epoch <= cut.epoch and state.next_offset > cut.from_offset
                    and state.extra.get("cut") != cut_mark(cut) and self.roles.primary_of(cut.epoch + 1) != self.name):
                raise cut_passed(self.standby.name, cut, state.next_offset)

    def _role(self) -> str:
        """The node's role by the roles, or primary when a marker named it primary of a newer epoch than they
        know yet (the end-of-epoch marker comes before the record that begins the epoch)."""
        named = max(self.epoch_primaries.items(), default=(0, ""))
        if named[0] > self.roles.epoch and named[1] == self.standby.name:
            return "primary"
        return self.roles.role_of(self.standby.name)

    def _rejoin(self, applier: Applier, state: ApplyState | None, identity: str) -> ApplyState | None:
        """A ``standby-from`` record newer than the state row: the node's data holds everything below that
        offset (it was the primary that published it, or it was resynced): start there, in the new epoch."""
        rejoin = self.roles.rejoin_offset(self.standby.name)
        if rejoin is None:
            return state
        epoch, offset = rejoin
        if state is not None and (state.epoch > epoch or (state.epoch == epoch and state.next_offset >= offset)):
            return state
        now = time.time_ns() // 1000
        fresh = ApplyState(group=self.cfg.group, standby=self.standby.name, topic=self.redo.topic, partition=0,
                           next_offset=offset, position=f"epoch {epoch}", position_key=b"", epoch=epoch,
                           commit_time_us=now, applied_at_us=now, applied_txns=state.applied_txns if state else 0,
                           extra={**(state.extra if state else {}), "identity": identity})
        resync = self.roles.rejoin_resync.get(self.standby.name, ())
        applier.begin()
        applier.save_state(fresh)
        for table in resync:  # rows the group does not have: copied again from the primary, rows held back meanwhile
            applier.save_table_state(self.cfg.group, self.standby.name,
                                     TableState(table, RESYNCING, reason=f"reinstated: {fresh.position} diverged"))
        applier.commit()
        log.warning("standby %s applies from redo offset %d (epoch %d): it holds everything below%s", self.standby.name,
                    offset, epoch, f"; resyncing {', '.join(resync)}" if resync else "")
        return fresh

    def session(self, channel: ControlChannel) -> None:
        if not self._wait_while_not_a_standby(channel):
            return
        applier = self._factory()
        reader = None
        try:
            facts = applier.inspect()  # read-only: nothing is written before the refusals are checked
            first_refusal(Situation(
                group=self.cfg.group, standby=self.standby.name, action="apply", facts=facts,
                recorded=recorded_identities(self._identity_records), primary=self._primary_identity(),
                primary_name=self.roles.primary, chain=self.standby.chain,
                config_path=str(self.cfg.source_path or "the config")))
            applier.lock_standby(self.cfg.group, self.standby.name)  # one applier per standby, for its whole life
            state = applier.load_state(self.cfg.group, self.standby.name)
            if self.roles.rejoin_offset(self.standby.name) is not None:
                applier.prepare()
                state = self._rejoin(applier, state, facts.identity.key)
            if state is None:
                raise NotSynced(f"standby {self.standby.name} has never been synced for group {self.cfg.group}",
                                fix=f"run 'ark sync {self.standby.name}' first (online; the primary keeps running)")
            applier.prepare()
            if not state.extra.get("identity"):  # synced before identities were recorded: record it now
                state = replace(state, extra={**state.extra, "identity": facts.identity.key})
                channel.publish(NodeIdentity("standby", facts.identity.key, facts.identity.label), self.standby.name)
            self.check_cuts(state)
            self.applied = state
            self.max_epoch = max(self.max_epoch, state.epoch)  # fencing survives restarts
            epoch, _, named = state.extra.get("epoch_primary", "").partition(":")
            if named and epoch.isdigit():
                self.epoch_primaries.setdefault(int(epoch), named)
            metas = applier.load_table_metas(self.cfg.group)
            self.resyncs.attach(applier, metas)
            check_retention(self.redo, self.standby.name, state)
            # Every read is checked for a hole that retention made (consumers/continuity.py).
            reader = ContinuousReader(self.redo.reader(self.standby.name), standby=self.standby.name,
                                      topic=self.redo.topic, applied=lambda: self.applied or state)
            reader.seek(state.next_offset)
            self.state, self.message = "running", ""
            ApplySession(self, applier, reader, channel, metas, state).loop()
        except (Stopped, RetransmitPending, NotAStandby):
            return  # after RetransmitPending the next session awaits the retransmission
        finally:
            applier.rollback()
            applier.close()
            if reader is not None:
                reader.close()

    def _primary_identity(self) -> DatabaseIdentity | None:
        """The primary's identity as it answers now (cached; None when unreachable or unknown)."""
        if self._primary is None and self._source is not None:
            try:
                self._primary = self._source.identity()
            except ArkError as exc:
                log.info("the primary's identity is unavailable (%s): the recorded one is used", exc.message)
        return self._primary

    def recover(self, exc: Exception) -> Retry | Exception:
        """Retry now when a failed session may go on (a table resync, the failing transaction looked for),
        later for transient failures; else the error to stop with (policy ``on_data_error``)."""
        if isinstance(exc, StateMoved):
            log.warning("%s; reading the state again", exc.message)
            return Retry.NOW  # a new session takes the lock again (or exits: another applier holds it)
        if isinstance(exc, TableNeedsResync):
            if not self.resyncs.may_resync(exc.table, self.applied):
                return exc  # the same table again from the same offset: stop rather than loop
            self.resyncs.request(exc.table, exc.reason, offset=self.current_offset)
            return Retry.NOW
        if isinstance(exc, DataApplyError):
            if self.standby.on_data_error == "resync-table" and self.resyncs.may_resync(exc.table, self.applied):
                self.resyncs.request(exc.table, f"data error: {exc.message}", offset=self.current_offset)
                return Retry.NOW
            if ".." in exc.txn_id and self.precise_until < self.current_offset:
                # The failure is somewhere in a group of source transactions: apply them one at a time to name it.
                log.warning("data error in grouped transactions %s; re-applying them one by one", exc.txn_id)
                self.precise_until = self.current_offset
                return Retry.NOW
            topic = self.redo.topic
            return DataApplyError(f"{exc.message} [redo entry {topic}[0]@{self.current_offset}]", fix=exc.fix,
                                  table=exc.table, txn_id=exc.txn_id, position=exc.position, key=exc.key)
        if isinstance(exc, _STOPPING):
            return exc
        if isinstance(exc, TransientApplyError | TargetError):
            return Retry.LATER
        return Retry.LATER

    def close(self) -> None:
        for hook in self.hooks:
            hook.close()


def _moves_roles(rec: ControlRecord) -> bool:
    """Records that change which identities the guard treats as primaries (common/guard.py)."""
    return rec.kind in ("epoch-begun", "standby-from")
