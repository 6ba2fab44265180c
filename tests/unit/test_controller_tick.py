"""The controller's tick: a table of views, each with the action and the decision sentence it must give."""

from __future__ import annotations

from dataclasses import replace

import pytest

from common.roles import Reign, Roles
from failover.controller import ApplierInfo, BeatInfo, ControllerView, NodeInfo, Settings, tick, watching_from

NOW = 1_000_000.0


def _applier(offset: int = 100, *, lag: int = 0, delay: float = 0.0, state: str = "running",
             age: float = 0.5) -> ApplierInfo:
    return ApplierInfo(state=state, sent_at=NOW - age, applied_offset=offset, lag_entries=lag, delay_seconds=delay)


def _capture(age: float = 0.5, *, state: str = "running", alive_age: float | None = None, epoch: int = 0) -> BeatInfo:
    return BeatInfo(state=state, sent_at=NOW - age, epoch=epoch,
                    alive_at=NOW - (age if alive_age is None else alive_age))


def _agent(state: str = "healthy", age: float = 0.5, message: str = "") -> BeatInfo:
    alive = state in ("healthy", "restarting")
    return BeatInfo(state=state, sent_at=NOW - age, message=message, alive_at=NOW - age if alive else NOW - 60)


def _view(**kw: object) -> ControllerView:
    nodes = {"node1": NodeInfo("node1", "postgresql"),
             "node2": NodeInfo("node2", "postgresql", applier=_applier(100)),
             "node3": NodeInfo("node3", "postgresql", applier=_applier(90, lag=10, delay=3600, state="delayed"))}
    base = ControllerView(roles=Roles("node1"), nodes=nodes, capture=_capture(), watching_since=NOW - 600)
    return replace(base, **kw)  # type: ignore[arg-type]


def _with(view: ControllerView, name: str, **kw: object) -> ControllerView:
    return replace(view, nodes={**view.nodes, name: replace(view.nodes[name], **kw)})  # type: ignore[arg-type]


def _epoch3() -> Roles:
    roles = Roles("node1")
    roles.reigns = [Reign(3, "node1", "node2", "switchover", 10, 0)]
    return roles


