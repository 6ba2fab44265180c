"""F3: kill -9 of the Kafka broker, then a restart, while capture and apply keep running.

Both agents retry by themselves (guarantee 7): capture aborts its open Kafka transaction and resumes
from what Kafka holds; apply resumes from its state row. The broker keeps its data (same home).
"""

from __future__ import annotations

import random
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, seed


@pytest.mark.timeout(3600)
def test_f3_kill9_broker_then_restart(make_group, kafka_broker, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F3", default=1), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=50)
    invariant = bank_setup(group)
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    with fault_case("F3", "kill -9 of the broker, then restart", group.standby("standby").dsn, invariant,
                    fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}; initial catch-up {converge(group, at_least=20):.1f} s")
        for _ in range(runs):
            time.sleep(rnd.uniform(0.5, 3.0))
            kafka_broker.kill9()
            time.sleep(rnd.uniform(0.0, 3.0))
            started = time.monotonic()
            kafka_broker.start(timeout=120)
            up = time.monotonic() - started
            case.result.notes.append(f"run {case.result.runs + 1}: broker up in {up:.1f} s, "
                                     f"caught up in {converge(group, timeout=240):.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group)
    group.assert_agents_alive()
    case.result.assert_clean()
