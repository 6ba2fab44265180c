"""SQL of the MariaDB standby: identifiers, column types, row statements and value parameters.

Table names in entries are ``schema.table``; on a MariaDB standby the schema is a database.
Identifiers are always quoted with backticks. Values are bound as PyMySQL parameters (escaped by the
driver, never formatted into SQL by hand), converted per column by :func:`param_converters`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from decimal import Decimal

from schemas.entries import Column, TableMeta, Value

Param = None | int | float | str | bytes


def quote_ident(name: str) -> str:
    """A MariaDB identifier in backticks."""
    return "`" + name.replace("`", "``") + "`"


def split_table(table: str) -> tuple[str, str]:
    """(schema, table) of ``schema.table``."""
    schema, sep, name = table.partition(".")
    if not sep or not schema or not name:
        raise ValueError(f"table name {table!r} is not schema.table")
    return schema, name


def qualified(table: str) -> str:
    """``schema.table`` quoted."""
    schema, name = split_table(table)
    return f"{quote_ident(schema)}.{quote_ident(name)}"


_KEYABLE_TEXT = re.compile(r"^(tiny|medium|long)?(text|blob)\b")

#: Declared types as a MariaDB capture writes them (``ColumnType.declared``), by the neutral type they carry.
#: A column whose ``source_type`` is one of these for its neutral type is created exactly so; any other
#: (another engine's column) is created from its neutral type (:func:`mapped_type`).
_NATIVE: dict[str, re.Pattern[str]] = {name: re.compile(pattern) for name, pattern in {
    "int16": r"^(tinyint( unsigned)?|smallint|year)$",
    "int32": r"^(smallint unsigned|mediumint( unsigned)?|int)$",
    "int64": r"^(int unsigned|bigint)$",
    "decimal": r"^(bigint unsigned|decimal\(\d+,\d+\)( unsigned)?)$",
    "float32": r"^float( unsigned)?$",
    "float64": r"^double( unsigned)?$",
    "date": r"^date$",
    "timestamp": r"^datetime(\(\d\))?$",
    "timestamptz": r"^timestamp(\(\d\))?$",
    "time": r"^time(\(\d\))?$",
    "string": r"^((var)?char\(\d+\)|(tiny|medium|long)?text|(enum|set)\(.*\)) collate \w+$",
    "bytes": r"^((var)?binary\(\d+\)|(tiny|medium|long)?blob|geometry)$",
    "other": r"^bit\(\d+\)$",
}.items()}

#: Collation of strings from another engine: exact (bytes, case and trailing spaces count), as keys compare
#: there (MariaDB's default collations would call 'a', 'A' and 'a ' the same key).
FOREIGN_COLLATION = "utf8mb4_nopad_bin"

#: neutral type -> MariaDB type, for columns whose declared type is another engine's.
_NEUTRAL: dict[str, str] = {
    "int16": "smallint", "int32": "int", "int64": "bigint", "float32": "float", "float64": "double",
    "decimal": "decimal(65,30)", "string": "longtext", "bytes": "longblob", "boolean": "boolean",
    "date": "date", "time": "time(6)", "timestamp": "datetime(6)", "timestamptz": "datetime(6)",
    "uuid": "uuid", "json": "longtext", "interval": "varchar(255)", "other": "longtext",
}
_PRECISION = re.compile(r"^(?:numeric|decimal)\((\d+),(\d+)\)")
_LENGTH = re.compile(r"^(?:character varying|varchar|character|char)\((\d+)\)")


def is_native(col: Column) -> bool:
    """True when ``col``'s declared type is MariaDB's own for its neutral type (a MariaDB source)."""
    pattern = _NATIVE.get(col.type)
    return pattern is not None and pattern.match(col.source_type.strip().lower()) is not None


def mapped_type(col: Column) -> str:
    """The MariaDB type of another engine's column, from its neutral type (README "Cross-engine apply").

    A declared precision (``numeric(12,2)``) or length (``character varying(20)``) is kept where MariaDB has
    it; strings get an exact collation.
    """
    declared = col.source_type.strip().lower()
    if col.type == "decimal":
        m = _PRECISION.match(declared)
        if m and 0 < int(m[1]) <= 65 and 0 <= int(m[2]) <= min(30, int(m[1])):
            return f"decimal({m[1]},{m[2]})"
    if col.type == "string":
        m = _LENGTH.match(declared)
        length = int(m[1]) if m else 0
        base = f"varchar({length})" if 0 < length <= 16383 else "longtext"
        return f"{base} character set utf8mb4 collate {FOREIGN_COLLATION}"
    if col.type in ("json", "other", "interval"):
        return f"{_NEUTRAL[col.type]} character set utf8mb4 collate {FOREIGN_COLLATION}"
    return _NEUTRAL.get(col.type, f"longtext character set utf8mb4 collate {FOREIGN_COLLATION}")


def column_type(col: Column, identity: str = "key") -> str:
    """The standby column's MariaDB type: the declared type of a MariaDB source (collation included), else
    the neutral type's (:func:`mapped_type`). A TEXT/BLOB key gets a bounded type (MariaDB keys need one)."""
    typ = col.source_type if is_native(col) else mapped_type(col)
    if col.key_position and identity == "key" and _KEYABLE_TEXT.match(typ):
        typ = _KEYABLE_TEXT.sub(lambda m: "varbinary(3072)" if m.group(2) == "blob" else "varchar(768)", typ, 1)
    return typ


