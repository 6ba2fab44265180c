"""The automatic controller's tick: a pure decision, (view of heartbeats and roles, now) -> action + sentence.

Everything the controller knows is in :class:`ControllerView` (built from the heartbeat topic and the control
topic by failover/automation.py); :func:`tick` reads it and says, in one sentence an operator can read, what it
sees and what it does. No I/O here: the unit tests (tests/unit/test_controller_tick.py) are a table of views
and the sentences they must give.

It fails over when

* the primary's node agent reports ``failed`` (its local restarts are exhausted) or ``fenced``, or
* every heartbeat that vouches for the primary is older than ``ttl``: the node agent saying ``healthy`` or
  ``restarting``, and the capture saying ``running`` for the current epoch (a capture that is retrying its
  connection to a dead primary still beats, but it does not vouch for it).

Silence is counted from the newest of: the last heartbeat that vouched, the start of the epoch (a new primary
gets ``ttl`` to be heard from), and the moment this controller started watching. A primary never heard from in
the current epoch (no capture or node agent vouched for it since it became primary) is not failed over on
silence: that is a group being set up, or a new primary whose capture is not started yet, not an outage; failing
it over would only hand the same missing capture to the next node (the node agent's ``failed`` still counts).

It does not act while a switchover or failover is in progress (its ``handover`` steps on the control topic have
not reached ``done`` or ``failed``): a switchover's primary is read-only and its capture hands off for a few
seconds, which looks like silence.

A primary whose agent fenced itself because Kafka was out of its reach (``it fenced itself``: the agent's lease,
a broker outage as much as a partition) and that reaches Kafka again is asked to lift that fence (``lift-fence``),
whether or not a standby could take over: nobody else was promoted (this controller is the only one that promotes,
and it would have failed over on the primary's silence before now if the primary alone had been cut off for
``ttl``), and the fenced primary is the most advanced node: its commits of the outage reach Kafka through its
capture once the fence is lifted, where a failover would leave them in the divergence ledger. This is Patroni's
failsafe idea with Kafka as the arbiter: a broker outage costs seconds of read-only, never a failover. After
asking, it makes no failover for ``ttl``: the agent acts on the request only within its lease of it (shorter than
the ttl), so a failover's own fence can never come before the lift and be undone by it. A lift that does not hold
(the primary fenced again, or still, within :data:`LIFT_HOLDS_TTLS` ttls of the request: a flapping link) is not asked
again while a standby can take over: that is a failover.

It picks the most advanced running standby that applies without delay (a delayed standby is a recovery point,
not a failover target), and asks :func:`failover.plan.decide_failover` for the final word. It does not act in
maintenance, nor within ``anti_flapping_s`` of its last automatic failover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from common.roles import Roles
from failover.plan import NodeView, decide_failover

#: Node agent states (issue 11, part 2): what the agent of a database node says of it.
AGENT_ALIVE = ("healthy", "restarting")
AGENT_DOWN = ("failed", "fenced")
#: How a node agent's message begins when it fenced its database itself, Kafka out of reach for its lease.
SELF_FENCE_WHY = "it fenced itself"

#: A switchover or failover whose last step is older than this (its command was killed) no longer holds automation
#: back (each of its waits is bounded by the command's --timeout, 120 to 300 s by default).
HANDOVER_STALE_S = 300.0

#: A controller's failover begins within this long of its decision (the decision is published, then run).
ABANDONED_START_S = 10.0

#: A self-fenced primary asked to lift its fence less than this many ttls ago, and fenced again (or still), is failed
#: over when a standby can take over, instead of being asked again (a link to Kafka that keeps dropping). A new
#: outage after the primary wrote again for a while is a new outage: asked again.
LIFT_HOLDS_TTLS = 2.0

#: A controller that heard no heartbeat at all for this long (every agent beats each second, itself included) was
#: cut off from Kafka itself, or stalled: it counts the primary's silence again from when it hears again.
DEAF_S = 3.0

DEFAULT_TTL_S = 5.0
DEFAULT_ANTI_FLAPPING_S = 300.0


@dataclass(frozen=True)
class BeatInfo:
    """One agent's newest heartbeat, as far as the controller cares."""

    state: str
    sent_at: float
    message: str = ""
    epoch: int = 0
    #: When it last said the node was alive (a retrying capture still beats, but vouches for nothing).
    alive_at: float = 0.0


