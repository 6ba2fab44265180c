"""The compare behind ``ark verify`` when the primary and the standby are of different engines.

Within one engine both sides print values the same way, so the server hashes its own text
(common/verify.py). Across engines they do not: MariaDB prints ``1``, ``2024-02-29 23:59:59.500000`` and a
``time`` where PostgreSQL prints ``true``, ``2024-02-29 23:59:59.5`` and an ``interval``. Here every value is
read from its server and brought to one **canonical form per neutral type** (:func:`canonical`), the type the
stream itself carries (``Column.type``): the appliers decide which column type stores a neutral type (README
"Cross-engine apply"); this module only decides how a value of a neutral type is written down so that equal
values read from either engine give equal text. It is not a second type map: it never says which type a
column becomes, only what a value of a neutral type *is*.

**Hash partitions, not key ranges.** The two engines order keys differently (collations, enums ordered by
their index, unsigned integers stored as numeric), so a key range of one side is not a key range of the
other. Rows are therefore partitioned by a hash of their canonical key, identical on both sides: pass 1
streams each side once and keeps, per partition, the row count and an order-independent hash of its
rows (memory: one small record per partition, ``rows / chunk_rows`` of them); pass 2 streams again and keeps
only the rows of the partitions that differ (at most ``MAX_ITEMIZED`` partitions), to name the differing
keys. A table without a unique key is a multiset: its key is the whole row and duplicates are counted.

Key values appear in the output (they name rows); other column values never do.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import struct
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.entries import Column, TableMeta

Canon = str | None
CanonRow = tuple[Canon, ...]

#: Partitions itemized row by row in pass 2 (the others are counted only): bounds pass 2's memory.
MAX_ITEMIZED = 16

#: Neutral types compared; a column of any other neutral type makes its table refused (named, with why).
COMPARED = frozenset({"int16", "int32", "int64", "decimal", "float32", "float64", "boolean", "string", "json",
                      "bytes", "date", "time", "timestamp", "timestamptz", "uuid", "interval", "other"})

_BIT = re.compile(r"^bit\((\d+)\)$")
_FRACTION = re.compile(r"(:\d\d)\.(\d*?)0*(?=\D|$)")
_TIME = re.compile(r"^(-)?(\d+):(\d\d):(\d\d)(?:\.(\d+))?$")


class NotComparable(ValueError):
    """A column whose values cannot be compared across engines (the message names it and says why)."""


def bit_width(col: Column) -> int:
    """n of a ``bit(n)`` column (0 for any other)."""
    m = _BIT.match(col.source_type.strip().lower())
    return int(m[1]) if m else 0


def check_column(table: str, col: Column) -> None:
    """NotComparable when ``col`` cannot be compared across engines."""
    if col.type not in COMPARED:
        raise NotComparable(f"column {col.name} of {table} has neutral type {col.type} ({col.source_type}), which "
                            "verify cannot compare across engines")
    if col.type == "time" and "time zone" in col.source_type.lower():
        raise NotComparable(f"column {col.name} of {table} is {col.source_type}: MariaDB's time has no zone, so "
                            "the value stored on the other engine is not the same value")


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8")
    return str(value)


def _decimal(value: Any) -> str:
    d = value if isinstance(value, Decimal) else Decimal(_text(value).strip())
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("Infinity" if d > 0 else "-Infinity")
    if d == 0:
        return "0"
    return format(d.normalize(), "f")


def _float64(value: Any) -> str:
    return repr(float(value if isinstance(value, float | int) else _text(value)))


def _float32(value: Any) -> str:
    f = float(value if isinstance(value, float | int) else _text(value))
    try:
        return repr(struct.unpack("<f", struct.pack("<f", f))[0])
    except OverflowError:  # beyond a float32's range: no float32 column holds it, compare the double
        return repr(f)


def _boolean(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "true" if value else "false"
    text = _text(value).strip().lower()
    if text in ("1", "t", "true"):
        return "true"
    if text in ("0", "f", "false"):
        return "false"
    return f"boolean? {text}"  # a tinyint(1) holding 2 on MariaDB: differs from any PostgreSQL boolean


def _json(value: Any) -> str:
    doc = value if isinstance(value, dict | list | int | float | bool) or value is None else json.loads(_text(value))
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _bytes(value: Any) -> str:
    if isinstance(value, str):  # a driver that returned text for a binary column: its UTF-8 bytes
        return value.encode("utf-8").hex()
    return bytes(value).hex()


def temporal_text(text: str) -> str:
    """A date or timestamp as text, written one way: ``T`` → space, fraction without trailing zeros, a UTC
    offset (``+00``, ``+00:00``, ``Z``) left out. Both sides read timestamps with a zone in UTC."""
    text = text.strip().replace("T", " ")
    for suffix in ("+00:00", "+00", "Z"):
        if text.endswith(suffix):
            text = text[: -len(suffix)]
            break
    return _FRACTION.sub(lambda m: m[1] + (f".{m[2]}" if m[2] else ""), text)


def _temporal(value: Any) -> str:
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return temporal_text(value.isoformat(sep=" "))
    if isinstance(value, dt.date):
        return value.isoformat()
    return temporal_text(_text(value))


def time_micros(value: Any) -> int:
    """A time of day or a duration (MariaDB's TIME, PostgreSQL's time or interval) in microseconds."""
    if isinstance(value, dt.timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    if isinstance(value, dt.time):
        return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    m = _TIME.match(_text(value).strip())
    if not m:
        raise ValueError("not a time")
    micros = ((int(m[2]) * 60 + int(m[3])) * 60 + int(m[4])) * 1_000_000 + int((m[5] or "").ljust(6, "0")[:6])
    return -micros if m[1] else micros


def _time(value: Any) -> str:
    try:
        return str(time_micros(value))
    except ValueError:
        return f"time? {_text(value)}"  # not a time on this side: differs, never equal by accident


def _uuid(value: Any) -> str:
    try:
        return str(uuid.UUID(_text(value)))
    except ValueError:
        return _text(value)


def _other(col: Column) -> Callable[[Any], str]:
    width = bit_width(col)
    if not width:
        return _text

    def bits(value: Any) -> str:
        if isinstance(value, bytes | bytearray):  # MariaDB's BIT as big-endian bytes
            return format(int.from_bytes(value, "big"), "b").zfill(width)[-width:]
        return _text(value).zfill(width)

    return bits


_BY_TYPE: dict[str, Callable[[Any], str]] = {
    "int16": lambda v: str(int(v if isinstance(v, int) else Decimal(_text(v)))),
    "decimal": _decimal, "float32": _float32, "float64": _float64, "boolean": _boolean, "string": _text,
    "json": _json, "bytes": _bytes, "date": _temporal, "timestamp": _temporal, "timestamptz": _temporal,
    "time": _time, "uuid": _uuid, "interval": _text,
}
_BY_TYPE["int32"] = _BY_TYPE["int64"] = _BY_TYPE["int16"]


def converter(col: Column) -> Callable[[Any], Canon]:
    """The function taking a value of ``col`` as a driver returns it (typed, or the server's text) to its
    canonical text (None stays None)."""
    to_text = _other(col) if col.type == "other" else _BY_TYPE.get(col.type, _text)

    def convert(value: Any) -> Canon:
        if value is None:
            return None
        try:
            return to_text(value)
        except (ValueError, ArithmeticError):  # not a value of the type on this side: hashed, never shown
            return f"\x00unreadable {col.type}: {_text(value)}"

    return convert


def canonical(col: Column, value: Any) -> Canon:
    """The canonical text of one value of ``col`` (see the module docstring)."""
    return converter(col)(value)


# -- partitions ------------------------------------------------------------------------------------------
def _encode(values: Iterable[Canon]) -> bytes:
    """An unambiguous byte form of canonical values (length-prefixed; NULL distinct from every text)."""
    out = bytearray()
    for v in values:
        if v is None:
            out += b"\xff\xff\xff\xff"
        else:
            data = v.encode("utf-8", "surrogatepass")
            out += struct.pack(">I", len(data)) + data
    return bytes(out)


def row_hash(row: CanonRow) -> int:
    """128 bits of a row's hash."""
    return int.from_bytes(hashlib.blake2b(_encode(row), digest_size=16).digest(), "big")


def partition_of(key: CanonRow, partitions: int) -> int:
    """The partition of a row by its canonical key (the same on both engines)."""
    digest = hashlib.blake2b(_encode(key), digest_size=8, person=b"ark-part").digest()
    return int.from_bytes(digest, "big") % partitions


def partition_count(rows: int, per_partition: int) -> int:
    """How many partitions give about ``per_partition`` rows each (at least 1)."""
    return max(1, -(-rows // max(1, per_partition)))


@dataclass(frozen=True)
class TablePlan:
    """How one table's rows are read and keyed: the meta, the converters and where the key is."""

    meta: TableMeta
    convert: tuple[Callable[[Any], Canon], ...]
    key_index: tuple[int, ...]

    @classmethod
    def of(cls, meta: TableMeta) -> TablePlan:
        """NotComparable for a column that cannot be compared; ValueError for a table without a key."""
        for col in meta.columns:
            check_column(meta.table, col)
        if meta.identity == "full":
            key = tuple(range(len(meta.columns)))
        else:
            names = [c.name for c in meta.key_columns]
            if not names:
                raise ValueError(f"{meta.table} has no primary key (nor replica identity)")
            index = {c.name: i for i, c in enumerate(meta.columns)}
            key = tuple(index[n] for n in names)
        return cls(meta, tuple(converter(c) for c in meta.columns), key)

    @property
    def multiset(self) -> bool:
        """A table without a unique key: its rows are compared as a multiset."""
        return self.meta.identity == "full"

    def canon(self, values: Sequence[Any]) -> CanonRow:
        """A row as read (the meta's column order) in canonical form."""
        return tuple(f(v) for f, v in zip(self.convert, values, strict=True))

    def key(self, row: CanonRow) -> CanonRow:
        """The row's canonical key."""
        return tuple(row[i] for i in self.key_index)


@dataclass
class Summary:
    """One side's pass 1: rows per partition and the (order-independent) sum of their hashes."""

    rows: int = 0
    counts: Counter[int] = field(default_factory=Counter)
    sums: dict[int, int] = field(default_factory=dict)

    def add(self, part: int, digest: int) -> None:
        """Count one row of partition ``part``."""
        self.rows += 1
        self.counts[part] += 1
        self.sums[part] = (self.sums.get(part, 0) + digest) % (1 << 128)


def summarize(plan: TablePlan, rows: Iterable[Sequence[Any]], partitions: int,
              progress: Callable[[int], None] | None = None) -> Summary:
    """Pass 1 over one side's rows."""
    out = Summary()
    for values in rows:
        row = plan.canon(values)
        out.add(partition_of(plan.key(row), partitions), row_hash(row))
        if progress is not None and out.rows % 10_000 == 0:
            progress(out.rows)
    return out


def differing(primary: Summary, standby: Summary) -> list[int]:
    """The partitions whose rows differ, in order."""
    parts = set(primary.counts) | set(standby.counts)
    return sorted(p for p in parts if (primary.counts[p], primary.sums.get(p, 0)) !=
                  (standby.counts[p], standby.sums.get(p, 0)))


def collect(plan: TablePlan, rows: Iterable[Sequence[Any]], partitions: int, wanted: set[int]
            ) -> dict[int, Counter[tuple[CanonRow, int]]]:
    """Pass 2 over one side: (key, row hash) → how many times, for the rows of the ``wanted`` partitions."""
    out: dict[int, Counter[tuple[CanonRow, int]]] = {p: Counter() for p in wanted}
    for values in rows:
        row = plan.canon(values)
        key = plan.key(row)
        part = partition_of(key, partitions)
        if part in wanted:
            out[part][(key, row_hash(row))] += 1
    return out


@dataclass
class PartitionDiff:
    """One partition that differs: its row counts, and what differs (keys for a keyed table, counts for a
    multiset; never other values)."""

    partition: int
    partitions: int
    primary_rows: int
    standby_rows: int
    missing: list[CanonRow] = field(default_factory=list)
    extra: list[CanonRow] = field(default_factory=list)
    different: list[CanonRow] = field(default_factory=list)
    missing_rows: int = 0   # multiset: rows on the primary not on the standby (with duplicates)
    extra_rows: int = 0


def diff_partition(plan: TablePlan, part: int, partitions: int, primary: Counter[tuple[CanonRow, int]],
                   standby: Counter[tuple[CanonRow, int]]) -> PartitionDiff:
    """What differs in one partition (from pass 2 of both sides)."""
    out = PartitionDiff(part, partitions, sum(primary.values()), sum(standby.values()))
    if plan.multiset:
        out.missing_rows = sum((primary - standby).values())
        out.extra_rows = sum((standby - primary).values())
        return out
    left = {k: h for (k, h) in primary}
    right = {k: h for (k, h) in standby}
    out.missing = sorted((k for k in left if k not in right), key=_sortable)
    out.extra = sorted((k for k in right if k not in left), key=_sortable)
    out.different = sorted((k for k in left if k in right and left[k] != right[k]), key=_sortable)
    return out


def _sortable(key: CanonRow) -> tuple[tuple[int, str], ...]:
    return tuple((0, "") if v is None else (1, v) for v in key)


def format_canon_key(key: CanonRow) -> str:
    """A key for people: ``7`` or ``(7, x)`` (NULL written as NULL)."""
    parts = ["NULL" if v is None else v for v in key]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"

