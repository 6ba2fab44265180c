"""F7: a multi-row INSERT ... SELECT and a COPY of 12,000 rows each, then kill -9 of capture at once.

Each bulk statement is one source transaction published in several chunks (chunk_rows 2000). Capture
is killed right after they commit, before or while it publishes them; on restart it resumes at the
exact row (or skips what Kafka holds). The standby must show each bulk transaction whole or not at
all, next to the running ledger workload.
"""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from deploy.workload import BankWorkload
from tests.support.faults import (
    bank_setup,
    batches_partial,
    converge,
    fault_case,
    fault_runs,
    seed,
)
from tests.support.replication import sql, wait_for

ROWS = 12_000
TABLES = ["public.accounts", "public.history", "public.ark_ledger_seq", "public.bulk"]


def _bulk_insert(dsn: str, batch: int) -> None:
    sql(dsn, "INSERT INTO bulk (id, batch, v) SELECT %s * 1000000 + g, %s, 'row ' || g "
             "FROM generate_series(1, %s::int) g", (batch, batch, ROWS))


def _bulk_copy(dsn: str, batch: int) -> None:
    with psycopg.connect(dsn) as conn, conn.cursor() as cur, cur.copy("COPY bulk (id, batch, v) FROM STDIN") as cp:
        for g in range(1, ROWS + 1):
            cp.write_row((batch * 1_000_000 + g, batch, f"copied {g}"))


@pytest.mark.timeout(3600)
def test_f7_bulk_insert_and_copy_then_kill9_capture(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs("F7", default=1), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=2000)
    sql(group.primary_dsn, "CREATE TABLE bulk (id bigint PRIMARY KEY, batch int NOT NULL, v text)")
    invariant = bank_setup(group)
    capture = group.start("capture")
    group.start("apply", "standby")
    standby = group.standby("standby").dsn
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=2, ledger=True).start()
    with fault_case("F7", "multi-row INSERT and COPY, then kill -9 of capture", standby, invariant,
                    fault_results_dir, extra=[batches_partial("bulk", ROWS)]) as case:
        case.result.notes.append(f"seed {rnd_seed}; initial catch-up {converge(group, at_least=20):.1f} s")
        batch = 0
        for _ in range(runs):
            for load in (_bulk_insert, _bulk_copy):
                batch += 1
                load(group.primary_dsn, batch)
                time.sleep(rnd.uniform(0.0, 1.5))  # before, while or just after capture publishes it
                capture.kill9()
                capture.start()
                expected = batch * ROWS
                wait_for(lambda n=expected: sql(standby, "SELECT count(*) FROM bulk")[0][0] == n, 180,
                         f"{expected} bulk rows on the standby")
                converge(group)
                case.result.runs += 1
        resumed = capture.log_file.read_text(errors="replace").count("inside a transaction at row")
        case.result.notes.append(f"{resumed} restarts resumed inside a bulk transaction")
        assert workload.stop() > 0
        case.finish(group, tables=TABLES)
    case.result.assert_clean()
