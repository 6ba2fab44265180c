"""F1: kill -9 of capture at random moments, N times, while the ledger workload runs.

Capture resumes from what Kafka holds (guarantee 3): nothing lost, nothing published twice. After
each restart the standby must catch up with everything the primary committed so far.
"""

from __future__ import annotations

import random
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, seed


@pytest.mark.timeout(3600)
def test_f1_kill9_capture_at_random_moments(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F1"), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=50)
    invariant = bank_setup(group)
    capture = group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    with fault_case("F1", "kill -9 of capture at random moments", group.standby("standby").dsn, invariant,
                    fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}; initial catch-up {converge(group, at_least=20):.1f} s")
        for _ in range(runs):
            time.sleep(rnd.uniform(0.3, 3.0))  # a random moment: mid-batch, mid-commit, idle, starting up
            capture.kill9()
            time.sleep(rnd.uniform(0.0, 1.5))
            capture.start()
            case.result.notes.append(f"run {case.result.runs + 1}: caught up in {converge(group):.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group)
    case.result.assert_clean()