@dataclass(frozen=True)
class ApplierInfo:
    """A standby's applier heartbeat."""

    state: str
    sent_at: float
    applied_offset: int = -1
    lag_entries: int = 0
    delay_seconds: float = 0.0
    epoch: int = 0


@dataclass(frozen=True)
class NodeInfo:
    """One database node: its role under the roles, and what its agents said last."""

    name: str
    engine: str
    agent: BeatInfo | None = None
    applier: ApplierInfo | None = None


@dataclass(frozen=True)
class Settings:
    """The controller's tuning (README, "Automatic failover")."""

    ttl_s: float = DEFAULT_TTL_S
    anti_flapping_s: float = DEFAULT_ANTI_FLAPPING_S


@dataclass(frozen=True)
class ControllerView:
    """Everything one tick decides on."""

    roles: Roles
    nodes: dict[str, NodeInfo]
    #: The group's capture (whatever node it reads), None when never heard from.
    capture: BeatInfo | None = None
    maintenance: bool = False
    maintenance_by: str = ""
    #: When the last automatic failover was decided, and to which node (0 / "": none).
    last_failover_at: float = 0.0
    last_failover_to: str = ""
    #: When this controller started watching (silence before that was not observed by it).
    watching_since: float = 0.0
    #: When the current epoch began (0: epoch 0, as configured).
    epoch_since: float = 0.0
    settings: Settings = field(default_factory=Settings)
    #: A failover that a controller decided (at ``abandoned_since``) and that will not end by itself, seen by the
    #: controller that holds the lease now: the other one lost the lease in the middle of it, or it failed, or this
    #: controller's own run of it stopped before recording its end ("": none).
    abandoned_by: str = ""
    abandoned_to: str = ""
    abandoned_since: float = 0.0
    #: That failover failed, or this very controller ran it (its run ended without 'failover-done'), rather than a
    #: controller that lost the lease.
    abandoned_ended: bool = False
    #: When this controller last asked the primary's agent to lift its self-fence (0: never).
    lift_asked_at: float = 0.0


@dataclass(frozen=True)
class Tick:
    """What one tick decided: ``action`` is ``none``, ``failover`` (to ``target``) or ``lift-fence`` (ask the
    primary ``target``'s agent to lift the fence it put on itself), said in ``sentence``."""

    action: str
    sentence: str
    target: str = ""

    @property
    def acts(self) -> bool:
        """True when the controller must fail over now."""
        return self.action == "failover"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _fresh(info: ApplierInfo | BeatInfo | None, now: float, ttl: float) -> bool:
    return info is not None and now - info.sent_at < ttl


def _standby_phrase(view: ControllerView, node: NodeInfo, now: float) -> str:
    role = view.roles.role_of(node.name)
    if role != "standby":
        return f"{node.name} ({role})"
    ap = node.applier
    if not _fresh(ap, now, view.settings.ttl_s):
        return f"{node.name} (applier {'silent' if ap is not None else 'not running'})"
    assert ap is not None
    if ap.delay_seconds > 0:
        return f"{node.name} (delay {ap.delay_seconds:g} s)"
    if ap.state not in ("running", "delayed", "starting"):
        return f"{node.name} (applier {ap.state})"
    return f"{node.name} (lag {ap.lag_entries})"


def _standbys(view: ControllerView, now: float) -> str:
    others = [n for n in view.nodes.values() if n.name != view.roles.primary]
    return ", ".join(_standby_phrase(view, n, now) for n in others) or "none"


def _vouched_at(view: ControllerView) -> float:
    """The newest moment a heartbeat said the primary was alive in the current epoch (0: never)."""
    primary = view.nodes.get(view.roles.primary)
    times = []
    if primary is not None and primary.agent is not None and primary.agent.alive_at >= view.epoch_since:
        times.append(primary.agent.alive_at)
    if view.capture is not None and view.capture.epoch >= view.roles.epoch:
        times.append(view.capture.alive_at)
    return max(times, default=0.0)