SILENT = _capture(age=6.2)
SELF = "it fenced itself: no heartbeat reached Kafka for 3.2 s (lease 3 s), so a controller may promote a standby"
NO_TARGET = _with(_with(_view(), "node1", agent=_agent("fenced", message=SELF)), "node2", applier=None)
CASES = [
    ("healthy", _view(roles=_epoch3(), capture=_capture(epoch=3)), "none",
     "primary node1 healthy, epoch 3; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("silent primary", _view(capture=SILENT), "failover",
     "primary node1 silent for 6.2 s (ttl 5 s): failing over to node2, the most advanced standby without delay "
     "(applied redo offset 100)"),
    ("silence under ttl", _view(capture=_capture(age=4.9)), "none",
     "primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("a retrying capture does not vouch", _view(capture=_capture(age=0.5, state="retrying", alive_age=7)),
     "failover", "primary node1 silent for 7.0 s (ttl 5 s): failing over to node2, the most advanced standby "
                 "without delay (applied redo offset 100)"),
    ("the node agent vouches", _with(_view(capture=SILENT), "node1", agent=_agent()), "none",
     "primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("agent restarting vouches", _with(_view(capture=SILENT), "node1", agent=_agent("restarting")), "none",
     "primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("agent failed", _with(_view(), "node1", agent=_agent("failed", message="postgres did not start in 3 tries")),
     "failover", "node1 failed after its local restarts (postgres did not start in 3 tries): failing over to node2, "
                 "the most advanced standby without delay (applied redo offset 100)"),
    ("agent fenced", _with(_view(), "node1", agent=_agent("fenced")), "failover",
     "node1 fenced itself: failing over to node2, the most advanced standby without delay (applied redo offset 100)"),
    ("maintenance, healthy", _view(maintenance=True), "none",
     "maintenance on: not acting; primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("maintenance, silent", _view(capture=SILENT, maintenance=True, maintenance_by="dba@host"), "none",
     "maintenance on (set by dba@host): not acting; primary node1 silent for 6.2 s (ttl 5 s)"),
    ("anti-flapping", _view(capture=SILENT, last_failover_at=NOW - 240, last_failover_to="node2"), "none",
     "primary node1 silent for 6.2 s (ttl 5 s); failover to node2 4 min ago: anti-flapping window 300 s, not "
     "failing over again"),
    ("after the window", _view(capture=SILENT, last_failover_at=NOW - 301, last_failover_to="node2"), "failover",
     "primary node1 silent for 6.2 s (ttl 5 s): failing over to node2, the most advanced standby without delay "
     "(applied redo offset 100)"),
    ("only a delayed standby", _with(_view(capture=SILENT), "node2", applier=None), "none",
     "primary node1 silent for 6.2 s (ttl 5 s); no standby can take over: node2's applier is not running; node3 is "
     "delayed (3600 s)"),
    ("a silent applier is no target", _with(_view(capture=SILENT), "node2", applier=_applier(age=8)), "none",
     "primary node1 silent for 6.2 s (ttl 5 s); no standby can take over: node2's applier silent for 8 s (ttl 5 s): "
     "it may not reach what Kafka holds; node3 is delayed (3600 s)"),
    ("the most advanced wins", _with(_with(_view(capture=SILENT), "node3", applier=_applier(120)), "node2",
                                     applier=_applier(100, lag=20)), "failover",
     "primary node1 silent for 6.2 s (ttl 5 s): failing over to node3, the most advanced standby without delay "
     "(applied redo offset 120)"),
    ("never heard from", _view(capture=None), "none",
     "primary node1 not heard from in epoch 0 (no running capture or node agent heartbeat for it yet): not acting on "
     "silence; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("just started watching", _view(capture=SILENT, watching_since=NOW - 3), "none",
     "primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("an old epoch's capture does not vouch", _view(roles=_epoch3(), capture=_capture(epoch=2), epoch_since=NOW - 9),
     "none", "primary node1 not heard from in epoch 3 (no running capture or node agent heartbeat for it yet): not "
             "acting on silence; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("the new epoch's capture vouches", _view(roles=_epoch3(), capture=_capture(age=6.2, epoch=3),
                                              epoch_since=NOW - 9), "failover",
     "primary node1 silent for 6.2 s (ttl 5 s): failing over to node2, the most advanced standby without delay "
     "(applied redo offset 100)"),
    ("an agent beat from before the epoch does not vouch",
     _with(_view(roles=_epoch3(), capture=None, epoch_since=NOW - 3), "node1", agent=_agent(age=4)), "none",
     "primary node1 not heard from in epoch 3 (no running capture or node agent heartbeat for it yet): not acting on "
     "silence; standbys node2 (lag 0), node3 (delay 3600 s)"),
    ("ttl setting", _view(capture=_capture(age=6.2), settings=Settings(ttl_s=10)), "none",
     "primary node1 healthy, epoch 0; standbys node2 (lag 0), node3 (delay 3600 s)"),
    # A broker outage longer than the agent's lease fences the primary (F23). Once its agent reaches Kafka again,
    # nobody was promoted: the controller asks it to lift its fence, with or without a standby that could take
    # over (the primary holds every commit of the outage; a failover would leave them in the divergence ledger).
    # A lift that did not hold (fenced again within LIFT_HOLDS_TTLS ttls) is a failover when a standby can take over.
    ("self-fenced and back, a standby could take over", _with(_view(), "node1", agent=_agent("fenced", message=SELF)),
     "lift-fence", f"node1 fenced itself ({SELF}); node1 reaches Kafka again and nobody was promoted: asking its agent "
                   "to lift its self-fence (it holds every commit of the outage)"),
    ("self-fenced, back, nobody to take over", NO_TARGET, "lift-fence",
     f"node1 fenced itself ({SELF}); no standby can take over: node2's applier is not running; node3 is delayed "
     "(3600 s); node1 reaches Kafka again and nobody was promoted: asking its agent to lift its self-fence (it holds "
     "every commit of the outage)"),
    ("lift asked: no failover for the ttl", replace(NO_TARGET, lift_asked_at=NOW - 2), "none",
     f"node1 fenced itself ({SELF}); asked node1 to lift its self-fence 2 s ago: waiting for its agent (no failover "
     "for the ttl, 5 s)"),
    ("lift asked a ttl ago, nobody to take over: asked again", replace(NO_TARGET, lift_asked_at=NOW - 5.5),
     "lift-fence",
     f"node1 fenced itself ({SELF}); no standby can take over: node2's applier is not running; node3 is delayed "
     "(3600 s); node1 reaches Kafka again and nobody was promoted: asking its agent to lift its self-fence (it holds "
     "every commit of the outage)"),
    ("a lift that did not hold, a standby to take over",
     replace(_with(_view(), "node1", agent=_agent("fenced", message=SELF)), lift_asked_at=NOW - 8), "failover",
     f"node1 fenced itself ({SELF}); the lift asked 8 s ago did not hold: failing over to node2, the most advanced "
     "standby without delay (applied redo offset 100)"),
    ("a new outage after the lift held: asked again",
     replace(_with(_view(), "node1", agent=_agent("fenced", message=SELF)), lift_asked_at=NOW - 11), "lift-fence",
     f"node1 fenced itself ({SELF}); node1 reaches Kafka again and nobody was promoted: asking its agent to lift its "
     "self-fence (it holds every commit of the outage)"),
    ("fenced by a handover: never lifted here",
     _with(NO_TARGET, "node1", agent=_agent("fenced", message="it was fenced in epoch 0: read-only (switchover)")),
     "none", "node1 fenced itself (it was fenced in epoch 0: read-only (switchover)); no standby can take over: "
             "node2's applier is not running; node3 is delayed (3600 s)"),
    ("self-fenced in an older epoch: not lifted",
     _with(replace(NO_TARGET, roles=_epoch3(), capture=_capture(epoch=3)), "node1",
           agent=_agent("fenced", message=SELF)), "none",
     f"node1 fenced itself ({SELF}); no standby can take over: node2's applier is not running; node3 is delayed "
     "(3600 s)"),
]


