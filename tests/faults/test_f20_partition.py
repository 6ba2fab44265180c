"""F20: the primary's node cut off from Kafka (and so from the controller) while its clients still reach it.

Each node's Ark processes (its node agent, and the capture on the primary) run in a network namespace of their
own (tests/support/netlan.py ``NodeLinks``); the databases, the appliers, the controller and the client stay in
the root namespace. The cut is a blackhole route to the broker inside the primary's namespace: its agent and its
capture lose Kafka, while the client and the databases go on talking to each other. This is the partition where
split brain happens: the old primary still takes writes, and a controller on the other side of the cut promotes a
standby.

Each run (``ARK_FAULT_RUNS_F20``, default 2, full 20; back and forth between the two nodes): the primary's agent
must fence its database (read-only, writing sessions ended) within its lease, before the controller's ttl; the
controller promotes the standby; after the heal the old primary stays fenced and ``ark reinstate`` brings it back as
a standby. Checked, from a sampler that opens a fresh session on each database every 50 ms and from the client's
own log of acknowledged commits:

* never two writable primaries at the same time (no sample round with both writable; no commit acknowledged by
  the old primary after the first one on the new primary);
* every acknowledged commit is on the new primary or in the divergence ledger;
* the old primary, reinstated, catches up with the new one, and at the end both are equal row by row.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.postgres import PgInstance
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
from tests.support.partition import WritableSampler, check_the_end, node_config
from tests.support.replication import Group, Standby, wait_for

TTL_S = 5.0
NODES = ("primary", "standby")


@pytest.fixture
def links():
    if os.geteuid() != 0:
        pytest.skip("F20 needs root: it creates network namespaces and veth pairs")
    made = NodeLinks(NODES)
    try:
        made.create()
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        made.destroy()
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        pytest.skip(f"F20 needs 'ip netns' and veth pairs, which failed here: {detail}")
    yield made
    made.destroy()


@pytest.mark.timeout(3600)
def test_f20_primary_cut_off_from_kafka_fences_itself(links: NodeLinks, pg_factory: Callable[..., PgInstance],
                                                      ark_tmp: Path, fault_results_dir: Path) -> None:
    runs = fault_runs("F20", default=2)
    result = FaultRun("F20", "the primary's node cut off from Kafka and the controller, its clients still on it")
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "f20" / name
    home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(home / "kafka", free_port(), free_port(), extra_listener=(links.kafka_host, free_port()))
    nodes = {n: pg_factory(f"f20{n}", extra_listen=links.db_hosts()) for n in NODES}
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    fenced_in, promoted_in = [], []
    with recorded(result, fault_results_dir) as stack:
        stack.callback(lambda: summary_note(result, "first write on the new primary after the cut", promoted_in))
        stack.callback(lambda: summary_note(result, "fenced after the cut", fenced_in))
        stack.callback(broker.stop)
        broker.start(timeout=180)
        group = Group(name, ark_tmp / "groups" / name, broker.bootstrap, nodes["primary"], dbname,
                      [Standby("standby", nodes["standby"], dbname)])
        stack.callback(group.stop_all)
        group.write_config()
        bank_setup(group)
        configs = {n: node_config(group, links, n, broker.extra_bootstrap or "") for n in NODES}
        dsns = {n: inst.dsn(dbname) for n, inst in nodes.items()}
        for n in NODES:
            group.start("agent", n, name=f"agent-{n}", config=configs[n], prefix=links.prefix(n))
            group.start("apply", n, name=f"apply-{n}")
        capture = group.start("capture", "--node", "primary", name="capture-primary", config=configs["primary"],
                              prefix=links.prefix("primary"))
        group.start("controller", "--name", "ctl", "--ttl", str(TTL_S), "--window", "0", "--timeout", "120",
                    name="controller")
        client = AckClient(multi_host_dsn([(nodes[n], dbname) for n in NODES])).start()
        stack.callback(client.stop)
        sampler = WritableSampler(dsns)
        stack.callback(sampler.stop)
        wait_for(lambda: client.count() >= 50, 60, "the client's first commits")
        converge(group, standby="standby", at_least=50)
        primary, standby = "primary", "standby"
        for run in range(runs):
            time.sleep(2.0)  # the agents and the controller have seen the primary healthy
            cut = time.monotonic()
            links.cut_kafka(primary)
            try:
                wait_for(lambda p=primary, c=cut: sampler.first(p, False, c) is not None, 30,
                         f"{primary} to fence itself")
                fenced = (sampler.first(primary, False, cut) or cut) - cut
                before = client.acked_on(nodes[standby].port)
                wait_for(lambda s=standby, b=before: client.acked_on(nodes[s].port) > b, 90,
                         f"the controller to promote {standby} and the client to write there")
                first_new = min(a.at for a in client.acks_on(nodes[standby].port) if a.at >= cut)
                last_old = max((a.at for a in client.acks_on(nodes[primary].port) if a.at >= cut), default=cut)
            finally:
                links.heal_kafka(primary)
            fenced_in.append(fenced)
            promoted_in.append(first_new - cut)
            assert fenced < TTL_S, f"run {run + 1}: {primary} was still writable {fenced:.2f} s after the cut"
            assert last_old < first_new, (f"run {run + 1}: {primary} acknowledged a commit "
                                          f"{last_old - first_new:.2f} s after {standby} took its first")
            # The capture on the new primary: what its node's supervisor would start (the old one is fenced in Kafka).
            capture.kill9()
            capture = group.start("capture", "--node", standby, name=f"capture-{standby}-{run}",
                                  config=configs[standby], prefix=links.prefix(standby))
            group.ark_ok("reinstate", primary, "--report", str(home / f"divergence-{run}.txt"), timeout=300)
            # Applying again: it catches up with the new primary's ledger (compared row by row at the end).
            wait_ledger(dsns[primary], ledger_max(dsns[standby]), 120)
            result.runs += 1
            result.notes.append(f"run {run + 1}: {primary} read-only {fenced:.2f} s after the cut; first write on "
                                f"{standby} {first_new - cut:.2f} s after it")
            primary, standby = standby, primary
        client.stop()
        check_the_end(group, result, client, sampler, dsns[primary], dsns[standby])
    print("\n".join(result.notes[-3:]))
    result.assert_clean(min_samples=runs)
