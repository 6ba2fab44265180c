"""MariaDB column types: one :class:`ColumnType` per column, shared by the binlog and the snapshot.

A column's type is described once, as a :class:`ColumnType` (MariaDB's ``DATA_TYPE`` plus its
modifiers: unsigned, length, precision and scale, fractional seconds, collation, enum/set labels).
The binlog path builds it from a table-map event (:mod:`.tablemap`), the snapshot path from
``information_schema.COLUMNS`` (:mod:`.catalog`); both then use the same methods here:

* :attr:`ColumnType.neutral` and :attr:`ColumnType.declared` for the entry's ``Column.type`` /
  ``Column.source_type`` (so a table has the same :class:`~schemas.entries.TableMeta` both ways);
* :meth:`ColumnType.from_text` turns MariaDB's text form of a value into its engine-neutral value.
  The snapshot reads every value as text; the binlog decoder (:mod:`.values`) turns the binary
  row format into that same text for the types whose neutral value is text (decimals, dates and
  times, bit strings) and calls the same function, so a value is canonicalised in one place.

The type map (README "MariaDB"):

==============================  ===========  ==================================================
MariaDB                         neutral      value
==============================  ===========  ==================================================
tinyint, smallint, year         int16        int (unsigned smallint: int32)
mediumint, int                  int32        int (unsigned int: int64)
bigint                          int64        int; **bigint unsigned: decimal** (text; > 2^63-1)
decimal(p,s)                    decimal      canonical text with s fraction digits
float / double                  float32/64   float (a float's exact single-precision value)
bit(n)                          other        text of n binary digits, as PostgreSQL's bit(n)
date                            date         'YYYY-MM-DD'; zero dates kept as '0000-00-00'
datetime(p)                     timestamp    'YYYY-MM-DD HH:MM:SS[.ffffff]' (no trailing zeros)
timestamp(p)                    timestamptz  the same in UTC with '+00' ('0000-00-00 00:00:00+00')
time(p)                         time         '[-]HH:MM:SS[.ffffff]' (MariaDB allows ±838 h)
char, varchar, *text, enum, set string       str (set: labels in definition order, comma-joined)
binary, varbinary, *blob        bytes        bytes (binary(n) keeps its zero padding)
geometry                        bytes        bytes (MariaDB's SRID + WKB)
==============================  ===========  ==================================================

MariaDB's ``JSON`` is ``LONGTEXT`` with a ``json_valid`` check: the binlog cannot tell it from
another ``LONGTEXT``, so it travels as ``string``. ``BOOLEAN`` is ``tinyint(1)``: the binlog does
not carry display widths, so it travels as ``int16``. ``uuid``, ``inet4`` and ``inet6`` (stored in
a binary layout the binlog does not name) are refused (:data:`UNSUPPORTED`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from schemas.entries import Value

#: MariaDB data types Ark refuses, with why.
UNSUPPORTED: Final[dict[str, str]] = {
    "uuid": "the binlog carries MariaDB's UUID type as an unnamed binary(16) in a swapped byte order",
    "inet4": "the binlog does not name MariaDB's INET4 type",
    "inet6": "the binlog does not name MariaDB's INET6 type",
}

_INTS: Final[dict[str, tuple[str, str]]] = {  # data type -> (neutral signed, neutral unsigned)
    "tinyint": ("int16", "int16"),
    "smallint": ("int16", "int32"),
    "mediumint": ("int32", "int32"),
    "int": ("int32", "int64"),
    "bigint": ("int64", "decimal"),
    "year": ("int16", "int16"),
}
_TEXTS: Final = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"})
_BINARIES: Final = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_TEMPORAL: Final[dict[str, str]] = {"date": "date", "datetime": "timestamp", "timestamp": "timestamptz",
                                     "time": "time"}
#: BLOB/TEXT flavour by the length prefix size of the table map (1..4 bytes).
BLOB_BY_SIZE: Final[dict[int, tuple[str, str]]] = {1: ("tinytext", "tinyblob"), 2: ("text", "blob"),
                                                   3: ("mediumtext", "mediumblob"), 4: ("longtext", "longblob")}


def quote_label(label: str) -> str:
    """An enum/set label as a MariaDB string literal."""
    return "'" + label.replace("\\", "\\\\").replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class ColumnType:
    """One MariaDB column type (see the module docstring)."""

    data_type: str
    unsigned: bool = False
    #: characters for char/varchar/binary/varbinary, digits for bit
    length: int = 0
    precision: int = 0
    scale: int = 0
    #: fractional seconds digits of datetime/timestamp/time
    fsp: int = 0
    #: collation of a character column ('' for others); ``binary`` columns have none
    collation: str = ""
    labels: tuple[str, ...] = field(default=())

    @property
    def neutral(self) -> str:
        """The engine-neutral type name."""
        t = self.data_type
        if t in _INTS:
            signed, unsigned = _INTS[t]
            return unsigned if self.unsigned else signed
        if t == "decimal":
            return "decimal"
        if t in ("float", "double"):
            return "float32" if t == "float" else "float64"
        if t in _TEMPORAL:
            return _TEMPORAL[t]
        if t in _TEXTS:
            return "string"
        if t in _BINARIES or t == "geometry":
            return "bytes"
        return "other"

    @property
    def declared(self) -> str:
        """MariaDB's type as it would be declared (display widths left out; the binlog lacks them)."""
        t = self.data_type
        if t in _INTS and t != "year":
            return f"{t} unsigned" if self.unsigned else t
        if t == "decimal":
            return f"decimal({self.precision},{self.scale}){' unsigned' if self.unsigned else ''}"
        if t in ("float", "double"):
            return f"{t} unsigned" if self.unsigned else t
        if t in ("datetime", "timestamp", "time"):
            return f"{t}({self.fsp})" if self.fsp else t
        if t in ("char", "varchar", "binary", "varbinary", "bit"):
            base = f"{t}({self.length})"
        elif t in ("enum", "set"):
            base = f"{t}(" + ",".join(quote_label(label) for label in self.labels) + ")"
        else:
            base = t
        return f"{base} collate {self.collation}" if self.collation else base

    @property
    def binary(self) -> bool:
        """True when values are bytes on the wire (binary strings, bit, geometry), not text."""
        return self.data_type in _BINARIES or self.data_type in ("bit", "geometry")

    def text_expr(self, column_sql: str) -> str:
        """The SELECT expression whose result :meth:`from_text` takes (a float read as its exact double)."""
        return f"CAST({column_sql} AS DOUBLE)" if self.data_type == "float" else column_sql

    def from_text(self, raw: bytes) -> Value:
        """The neutral value of MariaDB's text form of a value of this type (see the module docstring)."""
        t = self.data_type
        if t in _INTS:
            return int(raw) if not (t == "bigint" and self.unsigned) else raw.decode()
        if t in _TEXTS:
            return raw.decode("utf-8")
        if t == "binary":  # the binlog drops the zero padding that a SELECT returns: restore it
            return bytes(raw).ljust(self.length, b"\0")
        if t in _BINARIES or t == "geometry":
            return bytes(raw)
        if t in ("float", "double"):
            return float(raw)
        if t == "decimal":
            return raw.decode()
        if t == "bit":
            return bits_text(raw, self.length)
        if t in ("datetime", "time"):
            return trim_fraction(raw.decode())
        if t == "timestamp":
            return trim_fraction(raw.decode()) + "+00"
        if t == "date":
            return raw.decode()
        raise ValueError(f"no conversion for MariaDB type {t}")


