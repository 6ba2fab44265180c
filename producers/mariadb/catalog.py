"""Connections to a MariaDB source and the catalog queries of capture and snapshot.

Every connection error becomes a one-line :class:`common.errors.SourceError` naming
``user@host:port`` and the fix, never the password.
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymysql
import pymysql.converters

from common.errors import SourceError
from producers.mariadb.types import ColumnType, from_catalog
from schemas.entries import Column, TableMeta

#: PyMySQL conversions that encode parameters as usual but decode no result: every value comes back as
#: MariaDB's text (str in the connection's utf8mb4, bytes for binary columns), for ColumnType.from_text.
TEXT_RESULTS: dict[Any, Any] = {k: v for k, v in pymysql.converters.conversions.items() if not isinstance(k, int)}

#: Schemas that are never captured: the server's, and Ark's own (its state on a node that was a standby, the
#: capture start a promotion records: producers/mariadb/node_ops.py).
SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys", "ark", "ark_resync"})


def where(settings: Any) -> str:
    """``user@host:port`` of a database settings object (never the password)."""
    return f"{settings.user}@{settings.host}:{settings.port}"


def connect_kwargs(settings: Any, **extra: Any) -> dict[str, Any]:
    """PyMySQL keyword arguments for ``settings`` (password resolved now: never log these)."""
    kwargs: dict[str, Any] = settings.connect_kwargs()
    kwargs.update(extra)
    return kwargs


def source_error(settings: Any, exc: BaseException, role: str = "the primary") -> SourceError:
    """A one-line SourceError for a driver error (the password never appears: MariaDB does not echo it)."""
    code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else 0
    text = " ".join(str(exc.args[1] if len(exc.args) > 1 else exc).split())
    at = where(settings)
    if code == 1045:
        return SourceError(f"MariaDB {at}: access denied ({role})",
                           fix=f"check {role}'s user and its password source in the config")
    if code in (2003, 2002, 2013, 2006):
        return SourceError(f"cannot reach MariaDB at {settings.host}:{settings.port} ({role}): {text}",
                           fix=f"is MariaDB running at {settings.host}:{settings.port}?")
    if code in (1044, 1142, 1227):
        return SourceError(f"MariaDB {at}: {text}",
                           fix="grant the user SELECT, RELOAD, REPLICATION SLAVE, REPLICATION CLIENT "
                               "(BINLOG MONITOR), and CREATE TEMPORARY TABLES on the captured schemas")
    return SourceError(f"MariaDB {at}: {text}", fix="see the MariaDB error log for details")


def connect(settings: Any, role: str = "the primary", **extra: Any) -> Any:
    """An autocommit PyMySQL connection with the canonical session settings."""
    try:
        return pymysql.connect(**connect_kwargs(settings, **extra))
    except pymysql.err.Error as exc:
        raise source_error(settings, exc, role) from None


def query(conn: Any, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    """Run ``sql``; all rows."""
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def collations(conn: Any) -> dict[int, tuple[str, int]]:
    """Collation id -> (collation name, max bytes per character)."""
    rows = query(conn, "SELECT co.ID, co.COLLATION_NAME, cs.MAXLEN FROM information_schema.COLLATIONS co "
                       "JOIN information_schema.CHARACTER_SETS cs ON cs.CHARACTER_SET_NAME = co.CHARACTER_SET_NAME")
    return {int(r[0]): (str(r[1]), int(r[2])) for r in rows}


def variables(conn: Any, names: Sequence[str]) -> dict[str, str]:
    """Global variables by lower-case name."""
    marks = ", ".join(["%s"] * len(names))
    rows = query(conn, f"SELECT LOWER(VARIABLE_NAME), VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES "
                       f"WHERE VARIABLE_NAME IN ({marks})", [n.upper() for n in names])
    return {str(k): str(v) for k, v in rows}


def binary_logs(conn: Any) -> list[str]:
    """The binlog files the server holds, oldest first."""
    return [str(r[0]) for r in query(conn, "SHOW BINARY LOGS")]


def matched_tables(conn: Any, patterns: Sequence[str]) -> list[tuple[str, str]]:
    """(schema, table) of every base table whose ``schema.table`` matches one of ``patterns``."""
    rows = query(conn, "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES WHERE TABLE_TYPE = "
                       "'BASE TABLE' ORDER BY TABLE_SCHEMA, TABLE_NAME")
    return [(str(s), str(t)) for s, t in rows
            if str(s) not in SYSTEM_SCHEMAS and any(fnmatch.fnmatchcase(f"{s}.{t}", p) for p in patterns)]


def matches(table: str, patterns: Sequence[str]) -> bool:
    """True when ``schema.table`` matches one of the fnmatch ``patterns``."""
    return table.split(".", 1)[0] not in SYSTEM_SCHEMAS and any(fnmatch.fnmatchcase(table, p) for p in patterns)


@dataclass(frozen=True, slots=True)
class Shape:
    """A table's shape, from a table map or from the catalog: what :func:`table_meta` needs."""

    table: str
    names: tuple[str, ...]
    types: tuple[ColumnType, ...]
    nullable: tuple[bool, ...]
    key: tuple[str, ...]
    #: The AUTO_INCREMENT column, "" for none. A table map does not say it: the catalog does (:func:`table_facts`).
    auto_increment: str = ""


