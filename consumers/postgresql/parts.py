"""Values of any size on a PostgreSQL standby: parts stored in a temporary table, put together in SQL.

A value too large for one message arrives as parts (producers/fragments.py), each in its own chunk of the
transaction, before the row that uses it. Each part goes at once into ``pg_temp._ark_parts`` (in the
applier's open transaction: ``ON COMMIT DELETE ROWS``); the row's statement then reads the value back
with ``string_agg`` over its parts, so PostgreSQL assembles it and the applier never holds more than
one part. Parts and row commit together with the state row, like every other change.
"""

from __future__ import annotations

from typing import Any

import psycopg

from consumers.errors import DataApplyError
from consumers.postgresql.sql import param_text, pg_type, qualified, quote_ident
from schemas.entries import UNCHANGED, Op, PartRef, RowChange, TableMeta, ValuePart

Conn = psycopg.Connection[Any]

#: Parts are stored as they are (STORAGE EXTERNAL): compressing each part only to decompress it when the
#: value is put together cost the standby backend twice the CPU of native apply (bench/README.md).
PARTS_DDL = ("CREATE TEMP TABLE IF NOT EXISTS _ark_parts (r bigint NOT NULL, c int NOT NULL, i int NOT NULL, "
             "data bytea NOT NULL, PRIMARY KEY (r, c, i)) ON COMMIT DELETE ROWS; "
             "ALTER TABLE _ark_parts ALTER data SET STORAGE EXTERNAL")


def store(conn: Conn, part: ValuePart) -> None:
    """Keep one part (part 0 starts the value again: a restarted capture republishes it whole)."""
    if part.index == 0:
        conn.execute("DELETE FROM _ark_parts WHERE r = %s AND c = %s", [part.row, part.column])
    conn.execute("INSERT INTO _ark_parts (r, c, i, data) VALUES (%s, %s, %s, %s) ON CONFLICT (r, c, i) "
                 "DO UPDATE SET data = EXCLUDED.data", [part.row, part.column, part.index, part.data])


def _assemble(meta: TableMeta, ref: PartRef) -> str:
    whole = f"(SELECT string_agg(data, ''::bytea ORDER BY i) FROM _ark_parts WHERE r = {int(ref.row)} " \
            f"AND c = {int(ref.column)})"
    col = meta.columns[ref.column]
    typ = pg_type(col)
    if col.type == "bytes" or typ == "bytea":
        return whole
    return f"convert_from({whole}, 'UTF8')::{typ}"


def _check(conn: Conn, meta: TableMeta, refs: list[PartRef], txn_id: str, position: str) -> None:
    for ref in refs:
        row = conn.execute("SELECT count(*), coalesce(sum(length(data)), 0) FROM _ark_parts WHERE r = %s AND c = %s",
                           [ref.row, ref.column]).fetchone()
        if row is None or (int(row[0]), int(row[1])) != (ref.count, ref.total_bytes):
            have = f"{row[0]} parts, {row[1]} bytes" if row else "nothing"
            raise DataApplyError(
                f"the value of column {meta.columns[ref.column].name} of a row of {meta.table} arrived incomplete "
                f"(expected {ref.count} parts, {ref.total_bytes} bytes; have {have}), source transaction {txn_id} at "
                f"{position}", table=meta.table, txn_id=txn_id, position=position,
                fix=f"resync the table (ark resync --table {meta.table}); report this: the redo topic lacks parts")


def apply_assembled(conn: Conn, meta: TableMeta, change: RowChange, txn_id: str, position: str) -> None:
    """INSERT or UPDATE one row whose large values are in ``_ark_parts`` (exactly one row must match)."""
    refs = change.parts or []
    _check(conn, meta, refs, txn_id, position)
    by_col = {r.column: r for r in refs}
    cols = [i for i, v in enumerate(change.values) if v is not UNCHANGED]
    exprs, params = [], []
    for i in cols:
        if i in by_col:
            exprs.append(_assemble(meta, by_col[i]))
        else:
            exprs.append("%s")
            params.append(param_text(change.values[i]))
    name = qualified(meta.table)
    names = [quote_ident(meta.columns[i].name) for i in cols]
    if change.op is Op.INSERT:
        conn.execute(f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join(exprs)})", params)
    else:
        key_cols = meta.key_columns
        key = list(change.old_key) if change.old_key is not None else [change.values[i] for i in meta.key_indexes]
        if any(i in by_col for i in meta.key_indexes) and change.old_key is None:
            raise DataApplyError(f"a key value of {meta.table} is too large to locate its row, source transaction "
                                 f"{txn_id}", table=meta.table, txn_id=txn_id, position=position,
                                 fix=f"resync the table (ark resync --table {meta.table})")
        sets = ", ".join(f"{n} = {e}" for n, e in zip(names, exprs, strict=True))
        if meta.identity == "full":
            match = " AND ".join(f"{quote_ident(c.name)} IS NOT DISTINCT FROM %s::{pg_type(c)}" for c in key_cols)
            where = f"ctid = (SELECT ctid FROM {name} WHERE {match} LIMIT 1)"
        else:
            where = " AND ".join(f"{quote_ident(c.name)} = %s" for c in key_cols)
        cur = conn.execute(f"UPDATE {name} SET {sets} WHERE {where} RETURNING 1",
                           [*params, *(param_text(k) for k in key)])
        if cur.rowcount != 1:
            raise DataApplyError(f"update of a missing row in {meta.table}, key {key!r}, source transaction {txn_id} "
                                 f"at {position}", table=meta.table, txn_id=txn_id, position=position, key=key,
                                 fix=f"the standby diverged from the primary; resync the table "
                                     f"(ark resync --table {meta.table})")
    conn.execute("DELETE FROM _ark_parts WHERE r = %s", [refs[0].row] if refs else [-1])
