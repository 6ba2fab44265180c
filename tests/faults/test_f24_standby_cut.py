"""F24: a standby's link to Kafka cut, for longer than the controller's ttl.

Each node's node agent and applier run in a network namespace of their own (tests/support/netlan.py
``NodeLinks``; their YAML from ``node_config``: the broker and every database through the node's own link); the
databases, the capture, the controller (``--ttl 5 --window 0``) and the client stay in the root namespace. The cut
is a blackhole route to the broker inside the standby's namespace: its applier and its agent lose Kafka (no
heartbeat, nothing applied), while everything else goes on. Runs (``ARK_FAULT_RUNS_F24``, default 2, full 20)
alternate between two shapes:

* **odd runs, the cut alone**: the standby is cut off for 2 x ttl while the client writes. No failover: no epoch
  begun and no failover decision; the primary writable in every sample round of the cut; the longest gap between
  two acknowledged commits under :data:`GAP_BOUND_S`. The controller does not count the silent standby: its
  heartbeat says ``<standby> (applier silent)`` during the cut. After the heal the standby catches up with the
  primary's ledger.
* **even runs, the primary dies while the standby is cut off**: the standby is cut, the controller says its
  applier is silent, and the client goes on committing on the primary (commits in Kafka that the standby has not
  applied); then the primary's node dies (kill -9 of its postmaster, its agent, the capture). The controller must
  not promote the silent standby (its failover would have to apply what it cannot read): it says that no standby
  can take over, no epoch begins, the standby is never writable while cut off. After the heal the standby's
  applier is heard from again and the controller fails over to it: one epoch, and the new primary first applies
  everything Kafka holds. The dead node's agent comes back (fencing its data directory), its database is started,
  ``ark reinstate`` makes it the standby, the capture is started on the new primary; the next runs go the other
  way.

At the end (``check_the_end``): never two writable primaries in a sampler that opens a fresh session on each
database every 50 ms; every acknowledged commit on the final primary or in the divergence ledger (none of those
committed during the cut is lost); both nodes equal row by row.

Shape and time: an odd run is about 2 x ttl + the catch-up (15 s), an even run about 2 x ttl + a failover + a
reinstate (40-60 s); two runs and the set-up (a broker of its own, for the namespaces' listener) took 99-200 s on
the shared 2-core machine at a load average of 23-30 (other test runs).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import load_config
from common.control import ControlChannel, ControlRecord
from deploy.agents import AgentProcess
from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.postgres import PgInstance
from failover.view import HeartbeatView
from schemas.control import ControllerDecision, EpochBegun
from tests.support.faults import (
    FaultRun,
    bank_setup,
    converge,
    fault_runs,
    ledger_max,
    recorded,
    summary_note,
    wait_ledger,
)
from tests.support.handover import AckClient, multi_host_dsn
from tests.support.netlan import NodeLinks
from tests.support.partition import (
    WritableSampler,
    agents_know_data_dirs,
    check_the_end,
    node_config,
    reinstate_dead_node,
    wait_data_dir_fenced,
)
from tests.support.replication import Group, Standby, wait_for

TTL_S = 5.0
NODES = ("primary", "standby")
#: The longest pause between two acknowledged commits while the standby is cut off: the cut must not touch the
#: primary's clients.
GAP_BOUND_S = 3.0
#: From the heal to the client's first commit on the new primary (even runs): the applier's reconnection to the
#: broker (librdkafka's backoff), its first heartbeat, a failover; room for a busy machine.
FAILOVER_BOUND_S = 45.0


@pytest.fixture
def links():
    if os.geteuid() != 0:
        pytest.skip("F24 needs root: it creates network namespaces and veth pairs")
    made = NodeLinks(NODES)
    try:
        made.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        made.destroy()
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"F24 needs 'ip netns' and veth pairs, which failed here: {detail}")
    yield made
    made.destroy()


def _longest_gap(client: AckClient, since: float, until: float) -> float:
    """The longest time between two consecutive acknowledged commits around [since, until]."""
    times = sorted(a.at for a in list(client.acks) if a.at <= until)
    inside = [t for t in times if t < since][-1:] + [t for t in times if t >= since] + [until]
    return max((b - a for a, b in zip(inside, inside[1:], strict=False)), default=until - since)


def _failovers(records: list[ControlRecord], start: int) -> tuple[list[int], int]:
    """Epochs begun and failover decisions among ``records[start:]``."""
    begun = [r.body.epoch for r in records[start:] if isinstance(r.body, EpochBegun)]
    decided = sum(1 for r in records[start:] if isinstance(r.body, ControllerDecision) and r.body.action == "failover")
    return begun, decided


@pytest.mark.timeout(3600)
def test_f24_standby_cut_off_from_kafka(links: NodeLinks, pg_factory: Callable[..., PgInstance], ark_tmp: Path,
                                        fault_results_dir: Path) -> None:
    runs = fault_runs("F24", default=2)
    result = FaultRun("F24", "a standby cut off from Kafka longer than the ttl, and the primary dying meanwhile")
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "f24" / name
    home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(home / "kafka", free_port(), free_port(), extra_listener=(links.kafka_host, free_port()))
    nodes = {n: pg_factory(f"f24{n}", extra_listen=links.db_hosts()) for n in NODES}
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    dsns = {n: inst.dsn(dbname) for n, inst in nodes.items()}
    gaps: list[float] = []
    behinds: list[int] = []
    took: list[float] = []

    def behind_note() -> None:
        if behinds:
            result.notes.append(f"primary died with the standby cut off: {min(behinds)}-{max(behinds)} commits not "
                                "applied at the death")

    with recorded(result, fault_results_dir) as stack:
        stack.callback(lambda: summary_note(result, "first write on the new primary after the heal", took))
        stack.callback(behind_note)
        stack.callback(lambda: summary_note(result, "longest commit gap while the standby was cut off", gaps))
        stack.callback(broker.stop)
        broker.start(timeout=180)
        group = Group(name, ark_tmp / "groups" / name, broker.bootstrap, nodes["primary"], dbname,
                      [Standby("standby", nodes["standby"], dbname)])
        stack.callback(group.stop_all)
        group.write_config()
        agents_know_data_dirs(group, nodes)  # offline fences
        bank_setup(group)
        configs = {n: node_config(group, links, n, broker.extra_bootstrap or "") for n in NODES}

        agents: dict[str, AgentProcess] = {}

        def agent(n: str, label: str, g: Group = group) -> None:
            agents[n] = g.start("agent", n, name=label, config=configs[n], prefix=links.prefix(n))

        for n in NODES:
            agent(n, f"agent-{n}")
            group.start("apply", n, name=f"apply-{n}", config=configs[n], prefix=links.prefix(n))
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

        def controller_said(since: float, words: str) -> bool:
            """Whether the controller's newest heartbeat, sent at or after wall time ``since``, says ``words``."""
            assert view is not None
            view.refresh(0.1)
            got = view.beats.get(("controller", "ctl"))
            return got is not None and got.sent_at >= since and words in got.message

        primary, standby = "primary", "standby"
        wait_for(lambda: controller_said(time.time(), f"primary {primary} healthy"), 60,
                 "the controller to see the primary healthy")
        for run in range(runs):
            wait_for(lambda s=standby: controller_said(time.time(), f"{s} (lag"), 60,
                     f"the controller to count {standby} as a standby (its applier heard from)")
            records.extend(channel.poll())
            seen = len(records)
            cut, cut_wall = time.monotonic(), time.time()
            links.cut_kafka(standby)
            try:
                silent = f"{standby} (applier silent)"
                wait_for(lambda w=cut_wall, s=silent: controller_said(w + TTL_S, s), TTL_S + 30,
                         f"the controller to say {silent}")
                if run % 2 == 0:
                    # -- the cut alone: no failover, the primary untouched --------------------------------------
                    wait_for(lambda w=cut_wall, s=silent: controller_said(w + 2 * TTL_S, s), 2 * TTL_S + 30,
                             f"the controller to say {silent} {2 * TTL_S:g} s after the cut")
                    healed = time.monotonic()
                else:
                    # -- the primary dies while the standby is cut off ------------------------------------------
                    behind = ledger_max(dsns[primary]) - ledger_max(dsns[standby])
                    behinds.append(behind)
                    died, died_wall = time.monotonic(), time.time()
                    nodes[primary].kill9()
                    agents[primary].kill9()
                    capture.kill9()
                    refused = f"no standby can take over: {standby}'s applier silent for"
                    wait_for(lambda w=died_wall, r=refused: controller_said(w + TTL_S + 1, r), TTL_S + 30,
                             f"the controller to say {refused} while {standby} is cut off")
                    healed = time.monotonic()
                    assert sampler.first(standby, True, died) is None, (
                        f"run {run + 1}: {standby} writable while cut off from Kafka")
            finally:
                links.heal_kafka(standby)
            records.extend(channel.poll())
            begun, decided = _failovers(records, seen)
            assert not begun and not decided, (f"run {run + 1}: {standby} cut off: epochs {begun} begun, {decided} "
                                               f"failover decisions before the heal")
            if run % 2 == 0:
                gap = _longest_gap(client, cut, healed)
                gaps.append(gap)
                down = [t for t, w in sampler.rounds if cut <= t <= healed and not w[primary]]
                caught = wait_ledger(dsns[standby], ledger_max(dsns[primary]), 120)
                result.notes.append(f"run {run + 1}: {standby} cut off {healed - cut:.1f} s; longest commit gap "
                                    f"{gap:.2f} s; caught up {caught:.1f} s after the heal")
                assert gap < GAP_BOUND_S, f"run {run + 1}: no commit for {gap:.2f} s while {standby} was cut off"
                assert not down, f"run {run + 1}: {primary} not writable in {len(down)} sample rounds of the cut"
            else:
                before = client.acked_on(nodes[standby].port)
                wait_for(lambda s=standby, b=before: client.acked_on(nodes[s].port) > b, FAILOVER_BOUND_S + 60,
                         f"the controller to fail over to {standby} once it is heard from again")
                first = min(a.at for a in client.acks_on(nodes[standby].port) if a.at >= healed) - healed
                took.append(first)
                records.extend(channel.poll())
                begun, decided = _failovers(records, seen)
                result.notes.append(f"run {run + 1}: {primary} died with {standby} cut off and {behinds[-1]} commits "
                                    f"behind; refused while cut off; first write on {standby} {first:.2f} s after "
                                    f"the heal; epochs begun {begun}")
                assert first < FAILOVER_BOUND_S, f"run {run + 1}: first write on {standby} {first:.1f} s after the heal"
                assert len(begun) == 1, f"run {run + 1}: {len(begun)} epochs begun for one failover"
                capture = group.start("capture", "--node", standby, name=f"capture-{standby}-{run}")
                # The dead node's agent comes back first and fences its data directory, so that the database starts
                # read-only. It does so only where the data directory is local to the database's address, which the
                # namespace's link is not: this one agent runs in the root namespace (F21 and F22 check the fence
                # itself), then the node's agent goes back into its namespace.
                fencer = group.start("agent", primary, name=f"agent-{primary}-{run}-fence")
                wait_data_dir_fenced(nodes[primary], primary)
                fencer.stop()
                agent(primary, f"agent-{primary}-{run}")
                reinstate_dead_node(group, nodes[primary], primary, home / f"divergence-{run}.txt", dsns, standby)
                primary, standby = standby, primary
            result.runs += 1
        client.stop()
        check_the_end(group, result, client, sampler, dsns[primary], dsns[standby])
    print("\n".join(result.notes[-5:]))
    result.assert_clean(min_samples=runs)