def table_meta(shape: Shape, position: str = "", hints: Sequence[tuple[int, str | None, str | None]] | None = None
               ) -> TableMeta:
    """THE TableMeta of a shape, for the stream and the snapshot alike (same shape, same meta, same version).

    A table without a primary key or a unique index on NOT NULL columns has identity ``full``: every
    column is a key column (in column order) and keeps its own nullability, and a standby matches one
    row per change on all its values (so UPDATEs and DELETEs replicate too, not only INSERTs).

    ``hints`` (stream only, right after DDL the capture followed): per column ``(column_id,
    default_expr, missing_value)``; see :mod:`producers.mariadb.ddl`.
    """
    identity = "key" if shape.key else "full"
    key = shape.key or shape.names
    columns = []
    for i, (name, ct, nullable) in enumerate(zip(shape.names, shape.types, shape.nullable, strict=True)):
        key_pos = key.index(name) + 1 if name in key else 0
        cid, default, missing = hints[i] if hints else (0, None, None)
        columns.append(Column(name, ct.neutral, ct.declared, nullable and not (key_pos and identity == "key"),
                              key_pos, default_expr=default, missing_value=missing, column_id=cid,
                              auto_increment=name == shape.auto_increment))
    # AUTO_INCREMENT enters the signature only where a column has it: the versions of other tables' shapes stay
    # those of earlier builds (a new version makes every standby compare its table again).
    sig = repr((shape.table, identity, [(c.name, c.type, c.source_type, c.nullable, c.key_position, c.default_expr,
                                         c.missing_value, c.column_id) + ((True,) if c.auto_increment else ())
                                        for c in columns]))
    return TableMeta(shape.table, tuple(columns), hashlib.sha256(sig.encode()).hexdigest()[:16], position, identity)


_COLUMNS_SQL = """
SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE,
       DATETIME_PRECISION, COLLATION_NAME, IS_NULLABLE, EXTRA
FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION
"""
_KEYS_SQL = """
SELECT s.INDEX_NAME, s.NON_UNIQUE, s.COLUMN_NAME, c.IS_NULLABLE
FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c
  ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME AND c.COLUMN_NAME = s.COLUMN_NAME
WHERE s.TABLE_SCHEMA = %s AND s.TABLE_NAME = %s
ORDER BY s.INDEX_NAME = 'PRIMARY' DESC, s.INDEX_NAME, s.SEQ_IN_INDEX
"""


def catalog_key(conn: Any, schema: str, table: str) -> tuple[str, ...]:
    """The replication key: the primary key, else the first unique index on NOT NULL columns, else ()."""
    indexes: dict[str, list[tuple[int, str, str]]] = {}
    for name, non_unique, column, nullable in query(conn, _KEYS_SQL, (schema, table)):
        indexes.setdefault(str(name), []).append((int(non_unique), str(column), str(nullable)))
    for name, cols in indexes.items():
        if all(nu == 0 for nu, _, _ in cols) and (name == "PRIMARY" or all(n == "NO" for _, _, n in cols)):
            return tuple(c for _, c, _ in cols)
    return ()


def catalog_shape(conn: Any, schema: str, table: str) -> Shape | None:
    """The shape of ``schema.table`` in the catalog as this connection sees it (None when it does not exist).

    Raises ValueError naming the column for a type Ark does not support.
    """
    rows = query(conn, _COLUMNS_SQL, (schema, table))
    if not rows:
        return None
    types = []
    for r in rows:
        try:
            types.append(from_catalog(str(r[1]), str(r[2]), r[3], r[4], r[5], r[6], r[7]))
        except ValueError as exc:
            raise ValueError(f"{schema}.{table}.{r[0]}: {exc}") from None
    auto = next((str(r[0]) for r in rows if "auto_increment" in str(r[9] or "").lower()), "")
    return Shape(f"{schema}.{table}", tuple(str(r[0]) for r in rows), tuple(types),
                 tuple(str(r[8]) == "YES" for r in rows), catalog_key(conn, schema, table), auto)


@dataclass(frozen=True, slots=True)
class TableFacts:
    """What the catalog says of a table that its binlog table maps do not."""

    #: information_schema's TABLE_TYPE: ``BASE TABLE``, ``SEQUENCE`` (whose changes the binlog also carries as
    #: rows of a table map: a sequence travels as SequenceValues instead), "" when the table is gone.
    kind: str
    #: The AUTO_INCREMENT column, "" for none.
    auto_increment: str


def table_facts(conn: Any, schema: str, table: str) -> TableFacts:
    """The catalog's :class:`TableFacts` of ``schema.table`` now (one query).

    The catalog, not the log: a capture reading old binlog learns today's AUTO_INCREMENT column. That property
    rarely changes, and a DDL the capture sees makes it ask again (:class:`producers.mariadb.shapes.Shapes`)."""
    rows = query(conn, "SELECT t.TABLE_TYPE, (SELECT c.COLUMN_NAME FROM information_schema.COLUMNS c WHERE "
                       "c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME AND c.EXTRA LIKE "
                       "'%%auto_increment%%' LIMIT 1) FROM information_schema.TABLES t WHERE t.TABLE_SCHEMA = %s "
                       "AND t.TABLE_NAME = %s", (schema, table))
    if not rows:
        return TableFacts("", "")
    kind, auto = rows[0]
    return TableFacts(_str(kind), _str(auto or ""))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