@pytest.mark.parametrize(("name", "view", "action", "sentence"), CASES, ids=[c[0] for c in CASES])
def test_tick(name: str, view: ControllerView, action: str, sentence: str) -> None:
    got = tick(view, NOW)
    assert (got.action, got.sentence) == (action, sentence)
    assert got.acts == (action == "failover")
    assert bool(got.target) == (action != "none")


def _in_handover(phase: str, ago: float) -> Roles:
    from common.control import ControlRecord
    from schemas.control import HandoverStep

    roles = Roles("node1")
    rec = ControlRecord(1, HandoverStep("switchover", 1, phase, "", 0.1), "node2", "dba@host", int((NOW - ago) * 1e6),
                        "r1")
    roles.steps = [(rec, rec.body)]  # type: ignore[list-item]
    return roles


def test_not_while_a_switchover_is_in_progress() -> None:
    got = tick(_view(roles=_in_handover("drained", 3), capture=SILENT), NOW)
    assert (got.action, got.sentence) == ("none", "a switchover to node2 is in progress (last step drained, 3 s ago): "
                                                  "not acting; primary node1 silent for 6.2 s (ttl 5 s)")
    assert tick(_view(roles=_in_handover("done", 3), capture=SILENT), NOW).acts
    assert tick(_view(roles=_in_handover("drained", 301), capture=SILENT), NOW).acts  # its command died
    promoted = _in_handover("promoted", 3)
    promoted.reigns = [Reign(1, "node2", "node1", "switchover", int((NOW - 3) * 1e6), 0)]
    got = tick(_view(roles=promoted, capture=_capture(age=9, epoch=1)), NOW)
    assert "in progress" not in got.sentence, got.sentence  # past its promotion: no longer holds automation back


