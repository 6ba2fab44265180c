"""Writing one run of row changes (:mod:`.plan`) to a MariaDB standby, inside the applier's transaction.

A run of at least ``set_threshold`` rows (and no key change) goes set-based: INSERTs batched by PyMySQL
into one multi-row INSERT; DELETEs by key lists (``(k) IN (...)``), their affected-row count checked;
UPDATEs by a key count (every row must exist) then one ``INSERT ... ON DUPLICATE KEY UPDATE``. Shorter
runs go row by row, each UPDATE/DELETE checked to match exactly one row (``CLIENT_FOUND_ROWS``). A row
that is missing raises :class:`DataApplyError` naming the key, never other values; the caller rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from consumers.errors import DataApplyError
from consumers.mariadb import sql
from consumers.mariadb.plan import Run
from schemas.entries import UNCHANGED, Op, TableMeta, Value

#: Turns (column index, value) pairs of a table into driver parameters, in order.
Converter = Callable[[TableMeta, Iterable[tuple[int, Value]]], list[Any]]

CHUNK = 500  # keys per multi-row DELETE / key count


def convert(meta: TableMeta, pairs: Iterable[tuple[int, Value]], *, standby: str, txn_id: str = "",
            position: str = "") -> list[Any]:
    """Driver parameters for ``pairs``; a value the column cannot hold raises, named by column, never by value."""
    convs = sql.param_converters(meta)
    out = []
    for i, value in pairs:
        try:
            out.append(convs[i](value))
        except ValueError as exc:
            col = meta.columns[i]
            where = f" (source transaction {txn_id} at {position})" if txn_id else ""
            raise DataApplyError(f"column {col.name} ({col.type}, {col.source_type}) of {meta.table} cannot be "
                                 f"stored on standby {standby}: {exc}{where}", table=meta.table,
                                 txn_id=txn_id, position=position,
                                 fix=f"correct the value on the primary, or leave {meta.table} out of "
                                     "primary.tables for this standby") from None
    return out


def missing_row(run: Run, key: Sequence[Value] | None, txn_id: str, position: str) -> DataApplyError:
    """``key`` None: a table without a unique key, whose row is named by all its values (never shown)."""
    verb = "update" if run.op is Op.UPDATE else "delete"
    which = f"key {list(key)}" if key is not None else "no row has the change's old values (no unique key)"
    return DataApplyError(
        f"{verb} of a missing row in {run.table}, {which}, source transaction {txn_id} at {position}",
        table=run.table, txn_id=txn_id, position=position, key=list(key) if key is not None else None,
        fix=f"the standby diverged from the primary; resync the table (ark resync --table {run.table}) or "
            "check that nothing else writes to the standby")


@dataclass(frozen=True)
class RunWriter:
    """Applies runs of one source transaction on ``cur`` (a cursor of the applier's open transaction)."""

    cur: Any
    convert: Converter
    set_threshold: int
    txn_id: str
    position: str

    def params(self, meta: TableMeta, values: Sequence[Value], cols: Sequence[int]) -> list[Any]:
        return self.convert(meta, ((i, values[i]) for i in cols))

    def key_params(self, meta: TableMeta, key: Sequence[Value]) -> list[Any]:
        return self.convert(meta, zip(meta.key_indexes, key, strict=True))

    def _missing(self, run: Run, key: Sequence[Value] | None) -> DataApplyError:
        return missing_row(run, key, self.txn_id, self.position)

    def apply(self, meta: TableMeta, run: Run) -> None:
        """Write ``run`` (not a TRUNCATE) to ``meta.table``."""
        all_cols = range(len(meta.columns))
        cur = self.cur
        if run.op is Op.INSERT:
            cur.executemany(sql.insert_sql(meta, all_cols), [self.params(meta, v, all_cols) for v in run.values])
            return
        if meta.identity == "full":
            self._apply_full(meta, run)
            return
        if run.partial:
            for values, key in zip(run.values, run.keys, strict=True):
                cols = [i for i, v in enumerate(values) if v is not UNCHANGED]
                cur.execute(sql.update_sql(meta, cols), self.params(meta, values, cols) + self.key_params(meta, key))
                if cur.rowcount != 1:
                    raise self._missing(run, key)
            return
        big = len(run) >= self.set_threshold and not run.key_change
        if run.op is Op.DELETE and big:
            for start in range(0, len(run.keys), CHUNK):
                keys = run.keys[start:start + CHUNK]
                params = [p for k in keys for p in self.key_params(meta, k)]
                cur.execute(sql.delete_many_sql(meta, len(keys)), params)
                if cur.rowcount != len(keys):
                    raise self._missing(run, self._first_missing(meta, keys, deleted=True))
            return
        if run.op is Op.UPDATE and big:
            for start in range(0, len(run.keys), CHUNK):
                keys = run.keys[start:start + CHUNK]
                cur.execute(sql.count_keys_sql(meta, len(keys)), [p for k in keys for p in self.key_params(meta, k)])
                if cur.fetchone()[0] != len(keys):
                    raise self._missing(run, self._first_missing(meta, keys))
            cur.executemany(sql.upsert_sql(meta, all_cols), [self.params(meta, v, all_cols) for v in run.values])
            return
        if run.op is Op.DELETE:
            statement = sql.delete_sql(meta)
            for key in run.keys:
                cur.execute(statement, self.key_params(meta, key))
                if cur.rowcount != 1:
                    raise self._missing(run, key)
            return
        statement = sql.update_sql(meta, all_cols)
        for values, key in zip(run.values, run.keys, strict=True):
            cur.execute(statement, self.params(meta, values, all_cols) + self.key_params(meta, key))
            if cur.rowcount != 1:
                raise self._missing(run, key)

    def _apply_full(self, meta: TableMeta, run: Run) -> None:
        """UPDATE/DELETE of a table without a unique key: one row per change, found by all its old values."""
        all_cols = range(len(meta.columns))
        statement = sql.full_update_sql(meta) if run.op is Op.UPDATE else sql.full_delete_sql(meta)
        for i, old in enumerate(run.keys):
            params = self.params(meta, old, all_cols)
            if run.op is Op.UPDATE:
                new = [o if v is UNCHANGED else v for v, o in zip(run.values[i], old, strict=True)]
                params = self.params(meta, new, all_cols) + params
            self.cur.execute(statement, params)
            if self.cur.rowcount != 1:
                raise self._missing(run, None)

    def _first_missing(self, meta: TableMeta, keys: Sequence[Sequence[Value]], deleted: bool = False) -> list[Value]:
        """The first of ``keys`` not on the standby (after a multi-row DELETE: the first not deleted)."""
        if deleted:
            return list(keys[0])  # the DELETE already removed the others; the batch rolls back and names it
        for key in keys:
            self.cur.execute(f"SELECT 1 FROM {sql.qualified(meta.table)} WHERE {sql.key_where(meta)}",
                             self.key_params(meta, key))
            if self.cur.fetchone() is None:
                return list(key)
        return list(keys[0])
