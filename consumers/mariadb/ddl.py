"""Creating and adapting MariaDB standby tables to the table shapes of the redo stream.

The standby's catalog is the reference: the table as it is now is compared with the new shape, so
adapting is idempotent (MariaDB's DDL is not transactional: it commits by itself, so a crash
between the ALTER and the state row is met again on restart, and then finds nothing left to do).
What is followed:

* **ADD COLUMN**: the rows that already exist get what they hold on the primary. That value is
  the column's ``missing_value`` on a shape that carries transition hints (``column_id`` is a name
  id, :data:`schemas.entries.NAME_ID_BASE`); NULL when the hint says the column was added nullable
  with no default. A column whose old rows' values are unknown (no hints, or a per-row default such
  as ``CURRENT_TIMESTAMP``) is a **table resync**, unless the table is empty or the shape comes from
  a snapshot (whose rows are copied right after).
* **RENAME / CHANGE COLUMN**: a new column whose name id is that of a column the standby has and the
  shape no longer has is that column renamed: its data stays. Without hints, a column that
  disappears while another appears cannot be told from a rename: table resync when rows exist.
* **DROP COLUMN**, **MODIFY** (type, nullability), **primary key**: followed. A type change is made
  by MariaDB itself (``MODIFY``), converting the rows as the primary did.
* **AUTO_INCREMENT** (``Column.auto_increment``, schema v6): a column the source says has it gets it
  (``MODIFY ... AUTO_INCREMENT``, a table rebuild, once; InnoDB starts the counter past the highest value,
  and the applier's explicit values carry it along). It is never taken away: ``False`` also means "not
  said" (entries of older builds, other engines), and a switchover may have added it already.

A change the standby cannot make raises :class:`~consumers.errors.TableNeedsResync` naming the
table, the column and the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from consumers.errors import TableNeedsResync
from consumers.mariadb.sql import (
    catalog_form,
    column_sql,
    column_type,
    create_table_sql,
    needs_own_index,
    qualified,
    quote_ident,
    split_table,
)
from schemas.entries import NAME_ID_BASE, Column, TableMeta, name_column_id

_DISPLAY_WIDTH = re.compile(r"^(tinyint|smallint|mediumint|int|bigint|year)\(\d+\)")


@dataclass(frozen=True, slots=True)
class StandbyColumn:
    """A column as the standby's catalog has it (type normalised as :func:`normalise` says)."""

    name: str
    type: str
    not_null: bool
    auto_increment: bool = False


def normalise(column_type: str, collation: str | None) -> str:
    """``COLUMN_TYPE`` in the form of a declared type (no integer display width; collation appended)."""
    typ = _DISPLAY_WIDTH.sub(r"\1", column_type.strip().lower())
    typ = typ.replace(" zerofill", "")
    return f"{typ} collate {collation}" if collation else typ


@dataclass(slots=True)
class Plan:
    """The standby statements for one shape change, and what they do (for the log and for tests)."""

    statements: list[str] = field(default_factory=list)
    renames: list[tuple[str, str]] = field(default_factory=list)


def _match(meta: TableMeta, current: list[StandbyColumn], previous: TableMeta | None
           ) -> tuple[list[tuple[StandbyColumn, Column]], list[Column], list[StandbyColumn], str]:
    """(renames, adds, drops, how the columns were matched): by name ids (a MariaDB source's transition hints),
    by stable column ids against ``previous`` (PostgreSQL's attnums), or "" (by name only: unknown)."""
    have = {c.name.casefold() for c in current}
    want = {c.name.casefold() for c in meta.columns}
    gone = [c for c in current if c.name.casefold() not in want]
    if any(c.column_id >= NAME_ID_BASE for c in meta.columns):
        how = "names"
        source_of = {name_column_id(c.name): c for c in gone}
    elif previous is not None and any(0 < c.column_id < NAME_ID_BASE for c in meta.columns):
        how = "ids"
        by_name = {c.name.casefold(): c for c in gone}
        source_of = {c.column_id: by_name[c.name.casefold()] for c in previous.columns
                     if 0 < c.column_id < NAME_ID_BASE and c.name.casefold() in by_name}
        was = {c.name.casefold(): c.column_id for c in previous.columns}
        for col in meta.columns:  # the same name on another column (dropped and re-added): not followed in place
            old_id = was.get(col.name.casefold(), 0)
            if col.name.casefold() in have and 0 < old_id < NAME_ID_BASE and col.column_id not in (0, old_id):
                raise TableNeedsResync(meta.table, f"column {col.name} was dropped and added again",
                                       position=meta.position)
        if any(not 0 < was.get(c.name.casefold(), 0) < NAME_ID_BASE for c in gone):
            # A column that disappeared without a known id (the source's catalog had moved on when it described
            # the previous shape) may have been renamed: nothing tells a rename from a drop and an add.
            how, source_of = "", {}
    else:
        how, source_of = "", {}
    renames: list[tuple[StandbyColumn, Column]] = []
    adds: list[Column] = []
    for col in meta.columns:
        if col.name.casefold() in have:
            continue
        source = source_of.get(col.column_id) if how and col.column_id != name_column_id(col.name) else None
        if source is not None and source in gone:
            renames.append((source, col))
            gone.remove(source)
        else:
            adds.append(col)
    return renames, adds, gone, how


