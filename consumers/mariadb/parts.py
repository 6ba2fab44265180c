"""Values of any size on a MariaDB standby: parts kept in a temporary table, put together in SQL.

A value too large for one message arrives as parts (producers/fragments.py), each in its own chunk of the
transaction, before the row that uses it. Each part goes at once into the session's temporary table
``ark._ark_parts`` (InnoDB, so it rolls back with the applier's transaction; a temporary table does not
commit the transaction as other DDL does). The row's statement reads the value back with ``GROUP_CONCAT``
over its parts (the session allows results up to 4 GB; MariaDB's ``max_allowed_packet`` still bounds what
the server keeps in one value), so MariaDB assembles it and the applier never holds more than one part.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from consumers.errors import DataApplyError
from consumers.mariadb.sql import full_where, key_where, qualified, quote_ident
from schemas.entries import UNCHANGED, Op, PartRef, RowChange, TableMeta, Value, ValuePart

PARTS = "`ark`.`_ark_parts`"
PARTS_DDL = (f"CREATE TEMPORARY TABLE IF NOT EXISTS {PARTS} (r bigint NOT NULL, c int NOT NULL, i int NOT NULL, "
             "data longblob NOT NULL, PRIMARY KEY (r, c, i)) ENGINE=InnoDB")
#: The longest GROUP_CONCAT result the session allows (4 GB - 1: MariaDB's limit for a value).
GROUP_CONCAT_MAX = 4294967295

Params = Callable[[TableMeta, Sequence[Value], Sequence[int]], list[Any]]


def store(cur: Any, part: ValuePart) -> None:
    """Keep one part (part 0 starts the value again: a restarted capture republishes it whole)."""
    if part.index == 0:
        cur.execute(f"DELETE FROM {PARTS} WHERE r = %s AND c = %s", [part.row, part.column])
    cur.execute(f"INSERT INTO {PARTS} (r, c, i, data) VALUES (%s, %s, %s, %s) ON DUPLICATE KEY UPDATE "
                "data = VALUES(data)", [part.row, part.column, part.index, part.data])


def _assemble(meta: TableMeta, ref: PartRef) -> str:
    whole = (f"(SELECT GROUP_CONCAT(data ORDER BY i SEPARATOR '') FROM {PARTS} WHERE r = {int(ref.row)} "
             f"AND c = {int(ref.column)})")
    return whole if meta.columns[ref.column].type == "bytes" else f"CONVERT({whole} USING utf8mb4)"


def _check(cur: Any, meta: TableMeta, refs: Sequence[PartRef], txn_id: str, position: str) -> None:
    for ref in refs:
        cur.execute(f"SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM {PARTS} WHERE r = %s AND c = %s",
                    [ref.row, ref.column])
        row = cur.fetchone()
        if row is None or (int(row[0]), int(row[1])) != (ref.count, ref.total_bytes):
            have = f"{row[0]} parts, {row[1]} bytes" if row else "nothing"
            raise DataApplyError(
                f"the value of column {meta.columns[ref.column].name} of a row of {meta.table} arrived incomplete "
                f"(expected {ref.count} parts, {ref.total_bytes} bytes; have {have}), source transaction {txn_id} at "
                f"{position}", table=meta.table, txn_id=txn_id, position=position,
                fix=f"resync the table (ark resync --table {meta.table}); report this: the redo topic lacks parts")


def apply_assembled(cur: Any, meta: TableMeta, change: RowChange, params: Params, txn_id: str,
                    position: str) -> None:
    """INSERT or UPDATE one row whose large values are in the parts table (exactly one row must match)."""
    refs = change.parts or []
    _check(cur, meta, refs, txn_id, position)
    by_col = {r.column: r for r in refs}
    cols = [i for i, v in enumerate(change.values) if v is not UNCHANGED]
    plain = [i for i in cols if i not in by_col]
    values = dict(zip(plain, params(meta, change.values, plain), strict=True))
    exprs = [_assemble(meta, by_col[i]) if i in by_col else "%s" for i in cols]
    args = [values[i] for i in cols if i not in by_col]
    names = [quote_ident(meta.columns[i].name) for i in cols]
    if change.op is Op.INSERT:
        cur.execute(f"INSERT INTO {qualified(meta.table)} ({', '.join(names)}) VALUES ({', '.join(exprs)})", args)
    else:
        if any(i in by_col for i in meta.key_indexes) and change.old_key is None:
            raise DataApplyError(f"a key value of {meta.table} is too large to locate its row, source transaction "
                                 f"{txn_id}", table=meta.table, txn_id=txn_id, position=position,
                                 fix=f"resync the table (ark resync --table {meta.table})")
        key = list(change.old_key) if change.old_key is not None else [change.values[i] for i in meta.key_indexes]
        sets = ", ".join(f"{n} = {e}" for n, e in zip(names, exprs, strict=True))
        if meta.identity == "full":
            where, key_args = f"{full_where(meta)} LIMIT 1", params(meta, key, range(len(meta.columns)))
        else:
            where, key_args = key_where(meta), params(meta, _spread(meta, key), meta.key_indexes)
        cur.execute(f"UPDATE {qualified(meta.table)} SET {sets} WHERE {where}", [*args, *key_args])
        if cur.rowcount != 1:
            shown = f"key {key}" if meta.identity == "key" else "no row has the change's old values (no unique key)"
            raise DataApplyError(f"update of a missing row in {meta.table}, {shown}, source transaction {txn_id} at "
                                 f"{position}", table=meta.table, txn_id=txn_id, position=position,
                                 key=key if meta.identity == "key" else None,
                                 fix=f"the standby diverged from the primary; resync the table "
                                     f"(ark resync --table {meta.table})")
    cur.execute(f"DELETE FROM {PARTS} WHERE r = %s", [refs[0].row if refs else -1])


def _spread(meta: TableMeta, key: Sequence[Value]) -> list[Value]:
    """A row-shaped list with ``key`` at the key columns' places (for the per-column parameter converters)."""
    row: list[Value] = [None] * len(meta.columns)
    for i, value in zip(meta.key_indexes, key, strict=True):
        row[i] = value
    return row
