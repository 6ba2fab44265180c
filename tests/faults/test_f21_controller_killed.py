"""F21: the primary's node dies, and the active controller is killed with -9 in the middle of the failover.

Two controllers watch the group (``--ttl 5``); node agents run on both nodes, the capture on the primary's, an
applier on each, and a client writes through one multi-host connection string. Each run (``ARK_FAULT_RUNS_F21``,
default 2, full 20; back and forth): the primary's node dies (kill -9 of its postmaster, its agent and its capture);
as soon as a controller records its decision to fail over, and after a random 0-3 s more (so that runs stop it at
different steps: before the fence, during the apply, around the promotion), that controller is killed with -9. The
other controller takes the lease and must finish the job, with no operator. Checked:

* the standby takes writes within a bound (ttl + the lease takeover + a failover), whatever step the kill hit;
* one epoch per run: the failover is finished once, never done twice nor left half-done;
* never two writable primaries (a fresh session on each database every 50 ms);
* every acknowledged commit on the final primary or in the divergence ledger, and both nodes equal at the end;
* the dead node, started again before ``ark reinstate``, comes up read-only: its agent fenced its data directory
  while it was down (and a later promotion of it lifts that fence).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from common.config import load_config
from common.control import ControlChannel
from deploy.agents import AgentProcess
from deploy.postgres import PgInstance
from schemas.control import ControllerDecision, EpochBegun
from tests.support.faults import (
    FaultRun,
    bank_setup,
    converge,
    fault_runs,
    recorded,
    seed,
    summary_note,
)
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
#: ttl of silence + a lease takeover (ttl + 0.25 s) + a failover, with room for a busy machine.
BOUND_S = 45.0


@pytest.mark.timeout(3600)
def test_f21_controller_killed_during_an_automatic_failover(kafka_bootstrap: str,
                                                            pg_factory: Callable[..., PgInstance], ark_tmp: Path,
                                                            fault_results_dir: Path) -> None:
    runs = fault_runs("F21", default=2)
    rng = random.Random(seed())
    result = FaultRun("F21", "the active controller killed -9 during an automatic failover")
    nodes = {n: pg_factory(f"f21{n}") for n in NODES}
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "f21" / name
    home.mkdir(parents=True, exist_ok=True)
    group = Group(name, ark_tmp / "groups" / name, kafka_bootstrap, nodes["primary"], dbname,
                  [Standby("standby", nodes["standby"], dbname)])
    group.write_config()
    agents_know_data_dirs(group, nodes)  # offline fences
    dsns = {n: inst.dsn(dbname) for n, inst in nodes.items()}
    took: list[float] = []
    with recorded(result, fault_results_dir) as stack:
        stack.callback(lambda: summary_note(result, "node death to first write on the new primary", took))
        stack.callback(group.stop_all)
        bank_setup(group)
        agents = {n: group.start("agent", n, name=f"agent-{n}") for n in NODES}
        for n in NODES:
            group.start("apply", n, name=f"apply-{n}")
        capture = group.start("capture", "--node", "primary", name="capture-primary")

        def controller(label: str, run: int) -> AgentProcess:
            return group.start("controller", "--name", label, "--ttl", str(TTL_S), "--window", "0",
                               "--timeout", "120", name=f"controller-{label}-{run}")

        controllers = {label: controller(label, 0) for label in ("ctl-a", "ctl-b")}
        channel = ControlChannel.for_config(load_config(group.config))
        records = channel.replay()
        client = AckClient(multi_host_dsn([(nodes[n], dbname) for n in NODES])).start()
        stack.callback(client.stop)
        sampler = WritableSampler(dsns)
        stack.callback(sampler.stop)
        wait_for(lambda: client.count() >= 50, 60, "the client's first commits")
        converge(group, standby="standby", at_least=50)
        primary, standby = "primary", "standby"
        for run in range(runs):
            time.sleep(3.0)  # the controllers and agents have seen the primary healthy
            records.extend(channel.poll())
            seen = len(records)
            died = time.monotonic()
            nodes[primary].kill9()
            agents[primary].kill9()
            capture.kill9()

            def decided(start: int = seen) -> ControllerDecision | None:
                records.extend(channel.poll())
                return next((r.body for r in records[start:] if isinstance(r.body, ControllerDecision)
                             and r.body.action == "failover"), None)

            wait_for(lambda: decided() is not None, 60, "a controller's decision to fail over")
            holder = decided()
            assert holder is not None
            pause = rng.uniform(0.0, 3.0)
            time.sleep(pause)
            victim = next((label for label in controllers if holder.holder.startswith(label)), None)
            assert victim is not None, f"the decision names {holder.holder}, not one of {sorted(controllers)}"
            controllers[victim].kill9()
            before = client.acked_on(nodes[standby].port)
            wait_for(lambda s=standby, b=before: client.acked_on(nodes[s].port) > b, BOUND_S + 60,
                     f"the other controller to finish the failover to {standby}")
            first = min(a.at for a in client.acks_on(nodes[standby].port) if a.at >= died) - died
            took.append(first)
            records.extend(channel.poll())
            begun = [r.body for r in records[seen:] if isinstance(r.body, EpochBegun)]
            result.notes.append(f"run {run + 1}: {victim} killed {pause:.1f} s after its decision; first write on "
                                f"{standby} {first:.2f} s after the node died; epochs begun {[b.epoch for b in begun]}")
            assert first < BOUND_S, f"run {run + 1}: the standby took its first write {first:.1f} s after the death"
            assert len(begun) == 1, f"run {run + 1}: {len(begun)} epochs begun for one failover"
            controllers[victim] = controller(victim, run + 1)
            capture = group.start("capture", "--node", standby, name=f"capture-{standby}-{run}")
            # The dead node's agent comes back first (as its service manager would start it) and fences the data
            # directory of the demoted node; the database is then started by hand and must come up read-only.
            agents[primary] = group.start("agent", primary, name=f"agent-{primary}-{run}")
            wait_data_dir_fenced(nodes[primary], primary)
            reinstate_dead_node(group, nodes[primary], primary, home / f"divergence-{run}.txt", dsns, standby)
            result.runs += 1
            primary, standby = standby, primary
        client.stop()
        check_the_end(group, result, client, sampler, dsns[primary], dsns[standby])
    print("\n".join(result.notes[-3:]))
    result.assert_clean(min_samples=runs)