def plan(meta: TableMeta, current: list[StandbyColumn] | None, pk: list[str], *,
         has_rows: Callable[[], bool] = lambda: True, literal: Callable[[Column, str], str] = lambda c, v: repr(v),
         previous: TableMeta | None = None) -> Plan:
    """The statements that turn the standby's table (``current``, ``pk``) into ``meta``'s shape.

    ``previous`` is the shape the standby follows now (its column ids tell renames from drops and adds
    when the source has stable column ids). ``literal(column, missing_value)`` renders the value existing
    rows get for an added column. Raises TableNeedsResync when the existing rows could not be kept right.
    """
    name = qualified(meta.table)
    if current is None:
        schema, _ = split_table(meta.table)
        return Plan([f"CREATE DATABASE IF NOT EXISTS {quote_ident(schema)} CHARACTER SET utf8mb4",
                     create_table_sql(meta)])
    have = {c.name.casefold(): c for c in current}
    renames, adds, gone, how = _match(meta, current, previous)
    from_stream = bool(meta.position)
    rows = bool(from_stream and adds and has_rows())
    if rows and not how and adds and gone:
        raise TableNeedsResync(meta.table, f"columns {', '.join(c.name for c in gone)} disappeared and "
                               f"{', '.join(c.name for c in adds)} appeared in one step without transition hints: "
                               "a rename (which keeps the data) cannot be told from a drop and add",
                               position=meta.position)
    known_ids = {c.column_id for c in previous.columns} if previous is not None else set()
    clauses: list[str] = []
    undefault: list[str] = []
    for old, col in renames:
        auto = " AUTO_INCREMENT" if col.auto_increment or old.auto_increment else ""
        clauses.append(f"CHANGE COLUMN {quote_ident(old.name)} {column_sql(col, meta.identity)}{auto}")
    for col in adds:
        fill = _fill(meta, col, how, known_ids) if rows else None
        if fill is None or fill == "NULL":
            not_null = not col.nullable and not rows
            clauses.append(f"ADD COLUMN {quote_ident(col.name)} {column_type(col, meta.identity)}"
                           f"{' NOT NULL' if not_null else ''}")
        else:
            clauses.append(f"ADD COLUMN {column_sql(col, meta.identity)} DEFAULT {literal(col, fill)}")
            undefault.append(f"ALTER COLUMN {quote_ident(col.name)} DROP DEFAULT")
    clauses += [f"DROP COLUMN {quote_ident(c.name)}" for c in gone]
    renamed = {c.name.casefold() for _, c in renames}
    late: list[str] = []  # after the first ALTER: AUTO_INCREMENT for a column it added (its key exists by then)
    for col in meta.columns:
        old_col = have.get(col.name.casefold())
        if col.name.casefold() in renamed:
            continue
        if old_col is None:
            if col.auto_increment:
                index = f", ADD KEY ({quote_ident(col.name)})" if needs_own_index(meta, col.name) else ""
                late.append(f"MODIFY COLUMN {column_sql(col, meta.identity)} AUTO_INCREMENT{index}")
            continue
        add_auto = col.auto_increment and not old_col.auto_increment
        if old_col.type != catalog_form(column_type(col, meta.identity)) or old_col.not_null == col.nullable \
                or add_auto:
            auto = " AUTO_INCREMENT" if col.auto_increment or old_col.auto_increment else ""
            clauses.append(f"MODIFY COLUMN {column_sql(col, meta.identity)}{auto}")
            if add_auto and needs_own_index(meta, col.name):
                clauses.append(f"ADD KEY ({quote_ident(col.name)})")
    want_pk = [c.name for c in meta.key_columns] if meta.identity == "key" else []  # "full": no unique key
    renamed_pk = [next((c.name for o, c in renames if o.name == p), p) for p in pk]
    if [p.casefold() for p in renamed_pk] != [p.casefold() for p in want_pk]:
        if pk and not all(p.casefold() in {g.name.casefold() for g in gone} for p in pk):
            clauses.append("DROP PRIMARY KEY")
        if want_pk:
            clauses.append("ADD PRIMARY KEY (" + ", ".join(quote_ident(c) for c in want_pk) + ")")
    out = Plan(renames=[(o.name, c.name) for o, c in renames])
    if clauses:
        out.statements.append(f"ALTER TABLE {name} " + ", ".join(clauses))
    if undefault:
        out.statements.append(f"ALTER TABLE {name} " + ", ".join(undefault))
    if late:
        out.statements.append(f"ALTER TABLE {name} " + ", ".join(late))
    return out


def _fill(meta: TableMeta, col: Column, how: str, known_ids: set[int]) -> str | None:
    """The missing value (canonical text), "NULL", or raise: what the rows that existed get."""
    new = (how == "names" and col.column_id == name_column_id(col.name)) or \
          (how == "ids" and 0 < col.column_id < NAME_ID_BASE and col.column_id not in known_ids)
    if not new:
        raise TableNeedsResync(meta.table, f"column {col.name} was added, and the values the existing rows got are "
                               "not known (the capture could not follow the DDL exactly)", position=meta.position)
    if col.missing_value is not None:
        return col.missing_value
    if col.default_expr is not None and col.default_expr.upper() != "NULL":
        raise TableNeedsResync(meta.table, f"column {col.name} was added with DEFAULT {col.default_expr}, which the "
                               "primary computed when the DDL ran or row by row: the existing rows' values are not in "
                               "its log", position=meta.position)
    if not col.nullable:
        raise TableNeedsResync(meta.table, f"column {col.name} was added NOT NULL but no value for the existing "
                               "rows is known", position=meta.position)
    return "NULL"
