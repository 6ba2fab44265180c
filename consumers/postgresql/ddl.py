"""Creating and adapting standby tables to the table metadata carried by the redo stream.

The standby's catalog is the reference: the table is compared with the new metadata and the
differences are applied (CREATE TABLE; ADD, DROP and ALTER COLUMN TYPE; NOT NULL; the primary key).
It runs inside the applier's transaction, so a shape change commits together with the rows that
follow it. When the standby cannot be adapted, :class:`~consumers.errors.DataApplyError` names the
table, the statement and the fix (resync the table).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import errors as pge

from consumers.errors import DataApplyError
from consumers.postgresql.errors import classify
from consumers.postgresql.sql import create_table_sql, pg_type, qualified, quote_ident, split_table
from schemas.entries import TableMeta

log = logging.getLogger(__name__)

_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
_PK_SQL = """
SELECT c.conname,
       array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'p'
"""


@dataclass(frozen=True, slots=True)
class StandbyColumn:
    """A column as the standby's catalog has it."""

    name: str
    type: str
    not_null: bool


def standby_columns(cur: psycopg.Cursor[tuple[object, ...]], table: str) -> list[StandbyColumn] | None:
    """The table's columns on the standby, or None when it does not exist."""
    row = cur.execute("SELECT to_regclass(%s)::oid", [qualified(table)]).fetchone()
    if row is None or row[0] is None:
        return None
    rows = cur.execute(_COLUMNS_SQL, [row[0]]).fetchall()
    return [StandbyColumn(str(r[0]), str(r[1]), bool(r[2])) for r in rows]


def adaptation(meta: TableMeta, current: list[StandbyColumn] | None,
               pk: tuple[str | None, list[str]]) -> list[str]:
    """The statements that turn the standby's table (``current``, ``pk``) into ``meta``'s shape."""
    name = qualified(meta.table)
    if current is None:
        schema, _ = split_table(meta.table)
        return [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}", create_table_sql(meta)]
    have = {c.name: c for c in current}
    want = {c.name: c for c in meta.columns}
    alters: list[str] = []
    for have_col in current:
        if have_col.name not in want:
            alters.append(f"DROP COLUMN {quote_ident(have_col.name)}")
    for col in meta.columns:
        qname, typ = quote_ident(col.name), pg_type(col)
        old = have.get(col.name)
        if old is None:
            alters.append(f"ADD COLUMN {qname} {typ}{'' if col.nullable else ' NOT NULL'}")
            continue
        if old.type != typ:
            alters.append(f"ALTER COLUMN {qname} TYPE {typ} USING {qname}::{typ}")
        if old.not_null and col.nullable:
            alters.append(f"ALTER COLUMN {qname} DROP NOT NULL")
        elif not old.not_null and not col.nullable:
            alters.append(f"ALTER COLUMN {qname} SET NOT NULL")
    pk_name, pk_cols = pk
    want_pk = [c.name for c in meta.key_columns]
    if pk_cols != want_pk:
        dropped_with_column = any(c not in want for c in pk_cols)
        if pk_name and not dropped_with_column:
            alters.append(f"DROP CONSTRAINT {quote_ident(pk_name)}")
        if want_pk:
            alters.append("ADD PRIMARY KEY (" + ", ".join(quote_ident(c) for c in want_pk) + ")")
    return [f"ALTER TABLE {name} " + ", ".join(alters)] if alters else []


def apply_shape(cur: psycopg.Cursor[tuple[object, ...]], meta: TableMeta) -> list[str]:
    """Create or adapt ``meta.table`` on the standby; return the statements executed."""
    current = standby_columns(cur, meta.table)
    pk: tuple[str | None, list[str]] = (None, [])
    if current is not None:
        row = cur.execute(_PK_SQL, [qualified(meta.table)]).fetchone()
        if row is not None:
            pk = (str(row[0]), [str(c) for c in row[1]])  # type: ignore[attr-defined]
    try:
        statements = adaptation(meta, current, pk)
    except ValueError as exc:
        raise DataApplyError(f"cannot create or adapt {meta.table}: {exc}", table=meta.table,
                             fix="check the table's definition on the primary; resync the table") from None
    for stmt in statements:
        log.info("standby DDL for %s: %s", meta.table, stmt)
        try:
            cur.execute(stmt)  # built from quoted identifiers and catalog type names
        except (pge.DataError, pge.IntegrityError, pge.ProgrammingError, pge.FeatureNotSupported,
                pge.ObjectNotInPrerequisiteState) as exc:
            err = classify(exc, what="adapting the table", table=meta.table)
            raise DataApplyError(
                f"cannot adapt {meta.table} on the standby to version {meta.version}: {err.message} "
                f"[{stmt}]", table=meta.table, position=meta.position,
                fix=f"resync the table (ark resync --table {meta.table}); existing standby rows cannot "
                    "be converted (e.g. a NOT NULL column added with a default on the primary)") from exc
    return statements
