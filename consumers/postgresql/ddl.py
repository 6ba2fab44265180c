"""Creating and adapting standby tables to the table metadata carried by the redo stream.

The standby's catalog is the reference: the table is compared with the new metadata and the
differences are applied. It runs inside the applier's transaction, so a shape change commits
together with the rows that follow it. What is followed, and why the rest is a table resync:

* **RENAME COLUMN**: a column whose name changed but whose ``column_id`` (the primary's attnum,
  never reused) is the same is renamed, so its data stays.
* **ADD COLUMN**: rows that already exist must get what they hold on the primary, which is not in
  the log. With ``missing_value`` (PostgreSQL's fast default: the value old rows read) the column is
  added with that value as its default, then the default is dropped again (the standby's columns
  carry no defaults; every row in the stream carries all its values). With no default on the primary
  the old rows are NULL. A column with a default but no missing value was filled row by row (a
  volatile default such as ``random()``, or the table was rewritten since): those values are not in
  the stream, so the table needs a resync. So does a column whose identity is unknown.
* **DROP COLUMN**, **NOT NULL**, **primary key**: followed. A NOT NULL that the standby's rows do
  not satisfy yet (the capture reads the primary's catalog *now*, which may be ahead of the stream)
  is left off until a later shape change.
* **ALTER COLUMN TYPE**: followed without a USING clause, so the standby converts exactly as
  PostgreSQL does for an ``ALTER ... TYPE`` without USING. A change that needs a USING expression
  on the primary (text to integer) cannot be followed: the expression is not in the log.

A change the standby cannot follow raises :class:`~consumers.errors.TableNeedsResync` naming the
table, the column and the reason; only that table is affected. The checks that keep existing rows
right are skipped when the standby table is empty, and for metadata read from a snapshot (no
position: initial sync and table resync copy the rows right after).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import errors as pge

from consumers.errors import DataApplyError, TableNeedsResync
from consumers.postgresql.errors import classify
from consumers.postgresql.sql import create_table_sql, pg_type, qualified, quote_ident, quote_literal, split_table
from schemas.entries import NAME_ID_BASE, Column, TableMeta, column_record, name_column_id

log = logging.getLogger(__name__)

# Generated columns are left out: the standby computes them (pgoutput does not send them), they are not Ark's.
_COLUMNS_SQL = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
FROM pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attgenerated = ''  -- generated columns are computed on the standby too: never in the stream
ORDER BY a.attnum
"""
# A valid unique index on exactly these columns (no predicate, no expression): the key of a table whose
# primary (and so the standby, from the primary's schema) has a unique index as its replica identity.
_UNIQUE_SQL = """
SELECT 1 FROM pg_index i
WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
  AND array(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(n, o)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n ORDER BY k.o) = %s::text[]
"""
_PK_SQL = """
SELECT c.conname,
       array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY AS k(n, o)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)
FROM pg_constraint c WHERE c.conrelid = %s::regclass AND c.contype = 'p'
"""
#: Errors of a standby ALTER that mean "this table cannot follow", not "the standby is broken".
_CANNOT_FOLLOW = (pge.DataError, pge.IntegrityError, pge.DatatypeMismatch, pge.CannotCoerce,
                  pge.InvalidTableDefinition, pge.DuplicateColumn, pge.UndefinedColumn)


@dataclass(frozen=True, slots=True)
class StandbyColumn:
    """A column as the standby's catalog has it."""

    name: str
    type: str
    not_null: bool


@dataclass(slots=True)
class Step:
    """One standby DDL statement, and what it does (for messages)."""

    sql: str
    what: str = ""
    type_change: bool = False


