"""SQL text for the PostgreSQL applier: identifier quoting, value encoding, DDL and DML statements.

Everything here is pure (no connection), so it is unit-tested without a server.

Values arrive engine-neutral (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``); decimals,
dates, times, timestamps, uuids, json and arrays arrive as their canonical text. They are sent to the
server as *text* in both paths:
untyped (``unknown``) parameters for the per-row path (:func:`param_text`) and psycopg's COPY text
formatting (``Copy.write_row``, implemented in C) for the set-based path, so PostgreSQL parses each
value with the input function of the target column's own type (numeric, timestamptz, bytea, uuid,
jsonb, arrays ...). Nothing is converted through a Python type that could lose precision.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from schemas.entries import Column, TableMeta, Value

#: Neutral type → PostgreSQL type, used only when a column carries no PostgreSQL ``source_type``
#: (metadata captured from another engine).
NEUTRAL_TO_PG: dict[str, str] = {
    "int16": "smallint", "int32": "integer", "int64": "bigint", "float32": "real",
    "float64": "double precision", "decimal": "numeric", "string": "text", "bytes": "bytea",
    "boolean": "boolean", "date": "date", "time": "time without time zone",
    "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone",
    "uuid": "uuid", "json": "jsonb", "interval": "interval", "other": "text",
}

_SAFE_TYPE = re.compile(r"^[\w\s\"().,\[\]]+$")
STAGE_SEQ = "_ark_n"
OLD_KEY_PREFIX = "_ark_old_"


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (``Order`` → ``"Order"``, ``a"b`` → ``"a""b"``)."""
    if "\x00" in name:
        raise ValueError(f"identifier contains a NUL byte: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal (``it's`` → ``'it''s'``), whatever standard_conforming_strings is."""
    if "\x00" in value:
        raise ValueError(f"literal contains a NUL byte: {value!r}")
    if "\\" in value:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + value.replace("'", "''") + "'"


def split_table(table: str) -> tuple[str, str]:
    """Split ``schema.table`` at the first dot (a table without schema is in ``public``)."""
    schema, dot, name = table.partition(".")
    return (schema, name) if dot else ("public", table)


def qualified(table: str) -> str:
    """``schema.table`` quoted: ``"Sales"."Order"``."""
    schema, name = split_table(table)
    return f"{quote_ident(schema)}.{quote_ident(name)}"


#: The declared types a PostgreSQL capture writes, by neutral type (modifiers such as ``(12,2)`` left out).
#: "other" is any PostgreSQL type (arrays, enums, domains, bit, money...): always taken as declared.
_PG_NATIVE: dict[str, frozenset[str]] = {
    "int16": frozenset({"smallint"}), "int32": frozenset({"integer"}), "int64": frozenset({"bigint", "oid"}),
    "float32": frozenset({"real"}), "float64": frozenset({"double precision"}), "decimal": frozenset({"numeric"}),
    "string": frozenset({"text", "character varying", "character", '"char"', "name", "xml"}),
    "bytes": frozenset({"bytea"}), "boolean": frozenset({"boolean"}), "date": frozenset({"date"}),
    "time": frozenset({"time without time zone", "time with time zone"}),
    "timestamp": frozenset({"timestamp without time zone"}), "timestamptz": frozenset({"timestamp with time zone"}),
    "uuid": frozenset({"uuid"}), "json": frozenset({"json", "jsonb"}), "interval": frozenset({"interval"}),
}
_MODIFIERS = re.compile(r"\([^)]*\)")
_PRECISION = re.compile(r"^(?:decimal|numeric)\((\d+),(\d+)\)")


def is_native(column: Column) -> bool:
    """True when ``column``'s declared type is PostgreSQL's own for its neutral type (a PostgreSQL source)."""
    accepted = _PG_NATIVE.get(column.type)
    if accepted is None:
        return True
    base = " ".join(_MODIFIERS.sub("", column.source_type).lower().split())
    return base in accepted


def pg_type(column: Column) -> str:
    """The PostgreSQL type to create ``column`` with: its ``source_type`` when that is PostgreSQL's own for the
    column's neutral type, else mapped from the neutral type (another engine's column; README "Cross-engine
    apply"), keeping a declared decimal precision."""
    text = column.source_type.strip()
    if not text or not is_native(column):
        m = _PRECISION.match(text.lower())
        if column.type == "decimal" and m and 0 < int(m[1]) <= 1000 and int(m[2]) <= int(m[1]):
            text = f"numeric({m[1]},{m[2]})"
        elif column.type == "decimal" and text.lower() == "bigint unsigned":
            text = "numeric(20,0)"
        elif column.type == "time":
            text = "interval"  # another engine's TIME may be a duration (MariaDB: ±838 h): interval holds every value
        else:
            text = NEUTRAL_TO_PG.get(column.type, "text")
    if not _SAFE_TYPE.match(text):
        raise ValueError(f"column {column.name}: unexpected type text {text!r}")
    return text


# -- values --------------------------------------------------------------------------------------
def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def param_text(value: Value) -> str | None:
    """A value as the text PostgreSQL parses for any column type (``None`` stays NULL)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    raise TypeError(f"cannot apply a value of type {type(value).__name__}")


# -- DDL -----------------------------------------------------------------------------------------
def create_table_sql(meta: TableMeta) -> str:
    """``CREATE TABLE`` for ``meta``: quoted names, source types, NOT NULL, PRIMARY KEY in key order."""
    parts = [f"{quote_ident(c.name)} {pg_type(c)}{'' if c.nullable else ' NOT NULL'}" for c in meta.columns]
    if meta.key_columns and meta.identity == "key":
        parts.append("PRIMARY KEY (" + ", ".join(quote_ident(c.name) for c in meta.key_columns) + ")")
    return f"CREATE TABLE {qualified(meta.table)} (" + ", ".join(parts) + ")"


# -- per-row DML ---------------------------------------------------------------------------------
def _key_match(meta: TableMeta, left: str = "", right: str | None = None, old: bool = False) -> str:
    """``k1 = %s AND k2 = %s`` (or ``t.k = s.k`` joins when ``right`` is a stage alias)."""
    conds = []
    for i, col in enumerate(meta.key_columns):
        lhs = f"{left}{quote_ident(col.name)}"
        if right is None:
            conds.append(f"{lhs} = %s")
        else:
            rname = f"{OLD_KEY_PREFIX}{i}" if old else col.name
            conds.append(f"{lhs} = {right}.{quote_ident(rname)}")
    return " AND ".join(conds)


#: Types without an equality operator: a row of identity "full" is matched on their text.
_NO_EQUALITY = frozenset({"json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle"})


def _full_match(meta: TableMeta, key: Sequence[Value]) -> tuple[str, list[str | None]]:
    """The predicate locating one row of an identity-"full" table by all its values, and its parameters.

    ``=`` for each non-NULL value (so an index can serve it) and ``IS NULL`` for each NULL; columns of a
    type without equality compare their text form.
    """
    conds: list[str] = []
    params: list[str | None] = []
    for col, value in zip(meta.columns, key, strict=True):
        name = quote_ident(col.name)
        if value is None:
            conds.append(f"{name} IS NULL")
            continue
        base = pg_type(col).split("(")[0].strip()
        if col.type == "json" and base == "json" or base in _NO_EQUALITY:
            conds.append(f"{name}::text = %s")
        else:
            conds.append(f"{name} = %s")
        params.append(param_text(value))
    return " AND ".join(conds) or "true", params


def full_update_sql(meta: TableMeta, cols: Sequence[int], key: Sequence[Value]) -> tuple[str, list[str | None]]:
    """UPDATE of ONE row of an identity-"full" table found by its old values (identical rows: any one of them).

    Returns the statement and the parameters of its WHERE part (the SET values come first)."""
    sets = ", ".join(f"{quote_ident(meta.columns[i].name)} = %s" for i in cols)
    pred, params = _full_match(meta, key)
    name = qualified(meta.table)
    return (f"UPDATE {name} SET {sets} WHERE ctid = (SELECT ctid FROM {name} WHERE {pred} LIMIT 1) RETURNING 1",
            params)


def full_delete_sql(meta: TableMeta, key: Sequence[Value]) -> tuple[str, list[str | None]]:
    """DELETE of ONE row of an identity-"full" table found by its values (identical rows: any one of them)."""
    pred, params = _full_match(meta, key)
    name = qualified(meta.table)
    return f"DELETE FROM {name} WHERE ctid = (SELECT ctid FROM {name} WHERE {pred} LIMIT 1) RETURNING 1", params


def insert_sql(meta: TableMeta, cols: Sequence[int]) -> str:
    """``INSERT INTO t (cols) VALUES (%s, ...)`` for the column indexes ``cols``."""
    names = ", ".join(quote_ident(meta.columns[i].name) for i in cols)
    marks = ", ".join(["%s"] * len(cols))
    return f"INSERT INTO {qualified(meta.table)} ({names}) VALUES ({marks})"


def set_columns(meta: TableMeta, cols: Sequence[int], key_change: bool) -> list[int]:
    """Columns an UPDATE sets: the present ones, less unchanged key columns (at least the key)."""
    keys = set(meta.key_indexes)
    chosen = [i for i in cols if key_change or i not in keys]
    return chosen or list(meta.key_indexes)


def update_sql(meta: TableMeta, cols: Sequence[int], key_change: bool) -> str:
    """``UPDATE t SET c = %s ... WHERE k = %s ... RETURNING 1`` (params: set values, then key)."""
    sets = ", ".join(f"{quote_ident(meta.columns[i].name)} = %s" for i in set_columns(meta, cols, key_change))
    return f"UPDATE {qualified(meta.table)} SET {sets} WHERE {_key_match(meta)} RETURNING 1"


def delete_sql(meta: TableMeta) -> str:
    """``DELETE FROM t WHERE k = %s ... RETURNING 1``."""
    return f"DELETE FROM {qualified(meta.table)} WHERE {_key_match(meta)} RETURNING 1"


def truncate_sql(tables: Sequence[str]) -> str:
    """One ``TRUNCATE`` for consecutive truncated tables (so foreign keys between them are fine)."""
    return "TRUNCATE " + ", ".join(qualified(t) for t in tables)


# -- set-based DML -------------------------------------------------------------------------------
def stage_columns(meta: TableMeta, op: str, cols: Sequence[int], key_change: bool) -> list[str]:
    """Names of the staging table's columns, in COPY order (the sequence column is last)."""
    if op == "DELETE":
        names = [c.name for c in meta.key_columns]
    else:
        names = [meta.columns[i].name for i in cols]
        if op == "UPDATE":
            names += [c.name for c in meta.key_columns if c.name not in names]
    if key_change:
        names += [f"{OLD_KEY_PREFIX}{i}" for i in range(len(meta.key_columns))]
    return names + [STAGE_SEQ]


def create_stage_sql(meta: TableMeta, stage: str, op: str, cols: Sequence[int], key_change: bool) -> str:
    """A temporary staging table with exactly the target's column types (no rows, no constraints)."""
    select = []
    for name in stage_columns(meta, op, cols, key_change):
        if name == STAGE_SEQ:
            select.append(f"0::int AS {quote_ident(STAGE_SEQ)}")
        elif name.startswith(OLD_KEY_PREFIX) and key_change:
            key = meta.key_columns[int(name[len(OLD_KEY_PREFIX):])]
            select.append(f"{quote_ident(key.name)} AS {quote_ident(name)}")
        else:
            select.append(quote_ident(name))
    return (f"CREATE TEMP TABLE {quote_ident(stage)} ON COMMIT DROP AS SELECT {', '.join(select)} "
            f"FROM {qualified(meta.table)} WITH NO DATA")


def copy_stage_sql(stage: str, names: Sequence[str]) -> str:
    """``COPY stage (cols) FROM STDIN``."""
    return f"COPY {quote_ident(stage)} ({', '.join(quote_ident(n) for n in names)}) FROM STDIN"


def _counted(dml: str, expected: int) -> str:
    """Wrap ``dml ... RETURNING s._ark_n`` so it yields (affected rows, first stage row not affected).

    The missing-row search is in a CASE branch (an init-plan), so it runs only on a mismatch.
    """
    seq = quote_ident(STAGE_SEQ)
    return (f"WITH d AS ({dml} RETURNING s.{seq} AS n) "
            f"SELECT c.n, CASE WHEN c.n < {int(expected)} THEN (SELECT min(g) FROM generate_series(0, "
            f"{int(expected) - 1}) g WHERE NOT EXISTS (SELECT 1 FROM d WHERE d.n = g)) END "
            f"FROM (SELECT count(*) AS n FROM d) c")


def set_update_sql(meta: TableMeta, stage: str, cols: Sequence[int], key_change: bool, expected: int) -> str:
    """One UPDATE joining the staging table on the (old) key; see :func:`_counted`."""
    sets = ", ".join(f"{quote_ident(meta.columns[i].name)} = s.{quote_ident(meta.columns[i].name)}"
                     for i in set_columns(meta, cols, key_change))
    dml = (f"UPDATE {qualified(meta.table)} AS t SET {sets} FROM {quote_ident(stage)} AS s "
           f"WHERE {_key_match(meta, 't.', 's', old=key_change)}")
    return _counted(dml, expected)


def set_delete_sql(meta: TableMeta, stage: str, expected: int) -> str:
    """One DELETE joining the staging table on the key; see :func:`_counted`."""
    dml = (f"DELETE FROM {qualified(meta.table)} AS t USING {quote_ident(stage)} AS s "
           f"WHERE {_key_match(meta, 't.', 's')}")
    return _counted(dml, expected)


def set_insert_sql(meta: TableMeta, stage: str, cols: Sequence[int]) -> str:
    """One INSERT of every staged row (a duplicate key raises UniqueViolation)."""
    names = ", ".join(quote_ident(meta.columns[i].name) for i in cols)
    return f"INSERT INTO {qualified(meta.table)} ({names}) SELECT {names} FROM {quote_ident(stage)}"
