"""Writing one run of row changes (:mod:`.plan`) to a PostgreSQL standby, inside the applier's open transaction.

A short run is sent as prepared statements with ``executemany`` (pipelined by psycopg), each UPDATE and DELETE
checked to match exactly one row. A run of at least the applier's ``set_threshold`` rows is COPYed (text format,
rows formatted by psycopg's C code) into a temporary staging table with the target's own column types, then
applied with one set-based INSERT, UPDATE ... FROM or DELETE ... USING, whose affected-row count is checked. A
table without a unique key (replica identity full) is matched row by row on all its old values. A missing row
raises :class:`DataApplyError` naming the key, never other values; the caller rolls back.

:class:`RunWriter` keeps what a session may reuse: the staging tables of the open transaction (created once per
shape, emptied on reuse) and, per table, whether it has unique constraints beyond its key.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
from psycopg import errors as pge

from common.errors import TargetError
from consumers.errors import DataApplyError
from consumers.postgresql import sql
from consumers.postgresql.plan import Run, row_params
from schemas.entries import Op, TableMeta

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

#: Staged runs at least this long are ANALYZEd so the planner sees their true size.
_ANALYZE_ROWS = 1000


class RunWriter:
    """Writes runs through one session (see the module docstring); the applier tells it when to forget."""

    def __init__(self, set_threshold: int) -> None:
        self.set_threshold = max(1, set_threshold)
        self._session: Conn | None = None  # the applier's session, given with each run
        self._stages: dict[tuple[Any, ...], tuple[str, list[str]]] = {}
        #: Per table: whether it has unique or exclusion constraints beyond its key on the standby.
        self._uniques: dict[str, bool] = {}
        self._stage_no = 0

    @property
    def _conn(self) -> Conn:
        if self._session is None:
            raise RuntimeError("RunWriter: no run is being written")
        return self._session

    def forget_stages(self, table: str | None = None) -> None:
        """The transaction ended, or a shape changed: staging tables are gone or may no longer fit."""
        if table is None:
            self._stages.clear()
        else:
            self._stages = {k: v for k, v in self._stages.items() if k[0] != table}

    def forget_uniques(self, table: str | None = None) -> None:
        """Constraints may have come or gone."""
        if table is None:
            self._uniques.clear()
        else:
            self._uniques.pop(table, None)

    def other_unique(self, conn: Conn, table: str) -> bool:
        """True when ``table`` has, on the standby, a unique index or an exclusion constraint beyond its key."""
        found = self._uniques.get(table)
        if found is None:
            row = conn.execute(
                "SELECT count(*) FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND NOT i.indisprimary "
                "AND (i.indisunique OR i.indisexclusion)", [sql.qualified(table)]).fetchone()
            found = self._uniques[table] = bool(row and row[0])
        return found

    def write(self, conn: Conn, meta: TableMeta, run: Run, txn_id: str, position: str) -> None:
        """Apply ``run`` in the open transaction (raises on a missing row or any failure; the caller rolls back)."""
        self._session = conn
        if meta.identity == "full" and run.op is not Op.INSERT:
            self._apply_full(meta, run, txn_id, position)
        elif len(run) >= self.set_threshold:
            self._apply_set_in_order(meta, run, txn_id, position)
        else:
            self._apply_small(meta, run, txn_id, position)

    def _missing(self, run: Run, index: int, txn_id: str, position: str) -> DataApplyError:
        key = run.keys[index] if 0 <= index < len(run.keys) else None
        verb = "update" if run.op is Op.UPDATE else "delete"
        return DataApplyError(
            f"{verb} of a missing row in {run.table}, key {list(key) if key else '?'}, source transaction "
            f"{txn_id} at {position}", table=run.table, txn_id=txn_id, position=position, key=key,
            fix=f"the standby diverged from the primary; resync the table (ark resync --table {run.table}) "
                "or check that nothing else writes to the standby")

    def _apply_small(self, meta: TableMeta, run: Run, txn_id: str, position: str) -> None:
        if run.op is Op.INSERT:
            query = sql.insert_sql(meta, run.cols)
        elif run.op is Op.UPDATE:
            query = sql.update_sql(meta, run.cols, run.key_change)
        else:
            query = sql.delete_sql(meta)
        params = [row_params(meta, run, i) for i in range(len(run))]
        with self._conn.cursor() as cur:
            if run.op is Op.INSERT:
                cur.executemany(query, params)
                return
            cur.executemany(query, params, returning=True)
            index = 0
            while True:
                if cur.rowcount != 1:
                    raise self._missing(run, index, txn_id, position)
                index += 1
                if not cur.nextset():
                    break

    def _apply_full(self, meta: TableMeta, run: Run, txn_id: str, position: str) -> None:
        """UPDATE/DELETE of a table without a unique key: one row per change, found by all its old values."""
        with self._conn.cursor() as cur:
            for i in range(len(run)):
                if run.op is Op.UPDATE:
                    query, where = sql.full_update_sql(meta, run.cols, run.keys[i])
                    params = [sql.param_text(v) for v in run.values[i]] + where
                else:
                    query, params = sql.full_delete_sql(meta, run.keys[i])
                cur.execute(query, params)
                if cur.rowcount != 1:
                    raise self._missing(run, i, txn_id, position)

    def _stage(self, meta: TableMeta, run: Run) -> tuple[str, list[str]]:
        """A staging table for ``run``'s shape: created once per transaction, emptied on reuse."""
        sig = (run.table, run.op, run.cols, run.key_change)
        cached = self._stages.get(sig)
        if cached is not None:
            self._conn.execute(f"TRUNCATE {sql.quote_ident(cached[0])}")
            return cached
        self._stage_no += 1
        name = f"_ark_stage_{self._stage_no}"
        self._conn.execute(sql.create_stage_sql(meta, name, run.op.value, run.cols,
                                               run.key_change))
        cached = (name, sql.stage_columns(meta, run.op.value, run.cols, run.key_change))
        self._stages[sig] = cached
        return cached

    def _apply_set_in_order(self, meta: TableMeta, run: Run, txn_id: str, position: str) -> None:
        """The set-based path; for an UPDATE run on a table with unique or exclusion constraints beyond its key,
        inside a savepoint, and again row by row in the source's order if one of them objects.

        A run's rows have distinct keys, so one statement may apply them in any order, as far as the key goes.
        Another unique column may not allow that: row B takes the value row A gives up, later in the stream,
        and one UPDATE statement may reach B first. The stream carries only the new values, so such runs
        cannot be told in advance; in source order they always apply, as they did on the primary."""
        if run.op is not Op.UPDATE or not self.other_unique(self._conn, run.table):
            self._apply_set(meta, run, txn_id, position)
            return
        self._conn.execute("SAVEPOINT ark_set")
        try:
            self._apply_set(meta, run, txn_id, position)
        except (pge.UniqueViolation, pge.ExclusionViolation):
            self._conn.execute("ROLLBACK TO SAVEPOINT ark_set")
            log.info("%d updates of %s applied row by row, in the source's order (a unique value moved between "
                     "rows)", len(run), run.table)
            self._stages = {k: v for k, v in self._stages.items() if k[0] != run.table}  # rolled back with it
            self._apply_small(meta, run, txn_id, position)
        self._conn.execute("RELEASE SAVEPOINT ark_set")

    def _apply_set(self, meta: TableMeta, run: Run, txn_id: str, position: str) -> None:
        started = time.monotonic()
        stage, names = self._stage(meta, run)
        n = len(run)
        with self._conn.cursor() as cur:
            with cur.copy(sql.copy_stage_sql(stage, names)) as copy:
                write = copy.write_row
                if run.op is Op.DELETE:
                    for i, key in enumerate(run.keys):
                        write((*key, i))
                elif run.key_change:
                    for i in range(n):
                        write((*run.values[i], *run.keys[i], i))
                else:
                    for i, values in enumerate(run.values):
                        write((*values, i))
            if n >= _ANALYZE_ROWS:
                cur.execute(f"ANALYZE {sql.quote_ident(stage)}")
            if run.op is Op.INSERT:
                cur.execute(sql.set_insert_sql(meta, stage, run.cols))
                affected, missing = cur.rowcount, None
            else:
                query = (sql.set_update_sql(meta, stage, run.cols, run.key_change, n) if run.op is Op.UPDATE
                         else sql.set_delete_sql(meta, stage, n))
                row = cur.execute(query).fetchone()
                assert row is not None
                affected, missing = int(row[0]), row[1]
        if affected != n:
            if missing is None:
                raise TargetError(f"set-based {run.op.value} on {run.table} affected {affected} of {n} rows",
                                  fix="report this as a bug; the standby was rolled back")
            raise self._missing(run, int(missing), txn_id, position)
        log.debug("applied %s rows of %s on %s set-based in %.3fs", n, run.op.value, run.table,
                  time.monotonic() - started)