def _why_down(view: ControllerView, now: float) -> str | None:
    """Why the primary is down, or None while it is up (or not known well enough to act)."""
    name, ttl = view.roles.primary, view.settings.ttl_s
    primary = view.nodes.get(name)
    agent = primary.agent if primary is not None else None
    if agent is not None and agent.state in AGENT_DOWN and _fresh(agent, now, ttl):
        what = "failed after its local restarts" if agent.state == "failed" else "fenced itself"
        return f"{name} {what}" + (f" ({agent.message})" if agent.message else "")
    vouched = _vouched_at(view)
    if vouched <= 0:
        return None
    silent = now - max(vouched, view.watching_since, view.epoch_since)
    if silent <= ttl:
        return None
    return f"primary {name} silent for {silent:.1f} s (ttl {ttl:g} s)"


def _handover_in_progress(view: ControllerView, now: float) -> str | None:
    """A switchover or failover run by hand (or by another controller) that has not ended yet."""
    for rec, step in reversed(view.roles.steps):
        if step.action not in ("switchover", "failover"):
            continue
        ago = now - rec.issued_at_us / 1e6
        if step.phase in ("done", "failed") or ago > HANDOVER_STALE_S or view.roles.epoch >= step.epoch:
            # Ended, given up, or past its promotion (its epoch began: what follows is the new primary's, which the
            # tick judges like any primary; a command killed after it never writes 'done').
            return None
        if _abandoned(view, rec.target, step.epoch):
            return None  # its controller lost the lease mid-way: this one takes the failover over
        return f"a {step.action} to {rec.target} is in progress (last step {step.phase}, {_ago(max(ago, 0))} ago)"
    return None


def _abandoned(view: ControllerView, target: str, epoch: int) -> bool:
    """Whether the failover to ``target`` towards ``epoch`` is the one the controller that lost the lease decided:
    same target, begun within seconds of its decision (an operator's ``ark failover`` is never taken over)."""
    if not view.abandoned_by or target != view.abandoned_to:
        return False
    started = [r.issued_at_us / 1e6 for r, s in view.roles.steps
               if s.action == "failover" and s.epoch == epoch and s.phase == "started"]
    return bool(started) and 0.0 <= started[-1] - view.abandoned_since <= ABANDONED_START_S


def _node_view(view: ControllerView, node: NodeInfo, now: float) -> NodeView:
    ap = node.applier if _fresh(node.applier, now, view.settings.ttl_s) else None
    return NodeView(name=node.name, role=view.roles.role_of(node.name), engine=node.engine,
                    applier_state=ap.state if ap else "not running", applied_offset=ap.applied_offset if ap else -1,
                    epoch=ap.epoch if ap else 0, delay_seconds=ap.delay_seconds if ap else 0.0)


def _candidates(view: ControllerView, now: float) -> tuple[list[NodeView], list[str]]:
    """Standbys that may take over, best first; and why each other node may not."""
    primary = view.nodes.get(view.roles.primary)
    engine = primary.engine if primary is not None else ""
    good: list[NodeView] = []
    why_not: list[str] = []
    for node in view.nodes.values():
        if node.name == view.roles.primary:
            continue
        nv = _node_view(view, node, now)
        if nv.role != "standby":
            why_not.append(f"{node.name} is {nv.role}")
        elif node.engine != engine:
            why_not.append(f"{node.name} runs {node.engine}")
        elif node.applier is not None and not _fresh(node.applier, now, view.settings.ttl_s):
            # Running perhaps, but cut off from Kafka: it could not apply what the redo topic holds (F24).
            why_not.append(f"{node.name}'s applier silent for {now - node.applier.sent_at:.0f} s (ttl "
                           f"{view.settings.ttl_s:g} s): it may not reach what Kafka holds")
        elif not nv.running:
            why_not.append(f"{node.name}'s applier is {nv.applier_state}")
        elif nv.delay_seconds > 0:
            why_not.append(f"{node.name} is delayed ({nv.delay_seconds:g} s)")
        else:
            good.append(nv)
    order = list(view.nodes)
    good.sort(key=lambda n: (-n.applied_offset, order.index(n.name)))
    return good, why_not


