"""MariaDB binlog decoding from recorded events (MariaDB 10.11, binlog_row_metadata=FULL), and positions."""

from __future__ import annotations

import pytest

from producers.mariadb import binlog
from producers.mariadb.catalog import Shape, table_meta
from producers.mariadb.probe import distance
from producers.mariadb.rows import TableState, row_changes
from producers.mariadb.shapes import map_shape
from producers.mariadb.tablemap import parse_table_map
from producers.mariadb.types import ColumnType, from_catalog
from producers.mariadb.values import datetime2_text, decimal_text, time2_text
from schemas.entries import Op, RowChange
from schemas.positions import mariadb_position, parse_mariadb, parse_text

# CREATE TABLE rec.r (id int unsigned primary key, d decimal(12,4), dt datetime(6), ts timestamp(2) null,
#   tm time(3), dd date, v varchar(10), e enum('on','off'), s set('a','b','c'), b bit(12), bn binary(3), f float,
#   u bigint unsigned, n smallint null) in a utf8mb4_bin schema; then
# INSERT (4000000000, -1234.5600, '2024-02-29 23:59:59.000001', '2024-06-30 12:00:00.25', '-12:34:56.789',
#   '1999-12-31', 'żółw', 'off', 'a,c', b'100000000001', x'ab', -0.5, 18446744073709551614, NULL);
# UPDATE ... SET v = 'x', d = 0
TABLE_MAP = bytes.fromhex(
    "e00000000000010003726563000172000e03f61211130a0ffefe10fe040802100c040602032800f701f8010401fe0304fe3f01019003"
    "022e3f0422026964016402647402747302746d026464017601650173016202626e01660175016e0a012e050703016101620163060802"
    "026f6e036f6666080100")
WRITE_ROWS = bytes.fromhex(
    "e0000000000001000eff3f00e000286bee7ffffb2dea1f99b2bb7efb000001668148c0197f3747e12e9f9f0f07c5bcc3b3c582770205"
    "080101ab000000bffeffffffffffffff")
UPDATE_ROWS = bytes.fromhex(
    "e1000000000001000eff3fff3f00e000286bee7ffffb2dea1f99b2bb7efb000001668148c0197f3747e12e9f9f0f07c5bcc3b3c58277"
    "0205080101ab000000bffeffffffffffffff00e000286bee80000000000099b2bb7efb000001668148c0197f3747e12e9f9f0f017802"
    "05080101ab000000bffeffffffffffffff")
COLLATIONS = {46: ("utf8mb4_bin", 4), 45: ("utf8mb4_general_ci", 4), 63: ("binary", 1), 8: ("latin1_swedish_ci", 1)}

ROW = [4000000000, "-1234.5600", "2024-02-29 23:59:59.000001", "2024-06-30 12:00:00.25+00", "-12:34:56.789",
       "1999-12-31", "żółw", "off", "a,c", "100000000001", b"\xab\x00\x00", -0.5, "18446744073709551614", None]


def _state() -> TableState:
    tmap = parse_table_map(TABLE_MAP, 6, COLLATIONS)
    return TableState.build(tmap, table_meta(map_shape(tmap, ())))


def test_table_map_gives_the_declared_shape() -> None:
    tmap = parse_table_map(TABLE_MAP, 6, COLLATIONS)
    assert tmap.qualified == "rec.r" and tmap.primary_key == (0,)
    meta = table_meta(map_shape(tmap, ()))
    got = [(c.name, c.type, c.source_type, c.nullable, c.key_position) for c in meta.columns]
    assert got == [
        ("id", "int64", "int unsigned", False, 1), ("d", "decimal", "decimal(12,4)", True, 0),
        ("dt", "timestamp", "datetime(6)", True, 0), ("ts", "timestamptz", "timestamp(2)", True, 0),
        ("tm", "time", "time(3)", True, 0), ("dd", "date", "date", True, 0),
        ("v", "string", "varchar(10) collate utf8mb4_bin", True, 0),
        ("e", "string", "enum('on','off') collate utf8mb4_bin", True, 0),
        ("s", "string", "set('a','b','c') collate utf8mb4_bin", True, 0), ("b", "other", "bit(12)", True, 0),
        ("bn", "bytes", "binary(3)", True, 0), ("f", "float32", "float", True, 0),
        ("u", "decimal", "bigint unsigned", True, 0), ("n", "int16", "smallint", True, 0)]


def test_catalog_and_table_map_agree() -> None:
    """The snapshot's ColumnType (from information_schema) equals the binlog's for the same columns."""
    tmap = parse_table_map(TABLE_MAP, 6, COLLATIONS)
    catalog_rows = [("int", "int(10) unsigned", None, 10, 0, None, None),
                    ("decimal", "decimal(12,4)", None, 12, 4, None, None),
                    ("datetime", "datetime(6)", None, None, None, 6, None),
                    ("timestamp", "timestamp(2)", None, None, None, 2, None),
                    ("time", "time(3)", None, None, None, 3, None), ("date", "date", None, None, None, None, None),
                    ("varchar", "varchar(10)", 10, None, None, None, "utf8mb4_bin"),
                    ("enum", "enum('on','off')", 3, None, None, None, "utf8mb4_bin"),
                    ("set", "set('a','b','c')", 5, None, None, None, "utf8mb4_bin"),
                    ("bit", "bit(12)", None, 12, None, None, None), ("binary", "binary(3)", 3, None, None, None, None),
                    ("float", "float", None, 12, None, None, None),
                    ("bigint", "bigint(20) unsigned", None, 20, 0, None, None),
                    ("smallint", "smallint(6)", None, 5, 0, None, None)]
    assert tuple(from_catalog(*r) for r in catalog_rows) == tmap.types
    shape = map_shape(tmap, ())
    again = Shape(shape.table, shape.names, tuple(from_catalog(*r) for r in catalog_rows), shape.nullable, ("id",))
    assert table_meta(again).version == table_meta(shape).version


