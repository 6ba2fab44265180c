"""MariaDB's ``ark check --promotable``: the primary's replicated tables and sequences against the standby's.

What the stream does not carry to a MariaDB standby, and a promotion would lack (the standby's tables are
created from the stream's shapes: columns, their types, the key and, since redo_entry v6, AUTO_INCREMENT):

* tables and columns (a table the standby lacks, a column missing or of another type);
* ``AUTO_INCREMENT`` (a standby table created by an older build, or a column the stream has not described
  since the upgrade): the application's INSERTs that leave the column out would fail (error 1364);
* secondary indexes (unique or not) and foreign keys: never created by the stream (a promoted standby
  without them is slow, or accepts rows the primary refuses);
* SEQUENCE objects (``ark sync`` copies tables only) and their values (at or ahead of the primary's);
* row counts (run it once the standby has caught up: ``ark status``).

The primary is read on the snapshot's connection (its row counts are those of the snapshot); the standby
as it stands. :func:`compare` is pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pymysql

from common.engines.mariadb import MariaDBStandby
from common.errors import SourceError, TargetError
from common.promotable import Lack, PromotableCheck
from common.settings import PrimarySettings, StandbySettings
from common.snapshot import Snapshot
from consumers.mariadb.sql import qualified, quote_ident, split_table
from schemas.entries import TableMeta


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What the comparison reads of one table."""

    columns: dict[str, tuple[str, bool]]  # name (case-folded) -> (COLUMN_TYPE, NOT NULL)
    names: dict[str, str]  # case-folded -> as declared
    auto_increment: str  # the AUTO_INCREMENT column, "" for none
    indexes: dict[tuple[str, ...], tuple[str, bool]]  # columns (case-folded) -> (index name, unique); not PRIMARY
    foreign_keys: dict[str, str]  # constraint name -> its columns and reference, as text
    rows: int