def _self_fenced_and_back(view: ControllerView, now: float) -> bool:
    """The primary's agent fenced its database itself (Kafka out of reach) and its heartbeats reach Kafka again."""
    primary = view.nodes.get(view.roles.primary)
    agent = primary.agent if primary is not None else None
    return (agent is not None and agent.state == "fenced" and agent.message.startswith(SELF_FENCE_WHY)
            and agent.epoch == view.roles.epoch and _fresh(agent, now, view.settings.ttl_s))


def watching_from(watching_since: float, heard_before: float, heard_now: float) -> float:
    """When the controller has been watching, given when it last heard a heartbeat before this read and after it. A
    gap of :data:`DEAF_S` is its own outage (a broker restart: every heartbeat of it is old when Kafka returns, the
    primary's agent's too, reconnecting a second later than the controller): watching starts again."""
    if heard_before > 0 and heard_now - heard_before > DEAF_S:
        return max(watching_since, heard_now)
    return watching_since


def tick(view: ControllerView, now: float) -> Tick:
    """Decide (see the module docstring)."""
    roles = view.roles
    down = _why_down(view, now)
    if down is None:
        healthy = f"primary {roles.primary} healthy, epoch {roles.epoch}; standbys {_standbys(view, now)}"
        if _vouched_at(view) <= 0:
            healthy = (f"primary {roles.primary} not heard from in epoch {roles.epoch} (no running capture or node "
                       f"agent heartbeat for it yet): not acting on silence; standbys {_standbys(view, now)}")
        return Tick("none", ("maintenance on: not acting; " if view.maintenance else "") + healthy)
    running = _handover_in_progress(view, now)
    if running is not None:
        return Tick("none", f"{running}: not acting; {down}")
    if view.maintenance:
        by = f" (set by {view.maintenance_by})" if view.maintenance_by else ""
        return Tick("none", f"maintenance on{by}: not acting; {down}")
    since = now - view.last_failover_at
    if view.last_failover_at > 0 and since < view.settings.anti_flapping_s:
        return Tick("none", f"{down}; failover to {view.last_failover_to} {_ago(since)} ago: anti-flapping window "
                            f"{view.settings.anti_flapping_s:g} s, not failing over again")
    asked = now - view.lift_asked_at
    if view.lift_asked_at > 0 and asked < view.settings.ttl_s:
        return Tick("none", f"{down}; asked {roles.primary} to lift its self-fence {asked:.0f} s ago: waiting for its "
                            f"agent (no failover for the ttl, {view.settings.ttl_s:g} s)")
    good, why_not = _candidates(view, now)
    back = _self_fenced_and_back(view, now)
    if back and good and view.lift_asked_at > 0 and asked < LIFT_HOLDS_TTLS * view.settings.ttl_s:
        down = f"{down}; the lift asked {asked:.0f} s ago did not hold"  # a flapping link: fail over (below)
    elif back:
        why = "" if good else f"; no standby can take over: {'; '.join(why_not) or 'the group has none'}"
        return Tick("lift-fence", f"{down}{why}; {roles.primary} reaches Kafka again and nobody was promoted: asking "
                                  "its agent to lift its self-fence (it holds every commit of the outage)",
                    roles.primary)
    if not good:
        why = "; ".join(why_not) or "the group has none"
        return Tick("none", f"{down}; no standby can take over: {why}")
    best = good[0]
    nodes = {view.roles.primary: _node_view(view, view.nodes[roles.primary], now)} if roles.primary in view.nodes \
        else {}
    nodes.update({n.name: n for n in good})
    decision = decide_failover(roles, best.name, nodes, force=False)
    if not decision.go:
        return Tick("none", f"{down}; not failing over to {best.name}: {decision.sentence}")
    taking_over = ""
    if view.abandoned_by:
        taking_over = (f"; trying again the failover {view.abandoned_by} began, which stopped before its end"
                       if view.abandoned_ended else
                       f"; taking over the failover {view.abandoned_by} began before it lost the lease")
    return Tick("failover", f"{down}: failing over to {best.name}, the most advanced standby without delay "
                            f"(applied redo offset {best.applied_offset}){taking_over}", best.name)