def test_rows_events_decode_exactly() -> None:
    state = _state()
    (insert,) = row_changes(binlog.WRITE_ROWS_V1, WRITE_ROWS, state)
    assert insert == RowChange("rec.r", Op.INSERT, ROW)
    (update,) = row_changes(binlog.UPDATE_ROWS_V1, UPDATE_ROWS, state)
    assert update.op is Op.UPDATE and update.old_key is None  # the key did not change
    assert update.values == [ROW[0], "0.0000", *ROW[2:6], "x", *ROW[7:]]


@pytest.mark.parametrize(("hexed", "precision", "scale", "text"), [
    ("810DFB38D204D2", 14, 4, "1234567890.1234"),  # the example of MySQL's decimal2bin()
    ("7EF204C72DFB2D", 14, 4, "-1234567890.1234"),
    ("8000000000", 10, 0, "0"),
    ("80000000000000", 12, 2, "0.00"),
    ("7FFFFFFFFFF9", 12, 2, "-0.06"),
])
def test_decimal_binary_format(hexed: str, precision: int, scale: int, text: str) -> None:
    value, end = decimal_text(bytes.fromhex(hexed), 0, precision, scale)
    assert value == text
    assert end <= len(bytes.fromhex(hexed))


def test_temporal_binary_formats() -> None:
    # DATETIME2(0) of 1000-01-01 00:00:00 and 9999-12-31 23:59:59 (5 bytes big-endian + offset 2^39)
    def dt(y: int, mo: int, d: int, h: int, mi: int, s: int) -> bytes:
        packed = (((y * 13 + mo) << 5 | d) << 17) | (h << 12 | mi << 6 | s)
        return (packed + 0x8000000000).to_bytes(5, "big")

    assert datetime2_text(dt(1000, 1, 1, 0, 0, 0), 0, 0) == ("1000-01-01 00:00:00", 5)
    assert datetime2_text(dt(9999, 12, 31, 23, 59, 59) + b"\x0f\x42\x3f", 0, 6)[0] == "9999-12-31 23:59:59.999999"
    assert datetime2_text(dt(0, 0, 0, 0, 0, 0), 0, 0)[0] == "0000-00-00 00:00:00"  # zero dates stay zero
    # TIME2(0) of -838:59:59 and 838:59:59
    def tm(sign: int, h: int, m: int, s: int) -> bytes:
        return (sign * (h << 12 | m << 6 | s) + 0x800000).to_bytes(3, "big")

    assert time2_text(tm(-1, 838, 59, 59), 0, 0)[0] == "-838:59:59"
    assert time2_text(tm(1, 838, 59, 59), 0, 0)[0] == "838:59:59"


def test_from_text_canonical_forms() -> None:
    assert ColumnType("datetime", fsp=6).from_text(b"2024-01-01 00:00:00.500000") == "2024-01-01 00:00:00.5"
    assert ColumnType("timestamp", fsp=3).from_text(b"2024-01-01 00:00:00.000") == "2024-01-01 00:00:00+00"
    assert ColumnType("bit", length=5).from_text(b"\x05") == "00101"
    assert ColumnType("binary", length=4).from_text(b"a") == b"a\x00\x00\x00"
    assert ColumnType("bigint", unsigned=True).from_text(b"18446744073709551615") == "18446744073709551615"
    assert ColumnType("int", unsigned=True).neutral == "int64" and ColumnType("smallint").neutral == "int16"
    with pytest.raises(ValueError, match="uuid"):
        from_catalog("uuid", "uuid", None, None, None, None, None)


def test_positions_order_and_text() -> None:
    a = mariadb_position("binlog.000009", 99999, "0-1-5")
    b = mariadb_position("binlog.000010", 4, "0-1-6,1-2-3")
    assert a < b and parse_text(b.text) == b and parse_text(a.text) == a
    assert parse_mariadb(b.text) == ("binlog.000010", 4, "0-1-6,1-2-3")
    floor = parse_text("<" + b.text)
    assert floor is not None and floor < b and a < floor
    with pytest.raises(ValueError):
        parse_mariadb("binlog.000010:4")


def test_binlog_distance_across_files() -> None:
    sizes = [("binlog.000001", 1000), ("binlog.000002", 500), ("binlog.000003", 300)]
    assert distance(sizes, ("binlog.000001", 400), ("binlog.000001", 900)) == 500
    assert distance(sizes, ("binlog.000001", 400), ("binlog.000003", 100)) == 600 + 500 + 100
    assert distance(sizes, ("binlog.000003", 100), ("binlog.000001", 400)) == 0  # never negative
    assert distance(sizes, ("binlog.000000", 4), ("binlog.000003", 100)) is None  # purged: unknown
