"""F8: kill -9 around a large transaction, N times, while the ledger workload runs.

Each run inserts one large transaction (100,000 rows, 100 chunks) and kills:

1. capture while the transaction is still IN PROGRESS on the primary (pgoutput v1 sends it only at
   commit, so the restarted capture must pick it up whole from the slot);
2. capture again while it publishes that transaction: once Kafka holds some of its chunks (the
   publisher commits midway, every ~2 s), so the restart resumes at the exact row;
3. apply while it applies the multi-chunk transaction (its standby transaction is open).

The standby must never show part of it, and everything must converge.
"""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from common.config import load_config
from common.redo_kafka import KafkaRedoLog
from deploy.workload import BankWorkload
from producers.resume import find_resume_point
from tests.support.faults import (
    bank_setup,
    batches_partial,
    converge,
    fault_case,
    fault_runs,
    seed,
    wait_open_apply_txn,
)
from tests.support.replication import sql, wait_for

ROWS = 100_000
PARTS = 4
TABLES = ["public.accounts", "public.history", "public.ark_ledger_seq", "public.big"]


def _wait_partial_in_kafka(group, timeout: float) -> bool:
    """True once the redo topic ends inside a transaction (chunks committed, last chunk not yet)."""
    cfg = load_config(group.config)
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find_resume_point(redo).partial_key is not None:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.timeout(3600)
def test_f8_kill9_during_a_large_transaction(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F8", default=1), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=1000)
    sql(group.primary_dsn, "CREATE TABLE big (id bigint PRIMARY KEY, batch int NOT NULL, v int NOT NULL, t text)")
    invariant = bank_setup(group)
    capture = group.start("capture")
    apply = group.start("apply", "standby")
    standby = group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    hits = {"in progress": 0, "mid-publication": 0, "apply mid-transaction": 0}
    with fault_case("F8", "kill -9 during a large transaction", standby, invariant, fault_results_dir,
                    extra=[batches_partial("big", ROWS)]) as case:
        case.result.notes.append(f"seed {rnd_seed}; initial catch-up {converge(group, at_least=20):.1f} s")
        for batch in range(1, runs + 1):
            with psycopg.connect(group.primary_dsn) as conn:  # one transaction, still open while capture dies
                step = ROWS // PARTS
                for part in range(PARTS):
                    conn.execute("INSERT INTO big SELECT %s * 1000000 + g, %s, g, 'row ' || g "
                                 "FROM generate_series(%s::int, %s::int) g",
                                 (batch, batch, part * step + 1, (part + 1) * step))
                    if part == 1:
                        capture.kill9()
                        hits["in progress"] += 1
                        capture.start()
                    time.sleep(rnd.uniform(0.0, 0.5))
            if _wait_partial_in_kafka(group, 60):
                hits["mid-publication"] += 1
            capture.kill9()
            capture.start()
            if wait_open_apply_txn(standby, 120) and sql(standby, "SELECT count(*) FROM big WHERE batch = %s",
                                                         (batch,))[0][0] == 0:
                hits["apply mid-transaction"] += 1
            time.sleep(rnd.uniform(0.0, 1.0))
            apply.kill9()
            apply.start()
            wait_for(lambda b=batch: sql(standby, "SELECT count(*) FROM big WHERE batch = %s", (b,))[0][0] == ROWS,
                     300, f"large transaction {batch} on the standby", interval=0.5)
            converge(group)
            case.result.runs += 1
        case.result.notes.append(f"kills that hit: {hits}")
        assert workload.stop() > 0
        case.finish(group, tables=TABLES)
    case.result.assert_clean()
    # Kafka holds part of a transaction only when the publisher committed midway (~2 s in): at full N
    # some runs must have hit that; a single CI run may publish it too fast under light load.
    assert runs < 3 or hits["mid-publication"] >= 1, f"no capture kill landed mid-publication: {hits}"
