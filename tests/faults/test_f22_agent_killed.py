"""F22: a node agent killed with -9. The controller must not fail over for that alone; a primary that then dies
with nobody to restart it is failed over on silence.

Two nodes, node agents on both (they know their data directories: offline fences), the capture on the primary's,
an applier on each, one ``ark controller --ttl 5 --window 0``, and a client writing through one multi-host
connection string. Each run (``ARK_FAULT_RUNS_F22``, default 2, full 20; back and forth between the nodes) has two
parts:

1. **The agent killed.** The primary's node agent in odd runs, the standby's in even runs, is killed with -9. The
   capture still vouches for the primary (failover/controller.py: silence is counted from the newest heartbeat of
   the agent *or* of a running capture), so the controller must go on saying the primary is healthy: it is
   watched until it said so in a heartbeat sent more than ``ttl + 2`` s after the kill (the agent's last
   heartbeat is then older than the ttl). Then the agent is started again, as its service manager would, and the
   part ends when its heartbeat says ``healthy`` again. Checked: no epoch begun, no failover decision; the longest
   gap between two acknowledged commits from the kill to the agent's return stays under :data:`GAP_BOUND_S`.
2. **The primary dies with its agent dead.** The primary's agent is killed again, then its postmaster: nobody
   restarts the database locally, and the capture, retrying its connection, no longer vouches. The controller
   must fail over on silence: the client's first commit on the standby within :data:`FAILOVER_BOUND_S` of the
   postmaster's death (ttl + a failover, room for a busy machine), with exactly one epoch begun. The dead node's
   agent comes back first and fences the data directory, the database is started (read-only), ``ark reinstate``
   makes it the new standby, and the capture is started on the new primary.

At the end (``check_the_end``): never two writable primaries in a sampler that opens a fresh session on each
database every 50 ms; every acknowledged commit on the final primary or in the divergence ledger; both nodes
equal row by row.

Shape and time: part 1 is about ttl + 5 s (the watch, the agent's start), part 2 about ttl + 3 s to the failover
and 15-25 s more for the reinstate and the catch-up; two runs took 97-105 s on the shared 2-core machine (about 15 s of
it the set-up), more than the 60 s aimed at: a failover per run is what checks the silence bound every run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import load_config
from common.control import ControlChannel, ControlRecord
from deploy.postgres import PgInstance
from failover.view import HeartbeatView
from schemas.control import ControllerDecision, EpochBegun
from tests.support.faults import FaultRun, bank_setup, converge, fault_runs, recorded, summary_note
from tests.support.handover import AckClient, multi_host_dsn
from tests.support.partition import (
    WritableSampler,
    agents_know_data_dirs,
    check_the_end,
    reinstate_dead_node,
    wait_data_dir_fenced,
)
from tests.support.replication import Group, Standby, wait_for

TTL_S = 5.0
NODES = ("primary", "standby")
#: The longest pause between two acknowledged commits while an agent is dead: an agent's death must not touch the
#: client (three client threads commit every few ms; a second on a busy shared machine is already a lot).
GAP_BOUND_S = 3.0
#: From the primary's death (agent already dead) to the client's first commit on the standby: ttl of silence + a
#: failover (fence, marker, apply to the end, promote), with room for a busy machine.
FAILOVER_BOUND_S = 30.0


def _longest_gap(client: AckClient, since: float, until: float) -> float:
    """The longest time between two consecutive acknowledged commits around [since, until]."""
    times = sorted(a.at for a in client.acks if a.at <= until)
    before = [t for t in times if t < since][-1:]
    inside = before + [t for t in times if t >= since] + [until]
    return max((b - a for a, b in zip(inside, inside[1:], strict=False)), default=until - since)


def _failovers(records: list[ControlRecord], start: int) -> tuple[list[int], int]:
    """Epochs begun and failover decisions among ``records[start:]``."""
    begun = [r.body.epoch for r in records[start:] if isinstance(r.body, EpochBegun)]
    decided = sum(1 for r in records[start:] if isinstance(r.body, ControllerDecision) and r.body.action == "failover")
    return begun, decided


@pytest.mark.timeout(3600)
def test_f22_agent_killed(kafka_bootstrap: str, pg_factory: Callable[..., PgInstance], ark_tmp: Path,
                          fault_results_dir: Path) -> None:
    runs = fault_runs("F22", default=2)
    result = FaultRun("F22", "a node agent killed -9: no failover; the primary dying with its agent dead: failover")
    nodes = {n: pg_factory(f"f22{n}") for n in NODES}
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "f22" / name
    home.mkdir(parents=True, exist_ok=True)
    group = Group(name, ark_tmp / "groups" / name, kafka_bootstrap, nodes["primary"], dbname,
                  [Standby("standby", nodes["standby"], dbname)])
    group.write_config()
    agents_know_data_dirs(group, nodes)  # offline fences
    dsns = {n: inst.dsn(dbname) for n, inst in nodes.items()}
    gaps: list[float] = []
    took: list[float] = []
    with recorded(result, fault_results_dir) as stack:
        stack.callback(lambda: summary_note(result, "primary death (agent dead) to first write on the new primary",
                                            took))
        stack.callback(lambda: summary_note(result, "longest commit gap while an agent was dead", gaps))
        stack.callback(group.stop_all)
        bank_setup(group)
        agents = {n: group.start("agent", n, name=f"agent-{n}") for n in NODES}
        for n in NODES:
            group.start("apply", n, name=f"apply-{n}")
        capture = group.start("capture", "--node", "primary", name="capture-primary")
        group.start("controller", "--name", "ctl", "--ttl", str(TTL_S), "--window", "0", "--timeout", "120",
                    name="controller")
        cfg = load_config(group.config)
        channel = ControlChannel.for_config(cfg)
        records = channel.replay()
        view = HeartbeatView(cfg, lookback_s=5)
        stack.callback(view.close)
        client = AckClient(multi_host_dsn([(nodes[n], dbname) for n in NODES])).start()
        stack.callback(client.stop)
        sampler = WritableSampler(dsns)
        stack.callback(sampler.stop)
        wait_for(lambda: client.count() >= 50, 60, "the client's first commits")
        converge(group, standby="standby", at_least=50)

        def beat(agent: str, who: str, since: float, says: Callable[[str, str], bool]) -> bool:
            """Whether ``agent`` ``who`` sent a heartbeat at or after wall time ``since`` that ``says`` (state,
            message) holds of (the view keeps each agent's newest beat)."""
            assert view is not None
            view.refresh(0.1)
            got = view.beats.get((agent, who))
            return got is not None and got.sent_at >= since and says(got.state, got.message)

        primary, standby = "primary", "standby"
        wait_for(lambda: beat("controller", "ctl", time.time(), lambda s, m: s == "active" and "healthy" in m), 60,
                 "the controller to hold the lease and see the primary healthy")
        for run in range(runs):
            # -- part 1: an agent killed, no failover -------------------------------------------------------
            victim = primary if run % 2 == 0 else standby
            records.extend(channel.poll())
            seen = len(records)
            killed, killed_wall = time.monotonic(), time.time()
            agents[victim].kill9()
            healthy_msg = f"primary {primary} healthy"
            wait_for(lambda w=killed_wall, m=healthy_msg: beat("controller", "ctl", w + TTL_S + 2.0,
                                                                 lambda s, msg: m in msg), TTL_S + 30,
                     f"the controller to say {primary} is healthy {TTL_S + 2:g} s after {victim}'s agent died")
            back_wall = time.time()
            agents[victim] = group.start("agent", victim, name=f"agent-{victim}-{run}")
            wait_for(lambda v=victim, b=back_wall: beat("node", v, b, lambda s, _m: s == "healthy"), 60,
                     f"{victim}'s restarted agent to say healthy")
            gap = _longest_gap(client, killed, time.monotonic())
            gaps.append(gap)
            records.extend(channel.poll())
            begun, decided = _failovers(records, seen)
            role = "the primary" if victim == primary else "the standby"
            result.notes.append(f"run {run + 1}: {victim}'s agent killed ({role}); longest commit gap {gap:.2f} s; "
                                f"back healthy {time.monotonic() - killed:.1f} s after the kill")
            assert not begun and not decided, (f"run {run + 1}: {victim}'s agent killed: epochs {begun} begun, "
                                               f"{decided} failover decisions")
            assert gap < GAP_BOUND_S, f"run {run + 1}: no commit for {gap:.2f} s while {victim}'s agent was dead"
            # -- part 2: the primary dies with its agent dead ------------------------------------------------
            seen = len(records)
            agents[primary].kill9()
            before = client.acked_on(nodes[standby].port)
            died = time.monotonic()
            nodes[primary].kill9()
            wait_for(lambda s=standby, b=before: client.acked_on(nodes[s].port) > b, FAILOVER_BOUND_S + 60,
                     f"the controller to fail over to {standby} on silence")
            first = min(a.at for a in client.acks_on(nodes[standby].port) if a.at >= died) - died
            took.append(first)
            records.extend(channel.poll())
            begun, decided = _failovers(records, seen)
            result.notes.append(f"run {run + 1}: {primary}'s postmaster killed with its agent dead; first write on "
                                f"{standby} {first:.2f} s after; epochs begun {begun}")
            assert first < FAILOVER_BOUND_S, f"run {run + 1}: first write on {standby} {first:.1f} s after the death"
            assert len(begun) == 1, f"run {run + 1}: {len(begun)} epochs begun for one failover"
            capture.kill9()  # retrying against the dead primary, and fenced in Kafka by the failover
            capture = group.start("capture", "--node", standby, name=f"capture-{standby}-{run}")
            agents[primary] = group.start("agent", primary, name=f"agent-{primary}-{run}-back")
            wait_data_dir_fenced(nodes[primary], primary)
            reinstate_dead_node(group, nodes[primary], primary, home / f"divergence-{run}.txt", dsns, standby)
            result.runs += 1
            primary, standby = standby, primary
        client.stop()
        check_the_end(group, result, client, sampler, dsns[primary], dsns[standby])
    print("\n".join(result.notes[-4:]))
    result.assert_clean(min_samples=runs)