_CHARSET = re.compile(r" character set \w+")


def catalog_form(typ: str) -> str:
    """A type as :func:`consumers.mariadb.ddl.normalise` reads it back from the catalog (to compare them)."""
    typ = _CHARSET.sub("", typ.strip().lower())
    return "tinyint" if typ in ("boolean", "bool") else typ


def column_sql(col: Column, identity: str = "key") -> str:
    """``name type [NOT NULL]`` (no defaults: every replicated row carries all its values)."""
    return f"{quote_ident(col.name)} {column_type(col, identity)}{'' if col.nullable else ' NOT NULL'}"


def needs_own_index(meta: TableMeta, column: str) -> bool:
    """True when ``column`` is not the first column of ``meta``'s primary key on the standby: an AUTO_INCREMENT
    column must lead an index (error 1075), so it gets one of its own."""
    key = meta.key_columns if meta.identity == "key" else ()
    return not key or key[0].name.casefold() != column.casefold()


def create_table_sql(meta: TableMeta, name: str | None = None, *, keyed: bool = True) -> str:
    """CREATE TABLE for ``meta`` (InnoDB, the key as primary key; none for identity "full" or ``keyed=False``).

    A column the source says is AUTO_INCREMENT gets it (with an index of its own when it does not lead the
    key), except in an unkeyed copy (``keyed=False``: a staging table, which must take any explicit value)."""
    cols = [column_sql(c, meta.identity) + (" AUTO_INCREMENT" if keyed and c.auto_increment else "")
            for c in meta.columns]
    key = [quote_ident(c.name) for c in meta.key_columns]
    if key and keyed and meta.identity == "key":
        cols.append("PRIMARY KEY (" + ", ".join(key) + ")")
    cols += [f"KEY ({quote_ident(c.name)})" for c in meta.columns
             if keyed and c.auto_increment and needs_own_index(meta, c.name)]
    return f"CREATE TABLE {name or qualified(meta.table)} (" + ", ".join(cols) + ") ENGINE=InnoDB"


def insert_sql(meta: TableMeta, cols: Sequence[int], into: str | None = None) -> str:
    """INSERT of the columns ``cols`` (one row; PyMySQL's executemany makes it multi-row)."""
    names = ", ".join(quote_ident(meta.columns[i].name) for i in cols)
    marks = ", ".join(["%s"] * len(cols))
    return f"INSERT INTO {into or qualified(meta.table)} ({names}) VALUES ({marks})"


def key_where(meta: TableMeta) -> str:
    """``k1 = %s AND k2 = %s`` (NULL-safe ``<=>``: a unique key may hold NULLs in a keyless copy)."""
    return " AND ".join(f"{quote_ident(c.name)} <=> %s" for c in meta.key_columns)


