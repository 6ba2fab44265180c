"""F9: DDL mid-stream while the ledger workload runs, with kill -9 of capture right after a DDL.

Each run alters the busy tables: ``history`` gains a column with a constant default (the existing
rows get it without any row change in the WAL), ``accounts`` gains a NOT NULL column with a default,
``history`` has that column renamed and widened, and a new table is created with rows in the same
transaction, then has its key's type changed (int to bigint). Capture is killed right after the first
DDL of each run, so it restarts and re-reads the shapes from before the DDL; it catches up before the
next DDL of the run. The four fault-suite checks hold: the ledger is a gap-free prefix at every
observation, nothing is applied twice, the total balance is right at every observation, and every
table (the new columns included) is equal at the end.

Type changes that rewrite the table (int to bigint, text to varchar(n)) are kept off the two sampled
tables: PostgreSQL's table rewrites are not MVCC-safe, so a query whose snapshot predates the rewrite
sees the table empty, on the primary as on the standby. That is PostgreSQL's documented behaviour,
not a partial transaction.
"""

from __future__ import annotations

import random
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import BANK_TABLES, bank_setup, converge, fault_case, fault_runs, seed
from tests.support.replication import sql, wait_for


def _ddl(dsn: str, statement: str) -> None:
    # The workload holds row locks; the ALTER queues behind them and the clients queue behind it.
    sql(dsn, f"SET lock_timeout = '20s'; {statement}")


@pytest.mark.timeout(3600)
def test_f9_ddl_mid_stream_with_capture_kill(make_group, fault_results_dir) -> None:
    runs, rnd_seed = fault_runs(), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=50)
    invariant = bank_setup(group)
    capture = group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    extra_tables: list[str] = []
    with fault_case("F9", "DDL mid-stream, kill -9 of capture after a DDL", standby, invariant,
                    fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}")
        for i in range(runs):
            time.sleep(rnd.uniform(0.5, 2.0))
            _ddl(primary, f"ALTER TABLE history ADD COLUMN f9_tag_{i} varchar(20) DEFAULT 'run {i}, it''s'")
            capture.kill9()  # right after the DDL: the restarted capture decodes older shapes again
            time.sleep(rnd.uniform(0.0, 1.0))
            capture.start()
            # Caught up before the next DDL on history: a capture that decodes a shape after the catalog
            # moved on twice cannot know the column's identity and default, and resyncs the table instead.
            case.result.notes.append(f"run {i + 1}: caught up after the kill in {converge(group):.1f} s")
            _ddl(primary, f"ALTER TABLE accounts ADD COLUMN f9_flag_{i} boolean NOT NULL DEFAULT true")
            time.sleep(rnd.uniform(0.3, 1.5))
            _ddl(primary, f"ALTER TABLE history RENAME COLUMN f9_tag_{i} TO f9_label_{i}")
            _ddl(primary, f"ALTER TABLE history ALTER COLUMN f9_label_{i} TYPE varchar(60)")  # no rewrite
            table = f"f9_extra_{i}"
            _ddl(primary, f"BEGIN; CREATE TABLE {table} (id int PRIMARY KEY, v numeric(8,2) DEFAULT 1.5); "
                          f"INSERT INTO {table} (id) SELECT generate_series(1, 100); COMMIT")
            # A rewriting type change, on a table the sampler does not read (see the module docstring).
            _ddl(primary, f"ALTER TABLE {table} ALTER COLUMN id TYPE bigint, ALTER COLUMN v TYPE numeric(12,2)")
            _ddl(primary, f"INSERT INTO {table} (id) VALUES (1000)")
            extra_tables.append(f"public.{table}")
            case.result.notes.append(f"run {i + 1}: caught up in {converge(group):.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        def created() -> bool:
            return all(sql(standby, "SELECT to_regclass(%s)", (t,))[0][0] for t in extra_tables)

        wait_for(created, 60, f"{extra_tables} on the standby")
        case.finish(group, tables=BANK_TABLES + extra_tables)
    case.result.assert_clean()
    columns = {r[0] for r in sql(standby, "SELECT attname FROM pg_attribute WHERE attrelid = 'history'::regclass "
                                          "AND attnum > 0 AND NOT attisdropped")}
    assert {f"f9_label_{i}" for i in range(runs)} <= columns and not any(c.startswith("f9_tag") for c in columns)
    # The rows that existed before each ADD COLUMN hold its default on the standby too (equality above
    # covers it; this names it).
    assert sql(standby, "SELECT count(*) FROM history WHERE f9_label_0 IS NULL") == \
        sql(primary, "SELECT count(*) FROM history WHERE f9_label_0 IS NULL")
    assert sql(standby, "SELECT count(*) FROM accounts WHERE NOT f9_flag_0") == [(0,)]
