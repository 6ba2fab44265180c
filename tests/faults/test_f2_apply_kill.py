"""F2: kill -9 of apply in the middle of a batch, N times.

Batches are made big (thousands of source transactions per standby transaction) and a backlog is
built before each kill, so the applier is killed while a target transaction is open: the kill waits
until the standby shows the applier's session holding a transaction id (it has written rows of an
uncommitted batch). The state row commits with the data (guarantee 2), so nothing is applied twice
or lost, and no observation sees part of a batch.
"""

from __future__ import annotations

import random
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import bank_setup, converge, fault_case, fault_runs, seed, wait_open_apply_txn


@pytest.mark.timeout(3600)
def test_f2_kill9_apply_mid_batch(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F2"), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=500)
    group.standby_extra = {"batch_max_txns": 20000, "batch_max_rows": 200000}
    group.write_config()
    invariant = bank_setup(group)
    group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    mid_batch = 0
    with fault_case("F2", "kill -9 of apply mid-batch", standby, invariant, fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}; initial catch-up {converge(group, at_least=20):.1f} s")
        for _ in range(runs):
            apply.kill9()
            time.sleep(rnd.uniform(2.0, 4.0))  # a backlog of a few thousand transfers
            apply.start()
            if wait_open_apply_txn(standby, 30):
                time.sleep(rnd.uniform(0.0, 0.05))
                mid_batch += 1
            apply.kill9()
            apply.start()
            case.result.notes.append(f"run {case.result.runs + 1}: caught up in {converge(group):.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group)
        case.result.notes.append(f"{mid_batch} of {runs} kills hit an open standby transaction")
    case.result.assert_clean()
    assert mid_batch >= max(1, runs // 2), f"only {mid_batch} of {runs} kills caught the applier mid-batch"
