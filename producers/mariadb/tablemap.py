"""MariaDB table-map events: the shape of a table as the binlog states it at that point of the log.

With ``binlog_row_metadata=FULL`` (MariaDB >= 10.5) every table-map event carries, besides the
column types and their binary metadata, the column names, signedness, collations, enum/set labels
and the primary key. So the shape of a row event is known exactly from the log itself, whatever
the catalog says *now* (capture may lag behind later DDL): :func:`parse_table_map` builds the
:class:`~producers.mariadb.types.ColumnType` of every column from it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from producers.mariadb.types import BLOB_BY_SIZE, ColumnType

# MYSQL_TYPE_* codes (include/mysql_com.h)
DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, NULL, TIMESTAMP, LONGLONG, INT24 = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9
DATE, TIME, DATETIME, YEAR, NEWDATE, VARCHAR, BIT = 10, 11, 12, 13, 14, 15, 16
TIMESTAMP2, DATETIME2, TIME2 = 17, 18, 19
JSON, NEWDECIMAL, ENUM, SET, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, BLOB = 245, 246, 247, 248, 249, 250, 251, 252
VAR_STRING, STRING, GEOMETRY = 253, 254, 255

_NUMERIC = frozenset({DECIMAL, TINY, SHORT, LONG, FLOAT, DOUBLE, LONGLONG, INT24, NEWDECIMAL})
_INT_NAMES = {TINY: "tinyint", SHORT: "smallint", INT24: "mediumint", LONG: "int", LONGLONG: "bigint"}
BINARY_COLLATION = 63

# optional metadata field types (sql/log_event.h, enum_optional_metadata_field_type)
_SIGNEDNESS, _DEFAULT_CHARSET, _COLUMN_CHARSET, _COLUMN_NAME = 1, 2, 3, 4
_SET_STR_VALUE, _ENUM_STR_VALUE, _GEOMETRY_TYPE, _SIMPLE_PRIMARY_KEY, _PRIMARY_KEY_WITH_PREFIX = 5, 6, 7, 8, 9
_ENUM_AND_SET_DEFAULT_CHARSET, _ENUM_AND_SET_COLUMN_CHARSET = 10, 11


class TableMapError(ValueError):
    """A table-map event Ark cannot use (no column names: binlog_row_metadata is not FULL)."""


@dataclass(frozen=True, slots=True)
class RawColumn:
    """One column of a table map: its binlog type code and binary metadata."""

    code: int  # the real type (ENUM/SET/STRING resolved from a STRING column's metadata)
    meta: int  # VARCHAR/STRING: max bytes; BLOB: length size; NEWDECIMAL: precision<<8|scale; BIT: bits;
    #            temporal 2-types: fsp; ENUM/SET: pack length; FLOAT/DOUBLE: pack length


@dataclass(frozen=True, slots=True)
class TableMap:
    """What a table-map event says about one table."""

    table_id: int
    schema: str
    table: str
    names: tuple[str, ...]
    raw: tuple[RawColumn, ...]
    types: tuple[ColumnType, ...]
    nullable: tuple[bool, ...]
    primary_key: tuple[int, ...]

    @property
    def qualified(self) -> str:
        """``schema.table`` as in entries and patterns."""
        return f"{self.schema}.{self.table}"


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def u8(self) -> int:
        v = self.data[self.pos]
        self.pos += 1
        return v

    def take(self, n: int) -> bytes:
        v = self.data[self.pos:self.pos + n]
        if len(v) != n:
            raise TableMapError("table-map event is truncated")
        self.pos += n
        return v

    def lenenc(self) -> int:
        first = self.u8()
        if first < 0xFB:
            return first
        if first == 0xFC:
            return int.from_bytes(self.take(2), "little")
        if first == 0xFD:
            return int.from_bytes(self.take(3), "little")
        if first == 0xFE:
            return int.from_bytes(self.take(8), "little")
        raise TableMapError(f"bad length-encoded integer 0x{first:02x}")

    def lenenc_bytes(self) -> bytes:
        return self.take(self.lenenc())

    def at_end(self) -> bool:
        return self.pos >= len(self.data)


def _raw_columns(codes: bytes, r: _Reader) -> list[RawColumn]:
    out = []
    for code in codes:
        meta = 0
        if code in (VARCHAR, VAR_STRING):
            meta = struct.unpack("<H", r.take(2))[0]
        elif code == STRING:
            b0, b1 = r.u8(), r.u8()
            real = b0 if (b0 & 0x30) == 0x30 else (b0 | 0x30)
            if real in (ENUM, SET):
                out.append(RawColumn(real, b1))
                continue
            code, meta = STRING, (((b0 & 0x30) ^ 0x30) << 4) | b1
        elif code == NEWDECIMAL:
            precision, scale = r.u8(), r.u8()
            meta = precision << 8 | scale
        elif code == BIT:
            bits, nbytes = r.u8(), r.u8()
            meta = nbytes * 8 + bits
        elif code in (BLOB, GEOMETRY, JSON, FLOAT, DOUBLE, TIMESTAMP2, DATETIME2, TIME2, TINY_BLOB, MEDIUM_BLOB,
                      LONG_BLOB):
            meta = r.u8()
        elif code in (ENUM, SET):
            meta = struct.unpack("<H", r.take(2))[0] & 0xFF
        out.append(RawColumn(code, meta))
    return out


def _is_character(c: RawColumn) -> bool:
    return c.code in (STRING, VAR_STRING, VARCHAR, BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB)


def _charsets(r: _Reader, length: int, indexes: list[int]) -> dict[int, int]:
    """DEFAULT_CHARSET: a default collation, then (index among the columns, collation) exceptions."""
    end = r.pos + length
    default = r.lenenc()
    out = {i: default for i in indexes}
    while r.pos < end:
        nth, coll = r.lenenc(), r.lenenc()
        if nth < len(indexes):
            out[indexes[nth]] = coll
    return out


def _labels(r: _Reader, length: int) -> list[tuple[str, ...]]:
    end = r.pos + length
    out = []
    while r.pos < end:
        count = r.lenenc()
        out.append(tuple(r.lenenc_bytes().decode("utf-8", "replace") for _ in range(count)))
    return out


def parse_table_map(body: bytes, table_id_size: int, collations: Mapping[int, tuple[str, int]]) -> TableMap:
    """Parse a table-map event body (after the common header, without checksum).

    ``collations`` maps collation ids to (collation name, max bytes per character).
    """
    r = _Reader(body)
    table_id = int.from_bytes(r.take(table_id_size), "little")
    r.take(2)  # flags
    schema = r.take(r.u8()).decode()
    r.take(1)
    table = r.take(r.u8()).decode()
    r.take(1)
    count = r.lenenc()
    codes = r.take(count)
    meta_len = r.lenenc()
    meta_reader = _Reader(r.take(meta_len))
    raw = _raw_columns(codes, meta_reader)
    null_bits = r.take((count + 7) // 8)
    nullable = tuple(bool(null_bits[i // 8] & (1 << (i % 8))) for i in range(count))
    names: list[str] = []
    unsigned: set[int] = set()
    colls: dict[int, int] = {}
    enum_labels: list[tuple[str, ...]] = []
    set_labels: list[tuple[str, ...]] = []
    pk: list[int] = []
    char_idx = [i for i, c in enumerate(raw) if _is_character(c)]
    enum_set_idx = [i for i, c in enumerate(raw) if c.code in (ENUM, SET)]
    while not r.at_end():
        kind, length = r.u8(), r.lenenc()
        start = r.pos
        if kind == _SIGNEDNESS:
            bits = r.take(length)
            numeric = [i for i, c in enumerate(raw) if c.code in _NUMERIC]
            unsigned = {col for n, col in enumerate(numeric) if bits[n // 8] & (0x80 >> (n % 8))}
        elif kind == _DEFAULT_CHARSET:
            colls.update(_charsets(r, length, char_idx))
        elif kind == _COLUMN_CHARSET:
            for i in char_idx:
                colls[i] = r.lenenc()
        elif kind == _ENUM_AND_SET_DEFAULT_CHARSET:
            colls.update(_charsets(r, length, enum_set_idx))
        elif kind == _ENUM_AND_SET_COLUMN_CHARSET:
            for i in enum_set_idx:
                colls[i] = r.lenenc()
        elif kind == _COLUMN_NAME:
            names = [r.lenenc_bytes().decode("utf-8") for _ in range(count)]
        elif kind == _ENUM_STR_VALUE:
            enum_labels = _labels(r, length)
        elif kind == _SET_STR_VALUE:
            set_labels = _labels(r, length)
        elif kind == _SIMPLE_PRIMARY_KEY:
            end = start + length
            while r.pos < end:
                pk.append(r.lenenc())
        elif kind == _PRIMARY_KEY_WITH_PREFIX:
            end = start + length
            while r.pos < end:
                pk.append(r.lenenc())
                r.lenenc()  # prefix length: a key on a prefix still identifies the row by the whole column
        r.pos = start + length
    if len(names) != count:
        raise TableMapError(f"the table map of {schema}.{table} carries no column names: "
                            "binlog_row_metadata must be FULL")
    enums, sets = iter(enum_labels), iter(set_labels)
    types = []
    for i, c in enumerate(raw):
        labels = next(enums, ()) if c.code == ENUM else next(sets, ()) if c.code == SET else ()
        coll = colls.get(i, 0)
        types.append(column_type(c, i in unsigned, coll, labels, collations))
    return TableMap(table_id, schema, table, tuple(names), tuple(raw), tuple(types), nullable, tuple(pk))


def column_type(c: RawColumn, unsigned: bool, collation_id: int, labels: tuple[str, ...],
                collations: Mapping[int, tuple[str, int]]) -> ColumnType:
    """The ColumnType of one table-map column (the same one :mod:`.catalog` builds from the catalog)."""
    code = c.code
    if code in _INT_NAMES:
        return ColumnType(_INT_NAMES[code], unsigned=unsigned)
    if code == YEAR:
        return ColumnType("year")
    if code == NEWDECIMAL:
        return ColumnType("decimal", unsigned=unsigned, precision=c.meta >> 8, scale=c.meta & 0xFF)
    if code in (FLOAT, DOUBLE):
        return ColumnType("float" if code == FLOAT else "double", unsigned=unsigned)
    if code in (DATE, NEWDATE):
        return ColumnType("date")
    if code in (DATETIME2, DATETIME):
        return ColumnType("datetime", fsp=c.meta if code == DATETIME2 else 0)
    if code in (TIMESTAMP2, TIMESTAMP):
        return ColumnType("timestamp", fsp=c.meta if code == TIMESTAMP2 else 0)
    if code in (TIME2, TIME):
        return ColumnType("time", fsp=c.meta if code == TIME2 else 0)
    if code == BIT:
        return ColumnType("bit", length=c.meta)
    if code in (ENUM, SET):
        name, _ = collations.get(collation_id, ("", 1))
        return ColumnType("enum" if code == ENUM else "set", collation=name, labels=labels)
    if code == GEOMETRY:
        return ColumnType("geometry")
    binary = collation_id == BINARY_COLLATION
    name, maxlen = collations.get(collation_id, ("", 1))
    if code in (VARCHAR, VAR_STRING, STRING):
        chars = c.meta // (1 if binary else max(1, maxlen))
        if code == STRING:
            return ColumnType("binary" if binary else "char", length=chars, collation="" if binary else name)
        return ColumnType("varbinary" if binary else "varchar", length=chars, collation="" if binary else name)
    if code in (BLOB, TINY_BLOB, MEDIUM_BLOB, LONG_BLOB, JSON):
        text, blob = BLOB_BY_SIZE.get(c.meta, ("longtext", "longblob"))
        return ColumnType(blob) if binary else ColumnType(text, collation=name)
    raise TableMapError(f"MariaDB column type code {code} is not supported")