#: Strings of a table without a unique key are matched exactly: bytes, trailing spaces and case count (the
#: column's own collation may call 'a', 'A' and 'a ' equal, and the change names one row among them).
EXACT_COLLATION = "utf8mb4_nopad_bin"


def full_where(meta: TableMeta) -> str:
    """Every column ``<=>`` its old value: one row of an identity-"full" table (parameters: the old row)."""
    return " AND ".join(f"{quote_ident(c.name)} <=> %s" + (f" COLLATE {EXACT_COLLATION}" if c.type == "string"
                                                             else "") for c in meta.columns)


def full_update_sql(meta: TableMeta) -> str:
    """UPDATE of ONE row of an identity-"full" table found by all its old values (identical rows: any one)."""
    sets = ", ".join(f"{quote_ident(c.name)} = %s" for c in meta.columns)
    return f"UPDATE {qualified(meta.table)} SET {sets} WHERE {full_where(meta)} LIMIT 1"


def full_delete_sql(meta: TableMeta) -> str:
    """DELETE of ONE row of an identity-"full" table found by all its values (identical rows: any one)."""
    return f"DELETE FROM {qualified(meta.table)} WHERE {full_where(meta)} LIMIT 1"


def update_sql(meta: TableMeta, cols: Sequence[int]) -> str:
    """UPDATE of the columns ``cols`` located by the old key."""
    sets = ", ".join(f"{quote_ident(meta.columns[i].name)} = %s" for i in cols)
    return f"UPDATE {qualified(meta.table)} SET {sets} WHERE {key_where(meta)}"


def delete_sql(meta: TableMeta) -> str:
    """DELETE of one row by key."""
    return f"DELETE FROM {qualified(meta.table)} WHERE {key_where(meta)}"


def delete_many_sql(meta: TableMeta, n: int) -> str:
    """DELETE of ``n`` rows by key in one statement (row-value IN list)."""
    keys = meta.key_columns
    one = "(" + ", ".join(["%s"] * len(keys)) + ")"
    names = "(" + ", ".join(quote_ident(c.name) for c in keys) + ")"
    return f"DELETE FROM {qualified(meta.table)} WHERE {names} IN (" + ", ".join([one] * n) + ")"


def count_keys_sql(meta: TableMeta, n: int) -> str:
    """How many of ``n`` keys exist (to check a set-based UPDATE finds every row)."""
    keys = meta.key_columns
    one = "(" + ", ".join(["%s"] * len(keys)) + ")"
    names = "(" + ", ".join(quote_ident(c.name) for c in keys) + ")"
    return f"SELECT COUNT(*) FROM {qualified(meta.table)} WHERE {names} IN (" + ", ".join([one] * n) + ")"


def upsert_sql(meta: TableMeta, cols: Sequence[int]) -> str:
    """INSERT ... ON DUPLICATE KEY UPDATE of full rows (a set-based UPDATE whose rows were checked to exist)."""
    names = [quote_ident(meta.columns[i].name) for i in cols]
    keyset = {c.name for c in meta.key_columns}
    sets = ", ".join(f"{n} = VALUES({n})" for i, n in zip(cols, names, strict=True)
                     if meta.columns[i].name not in keyset)
    marks = ", ".join(["%s"] * len(cols))
    return (f"INSERT INTO {qualified(meta.table)} ({', '.join(names)}) VALUES ({marks}) "
            f"ON DUPLICATE KEY UPDATE {sets or names[0] + ' = ' + names[0]}")


class UnrepresentableValue(ValueError):
    """A value that the standby column cannot represent (named by the caller)."""


def _timestamptz(value: Value) -> Param:
    if isinstance(value, str):
        if value.endswith("+00"):
            return value[:-3]
        if value.endswith("+00:00"):
            return value[:-6]
        raise UnrepresentableValue("a timestamp that is not in UTC")
    return value  # type: ignore[return-value]


def _bits(value: Value) -> Param:
    if isinstance(value, str):
        return int(value, 2) if value else 0
    return value  # type: ignore[return-value]


def _plain(value: Value) -> Param:
    return value  # type: ignore[return-value]


