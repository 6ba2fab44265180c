"""PostgreSQL types: OID + typmod -> neutral type and declared type text, and text -> typed value.

pgoutput sends every value in its text output form. Only a few types become native values:
integers -> ``int``, booleans -> ``bool``, float4/float8 -> ``float`` (``NaN`` and ``Infinity``
stay floats), bytea (hex output) -> ``bytes``. Everything else keeps its canonical text (``str``):
numeric (no precision lost), dates and times (the capture session runs with DateStyle=ISO and
TimeZone=UTC), json, uuid, arrays, enums, intervals, network types.

:func:`converters` builds one function per column once per relation; applying them to a row is a
single list comprehension.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from typing import Final

from schemas.entries import Value

Converter = Callable[[bytes], Value]

# Builtin type OIDs (pg_type.h); these never change between releases.
BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, XML, FLOAT4, FLOAT8, MONEY, BPCHAR, VARCHAR = 114, 142, 700, 701, 790, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
BIT, VARBIT, NUMERIC, UUID, JSONB = 1560, 1562, 1700, 2950, 3802

#: OID -> (neutral type, SQL type name used in ``source_type``).
_BUILTIN: Final[dict[int, tuple[str, str]]] = {
    BOOL: ("boolean", "boolean"),
    BYTEA: ("bytes", "bytea"),
    CHAR: ("string", '"char"'),
    NAME: ("string", "name"),
    INT8: ("int64", "bigint"),
    INT2: ("int16", "smallint"),
    INT4: ("int32", "integer"),
    TEXT: ("string", "text"),
    OID: ("int64", "oid"),
    JSON: ("json", "json"),
    XML: ("string", "xml"),
    FLOAT4: ("float32", "real"),
    FLOAT8: ("float64", "double precision"),
    MONEY: ("other", "money"),
    BPCHAR: ("string", "character"),
    VARCHAR: ("string", "character varying"),
    DATE: ("date", "date"),
    TIME: ("time", "time without time zone"),
    TIMESTAMP: ("timestamp", "timestamp without time zone"),
    TIMESTAMPTZ: ("timestamptz", "timestamp with time zone"),
    INTERVAL: ("interval", "interval"),
    TIMETZ: ("time", "time with time zone"),
    BIT: ("other", "bit"),
    VARBIT: ("other", "bit varying"),
    NUMERIC: ("decimal", "numeric"),
    UUID: ("uuid", "uuid"),
    JSONB: ("json", "jsonb"),
    869: ("other", "inet"),
    650: ("other", "cidr"),
    829: ("other", "macaddr"),
    774: ("other", "macaddr8"),
    3614: ("other", "tsvector"),
}

#: Array OID -> element OID, for the common builtin arrays.
_ARRAYS: Final[dict[int, int]] = {
    1000: BOOL, 1001: BYTEA, 1005: INT2, 1007: INT4, 1016: INT8, 1009: TEXT, 1015: VARCHAR,
    1014: BPCHAR, 1021: FLOAT4, 1022: FLOAT8, 1231: NUMERIC, 1182: DATE, 1183: TIME,
    1115: TIMESTAMP, 1185: TIMESTAMPTZ, 1187: INTERVAL, 2951: UUID, 199: JSON, 3807: JSONB,
    1041: 869, 651: 650, 1028: OID, 1003: NAME,
}

_WITH_LENGTH: Final = {BPCHAR, VARCHAR, BIT, VARBIT}
_WITH_PRECISION: Final = {TIME, TIMETZ, TIMESTAMP, TIMESTAMPTZ, INTERVAL}


def _modifier(oid: int, typmod: int) -> str:
    """The ``(n)`` / ``(p,s)`` part of a declared type, or '' when the column has none."""
    if typmod < 0:
        return ""
    if oid == NUMERIC:
        value = typmod - 4
        precision = (value >> 16) & 0xFFFF
        scale = ((value & 0x7FF) ^ 1024) - 1024  # scale may be negative since PG 15
        return f"({precision},{scale})"
    if oid in (BPCHAR, VARCHAR):
        return f"({typmod - 4})"
    if oid == INTERVAL:  # the field range (YEAR TO MONTH ...) is not kept
        precision = typmod & 0xFFFF
        return "" if precision == 0xFFFF else f"({precision})"
    if oid in _WITH_LENGTH or oid in _WITH_PRECISION:
        return f"({typmod})"
    return ""


def _declared(oid: int, typmod: int, base: str) -> str:
    mod = _modifier(oid, typmod)
    if not mod:
        return base
    # "time(3) with time zone", "timestamp(3) without time zone": the modifier sits after the name.
    for word in ("time", "timestamp"):
        if base.startswith(word + " with"):
            return f"{word}{mod}{base[len(word):]}"
    return base + mod


def describe(oid: int, typmod: int, fallback_name: str | None = None) -> tuple[str, str]:
    """Neutral type and declared source type of a column.

    ``fallback_name`` is used for types this table does not know (enums, domains, extension
    types, uncommon arrays): the name from a pgoutput Type message or from ``format_type``.
    """
    if oid in _BUILTIN:
        neutral, base = _BUILTIN[oid]
        return neutral, _declared(oid, typmod, base)
    if oid in _ARRAYS:
        element = _ARRAYS[oid]
        return "other", _declared(element, typmod, _BUILTIN[element][1]) + "[]"
    return "other", fallback_name or f"oid {oid}"


def is_known(oid: int) -> bool:
    """True when :func:`describe` can name the type without help from the catalog."""
    return oid in _BUILTIN or oid in _ARRAYS


def _bool(raw: bytes) -> bool:
    return raw == b"t"


def _bytea(raw: bytes | memoryview) -> bytes:
    # A large value comes as a view of the received message: sliced and decoded without a copy.
    if bytes(raw[:2]) != b"\\x":
        raise ValueError("bytea value is not in hex format (the capture session sets bytea_output=hex)")
    return binascii.unhexlify(raw[2:])


def _text(raw: bytes | memoryview) -> str:
    return str(raw, "utf-8")


_CONVERTERS: Final[dict[int, Converter]] = {
    INT2: int, INT4: int, INT8: int, OID: int,
    BOOL: _bool,
    FLOAT4: float, FLOAT8: float,
    BYTEA: _bytea,
}


def converter(oid: int) -> Converter:
    """The function turning one text value of type ``oid`` into its neutral Python value."""
    return _CONVERTERS.get(oid, _text)


def converters(type_oids: Sequence[int]) -> tuple[Converter, ...]:
    """One converter per column, in column order."""
    return tuple(converter(oid) for oid in type_oids)


def convert_row(convs: Sequence[Converter], raw: Sequence[Value]) -> list[Value]:
    """Apply ``convs`` to a raw tuple: text values are converted; None and UNCHANGED pass through."""
    return [c(v) if v.__class__ is bytes else v for c, v in zip(convs, raw, strict=True)]
