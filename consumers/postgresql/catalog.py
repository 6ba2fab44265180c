"""Reading table shapes from a PostgreSQL catalog into engine-neutral :class:`TableMeta`.

Used by the initial sync to create standby tables before the stream starts. The neutral type names
are the capture side's (int16/int32/int64/float32/float64/decimal/string/bytes/boolean/date/time/
timestamp/timestamptz/uuid/json/interval/other, as in producers/postgresql/types.py, which this
package may not import); the PostgreSQL ``format_type`` text is kept as
``source_type`` so a PostgreSQL standby gets exactly the primary's types.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from typing import Any

import psycopg

from schemas.entries import Column, TableMeta

_EXACT: dict[str, str] = {
    "smallint": "int16", "integer": "int32", "bigint": "int64", "real": "float32",
    "double precision": "float64", "numeric": "decimal", "text": "string", '"char"': "string",
    "name": "string", "citext": "string", "bytea": "bytes", "boolean": "boolean", "date": "date",
    "time without time zone": "time", "time with time zone": "time",
    "timestamp without time zone": "timestamp", "timestamp with time zone": "timestamptz",
    "uuid": "uuid", "json": "json", "jsonb": "json", "interval": "interval", "oid": "int64",
    "xml": "string",
}
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("numeric(", "decimal"), ("character varying", "string"), ("character", "string"),
    ("interval", "interval"),
)


def neutral_type(format_type: str) -> str:
    """The engine-neutral type name of a PostgreSQL ``format_type`` text (``other`` when unknown)."""
    text = format_type.strip()
    if text.endswith("]"):
        return "other"
    if text in _EXACT:
        return _EXACT[text]
    if text.startswith("timestamp("):
        return "timestamp" if text.endswith("without time zone") else "timestamptz"
    if text.startswith("time("):
        return "time"
    for prefix, neutral in _PREFIXES:
        if text.startswith(prefix):
            return neutral
    return "other"


_TABLES_SQL = """
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence = 'p'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'ark') AND n.nspname NOT LIKE 'pg\\_%%'
ORDER BY n.nspname, c.relname
"""
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       coalesce(array_position(k.indkey::int2[], a.attnum) + 1, 0)
FROM pg_attribute a
LEFT JOIN LATERAL (
    SELECT i.indkey FROM pg_index i
    WHERE i.indrelid = a.attrelid AND (i.indisprimary OR i.indisreplident)
    ORDER BY i.indisprimary DESC LIMIT 1) k ON true
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
ORDER BY a.attrelid, a.attnum
"""


def shape_version(columns: Sequence[Column]) -> str:
    """A short, stable fingerprint of a table's shape (names, types, nullability, key)."""
    text = "|".join(f"{c.name}:{c.source_type}:{int(c.nullable)}:{c.key_position}" for c in columns)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:12]


def describe_source_tables(conn: psycopg.Connection[Any], patterns: Sequence[str]) -> list[TableMeta]:
    """Tables of the connected database matching ``schema.table`` fnmatch ``patterns``, as TableMeta.

    Ordinary, permanent tables only (unlogged and temporary tables are not in the WAL stream). The key
    is the primary key, else the replica-identity index; a table with neither has no key columns.
    Generated columns are left out (the standby computes them). Runs inside whatever transaction (and
    snapshot) ``conn`` has open.
    """
    tables = [(int(oid), f"{schema}.{name}") for oid, schema, name in conn.execute(_TABLES_SQL).fetchall()
              if any(fnmatch.fnmatchcase(f"{schema}.{name}", p) for p in patterns)]
    if not tables:
        return []
    cols: dict[int, list[Column]] = {oid: [] for oid, _ in tables}
    for oid, name, ftype, notnull, keypos in conn.execute(_COLUMNS_SQL, [[oid for oid, _ in tables]]):
        cols[int(oid)].append(Column(name=str(name), type=neutral_type(str(ftype)), source_type=str(ftype),
                                     nullable=not notnull, key_position=int(keypos)))
    out = []
    for oid, qualified_name in tables:
        columns = tuple(cols[oid])
        out.append(TableMeta(table=qualified_name, columns=columns, version=shape_version(columns)))
    return out