def _exact_decimal(value: Value) -> Param | Decimal:
    # Bound as a decimal literal, not a string: MariaDB compares a string with a number as DOUBLE, which
    # would match a key or row that differs only beyond the 15th digit (bigint unsigned, decimal(30,...)).
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            raise UnrepresentableValue("a value that is not a decimal number") from None
        if not number.is_finite():
            raise UnrepresentableValue("MariaDB's DECIMAL holds finite numbers only")
        return number
    return value  # type: ignore[return-value]


_DATE = re.compile(r"^\d{4}-\d\d-\d\d$")
_DATETIME = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d{1,6})?$")
_TIME = re.compile(r"^-?\d{1,3}:\d\d:\d\d(\.\d{1,6})?$")


def _checked(pattern: re.Pattern[str], what: str) -> Callable[[Value], Param]:
    def check(value: Value) -> Param:
        if isinstance(value, str) and not pattern.match(value):
            raise UnrepresentableValue(f"a {what} outside what MariaDB stores (infinity, a BC or 5-digit year, "
                                       "a time zone other than UTC, more than 6 fraction digits)")
        return value  # type: ignore[return-value]
    return check


def _foreign_timestamptz(value: Value) -> Param:
    return _checked(_DATETIME, "timestamp")(_timestamptz(value))


def _float(value: Value) -> Param:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise UnrepresentableValue("MariaDB's FLOAT and DOUBLE hold finite numbers only")
    return value  # type: ignore[return-value]


def _boolean(value: Value) -> Param:
    if isinstance(value, str):
        if value.lower() in ("t", "true", "1"):
            return 1
        if value.lower() in ("f", "false", "0"):
            return 0
        raise UnrepresentableValue("a boolean that is neither true nor false")
    return int(value) if isinstance(value, bool) else value  # type: ignore[return-value]


#: Checks of another engine's values that MariaDB would reject or change (by neutral type).
_FOREIGN: dict[str, Callable[[Value], Param | Decimal]] = {
    "date": _checked(_DATE, "date"), "timestamp": _checked(_DATETIME, "timestamp"),
    "timestamptz": _foreign_timestamptz, "time": _checked(_TIME, "time"), "float32": _float, "float64": _float,
    "boolean": _boolean, "decimal": _exact_decimal,
}


_TEMPORAL = frozenset({"date", "timestamp", "timestamptz", "time"})


def _fitting_decimal(precision: int, scale: int) -> Callable[[Value], Param | Decimal]:
    """A decimal check for another engine's column mapped to ``decimal(precision,scale)``: MariaDB would round
    extra fraction digits with only a note, even in strict mode, which is a silent change."""
    def check(value: Value) -> Param | Decimal:
        number = _exact_decimal(value)
        if isinstance(number, Decimal):
            exponent = number.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > scale:
                raise UnrepresentableValue(f"more than {scale} fraction digits (the column is decimal({precision},"
                                           f"{scale}))")
            if number.adjusted() >= precision - scale:
                raise UnrepresentableValue(f"more than {precision - scale} integer digits (the column is decimal("
                                           f"{precision},{scale}))")
        return number
    return check


_DECIMAL_TYPE = re.compile(r"^decimal\((\d+),(\d+)\)")


def param_converter(col: Column) -> Callable[[Value], Param | Decimal]:
    """How a neutral value of ``col`` is bound on MariaDB (session time zone is UTC).

    Values of another engine's columns are checked first: one MariaDB cannot store exactly raises
    :class:`UnrepresentableValue` (the caller names the column), never a silent change.
    """
    if col.type == "decimal" and not is_native(col):
        m = _DECIMAL_TYPE.match(mapped_type(col))
        if m:
            return _fitting_decimal(int(m[1]), int(m[2]))
    if col.type in _TEMPORAL or (not is_native(col) and col.type in _FOREIGN):
        return _FOREIGN[col.type]  # temporal texts are checked whatever their source: 'date' is both engines' type
    if col.type == "other" and col.source_type.startswith("bit("):
        return _bits
    if col.type == "decimal":
        return _exact_decimal
    return _plain


def param_converters(meta: TableMeta) -> tuple[Callable[[Value], Param | Decimal], ...]:
    """One converter per column of ``meta``."""
    return tuple(param_converter(c) for c in meta.columns)
