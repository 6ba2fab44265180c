"""Canonical value forms of the cross-engine verify: a value as MariaDB's reader returns it (mostly the
server's text) and the same value as PostgreSQL's (psycopg's types) give the same text; different values never
do. Plus the partition compare on made-up rows."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import pytest

from common.verify_cross import (
    NotComparable,
    TablePlan,
    canonical,
    check_column,
    collect,
    diff_partition,
    differing,
    format_canon_key,
    partition_count,
    summarize,
    temporal_text,
)
from schemas.entries import Column, TableMeta

UTC = dt.UTC

SAME: list[tuple[str, str, Any, Any]] = [
    # neutral, source type, MariaDB side, PostgreSQL side
    ("int16", "tinyint unsigned", "255", 255),
    ("int16", "year", "2155", 2155),
    ("int64", "bigint", "-9223372036854775808", -9223372036854775808),
    ("decimal", "bigint unsigned", "18446744073709551615", Decimal("18446744073709551615")),
    ("decimal", "decimal(10,3)", "-1234567.125", Decimal("-1234567.125")),
    ("decimal", "decimal(10,3)", "1.500", Decimal("1.5")),
    ("decimal", "decimal(10,3)", "0.000", Decimal("0")),
    ("decimal", "numeric", Decimal("1E+2"), Decimal("100")),
    ("float32", "float", "1.5", 1.5),
    ("float32", "float", 0.10000000149011612, 0.1),  # MariaDB's exact double of a float vs real read as 0.1
    ("float64", "double", "-2.5e-300", -2.5e-300),
    ("boolean", "boolean", "1", True),
    ("boolean", "boolean", 0, False),
    ("string", "varchar(20)", "ça 😀", "ça 😀"),
    ("string", "enum('a','b')", b"b", "b"),
    ("string", "set('x','y')", "x,y", "x,y"),
    ("json", "json", '{"b": 1, "a": [1, 2.5]}', {"a": [1, 2.5], "b": 1}),
    ("bytes", "blob", b"\x00\xff", b"\x00\xff"),
    ("bytes", "varbinary(4)", b"\x00\xff", memoryview(b"\x00\xff")),
    ("date", "date", "2024-02-29", "2024-02-29"),
    ("timestamp", "datetime(6)", "2024-02-29 23:59:59.500000", "2024-02-29 23:59:59.5"),
    ("timestamp", "datetime", "2024-02-29 23:59:59", dt.datetime(2024, 2, 29, 23, 59, 59)),
    ("timestamptz", "timestamp(3)", "2038-01-19 03:14:07.999", "2038-01-19 03:14:07.999+00"),
    ("timestamptz", "timestamp", "2038-01-19 01:14:08", dt.datetime(2038, 1, 19, 3, 14, 8,
                                                                    tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ("time", "time(2)", "-12:30:00.25", -dt.timedelta(hours=12, minutes=30, microseconds=250000)),
    ("time", "time", "838:59:59", dt.timedelta(hours=838, minutes=59, seconds=59)),
    ("time", "time", "23:00:01.000000", dt.time(23, 0, 1)),
    ("uuid", "uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")),
    ("other", "bit(5)", "10101", "10101"),
    ("other", "bit(5)", b"\x15", "10101"),
    ("interval", "interval", "1 year 2 mons 3 days 04:05:06", "1 year 2 mons 3 days 04:05:06"),
]

DIFFERENT: list[tuple[str, str, Any, Any]] = [
    ("decimal", "decimal(10,3)", "1.501", Decimal("1.5")),
    ("float64", "double", "0.1", 0.1000000000000001),
    ("boolean", "tinyint(1)", "2", True),  # a tinyint(1) holding 2 is no boolean
    ("string", "varchar(5)", "a ", "a"),   # trailing space kept
    ("string", "varchar(5)", "A", "a"),    # case kept, whatever the collation says
    ("timestamp", "datetime(6)", "2024-02-29 23:59:59.000001", "2024-02-29 23:59:59"),
    ("timestamptz", "timestamp", "2038-01-19 03:14:08", dt.datetime(2038, 1, 19, 3, 14, 8,
                                                                    tzinfo=dt.timezone(dt.timedelta(hours=2)))),
    ("date", "date", "0000-00-00", "2000-01-01"),
    ("bytes", "blob", b"\x00", b"\x00\x00"),
    ("json", "json", '{"a": 1}', {"a": 1.5}),
    ("time", "time", "not a time", dt.timedelta(0)),
]


def _col(neutral: str, source_type: str) -> Column:
    return Column("c", neutral, source_type)


@pytest.mark.parametrize(("neutral", "source_type", "maria", "pg"), SAME)
def test_same_value_same_text(neutral: str, source_type: str, maria: Any, pg: Any) -> None:
    col = _col(neutral, source_type)
    assert canonical(col, maria) == canonical(col, pg)


@pytest.mark.parametrize(("neutral", "source_type", "maria", "pg"), DIFFERENT)
def test_different_values_different_text(neutral: str, source_type: str, maria: Any, pg: Any) -> None:
    col = _col(neutral, source_type)
    assert canonical(col, maria) != canonical(col, pg)


def test_null_is_null_and_not_text() -> None:
    col = _col("string", "text")
    assert canonical(col, None) is None
    assert canonical(col, "NULL") == "NULL"
    assert canonical(col, "") == ""


@pytest.mark.parametrize(("text", "want"), [
    ("2024-01-01 00:00:00.000000", "2024-01-01 00:00:00"),
    ("2024-01-01T01:02:03.120Z", "2024-01-01 01:02:03.12"),
    ("0044-03-15 10:00:00.10 BC", "0044-03-15 10:00:00.1 BC"),
    ("infinity", "infinity"),
])
def test_temporal_text(text: str, want: str) -> None:
    assert temporal_text(text) == want


def test_refused_columns_are_named() -> None:
    with pytest.raises(NotComparable, match="column c of s.t is time with time zone"):
        check_column("s.t", _col("time", "time with time zone"))
    with pytest.raises(NotComparable, match="neutral type hstore"):
        check_column("s.t", _col("hstore", "hstore"))


def _meta(identity: str = "key") -> TableMeta:
    key = 1 if identity == "key" else 0
    return TableMeta("s.t", (Column("id", "int32", "int", False, key), Column("v", "string", "text")), "1",
                     identity=identity)


def _compare(plan: TablePlan, left: list[tuple[Any, ...]], right: list[tuple[Any, ...]], per: int = 2) -> list[Any]:
    parts = partition_count(len(left), per)
    found = differing(summarize(plan, left, parts), summarize(plan, right, parts))
    a, b = collect(plan, left, parts, set(found)), collect(plan, right, parts, set(found))
    return [diff_partition(plan, p, parts, a[p], b[p]) for p in found]


def test_keyed_partitions_name_the_keys() -> None:
    plan = TablePlan.of(_meta())
    left = [(str(i), f"v{i}") for i in range(1, 21)]
    right = [(i, f"v{i}") for i in range(2, 21) if i != 7] + [(7, "changed"), (99, "x")]  # other types, same values
    diffs = _compare(plan, left, list(reversed(right)))  # order does not matter
    missing = [format_canon_key(k) for d in diffs for k in d.missing]
    extra = [format_canon_key(k) for d in diffs for k in d.extra]
    different = [format_canon_key(k) for d in diffs for k in d.different]
    assert (missing, extra, different) == (["1"], ["99"], ["7"])
    assert _compare(plan, left, [(i, f"v{i}") for i in range(1, 21)]) == []


def test_multiset_counts_duplicates() -> None:
    plan = TablePlan.of(_meta("full"))
    left = [("1", "a"), ("1", "a"), ("2", "b")]
    diffs = _compare(plan, left, [(1, "a"), (2, "b"), (2, "b")], per=10)
    assert [(d.missing_rows, d.extra_rows) for d in diffs] == [(1, 1)]
    assert _compare(plan, left, [(2, "b"), (1, "a"), (1, "a")], per=10) == []
