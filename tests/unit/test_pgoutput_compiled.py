"""The compiled pgoutput tuple parser (producers/postgresql/_pgoutput.c) reads every tuple as the Python one does."""

from __future__ import annotations

import struct

import pytest

from producers.postgresql import pgoutput
from producers.postgresql.types import converters

pytestmark = pytest.mark.skipif(not pgoutput.COMPILED,
                                reason="compiled tuple parser not built (python -m ops.build_hot)")

INT2, INT4, INT8, OID, BOOL, FLOAT4, FLOAT8, BYTEA, TEXT, NUMERIC, TIMESTAMPTZ, JSONB, UUID = (
    21, 23, 20, 26, 16, 700, 701, 17, 25, 1700, 1184, 3802, 2950)


def tuple_bytes(cells: list[bytes | None | str]) -> bytes:
    """TupleData: bytes -> 't' value, None -> 'n', 'u' -> unchanged, ('b', bytes) as 'b' value."""
    out = struct.pack(">H", len(cells))
    for cell in cells:
        if cell is None:
            out += b"n"
        elif cell == "u":
            out += b"u"
        elif isinstance(cell, tuple):
            out += b"b" + struct.pack(">I", len(cell[1])) + cell[1]
        else:
            assert isinstance(cell, bytes)
            out += b"t" + struct.pack(">I", len(cell)) + cell
    return out


CASES: dict[str, tuple[list[int], list[object]]] = {
    "integers": ([INT2, INT4, INT8, OID], [b"-32768", b"2147483647", b"-9223372036854775808", b"4294967295"]),
    "bool, floats": ([BOOL, BOOL, FLOAT4, FLOAT8, FLOAT8, FLOAT8, FLOAT8],
                     [b"t", b"f", b"1.5", b"-0", b"NaN", b"Infinity", b"-Infinity"]),
    "bytea": ([BYTEA, BYTEA], [b"\\x", b"\\x00ff10"]),
    "text classes": ([TEXT, NUMERIC, TIMESTAMPTZ, JSONB, UUID],
                     [b"", b"-12345.678900", b"2026-12-01 07:00:00.123456+00", b'{"a": [1, "\\u00e9"]}',
                      b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]),
    "unicode": ([TEXT, TEXT, TEXT], ["é".encode(), "日本語 🚀".encode(), "\U0010ffff".encode()]),
    "nulls and unchanged": ([INT4, TEXT, BYTEA, TEXT], [None, "u", None, "u"]),
    "large values": ([TEXT, BYTEA], [b"x" * 70_000, b"\\x" + b"ab" * 40_000]),
    "binary format": ([INT4, TEXT], [("b", b"\x00\x00\x00\x07"), b"t"]),
    "pgbench history": ([INT4, INT4, INT4, INT4, 1114, 1042],
                        [b"23", b"3", b"12345", b"-4711", b"2026-12-01 07:00:00.123456", None]),
}


def same(a: object, b: object) -> bool:
    return repr(a) == repr(b) and [type(v) for v in a] == [type(v) for v in b]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("convert", [True, False], ids=["converted", "raw"])
def test_compiled_tuples_equal_python_tuples(name: str, convert: bool) -> None:
    oids, cells = CASES[name]
    buf = b"I\x00\x00\x40\x01N" + tuple_bytes(cells) + b"trailing"  # type: ignore[arg-type]
    convs = converters(oids) if convert else None
    compiled = pgoutput._compiled_tuple(buf, 6, convs)  # type: ignore[misc]
    python = pgoutput.parse_tuple(buf, 6, convs)
    assert same(compiled[0], python[0]) and compiled[1] == python[1]


def test_a_whole_update_message_parses_the_same() -> None:
    convs = converters([INT4, INT4, TEXT])
    msg = b"U\x00\x00\x40\x01K" + tuple_bytes([b"1", None, None]) + b"N" + tuple_bytes([b"2", "u", "é".encode()])
    parsed = pgoutput.parse(msg, convs)
    assert isinstance(parsed, pgoutput.Update)
    assert (parsed.old_kind, parsed.old, parsed.new) == ("K", [1, None, None], [2, pgoutput.UNCHANGED, "é"])


BAD = {
    "truncated value": b"I\x00\x00\x40\x01N\x00\x01t\x00\x00\x00\x09abc",
    "truncated length": b"I\x00\x00\x40\x01N\x00\x01t\x00\x00",
    "missing columns": b"I\x00\x00\x40\x01N\x00\x02n",
    "unknown kind": b"I\x00\x00\x40\x01N\x00\x01z",
    "not an int": b"I\x00\x00\x40\x01N\x00\x01t\x00\x00\x00\x03a1b",
    "bad utf-8": b"I\x00\x00\x40\x01N\x00\x02t\x00\x00\x00\x011t\x00\x00\x00\x02\xc3\x28",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_tuples_fail_the_same_way(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    msg = BAD[name]
    ncols = struct.unpack_from(">H", msg, 6)[0]
    convs = converters([INT4, TEXT][:ncols] if ncols <= 2 else [INT4] * ncols)
    with pytest.raises(pgoutput.PgOutputError):
        pgoutput.parse(msg, convs)
    monkeypatch.setattr(pgoutput, "_compiled_tuple", None)
    with pytest.raises(pgoutput.PgOutputError):
        pgoutput.parse(msg, convs)


def test_a_column_count_that_differs_from_the_relation_is_an_error() -> None:
    with pytest.raises(pgoutput.PgOutputError, match="columns"):
        pgoutput.parse(b"I\x00\x00\x40\x01N" + tuple_bytes([b"1"]), converters([INT4, INT4]))


def test_self_check_passes() -> None:
    assert pgoutput.self_check() == ""
