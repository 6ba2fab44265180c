"""F13: DDL while the capture lags (issue 9): the capture is killed, the busy tables are altered while the ledger
workload keeps writing, and the capture resumes behind all of it.

Each run: kill -9 of capture; while it is down, ``history`` gains a column that is then renamed and widened,
``accounts`` gains a column that is dropped and added again under the same name with another type, a new table
is created and filled; the workload writes between every DDL. The capture then restarts and decodes that WAL
(older shapes first) long after the catalog moved on. Before issue 9 it described that WAL with the live
catalog and a standby could not tell the rename from a drop and add (one run in three stopped the standby);
now every shape comes from the DDL's own place in the WAL. Besides the four fault-suite checks, the standby must
have *followed* every DDL: no table resync (the count is noted and must be 0), and the standby's columns equal
the primary's.
"""

from __future__ import annotations

import random
import time

import pytest

from deploy.workload import BankWorkload
from tests.support.faults import BANK_TABLES, bank_setup, converge, fault_case, fault_runs, seed
from tests.support.replication import sql

#: The issue asks for N >= 5 for this row.
MIN_RUNS = 5


def _ddl(dsn: str, statement: str) -> None:
    sql(dsn, f"SET lock_timeout = '20s'; {statement}")


def _columns(dsn: str, table: str) -> list[tuple[str, str]]:
    return [(str(n), str(t)) for n, t in sql(dsn, "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                                                  "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
                                                  "ORDER BY attnum", (table,))]


@pytest.mark.timeout(3600)
def test_f13_ddl_while_the_capture_lags(make_group, fault_results_dir) -> None:
    runs, rnd_seed = max(MIN_RUNS, fault_runs("F13", default=MIN_RUNS)), seed()
    rnd = random.Random(rnd_seed)
    group = make_group(chunk_rows=50)
    invariant = bank_setup(group)
    capture = group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    extra: list[str] = []
    with fault_case("F13", "DDL while the capture lags", standby, invariant, fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}")
        converge(group, at_least=1)
        for i in range(runs):
            capture.kill9()
            pause = lambda: time.sleep(rnd.uniform(0.2, 0.8))  # noqa: E731 - the workload writes in between
            pause()
            _ddl(primary, f"ALTER TABLE history ADD COLUMN f13_a_{i} varchar(20) DEFAULT 'run {i}'")
            pause()
            _ddl(primary, f"ALTER TABLE history RENAME COLUMN f13_a_{i} TO f13_b_{i}")
            pause()
            _ddl(primary, f"ALTER TABLE accounts ADD COLUMN f13_c_{i} int")
            pause()
            _ddl(primary, f"ALTER TABLE accounts DROP COLUMN f13_c_{i}")
            _ddl(primary, f"ALTER TABLE accounts ADD COLUMN f13_c_{i} text DEFAULT 'again {i}'")
            pause()
            # widened, not converted: no table rewrite (a rewrite is not MVCC-safe, on the primary as on the standby:
            # a reader whose snapshot predates it sees the table empty; see F9)
            _ddl(primary, f"ALTER TABLE history ALTER COLUMN f13_b_{i} TYPE varchar(80)")
            table = f"f13_new_{i}"
            _ddl(primary, f"BEGIN; CREATE TABLE {table} (id int PRIMARY KEY, v text DEFAULT 'v'); "
                          f"INSERT INTO {table} (id) SELECT generate_series(1, 50); COMMIT")
            _ddl(primary, f"ALTER TABLE {table} RENAME COLUMN v TO w")
            _ddl(primary, f"INSERT INTO {table} (id, w) VALUES (51, 'after')")
            extra.append(f"public.{table}")
            pause()
            capture.start()
            case.result.notes.append(f"run {i + 1}: caught up in {converge(group):.1f} s")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group, tables=BANK_TABLES + extra)
        log = (group.workdir / "logs" / "apply-standby.log").read_text(errors="replace")
        resyncs = log.count("will be resynced")
        case.result.notes.append(f"table resyncs on the standby: {resyncs} (0: every DDL followed in place)")
        assert resyncs == 0, "the standby resynced a table instead of following its DDL"
        for table in ("public.history", "public.accounts", *extra):
            assert _columns(primary, table) == _columns(standby, table), table
    case.result.assert_clean()
