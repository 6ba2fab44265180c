"""Pure decisions of a switchover and a failover: may it go, and what would it do (no I/O here).

Each decision is a sentence an operator can read (``Decision.sentence``), the way a controller tick of a
later issue will log one per tick; refusals name what is wrong and the way out, and change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.roles import Roles


@dataclass(frozen=True)
class NodeView:
    """What is known of one node now (from heartbeats and the roles)."""

    name: str
    role: str
    engine: str
    #: The applier's heartbeat: state, the highest redo offset applied (-1 unknown), the newest epoch seen.
    applier_state: str = "not running"
    applied_offset: int = -1
    epoch: int = 0
    delay_seconds: float = 0.0
    #: Source transactions per second the applier applied lately (0: unknown).
    apply_rate: float = 0.0

    @property
    def running(self) -> bool:
        """The applier was heard from and is applying (or waiting for its delay)."""
        return self.applier_state in ("running", "delayed", "starting")


@dataclass(frozen=True)
class Decision:
    """Go or not, in one sentence; ``notes`` add what the operator should know."""

    go: bool
    sentence: str
    fix: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


def decide_switchover(roles: Roles, target: str, nodes: dict[str, NodeView], *, capture_running: bool,
                      capture_state: str = "not running") -> Decision:
    """May the primary hand the service to ``target`` now, with nothing lost?"""
    primary = roles.primary
    view = nodes.get(target)
    if view is None:
        return Decision(False, f"{target} is not a node of this group", fix=f"use one of: {', '.join(sorted(nodes))}")
    if target == primary:
        return Decision(False, f"{target} is already the primary ({roles.describe()})", fix="nothing to do")
    if view.role != "standby":
        return Decision(False, f"{target} is {view.role}, not a standby: it does not hold the primary's data",
                        fix=f"run 'ark reinstate {target}' first" if view.role == "demoted" else "")
    if view.engine != nodes[primary].engine:
        return Decision(False, f"{target} runs {view.engine} and the primary {nodes[primary].engine}",
                        fix="switch over to a standby of the primary's engine")
    if not capture_running:
        return Decision(False, f"the capture of {primary} is {capture_state}: a switchover drains it to the end of "
                        "the epoch", fix="start 'ark capture' (or, if the primary is gone, 'ark failover "
                        f"{target}')")
    if not view.running:
        return Decision(False, f"the applier of {target} is {view.applier_state}: the target must apply up to the "
                        "end of the epoch", fix=f"start 'ark apply {target}'")
    if view.delay_seconds > 0:
        return Decision(False, f"{target} applies with a delay of {view.delay_seconds:g} s: it would reach the end "
                        "of the epoch only that much later, with the primary read-only meanwhile",
                        fix=f"'ark delay {target} 0' first, or switch over to a real-time standby")
    notes = tuple(f"{n.name} ({n.role}) follows the new primary by itself" if n.role == "standby" else
                  f"{n.name} is {n.role}: it does not follow until 'ark reinstate {n.name}'"
                  for n in nodes.values() if n.name not in (primary, target))
    return Decision(True, f"switchover from {primary} to {target}: epoch {roles.epoch} ends, epoch "
                    f"{roles.epoch + 1} begins with {target}, and {primary} becomes its standby", notes=notes)


def decide_failover(roles: Roles, target: str, nodes: dict[str, NodeView], *, force: bool) -> Decision:
    """May ``target`` take over from a primary that is gone? Refused when another standby is further ahead."""
    primary = roles.primary
    view = nodes.get(target)
    if view is None:
        return Decision(False, f"{target} is not a node of this group", fix=f"use one of: {', '.join(sorted(nodes))}")
    if target == primary:
        return Decision(False, f"{target} is the primary ({roles.describe()})", fix="fail over to a standby")
    if view.role != "standby":
        return Decision(False, f"{target} is {view.role}, not a standby", fix=f"'ark reinstate {target}' first"
                        if view.role == "demoted" else "")
    if view.engine != nodes[primary].engine:
        return Decision(False, f"{target} runs {view.engine} and the primary {nodes[primary].engine}",
                        fix="fail over to a standby of the primary's engine")
    if not view.running:
        return Decision(False, f"the applier of {target} is {view.applier_state}: the target applies everything the "
                        "redo topic holds before it is promoted", fix=f"start 'ark apply {target}'")
    ahead = sorted((n for n in nodes.values() if n.role == "standby" and n.name != target and n.running
                    and n.engine == view.engine and n.applied_offset > view.applied_offset),
                   key=lambda n: -n.applied_offset)
    if ahead and not force:
        best = ahead[0]
        return Decision(False, f"{best.name} is more advanced than {target} (applied redo offset "
                        f"{best.applied_offset} against {view.applied_offset}): it would be promoted sooner",
                        fix=f"'ark failover {best.name}', or 'ark failover {target} --force'")
    notes = [f"{target} first applies everything the redo topic holds: nothing that reached Kafka is lost",
             f"{primary} becomes demoted: 'ark reinstate {primary}' records what it committed that never reached "
             "Kafka, then makes it a standby"]
    if view.delay_seconds > 0:
        notes.append(f"{target} has a delay of {view.delay_seconds:g} s: it applies the rest of the topic now, "
                     "ignoring it")
    return Decision(True, f"failover from {primary} to {target}: epoch {roles.epoch} is closed by a marker in Kafka "
                    f"(fencing any capture still publishing for it), epoch {roles.epoch + 1} begins with {target}",
                    notes=tuple(notes))


def dry_run_rows(roles: Roles, nodes: dict[str, NodeView], redo_end: int) -> list[dict[str, object]]:
    """Per standby: what a failover to it would mean now."""
    rows: list[dict[str, object]] = []
    for n in nodes.values():
        if n.name == roles.primary:
            continue
        lag = max(0, redo_end - 1 - n.applied_offset) if n.applied_offset >= 0 and redo_end >= 0 else None
        eta = (lag / n.apply_rate if n.apply_rate > 0 else None) if lag else 0.0
        rows.append({"standby": n.name, "role": n.role, "applier": n.applier_state, "applied_offset": n.applied_offset,
                     "lag_entries": lag, "delay_seconds": n.delay_seconds,
                     "lost_of_kafka": 0 if n.role == "standby" else None,
                     "seconds_to_promote": None if eta is None else round(eta + PROMOTE_OVERHEAD_S, 1)})
    return rows


#: Fencing Kafka, the marker, the slot and the epoch records: measured at about this on the test machine.
PROMOTE_OVERHEAD_S = 2.0
