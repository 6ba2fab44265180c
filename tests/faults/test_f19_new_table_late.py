"""F19: a new table added late to a table-list publication (issue 9, item 9).

The group publishes a table list (``public.accounts``, ``public.history``, ``public.ark_ledger_seq`` and the
pattern ``public.f19_*``: no ``schema.*``, so no publication follows new tables by itself) with
``primary.keyless: insert-only``. The ledger workload writes throughout. Each run, the application creates three
new matching tables and writes to them in separate transactions, the workload writing in between:

* ``f19_rows_<i>``: CREATE TABLE, then INSERTs, each in its own transaction. With the DDL hook the table is
  published inside its CREATE's transaction; in the last run the hook is dropped first (a primary where the
  capture may not install it), so the first INSERTs commit before the capture publishes the table.
* ``f19_as_<i>``: CREATE TABLE AS (its rows are written by the CREATE itself), then more INSERTs.
* ``f19_ren_<i>``: created out of scope as ``stage_<i>``, filled, renamed into scope, then more INSERTs.

Rows written before a table was published are not in the stream: the applier must resync the table by itself
(``table-resync-started`` / ``table-resynced`` on the control topic, asserted for every CREATE TABLE AS and
renamed table) and then follow it. The standby must end with every row of every new table exactly once.

The new tables have no key (a unique ``id`` by construction, no constraint), so a row applied twice (copied by
the resync and applied again from the stream, or copied twice) is a duplicate row, counted, not a key error
that would stop the standby; the case proves the counter by putting one duplicate there by hand first. Lost
and duplicated sum the ledger's counts and the new tables'; partial-visible comes from the ledger sampler.
"""

from __future__ import annotations

import random
import time

import psycopg
import pytest

from common.config import load_config
from common.control import ControlChannel
from deploy.workload import BankWorkload
from schemas.control import TableResynced, TableResyncStarted
from tests.support.faults import BANK_TABLES, bank_setup, converge, fault_case, fault_runs, ledger_max, seed
from tests.support.replication import Group, sql, wait_for

#: The issue asks for N >= 5 for this row.
MIN_RUNS = 5
TABLES = ("public.accounts", "public.history", "public.ark_ledger_seq", "public.f19_*")
ROWS_PER_INSERT = 20
INSERTS = 3


def _standby_sql(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True, options="-c default_transaction_read_only=off") as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def _ids(dsn: str, table: str) -> list[int]:
    return [int(r[0]) for r in sql(dsn, f"SELECT id FROM {table}")]


def _counts(primary: str, standby: str, tables: list[str]) -> tuple[int, int]:
    """(lost, duplicated) over the new tables: primary ids missing on the standby; duplicate standby ids plus
    standby ids the primary does not have."""
    lost = duplicated = 0
    for table in tables:
        p_ids, s_ids = set(_ids(primary, table)), _ids(standby, table)
        lost += len(p_ids - set(s_ids))
        duplicated += len(s_ids) - len(set(s_ids)) + len(set(s_ids) - p_ids)
    return lost, duplicated


def _exists(dsn: str, table: str) -> bool:
    return bool(sql(dsn, "SELECT to_regclass(%s) IS NOT NULL", (table,))[0][0])


def _resync_records(group: Group) -> tuple[set[str], set[str]]:
    """Tables with a ``table-resync-started`` and with a ``table-resynced`` record on the control topic."""
    channel = ControlChannel.for_config(load_config(group.config))
    try:
        bodies = [r.body for r in channel.replay()]
    finally:
        channel.close()
    return ({b.table for b in bodies if isinstance(b, TableResyncStarted)},
            {b.table for b in bodies if isinstance(b, TableResynced)})


class _Writes:
    """The application's statements on the new tables: each its own transaction, the ledger moving in between."""

    def __init__(self, dsn: str, rnd: random.Random) -> None:
        self.dsn, self.rnd, self.next_id = dsn, rnd, 1

    def run(self, statement: str) -> None:
        sql(self.dsn, f"SET lock_timeout = '20s'; {statement}")
        mark = ledger_max(self.dsn)  # the workload writes before the next statement (a condition, not a sleep)
        wait_for(lambda: ledger_max(self.dsn) >= mark + self.rnd.randint(1, 5), 60, "the workload to write", 0.02)

    def insert(self, table: str) -> None:
        first, self.next_id = self.next_id, self.next_id + ROWS_PER_INSERT
        self.run(f"INSERT INTO {table} (id, v) SELECT g, 'r' || g FROM generate_series({first}, {self.next_id - 1}) g")