def _failover_begun(started_ago: float, target: str = "node2") -> Roles:
    from common.control import ControlRecord
    from schemas.control import HandoverStep

    roles = Roles("node1")
    steps = [(started_ago, "started"), (started_ago - 0.5, "fenced")]
    roles.steps = [(ControlRecord(i, HandoverStep("failover", 1, phase, "", 0.1), target, "ctl@host",  # type: ignore
                                  int((NOW - ago) * 1e6), f"r{i}"), HandoverStep("failover", 1, phase, "", 0.1))
                   for i, (ago, phase) in enumerate(steps)]
    return roles


@pytest.mark.parametrize(("name", "roles", "abandoned", "acts"), [
    ("another controller's failover in progress, it holds the lease", _failover_begun(3), {}, False),
    ("its controller lost the lease mid-way: taken over", _failover_begun(3),
     {"abandoned_by": "ctl-b", "abandoned_to": "node2", "abandoned_since": NOW - 3.4}, True),
    ("an operator's failover, begun long after the lost controller's decision", _failover_begun(3),
     {"abandoned_by": "ctl-b", "abandoned_to": "node2", "abandoned_since": NOW - 60}, False),
    ("a failover to another node than the lost controller decided", _failover_begun(3, "node3"),
     {"abandoned_by": "ctl-b", "abandoned_to": "node2", "abandoned_since": NOW - 3.4}, False),
])
def test_a_failover_whose_controller_lost_the_lease_is_taken_over(name: str, roles: Roles, abandoned: dict[str, object],
                                                                   acts: bool) -> None:
    got = tick(_view(roles=roles, capture=SILENT, **abandoned), NOW)
    assert got.acts is acts, f"{name}: {got.sentence}"
    if acts:
        assert got.target == "node2" and got.sentence.endswith(
            "; taking over the failover ctl-b began before it lost the lease"), got.sentence
    else:
        assert "is in progress (last step fenced, 2 s ago): not acting" in got.sentence, got.sentence


def test_a_demoted_former_primary_is_not_a_target() -> None:
    roles = Roles("node1")
    roles.reigns = [Reign(1, "node2", "node1", "failover", 5, 0)]
    view = _with(_view(roles=roles, capture=_capture(age=9, epoch=1)), "node1", applier=_applier(200))
    got = tick(view, NOW)
    assert got.action == "none"
    assert got.sentence == ("primary node2 silent for 9.0 s (ttl 5 s); no standby can take over: node1 is demoted; "
                            "node3 is delayed (3600 s)")


@pytest.mark.parametrize(("watching_since", "before", "heard", "expected"), [
    (100.0, 0.0, 130.0, 100.0),  # the first heartbeat ever heard: watching since the start
    (100.0, 129.0, 130.0, 100.0),  # beats every second: still watching
    (100.0, 127.0, 130.0, 100.0),  # a 3 s gap (a busy machine): still watching
    (100.0, 120.0, 130.0, 130.0),  # 10 s of nothing (the broker restarted): watching again from now
    (135.0, 120.0, 130.0, 135.0),  # never moved back
])
def test_a_controller_that_heard_nothing_counts_silence_again(watching_since: float, before: float, heard: float,
                                                                expected: float) -> None:
    assert watching_from(watching_since, before, heard) == expected


@pytest.mark.parametrize(("ttl", "failed", "delay"), [(5, 1, 10), (5, 2, 20), (5, 3, 40), (5, 4, 80), (5, 5, 120),
                                                      (5, 9, 120), (30, 1, 60), (30, 2, 120)])
def test_a_failed_automatic_failover_is_retried_within_seconds_then_less_often(ttl: float, failed: int,
                                                                              delay: float) -> None:
    from failover.automation import retry_delay

    assert retry_delay(ttl, failed) == delay
