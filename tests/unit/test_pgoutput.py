"""pgoutput v1 parser and PostgreSQL type conversion, on hand-built message bytes."""

from __future__ import annotations

import math
import struct

import pytest

from producers.postgresql import pgoutput as po
from producers.postgresql import types as ty
from schemas.entries import UNCHANGED


# -- builders of wire bytes (big-endian, NUL-terminated strings) ------------------------------------
def s(text: str) -> bytes:
    return text.encode() + b"\0"


def tup(*cols: object) -> bytes:
    out = struct.pack(">H", len(cols))
    for col in cols:
        if col is None:
            out += b"n"
        elif col is UNCHANGED:
            out += b"u"
        elif isinstance(col, po.BinaryValue):
            out += b"b" + struct.pack(">I", len(col)) + bytes(col)
        else:
            raw = col if isinstance(col, bytes) else str(col).encode()
            out += b"t" + struct.pack(">I", len(raw)) + raw
    return out


def relation(relid: int, ns: str, name: str, ident: str, cols: list[tuple[int, str, int, int]]) -> bytes:
    out = b"R" + struct.pack(">I", relid) + s(ns) + s(name) + ident.encode() + struct.pack(">H", len(cols))
    for flags, cname, oid, typmod in cols:
        out += bytes([flags]) + s(cname) + struct.pack(">Ii", oid, typmod)
    return out


CASES = [
    ("begin", b"B" + struct.pack(">QqI", 0x1_0000_0010, 10, 77), po.Begin(0x1_0000_0010, 10, 77)),
    ("commit", b"C" + struct.pack(">BQQq", 0, 0x100, 0x138, 99), po.Commit(0, 0x100, 0x138, 99)),
    ("origin", b"O" + struct.pack(">Q", 5) + s("node_a"), po.Origin(5, "node_a")),
    ("type", b"Y" + struct.pack(">I", 16500) + s("public") + s("mood"), po.TypeInfo(16500, "public", "mood")),
    ("relation", relation(16384, "public", "acct", "d", [(1, "id", 23, -1), (0, "bal", 1700, 786438)]),
     po.Relation(16384, "public", "acct", "d", (po.RelationColumn(1, "id", 23, -1),
                                                 po.RelationColumn(0, "bal", 1700, 786438)))),
    ("relation, no columns", relation(7, "s", "e", "n", []), po.Relation(7, "s", "e", "n", ())),
    ("insert with null and unicode", b"I" + struct.pack(">I", 16384) + b"N" + tup(1, None, "héllo ☃"),
     po.Insert(16384, [b"1", None, "héllo ☃".encode()])),
    ("insert, empty string", b"I" + struct.pack(">I", 1) + b"N" + tup(""), po.Insert(1, [b""])),
    ("update, no old", b"U" + struct.pack(">I", 1) + b"N" + tup(1, UNCHANGED),
     po.Update(1, "", None, [b"1", UNCHANGED])),
    ("update, old key", b"U" + struct.pack(">I", 1) + b"K" + tup(1, None) + b"N" + tup(2, "x"),
     po.Update(1, "K", [b"1", None], [b"2", b"x"])),
    ("update, old row", b"U" + struct.pack(">I", 1) + b"O" + tup(1, "a") + b"N" + tup(1, "b"),
     po.Update(1, "O", [b"1", b"a"], [b"1", b"b"])),
    ("delete, key", b"D" + struct.pack(">I", 1) + b"K" + tup(5, None), po.Delete(1, "K", [b"5", None])),
    ("delete, full", b"D" + struct.pack(">I", 1) + b"O" + tup(5, "z"), po.Delete(1, "O", [b"5", b"z"])),
    ("truncate", b"T" + struct.pack(">IB", 2, 3) + struct.pack(">II", 10, 11), po.Truncate(3, (10, 11))),
    ("message", b"M" + struct.pack(">BQ", 1, 42) + s("ark") + struct.pack(">I", 3) + b"abc",
     po.Message(True, 42, "ark", b"abc")),
    ("binary value", b"I" + struct.pack(">I", 1) + b"N" + tup(po.BinaryValue(b"\x00\x01")),
     po.Insert(1, [po.BinaryValue(b"\x00\x01")])),
]


@pytest.mark.parametrize(("name", "data", "expected"), CASES, ids=[c[0] for c in CASES])
def test_parse(name: str, data: bytes, expected: object) -> None:
    assert po.parse(data) == expected
    assert po.parse(memoryview(data)) == expected  # any bytes-like input


def test_unchanged_and_null_are_distinct() -> None:
    msg = po.parse(b"I" + struct.pack(">I", 1) + b"N" + tup(None, UNCHANGED, ""))
    assert isinstance(msg, po.Insert)
    assert msg.new[0] is None and msg.new[1] is UNCHANGED and msg.new[2] == b""


@pytest.mark.parametrize("data", [
    b"",
    b"Z\0\0\0\0",
    b"B" + b"\0" * 5,  # short
    b"I" + struct.pack(">I", 1) + b"X" + tup(1),  # no 'N'
    b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 1) + b"q",  # unknown column kind
    b"I" + struct.pack(">I", 1) + b"N" + struct.pack(">H", 1) + b"t" + struct.pack(">I", 50) + b"ab",  # overrun
    b"R" + struct.pack(">I", 1) + b"public",  # unterminated string
    b"U" + struct.pack(">I", 1) + b"K" + tup(1) + b"X" + tup(1),
    b"D" + struct.pack(">I", 1) + b"N" + tup(1),
])
def test_malformed(data: bytes) -> None:
    with pytest.raises(po.PgOutputError):
        po.parse(data)