@pytest.mark.timeout(3600)
def test_f19_a_new_table_added_late(make_group, fault_results_dir) -> None:
    runs, rnd_seed = max(MIN_RUNS, fault_runs("F19", default=MIN_RUNS)), seed()
    rnd = random.Random(rnd_seed)
    group: Group = make_group(tables=TABLES)
    group.primary_extra = {"keyless": "insert-only"}
    group.write_config()
    invariant = bank_setup(group)
    group.start("capture")
    group.start("apply", "standby")
    workload = BankWorkload(group.primary_dsn, accounts=100, clients=4, ledger=True).start()
    primary, standby = group.primary_dsn, group.standby("standby").dsn
    writes = _Writes(primary, rnd)
    new_tables: list[str] = []
    must_resync: list[str] = []
    with fault_case("F19", "a new table added late to a table-list publication", standby, invariant,
                    fault_results_dir) as case:
        case.result.notes.append(f"seed {rnd_seed}")
        converge(group, at_least=1)
        for i in range(runs):
            started = time.monotonic()
            if i == runs - 1:
                writes.run("DROP EVENT TRIGGER ark_capture_ddl")  # the last run: no hook, the capture's poll
            rows, made, renamed = f"public.f19_rows_{i}", f"public.f19_as_{i}", f"public.f19_ren_{i}"
            writes.run(f"CREATE TABLE {rows} (id bigint NOT NULL, v text)")
            for _ in range(INSERTS):
                writes.insert(rows)
            writes.next_id += 1000
            writes.run(f"CREATE TABLE {made} AS SELECT id + {writes.next_id} AS id, 'as' AS v FROM history "
                       "ORDER BY id LIMIT 200")
            writes.next_id += 1000
            writes.insert(made)
            writes.run(f"CREATE TABLE stage_{i} (id bigint NOT NULL, v text)")
            for _ in range(INSERTS):
                writes.insert(f"stage_{i}")
            writes.run(f"ALTER TABLE stage_{i} RENAME TO f19_ren_{i}")
            for _ in range(INSERTS):
                writes.insert(renamed)
            new_tables += [rows, made, renamed]
            must_resync += [made, renamed] + ([rows] if i == runs - 1 else [])
            for table in (rows, made, renamed):
                wait_for(lambda t=table: _exists(standby, t), 180, f"{table} on the standby")
            took = converge(group, timeout=180)
            case.result.notes.append(f"run {i + 1}: {time.monotonic() - started:.1f} s (ledger caught up in "
                                     f"{took:.1f} s after the last write)")
            case.result.runs += 1
        assert workload.stop() > 0
        case.finish(group, tables=BANK_TABLES + new_tables, timeout=240)
        lost, duplicated = _counts(primary, standby, new_tables)
        case.result.lost += lost
        case.result.duplicated += duplicated
        total = sum(len(_ids(primary, t)) for t in new_tables)
        case.result.notes.append(f"{len(new_tables)} new tables, {total} rows: {lost} lost, {duplicated} duplicated")
        # The duplicate counter can fail: one row put there twice by hand is counted, then taken out again.
        victim = new_tables[0]
        _standby_sql(standby, f"INSERT INTO {victim} SELECT * FROM {victim} WHERE id = (SELECT min(id) FROM {victim})")
        proof = _counts(primary, standby, [victim])[1]
        _standby_sql(standby, f"DELETE FROM {victim} WHERE ctid = (SELECT max(ctid) FROM {victim} "
                              f"WHERE id = (SELECT min(id) FROM {victim}))")
        assert proof == 1, f"one duplicated row of {victim} was counted {proof} times"
        case.result.notes.append("duplicate counter proven: one duplicated row counted once")
        started_tables, resynced_tables = _resync_records(group)
        wanted = set(must_resync)
        case.result.notes.append(f"table resyncs recorded: {len(started_tables & set(new_tables))} started, "
                                 f"{len(resynced_tables & set(new_tables))} done (needed for {len(wanted)})")
        assert wanted <= started_tables and wanted <= resynced_tables, (
            f"no table-resync records for {sorted(wanted - (started_tables & resynced_tables))}")
    case.result.assert_clean()