@dataclass(slots=True)
class _Diff:
    renames: list[tuple[str, str]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    redo: list[str] = field(default_factory=list)  # same name, another column (dropped and re-added)
    adds: list[Column] = field(default_factory=list)
    #: Dropped standby columns whose identity is unknown (they might have been renamed).
    unknown_drops: list[str] = field(default_factory=list)

    def ambiguous(self) -> bool:
        """Columns both disappeared and appeared, and a rename cannot be ruled out."""
        return bool(self.drops and self.adds and (self.unknown_drops or any(not c.column_id for c in self.adds)))


def standby_columns(cur: psycopg.Cursor[tuple[object, ...]], table: str) -> list[StandbyColumn] | None:
    """The table's columns on the standby, or None when it does not exist."""
    row = cur.execute("SELECT to_regclass(%s)::oid", [qualified(table)]).fetchone()
    if row is None or row[0] is None:
        return None
    rows = cur.execute(_COLUMNS_SQL, [row[0]]).fetchall()
    return [StandbyColumn(str(r[0]), str(r[1]), bool(r[2])) for r in rows]


def _diff_by_names(meta: TableMeta, current: list[StandbyColumn]) -> _Diff:
    """Renames, drops and adds when ``meta`` carries name ids (:data:`~schemas.entries.NAME_ID_BASE`): a source
    without stable column identities (MariaDB) says, right after its DDL, what each column was called in the
    previous shape. They are never compared with the ids of an older shape (they do not name the same thing)."""
    have = {c.name for c in current}
    was = {name_column_id(c.name): c.name for c in current}
    became: dict[str, str] = {}  # standby column -> its name in ``meta``
    for column in meta.columns:
        source = was.get(column.column_id) if column.column_id >= NAME_ID_BASE else None
        if source is not None and source not in became:
            became[source] = column.name
    targets = set(became.values())
    d = _Diff()
    for col in current:
        new = became.get(col.name)
        if new is not None and new != col.name:
            d.renames.append((col.name, new))
        elif new is None and col.name in targets:
            raise TableNeedsResync(meta.table, f"column {col.name} disappeared and another column was renamed to its "
                                   "name in one step", position=meta.position)
        elif new is None and col.name not in {c.name for c in meta.columns}:
            d.drops.append(col.name)  # known: every column of the new shape says where it came from
    kept = (have - set(d.drops) - {o for o, _ in d.renames}) | {n for _, n in d.renames}
    d.adds = [c for c in meta.columns if c.name not in kept]
    return d


def _diff(meta: TableMeta, current: list[StandbyColumn], previous: TableMeta | None) -> _Diff:
    """Renames (by column_id), drops, re-adds and adds between the standby and ``meta``."""
    if any(c.column_id >= NAME_ID_BASE for c in meta.columns):
        return _diff_by_names(meta, current)
    have = {c.name for c in current}
    want = {c.name: c for c in meta.columns}
    # Only stable ids (attnums) identify columns across shapes; a name id of an older shape means nothing here.
    old_ids = {c.name: c.column_id for c in previous.columns if 0 < c.column_id < NAME_ID_BASE} if previous else {}
    new_by_id = {c.column_id: c.name for c in meta.columns if c.column_id}
    d = _Diff()
    for col in current:
        old_id = old_ids.get(col.name, 0)
        target = new_by_id.get(old_id) if old_id else None
        if col.name in want:
            if old_id and want[col.name].column_id and want[col.name].column_id != old_id:
                if target is not None and target != col.name:
                    d.renames.append((col.name, target))  # e.g. two columns swapped names
                else:
                    d.redo.append(col.name)
        elif target is not None and target not in have | {n for _, n in d.renames}:
            d.renames.append((col.name, target))
        else:
            d.drops.append(col.name)
            if not old_id:
                d.unknown_drops.append(col.name)
    kept = (have - set(d.drops) - set(d.redo) - {o for o, _ in d.renames}) | {n for _, n in d.renames}
    d.adds = [c for c in meta.columns if c.name not in kept]
    return d


def _fill(col: Column) -> tuple[str | None, str]:
    """(missing value or None, reason the old rows are unknown, "" when they are known)."""
    if not col.column_id:
        return None, (f"the primary's catalog no longer described column {col.name} as captured (changed again "
                      "since, or an entry of an older Ark): the values of the existing rows are unknown")
    if col.missing_value is not None:
        return col.missing_value, ""
    if col.default_expr is not None and col.column_id >= NAME_ID_BASE:  # a source without stable column ids
        return None, (f"column {col.name} was added with DEFAULT {col.default_expr}, which the primary computed when "
                      "the DDL ran: the values of the existing rows are not in its log")
    if col.default_expr is not None:
        return None, (f"column {col.name} was added with DEFAULT {col.default_expr}, which PostgreSQL computed "
                      "row by row (a volatile default, or the table was rewritten since): the values of the "
                      "existing rows are not in the logical stream")
    return None, ""


def adaptation(meta: TableMeta, current: list[StandbyColumn] | None, pk: tuple[str | None, list[str]],
               previous: TableMeta | None = None, *, has_rows: Callable[[], bool] = lambda: True,
               has_nulls: Callable[[str], bool] = lambda name: False) -> list[str]:
    """The SQL of :func:`plan` (what tests and logs read)."""
    return [s.sql for s in plan(meta, current, pk, previous, has_rows=has_rows, has_nulls=has_nulls)]


def plan(meta: TableMeta, current: list[StandbyColumn] | None, pk: tuple[str | None, list[str]],
         previous: TableMeta | None = None, *, has_rows: Callable[[], bool] = lambda: True,
         has_nulls: Callable[[str], bool] = lambda name: False) -> list[Step]:
    """The statements that turn the standby's table (``current``, ``pk``) into ``meta``'s shape.

    ``previous`` is the shape the standby follows now (its column ids detect renames);
    ``has_rows()`` and ``has_nulls(column)`` ask the standby table, only when the answer matters.
    Raises TableNeedsResync when the existing rows could not be kept right (see the module docstring).
    """
    name = qualified(meta.table)
    if current is None:
        schema, _ = split_table(meta.table)
        return [Step(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"), Step(create_table_sql(meta))]
    d = _diff(meta, current, previous)
    from_stream = bool(meta.position)
    keep_rows = bool(from_stream and d.adds and has_rows())
    if keep_rows and d.ambiguous():
        raise TableNeedsResync(meta.table, f"columns {', '.join(d.drops)} disappeared and "
                               f"{', '.join(c.name for c in d.adds)} appeared in one step, and the column "
                               "identities are unknown: a rename (which keeps the data) cannot be told from a "
                               "drop and add", position=meta.position)
    steps = [Step(f"ALTER TABLE {name} RENAME COLUMN {quote_ident(o)} TO {quote_ident(f'_ark_rename_{i}')}")
             for i, (o, _) in enumerate(d.renames)]
    steps += [Step(f"ALTER TABLE {name} RENAME COLUMN {quote_ident(f'_ark_rename_{i}')} TO {quote_ident(n)}",
                   what=f"column {o} renamed to {n}") for i, (o, n) in enumerate(d.renames)]
    renamed = dict(d.renames)
    have = {renamed.get(c.name, c.name): c for c in current if c.name not in d.drops and c.name not in d.redo}
    alters: list[str] = [f"DROP COLUMN {quote_ident(c)}" for c in d.drops + d.redo]
    defaults: list[str] = []
    for col in d.adds:
        qname, typ = quote_ident(col.name), pg_type(col)
        value, unknown = _fill(col) if keep_rows else (None, "")
        if unknown:
            raise TableNeedsResync(meta.table, unknown, position=meta.position)
        if value is not None:
            alters.append(f"ADD COLUMN {qname} {typ} DEFAULT {quote_literal(value)}::{typ}"
                          f"{'' if col.nullable else ' NOT NULL'}")
            defaults.append(f"ALTER COLUMN {qname} DROP DEFAULT")
        else:  # the old rows are NULL: NOT NULL only holds once they are filled (or there are none)
            not_null = not col.nullable and not keep_rows
            alters.append(f"ADD COLUMN {qname} {typ}{' NOT NULL' if not_null else ''}")
    for col in meta.columns:
        old = have.get(col.name)
        if old is None:
            continue
        qname, typ = quote_ident(col.name), pg_type(col)
        if old.type != typ:
            steps.append(Step(f"ALTER TABLE {name} ALTER COLUMN {qname} TYPE {typ}", type_change=True,
                              what=f"column {col.name} changed type from {old.type} to {typ}"))
        if old.not_null and col.nullable:
            alters.append(f"ALTER COLUMN {qname} DROP NOT NULL")
        elif not old.not_null and not col.nullable:
            if has_nulls(old.name):
                log.info("%s.%s stays nullable on the standby for now: it still holds NULLs at %s",
                         meta.table, col.name, meta.position or "the snapshot")
            else:
                alters.append(f"ALTER COLUMN {qname} SET NOT NULL")
    pk_name, pk_cols = pk
    pk_cols = [renamed.get(c, c) for c in pk_cols]
    want_pk = [c.name for c in meta.key_columns] if meta.identity == "key" else []  # "full": no unique key
    if pk_cols != want_pk:
        dropped_with_column = any(c not in have for c in pk_cols)
        if pk_name and not dropped_with_column:
            alters.append(f"DROP CONSTRAINT {quote_ident(pk_name)}")
        if want_pk:
            alters.append("ADD PRIMARY KEY (" + ", ".join(quote_ident(c) for c in want_pk) + ")")
    if alters:
        steps.append(Step(f"ALTER TABLE {name} " + ", ".join(alters)))
    if defaults:
        steps.append(Step(f"ALTER TABLE {name} " + ", ".join(defaults)))
    return steps


def apply_shape(cur: psycopg.Cursor[tuple[object, ...]], meta: TableMeta,
                previous: TableMeta | None = None) -> list[str]:
    """Create or adapt ``meta.table`` on the standby; return the statements executed."""
    current = standby_columns(cur, meta.table)
    pk: tuple[str | None, list[str]] = (None, [])
    if current is not None:
        row = cur.execute(_PK_SQL, [qualified(meta.table)]).fetchone()
        if row is not None:
            pk = (str(row[0]), [str(c) for c in row[1]])  # type: ignore[attr-defined]
        else:
            want = [c.name for c in meta.key_columns] if meta.identity == "key" else []
            if want and cur.execute(_UNIQUE_SQL, [qualified(meta.table), want]).fetchone() is not None:
                pk = (None, want)  # a unique index serves as the key, as on the primary: no primary key added
    table = qualified(meta.table)

    def has_rows() -> bool:
        return cur.execute(f"SELECT EXISTS (SELECT FROM {table})").fetchone() == (True,)

    def has_nulls(column: str) -> bool:
        found = cur.execute(f"SELECT EXISTS (SELECT FROM {table} WHERE {quote_ident(column)} IS NULL)").fetchone()
        return found == (True,)

    try:
        steps = plan(meta, current, pk, previous, has_rows=has_rows, has_nulls=has_nulls)
    except ValueError as exc:
        raise DataApplyError(f"cannot create or adapt {meta.table}: {exc}", table=meta.table,
                             fix="check the table's definition on the primary; resync the table") from None
    for step in steps:
        log.info("standby DDL for %s: %s", meta.table, step.sql)
        try:
            cur.execute(step.sql)  # built from quoted identifiers, catalog type names and quoted literals
        except _CANNOT_FOLLOW as exc:
            line = (exc.diag.message_primary or str(exc)).strip()
            if step.type_change:
                reason = (f"{step.what}, a change that needs a USING expression on the primary, which the log "
                          f"does not carry ({line})")
            else:
                reason = f"the standby table cannot take version {meta.version}: {line} [{step.sql}]"
            raise TableNeedsResync(meta.table, reason, position=meta.position) from exc
        except (pge.ProgrammingError, pge.FeatureNotSupported, pge.ObjectNotInPrerequisiteState) as exc:
            err = classify(exc, what="adapting the table", table=meta.table)
            raise DataApplyError(f"cannot adapt {meta.table} on the standby to version {meta.version}: "
                                 f"{err.message} [{step.sql}]", table=meta.table, position=meta.position,
                                 fix=f"resync the table (ark resync --table {meta.table})") from exc
    return [s.sql for s in steps]


def stored_meta(meta: TableMeta) -> dict[str, object]:
    """The JSON kept in ``ark.table_meta``: every column field, so renames are still detected after a restart."""
    return {"table": meta.table, "version": meta.version, "position": meta.position, "identity": meta.identity,
            "columns": [column_record(c) for c in meta.columns]}