def test_lsn_text_and_epoch() -> None:
    assert po.lsn_to_text(0x16_B374_8) == "0/16B3748"
    assert po.lsn_to_text((3 << 32) | 0xAB) == "3/AB"
    assert po.lsn_from_text("3/ab") == (3 << 32) | 0xAB
    for bad in ("", "12", "x/1", "1/", "/1", "123456789/0"):
        with pytest.raises(ValueError):
            po.lsn_from_text(bad)
    assert po.pg_time_to_unix_us(0) == 946_684_800_000_000


TYPE_CASES = [
    (23, -1, "int32", "integer"), (20, -1, "int64", "bigint"), (21, -1, "int16", "smallint"),
    (1700, (12 << 16 | 2) + 4, "decimal", "numeric(12,2)"), (1700, -1, "decimal", "numeric"),
    (1043, 44, "string", "character varying(40)"), (1042, 5, "string", "character(1)"),
    (1184, -1, "timestamptz", "timestamp with time zone"),
    (1184, 3, "timestamptz", "timestamp(3) with time zone"),
    (1114, -1, "timestamp", "timestamp without time zone"), (1082, -1, "date", "date"),
    (1186, -1, "interval", "interval"), (2950, -1, "uuid", "uuid"), (3802, -1, "json", "jsonb"),
    (17, -1, "bytes", "bytea"), (16, -1, "boolean", "boolean"), (700, -1, "float32", "real"),
    (1007, -1, "other", "integer[]"), (1015, 14, "other", "character varying(10)[]"),
    (99999, -1, "other", "public.mood"),
]


@pytest.mark.parametrize(("oid", "typmod", "neutral", "declared"), TYPE_CASES)
def test_describe(oid: int, typmod: int, neutral: str, declared: str) -> None:
    assert ty.describe(oid, typmod, "public.mood") == (neutral, declared)


CONVERT_CASES = [
    (23, b"-42", -42), (20, b"9223372036854775807", 9223372036854775807), (21, b"7", 7),
    (16, b"t", True), (16, b"f", False), (701, b"1.5", 1.5), (701, b"-Infinity", -math.inf),
    (700, b"Infinity", math.inf), (1700, b"12.50", "12.50"), (1700, b"NaN", "NaN"),
    (17, b"\\x00ff10", b"\x00\xff\x10"), (17, b"\\x", b""), (25, "héllo ☃".encode(), "héllo ☃"),
    (1184, b"2024-01-02 03:04:05.123456+00", "2024-01-02 03:04:05.123456+00"),
    (3802, b'{"a": [1, 2]}', '{"a": [1, 2]}'), (1007, b"{1,2,NULL}", "{1,2,NULL}"),
    (2950, b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
]


@pytest.mark.parametrize(("oid", "raw", "value"), CONVERT_CASES)
def test_convert(oid: int, raw: bytes, value: object) -> None:
    got = ty.converter(oid)(raw)
    assert got == value and type(got) is type(value)


def test_convert_nan_stays_float() -> None:
    got = ty.converter(701)(b"NaN")
    assert isinstance(got, float) and math.isnan(got)


def test_convert_row_passes_null_and_unchanged() -> None:
    convs = ty.converters([23, 25, 17])
    assert ty.convert_row(convs, [b"1", None, UNCHANGED]) == [1, None, UNCHANGED]
    with pytest.raises(ValueError):
        ty.converter(17)(b"escape\\000format")


def test_parse_with_converters() -> None:
    convs = ty.converters([23, 25, 17, 16])
    data = b"U" + struct.pack(">I", 1) + b"K" + tup(1, None, None, None) + b"N" + tup(2, UNCHANGED, "\\x0a", "t")
    assert po.parse(data, convs) == po.Update(1, "K", [1, None, None, None], [2, UNCHANGED, b"\n", True])
    assert po.row_relid(data) == 1
    with pytest.raises(po.PgOutputError, match="columns"):
        po.parse(b"I" + struct.pack(">I", 1) + b"N" + tup(1), convs)
    with pytest.raises(po.PgOutputError):
        po.parse(b"I" + struct.pack(">I", 1) + b"N" + tup("x"), ty.converters([23]))


def test_a_large_row_message_parses_from_a_view_the_same() -> None:
    """Values of any size: a large row message is parsed from a view of the received bytes (no copy);
    the result is the same as from bytes, for small and large values, text (multi-byte) and bytea."""
    big_text = ("é€𝄞" * 40_000).encode()
    big_bytea = b"\\x" + bytes(range(256)).hex().encode() * 600
    data = b"I" + struct.pack(">I", 7) + b"N" + tup(b"42", big_text, big_bytea, b"small", None)
    convs = ty.converters([23, 25, 17, 25, 17])
    from_bytes = po.parse(data, convs)
    from_view = po.parse(memoryview(data), convs)
    assert from_view == from_bytes
    assert isinstance(from_view, po.Insert)
    assert from_view.new[1] == "é€𝄞" * 40_000 and from_view.new[2] == bytes(range(256)) * 600
    assert all(v is None or isinstance(v, int | str | bytes) for v in from_view.new)
    # Without converters, a view still yields bytes (nothing downstream sees a memoryview).
    raw = po.parse(memoryview(data))
    assert isinstance(raw, po.Insert) and all(v is None or type(v) is bytes for v in raw.new)
    # A small message of another kind handed over as a view parses as bytes would.
    begin = b"B" + struct.pack(">QqI", 5, 6, 7)
    assert po.parse(memoryview(begin)) == po.parse(begin)
