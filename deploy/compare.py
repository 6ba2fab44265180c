"""Row-by-row comparison of a PostgreSQL primary and standby, table by table: tooling of the demo, the tests
and the benchmarks, like deploy/workload.py (`ark verify` goes through the engine registry and compares checksums
at one source position instead)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import psycopg
from psycopg import sql


@dataclass(frozen=True)
class TableDiff:
    """How one table differs (empty lists and equal counts mean equal)."""

    table: str
    primary_rows: int
    standby_rows: int
    missing_on_standby: list[tuple[object, ...]]
    extra_on_standby: list[tuple[object, ...]]
    different: list[tuple[object, ...]]

    @property
    def equal(self) -> bool:
        """True when both sides hold exactly the same rows."""
        return not (self.missing_on_standby or self.extra_on_standby or self.different) and \
            self.primary_rows == self.standby_rows


def _oid(conn: psycopg.Connection, table: str) -> int:
    """The oid of ``schema.table`` (names as they are: mixed case and quotes need no quoting here)."""
    schema, _, name = table.rpartition(".")
    row = conn.execute("SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname = %s AND c.relname = %s", (schema or "public", name)).fetchone()
    if row is None:
        raise psycopg.errors.UndefinedTable(f"relation {table} does not exist")
    return int(row[0])


def _key_columns(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        """SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid
           AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s AND i.indisprimary
           ORDER BY array_position(i.indkey::int2[], a.attnum)""", (_oid(conn, table),)).fetchall()
    return [r[0] for r in rows]


def _texts(conn: psycopg.Connection, table: str) -> list[tuple[object, ...]]:
    """Every row as the server's text of each column (columns by name)."""
    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema or "public", name)
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attname", (_oid(conn, table),)).fetchall()]
    select = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    return [tuple(r) for r in conn.execute(sql.SQL("SELECT {} FROM {}").format(select, ident))]


def _rows(conn: psycopg.Connection, table: str, keys: list[str]) -> dict[tuple[object, ...], tuple[object, ...]]:
    schema, _, name = table.rpartition(".")
    ident = sql.Identifier(schema or "public", name)
    order = sql.SQL(", ").join(sql.Identifier(k) for k in keys)
    columns = [r[0] for r in conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attname", (_oid(conn, table),)).fetchall()]
    # Compare the server's text form: exact for every type (numeric scale, infinity, NaN, -0).
    select = sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns)
    cur = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(select, ident, order))
    names = columns
    idx = [names.index(k) for k in keys]
    return {tuple(r[i] for i in idx): tuple(r) for r in cur}


def compare_table(primary_dsn: str, standby_dsn: str, table: str, limit: int = 10) -> TableDiff:
    """Compare every row of ``table`` by primary key, or as a multiset of rows without one (both sides read in
    one snapshot each)."""
    with psycopg.connect(primary_dsn) as p, psycopg.connect(standby_dsn) as s:
        keys = _key_columns(p, table)
        if not keys:  # no primary key: compare the multisets of rows (duplicates counted)
            mine, theirs = Counter(_texts(p, table)), Counter(_texts(s, table))
            gone = list((mine - theirs).elements())
            more = list((theirs - mine).elements())
            return TableDiff(table, sum(mine.values()), sum(theirs.values()), gone[:limit], more[:limit], [])
        left, right = _rows(p, table, keys), _rows(s, table, keys)
    missing = [k for k in left if k not in right]
    extra = [k for k in right if k not in left]
    different = [k for k in left if k in right and left[k] != right[k]]
    return TableDiff(table, len(left), len(right), missing[:limit], extra[:limit], different[:limit])


def compare_tables(primary_dsn: str, standby_dsn: str, tables: list[str]) -> list[TableDiff]:
    """Compare several tables."""
    return [compare_table(primary_dsn, standby_dsn, t) for t in tables]


def compare_with_mariadb(primary_dsn: str, mariadb: dict[str, object], table: str, columns: list[str],
                         limit: int = 10) -> TableDiff:
    """Compare ``columns`` of every row of a PostgreSQL ``table`` (schema.table; its first column is the key) with
    the same table on a MariaDB standby (database = the schema), as text on both sides.

    Only columns whose text form is the same in both engines (integers, numeric of a fixed scale, text) compare
    exactly this way; README "Cross-engine apply" has the type maps."""
    import pymysql  # the mariadb extra; only the demo with a MariaDB standby gets here

    schema, _, name = table.rpartition(".")
    pg_select = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.SQL("{}::text").format(sql.Identifier(c)) for c in columns),
        sql.Identifier(schema or "public", name))
    with psycopg.connect(primary_dsn) as p:
        left = {r[0]: tuple(r) for r in p.execute(pg_select)}
    my_select = "SELECT {} FROM `{}`.`{}`".format(  # noqa: S608 - identifiers from the caller, not from input
        ", ".join(f"CAST(`{c}` AS CHAR)" for c in columns), schema or "public", name)
    conn = pymysql.connect(**mariadb)
    try:
        with conn.cursor() as cur:
            cur.execute(my_select)
            right = {r[0]: tuple(r) for r in cur.fetchall()}
    finally:
        conn.close()
    missing = [k for k in left if k not in right]
    extra = [k for k in right if k not in left]
    different = [k for k in left if k in right and left[k] != right[k]]
    return TableDiff(table, len(left), len(right), [(k,) for k in missing[:limit]], [(k,) for k in extra[:limit]],
                     [(k,) for k in different[:limit]])
