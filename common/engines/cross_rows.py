"""Reading a table's rows for the cross-engine compare (common/verify_cross.py), on either engine.

It lives beside the engine registry because it names both engines (nothing outside the engine packages and
common/engines may); it touches no engine package, only each side's open connection.

Each side is a connection already inside its consistent snapshot (the engine verifier's side of the
compare: ops/verify.py opens them at one source position). Rows are streamed with a server-side cursor
(bounded memory), in no particular order: the compare partitions them by key hash. The SELECT asks each
server for the form that :func:`common.verify_cross.canonical` reads without loss: temporal values as
text in UTC (drivers cannot hold ``infinity``, BC dates or MariaDB's zero dates), MariaDB FLOAT as its exact
double, a MariaDB ``bit(n)`` as n binary digits as PostgreSQL prints it, a time or interval as a duration.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from common.verify_cross import bit_width
from schemas.entries import Column, TableMeta

POSTGRESQL, MARIADB = "postgresql", "mariadb"
#: Rows fetched per round trip.
BATCH = 2_000

_PG_TEXT = frozenset({"date", "timestamp", "timestamptz", "interval", "other"})
_MARIA_TEXT = frozenset({"date", "timestamp", "timestamptz", "time", "string", "json", "uuid", "interval"})


def _split(table: str) -> tuple[str, str]:
    schema, _, name = table.partition(".")
    return schema, name


def _pg_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _maria_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def pg_expr(col: Column) -> str:
    """The PostgreSQL SELECT expression of one column (see the module docstring)."""
    name = _pg_ident(col.name)
    if col.type in _PG_TEXT:
        return f"{name}::text"
    if col.type == "time":
        return f"{name}::interval"
    return name


def maria_expr(col: Column) -> str:
    """The MariaDB SELECT expression of one column (see the module docstring)."""
    name = _maria_ident(col.name)
    width = bit_width(col)
    if col.type == "other" and width:
        return f"LPAD(BIN({name}), {width}, '0')"
    if col.type == "float32":
        return f"CAST({name} AS DOUBLE)"
    if col.type in _MARIA_TEXT or col.type == "other":
        return f"CAST({name} AS CHAR)"
    return name


def select_sql(engine: str, meta: TableMeta) -> str:
    """The statement reading every row of ``meta`` on ``engine``."""
    schema, table = _split(meta.table)
    if engine == POSTGRESQL:
        return f"SELECT {', '.join(pg_expr(c) for c in meta.columns)} FROM {_pg_ident(schema)}.{_pg_ident(table)}"
    if engine == MARIADB:
        return (f"SELECT {', '.join(maria_expr(c) for c in meta.columns)} FROM "
                f"{_maria_ident(schema)}.{_maria_ident(table)}")
    raise ValueError(f"no cross-engine reader for engine {engine}")


def prepare(engine: str, conn: Any) -> None:
    """Session settings both readers rely on (UTC); safe inside the open snapshot."""
    if engine == MARIADB:
        with conn.cursor() as cur:
            cur.execute("SET time_zone = '+00:00'")
    elif engine == POSTGRESQL:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET DateStyle = 'ISO, YMD'")
        conn.execute("SET IntervalStyle = 'postgres'")


def shape_problem(engine: str, conn: Any, meta: TableMeta) -> str:
    """Why ``meta`` cannot be read on this side ('' when it can): the table or a column is missing."""
    schema, table = _split(meta.table)
    if engine == POSTGRESQL:
        rows = conn.execute("SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN "
                            "pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND "
                            "a.attnum > 0 AND NOT a.attisdropped", [schema, table]).fetchall()
        have = {str(r[0]) for r in rows}
    else:
        with conn.cursor() as cur:
            cur.execute("SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND "
                        "TABLE_NAME = %s", [schema, table])
            have = {r[0].decode() if isinstance(r[0], bytes) else str(r[0]) for r in cur.fetchall()}
    if not have:
        return f"{meta.table} does not exist on the {engine} side"
    missing = [c.name for c in meta.columns if c.name not in have]
    return f"column {missing[0]} of {meta.table} is missing on the {engine} side" if missing else ""


def count_rows(engine: str, conn: Any, meta: TableMeta) -> int:
    """How many rows the table holds on this side."""
    schema, table = _split(meta.table)
    if engine == POSTGRESQL:
        row = conn.execute(f"SELECT count(*) FROM {_pg_ident(schema)}.{_pg_ident(table)}").fetchone()
        return int(row[0])
    with conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM {_maria_ident(schema)}.{_maria_ident(table)}")
        (n,), = cur.fetchall()
        return int(n)


def read_rows(engine: str, conn: Any, meta: TableMeta) -> Iterator[tuple[Any, ...]]:
    """Every row of the table, streamed (a server-side cursor), values in ``meta``'s column order."""
    query = select_sql(engine, meta)
    if engine == POSTGRESQL:
        with conn.cursor(name="ark_verify_cross") as cur:
            cur.itersize = BATCH
            cur.execute(query)
            yield from cur
        return
    import pymysql.cursors  # only the MariaDB side needs it

    cur = conn.cursor(pymysql.cursors.SSCursor)
    try:
        cur.execute(query)
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                break
            yield from rows
    finally:
        cur.close()  # reads what is left of the result: the connection is usable again