@dataclass(slots=True)
class Inventory:
    """One side's replicated tables and sequences."""

    tables: dict[str, TableFacts] = field(default_factory=dict)
    #: schema.name -> (definition text, next_not_cached_value, increment, start value)
    sequences: dict[str, tuple[str, int, int, int]] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _query(conn: Any, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def _table(conn: Any, table: str) -> TableFacts | None:
    schema, name = split_table(table)
    cols = _query(conn, "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE, EXTRA FROM information_schema.COLUMNS WHERE "
                        "TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION", (schema, name))
    if not cols:
        return None
    indexes: dict[str, tuple[list[str], bool]] = {}
    for index, non_unique, column in _query(
            conn, "SELECT INDEX_NAME, NON_UNIQUE, COLUMN_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = "
                  "%s AND TABLE_NAME = %s AND INDEX_NAME <> 'PRIMARY' ORDER BY INDEX_NAME, SEQ_IN_INDEX",
            (schema, name)):
        indexes.setdefault(_text(index), ([], _text(non_unique) == "0"))[0].append(_text(column).casefold())
    fks: dict[str, list[str]] = {}
    for constraint, column, ref_schema, ref_table, ref_column in _query(
            conn, "SELECT CONSTRAINT_NAME, COLUMN_NAME, REFERENCED_TABLE_SCHEMA, REFERENCED_TABLE_NAME, "
                  "REFERENCED_COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s AND "
                  "TABLE_NAME = %s AND REFERENCED_TABLE_NAME IS NOT NULL ORDER BY CONSTRAINT_NAME, ORDINAL_POSITION",
            (schema, name)):
        fks.setdefault(_text(constraint), []).append(
            f"{_text(column)}->{_text(ref_schema)}.{_text(ref_table)}.{_text(ref_column)}")
    (count,), = _query(conn, f"SELECT COUNT(*) FROM {qualified(table)}")
    return TableFacts(
        columns={_text(c).casefold(): (_text(t).lower(), _text(n) == "NO") for c, t, n, _e in cols},
        names={_text(c).casefold(): _text(c) for c, _t, _n, _e in cols},
        auto_increment=next((_text(c) for c, _t, _n, e in cols if "auto_increment" in _text(e or "").lower()), ""),
        indexes={tuple(c): (i, u) for i, (c, u) in indexes.items()},
        foreign_keys={k: ", ".join(v) for k, v in fks.items()}, rows=int(count))


def inventory(conn: Any, tables: Sequence[str], sequences: Sequence[str] | None = None) -> Inventory:
    """The facts of ``tables`` and of the SEQUENCEs (those named, else every one of the tables' schemas)."""
    out = Inventory()
    for table in tables:
        facts = _table(conn, table)
        if facts is not None:
            out.tables[table] = facts
    schemas = sorted({split_table(t)[0] for t in tables})
    if sequences is None:
        found = _query(conn, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
                             "'SEQUENCE' AND TABLE_SCHEMA IN (" + ", ".join(["%s"] * len(schemas)) + ")",
                       schemas) if schemas else []
        sequences = [f"{_text(s)}.{_text(n)}" for s, n in found]
    for name in sequences:
        schema, seq = split_table(name)
        if not _query(conn, "SELECT 1 FROM information_schema.TABLES WHERE TABLE_TYPE = 'SEQUENCE' AND TABLE_SCHEMA = "
                            "%s AND TABLE_NAME = %s", (schema, seq)):
            continue
        (nxt, minimum, maximum, start, increment, cache, cycle), = _query(
            conn, "SELECT next_not_cached_value, minimum_value, maximum_value, start_value, increment, cache_size, "
                  f"cycle_option FROM {qualified(name)}")
        definition = (f"START WITH {_text(start)} MINVALUE {_text(minimum)} MAXVALUE {_text(maximum)} INCREMENT BY "
                      f"{_text(increment)} CACHE {_text(cache)} {'CYCLE' if _text(cycle) == '1' else 'NOCYCLE'}")
        out.sequences[name] = (definition, int(_text(nxt)), int(_text(increment)), int(_text(start)))
    return out


def compare(mine: Inventory, theirs: Inventory, standby: str) -> list[Lack]:
    """What ``theirs`` (the standby) lacks of ``mine`` (the primary), each with its fix."""
    lacks: list[Lack] = []
    resync = f"ark resync {standby} --table"
    for table, src in sorted(mine.tables.items()):
        dst = theirs.tables.get(table)
        if dst is None:
            lacks.append(Lack(f"table {table}", "missing on the standby", f"{resync} {table}"))
            continue
        for col, (typ, _not_null) in src.columns.items():
            name = src.names[col]
            if col not in dst.columns:
                lacks.append(Lack(f"column {table}.{name}", "missing on the standby", f"{resync} {table}"))
            elif dst.columns[col][0] != typ:
                lacks.append(Lack(f"column {table}.{name}", f"is {dst.columns[col][0]} on the standby, {typ} on the "
                                  "primary", f"{resync} {table}"))
        auto = src.auto_increment
        if auto and auto.casefold() in dst.columns and dst.auto_increment.casefold() != auto.casefold():
            typ, _ = src.columns[auto.casefold()]
            lacks.append(Lack(f"column {table}.{auto}", "is AUTO_INCREMENT on the primary, not on the standby (an "
                              "INSERT that leaves it out would fail: error 1364)",
                              f"ALTER TABLE {qualified(table)} MODIFY {quote_ident(auto)} {typ} NOT NULL "
                              "AUTO_INCREMENT  -- on the standby"))
        for cols, (index, unique) in sorted(src.indexes.items()):
            if cols not in dst.indexes and not (auto and cols == (auto.casefold(),)):
                listed = ", ".join(quote_ident(src.names.get(c, c)) for c in cols)
                lacks.append(Lack(f"index {table}.{index}", f"{'unique ' if unique else ''}index on ({listed}) missing "
                                  "on the standby (the stream carries no secondary index)",
                                  f"CREATE {'UNIQUE ' if unique else ''}INDEX {quote_ident(index)} ON "
                                  f"{qualified(table)} ({listed})  -- on the standby"))
        for constraint, text in sorted(src.foreign_keys.items()):
            if text not in dst.foreign_keys.values():
                lacks.append(Lack(f"foreign key {table}.{constraint}", f"({text}) missing on the standby (the stream "
                                  "carries no foreign key)", "add it on the standby with ALTER TABLE ... ADD "
                                  "CONSTRAINT ... FOREIGN KEY, as on the primary (SHOW CREATE TABLE)"))
        if src.rows != dst.rows:
            lacks.append(Lack(f"table {table}", f"{dst.rows} rows on the standby, {src.rows} in the primary's snapshot",
                              f"wait until the standby has caught up ('ark status'), then check again; if it stays: "
                              f"ark verify {standby} --repair"))
    for name, (definition, nxt, increment, start) in sorted(mine.sequences.items()):
        got = theirs.sequences.get(name)
        if got is None:
            used = nxt != start  # the primary handed out values: the standby's must start past them
            setval = f"; SELECT SETVAL({qualified(name)}, {nxt - increment})" if used else ""
            lacks.append(Lack(f"sequence {name}", "missing on the standby (ark sync copies tables only)",
                              f"CREATE SEQUENCE {qualified(name)} {definition}{setval}  -- on the standby"))
            continue
        if got[0] != definition:
            lacks.append(Lack(f"sequence {name}", f"defined {got[0]} on the standby, {definition} on the primary",
                              f"ALTER SEQUENCE {qualified(name)} as on the primary  -- on the standby"))
        behind = got[1] < nxt if increment > 0 else got[1] > nxt
        if behind:
            lacks.append(Lack(f"sequence {name}", f"behind the primary's (next uncached value {got[1]}, the "
                              f"primary's {nxt}): a promotion would hand out values again",
                              f"SELECT SETVAL({qualified(name)}, {nxt - increment})  -- on the standby; or wait for "
                              "the capture's next sequence values"))
    return lacks


class MariaDBPromotable(PromotableCheck):
    """See the module docstring."""

    def lacks(self, primary: PrimarySettings, snapshot: Snapshot, standby: StandbySettings,
              tables: Sequence[TableMeta]) -> list[Lack]:
        if not isinstance(standby, MariaDBStandby):
            raise TypeError("MariaDBPromotable needs a MariaDB standby")
        names = [m.table for m in tables]
        conn = getattr(snapshot, "conn", None)
        if conn is None:
            raise TypeError("MariaDBPromotable needs a MariaDB snapshot")
        try:
            mine = inventory(conn, names)
        except pymysql.err.Error as exc:
            raise SourceError(f"cannot read the primary's catalog: {' '.join(str(exc).split())}",
                              fix="check the primary's connection settings ('ark check')") from None
        try:
            other = pymysql.connect(**standby.connect_kwargs())
        except pymysql.err.Error as exc:
            raise TargetError(f"cannot connect to standby {standby.name}: {' '.join(str(exc).split())}",
                              fix="check the standby's connection settings ('ark check')") from None
        try:
            theirs = inventory(other, names, sequences=list(mine.sequences))
        except pymysql.err.Error as exc:
            raise TargetError(f"cannot read standby {standby.name}'s catalog: {' '.join(str(exc).split())}",
                              fix="check the standby's connection settings ('ark check')") from None
        finally:
            other.close()
        return compare(mine, theirs, standby.name)
