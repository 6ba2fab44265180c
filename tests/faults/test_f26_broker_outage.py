"""F26: the Kafka broker is killed -9 and comes back while every database node is healthy: no failover.

The node agent of the primary cannot tell "Kafka is down" from "I am cut off", so it fences its database after its
lease (3 s): that keeps F20's promise (never two writable primaries). Once Kafka is back, nobody was promoted, and
the fenced primary is the most advanced node: the controller asks its agent to lift the fence (``lift-fence``)
instead of failing over to the standby, which would leave the primary's commits of the outage in the divergence
ledger (Patroni's failsafe mode, with Kafka as the arbiter). Before this case, a broker outage longer than the lease
was a failover whenever a standby could take over.

The group has its own broker (deploy.kafka.KafkaBroker, as F20 and F23); agents on both nodes, the capture on the
primary's, an applier on each, one controller (``--ttl 5 --window 0``: nothing but the rule under test holds a
failover back), the multi-host client. Each run (``ARK_FAULT_RUNS_F26``, CI 2, full 20): the broker is killed -9
and started again 5-12 s later (seeded: ``ARK_FAULT_SEED``) with its data. Checked:

* the primary is read-only while Kafka is gone (its lease), and writable again within a bound of the broker's
  return, by the lift: one ``lift-fence`` decision, no failover decision, no epoch begun;
* never two writable primaries (a fresh session on each database every 50 ms);
* every acknowledged commit on the primary, nothing in the divergence ledger, both nodes equal at the end.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from common.config import load_config
from common.control import ControlChannel
from deploy.kafka import KafkaBroker
from deploy.ports import free_port
from deploy.postgres import PgInstance
from schemas.control import ControllerDecision, EpochBegun
from tests.support.faults import FaultRun, bank_setup, converge, fault_runs, recorded, seed, summary_note
from tests.support.handover import AckClient, divergence_seqs, multi_host_dsn
from tests.support.partition import WritableSampler, agents_know_data_dirs, check_the_end
from tests.support.replication import Group, Standby, wait_for

TTL_S = 5.0
NODES = ("primary", "standby")
#: From the broker's return to the first write on the primary: the clients' reconnect (1 s backoff at most), the
#: controller's grace for a heartbeat it could not hear (its ttl), the lift, with room for a busy 2-core machine.
BOUND_S = 45.0


def _read_only(dsn: str) -> bool:
    """Whether a new session on the database is read-only (the agent's fence), False when it does not answer."""
    try:
        with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
            row = conn.execute("SHOW default_transaction_read_only").fetchone()
            return row is not None and row[0] == "on"
    except psycopg.Error:
        return False


@pytest.mark.timeout(1800)
def test_f26_a_broker_outage_is_no_failover(pg_factory: Callable[..., PgInstance], ark_tmp: Path,
                                            fault_results_dir: Path) -> None:
    runs = fault_runs("F26", default=2)
    rnd_seed = seed()
    rng = random.Random(rnd_seed)
    result = FaultRun("F26", "the broker killed -9 and back, every database node healthy")
    result.notes.append(f"seed {rnd_seed}")
    name = f"t{uuid.uuid4().hex[:8]}"
    home = ark_tmp / "f26" / name
    home.mkdir(parents=True, exist_ok=True)
    broker = KafkaBroker(home / "kafka", free_port(), free_port())
    nodes = {n: pg_factory(f"f26{n}") for n in NODES}
    dbname = f"d{uuid.uuid4().hex[:8]}"
    for inst in nodes.values():
        inst.create_database(dbname)
    dsns = {n: inst.dsn(dbname) for n, inst in nodes.items()}
    fenced_after: list[float] = []
    writable_after: list[float] = []
    with recorded(result, fault_results_dir) as stack:
        stack.callback(lambda: summary_note(result, "primary writable again after the broker's return",
                                            writable_after))
        stack.callback(lambda: summary_note(result, "primary read-only after the kill", fenced_after))
        stack.callback(broker.stop)
        broker.start(timeout=180)
        group = Group(name, ark_tmp / "groups" / name, broker.bootstrap, nodes["primary"], dbname,
                      [Standby("standby", nodes["standby"], dbname)])
        stack.callback(group.stop_all)
        group.write_config()
        agents_know_data_dirs(group, nodes)
        bank_setup(group)
        for n in NODES:
            group.start("agent", n, name=f"agent-{n}")
            group.start("apply", n, name=f"apply-{n}")
        group.start("capture", "--node", "primary", name="capture-primary")
        controller = group.start("controller", "--name", "ctl", "--ttl", str(TTL_S), "--window", "0",
                                 "--timeout", "120", name="controller")
        channel = ControlChannel.for_config(load_config(group.config))
        records = channel.replay()
        client = AckClient(multi_host_dsn([(nodes[n], dbname) for n in NODES])).start()
        stack.callback(client.stop)
        sampler = WritableSampler(dsns)
        stack.callback(sampler.stop)
        wait_for(lambda: client.count() >= 50, 60, "the client's first commits")
        converge(group, standby="standby", at_least=50)
        port = nodes["primary"].port
        for run in range(runs):
            time.sleep(3.0)  # the controller and the agents have seen the primary healthy
            records.extend(channel.poll())
            seen = len(records)
            down_for = rng.uniform(5.0, 12.0)
            killed = time.monotonic()
            broker.kill9()
            wait_for(lambda: _read_only(dsns["primary"]), 30, "the primary's agent to fence it (its lease)")
            fenced_after.append(time.monotonic() - killed)
            time.sleep(max(0.0, down_for - (time.monotonic() - killed)))
            broker.start(timeout=180)
            back = time.monotonic()
            wait_for(lambda b=back: any(a.at >= b for a in client.acks_on(port)), BOUND_S + 60,
                     "a write on the primary once the broker is back")
            first = min(a.at for a in client.acks_on(port) if a.at >= back) - back
            writable_after.append(first)

            def lifted(start: int = seen) -> bool:
                records.extend(channel.poll())
                return any(isinstance(r.body, ControllerDecision) and r.body.action == "lift-fence"
                           for r in records[start:])

            wait_for(lifted, 30, "the controller's lift-fence decision on the control topic")
            time.sleep(TTL_S + 2)  # a failover would have come by now: the controller holds none back longer
            records.extend(channel.poll())
            decisions = [r.body.action for r in records[seen:] if isinstance(r.body, ControllerDecision)]
            begun = [r.body.epoch for r in records[seen:] if isinstance(r.body, EpochBegun)]
            result.notes.append(f"run {run + 1}: broker down {down_for:.1f} s; primary read-only "
                                f"{fenced_after[-1]:.2f} s after the kill, writable again {first:.2f} s after the "
                                f"broker's return; controller {'/'.join(decisions) or 'nothing'}; epochs begun {begun}")
            assert first < BOUND_S, f"run {run + 1}: first write {first:.1f} s after the broker was back"
            assert not begun, f"run {run + 1}: a failover began epoch(s) {begun}"
            assert not any(d.startswith("failover") for d in decisions), f"run {run + 1}: decisions {decisions}"
            result.runs += 1
        assert controller.alive(), f"the controller exited:\n{controller.tail()}"
        client.stop()
        check_the_end(group, result, client, sampler, dsns["primary"], dsns["standby"])
        diverged = divergence_seqs(group)
        assert not diverged, f"{len(diverged)} acknowledged commits in the divergence ledger: nothing was failed over"
    print("\n".join(result.notes))
    result.assert_clean(min_samples=runs)