def bits_text(raw: bytes, length: int) -> str:
    """A BIT(n) value (big-endian bytes) as n binary digits."""
    return format(int.from_bytes(raw, "big"), "b").zfill(length)[-length:] if length else ""


def trim_fraction(text: str) -> str:
    """Drop trailing zeros of fractional seconds (and the dot), as PostgreSQL prints them."""
    if "." not in text:
        return text
    text = text.rstrip("0")
    return text[:-1] if text.endswith(".") else text


_PARENS = re.compile(r"^(\w+)(?:\((.*)\))?(.*)$", re.S)


def parse_labels(inside: str) -> tuple[str, ...]:
    """The labels of ``'a','b''c'`` (the inside of enum(...)/set(...) in COLUMN_TYPE)."""
    labels: list[str] = []
    i, n = 0, len(inside)
    while i < n:
        if inside[i] != "'":
            i += 1
            continue
        i += 1
        buf: list[str] = []
        while i < n:
            ch = inside[i]
            if ch == "'" and i + 1 < n and inside[i + 1] == "'":
                buf.append("'")
                i += 2
            elif ch == "\\" and i + 1 < n:
                buf.append(inside[i + 1])
                i += 2
            elif ch == "'":
                i += 1
                break
            else:
                buf.append(ch)
                i += 1
        labels.append("".join(buf))
    return labels and tuple(labels) or ()


def from_catalog(data_type: str, column_type: str, char_length: int | None, precision: int | None,
                 scale: int | None, fsp: int | None, collation: str | None) -> ColumnType:
    """The ColumnType of one row of ``information_schema.COLUMNS``.

    Raises ValueError for the types in :data:`UNSUPPORTED`.
    """
    t = data_type.lower()
    if t in UNSUPPORTED:
        raise ValueError(f"type {t} is not supported: {UNSUPPORTED[t]}")
    match = _PARENS.match(column_type.strip())
    inside = match.group(2) if match and match.group(2) else ""
    unsigned = "unsigned" in column_type.lower()
    coll = collation or ""
    if t in _INTS:
        return ColumnType(t, unsigned=unsigned and t != "year")
    if t == "decimal":
        return ColumnType(t, unsigned=unsigned, precision=int(precision or 10), scale=int(scale or 0))
    if t in ("float", "double"):
        return ColumnType(t, unsigned=unsigned)
    if t in ("datetime", "timestamp", "time"):
        return ColumnType(t, fsp=int(fsp or 0))
    if t == "date":
        return ColumnType(t)
    if t == "bit":
        return ColumnType(t, length=int(precision or inside or 1))
    if t in ("char", "varchar", "binary", "varbinary"):
        return ColumnType(t, length=int(char_length or 0), collation=coll if t in _TEXTS else "")
    if t in ("enum", "set"):
        return ColumnType(t, collation=coll, labels=parse_labels(inside))
    if t in _TEXTS or t in _BINARIES:
        return ColumnType(t, collation=coll if t in _TEXTS else "")
    if t in ("geometry", "point", "linestring", "polygon", "multipoint", "multilinestring", "multipolygon",
             "geometrycollection"):
        return ColumnType("geometry")
    raise ValueError(f"type {t} ({column_type}) is not supported")
