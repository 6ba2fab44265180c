"""The compare behind ``ark verify``: chunked hashes over primary-key ranges, bisection, row diffs, repair.

Everything that touches rows runs in SQL on each side, so no row crosses the wire until a range is
small: a range is summarised by ``count(*)`` and an md5 over the md5 of every row's text in key
order. Both sessions use the same text settings (:data:`SESSION_OPTIONS`), so the server's text form
compares values exactly (numeric scale, timestamps, floats, bytea).

A key range is ``lo < key <= hi`` (``None`` = unbounded), keys are compared by PostgreSQL's row
comparison on the primary key, and key values travel as their text form cast back to the column type,
so Python never needs to order keys itself. The pure parts (:func:`bisect_ranges`, :func:`diff_rows`)
take callables and are unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from consumers.postgresql.sql import pg_type, qualified, quote_ident
from schemas.entries import TableMeta

Conn = psycopg.Connection[Any]
Key = tuple[str, ...]

#: Session settings of both compare connections: one text form for every value.
SESSION_OPTIONS = ("-c TimeZone=UTC -c DateStyle=ISO,YMD -c IntervalStyle=postgres -c extra_float_digits=1 "
                   "-c bytea_output=hex")

_ROW = "_ark_row"


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Primary keys ``lo < key <= hi``; ``None`` is unbounded."""

    lo: Key | None
    hi: Key | None

    def describe(self) -> str:
        """``(lo, hi]`` with -inf/+inf for open ends."""
        return f"({format_key(self.lo) if self.lo is not None else '-inf'}, " \
               f"{format_key(self.hi) if self.hi is not None else '+inf'}]"


@dataclass(frozen=True, slots=True)
class Digest:
    """What one side holds in a range: row count and hash."""

    rows: int
    md5: str


@dataclass
class RangeDiff:
    """A small key range that differs, with the exact keys (as text)."""

    range: KeyRange
    primary_rows: int
    standby_rows: int
    missing: list[Key] = field(default_factory=list)    # on the primary, not on the standby
    extra: list[Key] = field(default_factory=list)      # on the standby only
    different: list[Key] = field(default_factory=list)  # on both, with different values


def format_key(key: Key) -> str:
    """A key for people: ``7`` or ``(7, 'x')``."""
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


# -- pure logic --------------------------------------------------------------------------------------
def chunk_ranges(boundaries: Sequence[Key]) -> list[KeyRange]:
    """The ranges between successive chunk boundaries, open at both ends."""
    edges: list[Key | None] = [None, *boundaries, None]
    return [KeyRange(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]


def bisect_ranges(root: KeyRange, primary: Digest, standby: Digest,
                  digest: Callable[[KeyRange], tuple[Digest, Digest]],
                  split: Callable[[KeyRange, bool, int], Key], leaf_rows: int) -> list[tuple[KeyRange, Digest, Digest]]:
    """The differing ranges under ``root``, bisected until each side holds at most ``leaf_rows`` rows.

    ``split(range, on_primary, rows)`` returns the key of the middle row of the side with more rows
    (``rows`` of them, more than ``leaf_rows``, so both halves hold rows of it and every split makes
    progress). Ranges come back in key order with their digests.
    """
    out: list[tuple[KeyRange, Digest, Digest]] = []
    stack = [(root, primary, standby)]
    while stack:
        rng, p, s = stack.pop()
        if p == s:
            continue
        if max(p.rows, s.rows) <= leaf_rows:
            out.append((rng, p, s))
            continue
        middle = split(rng, p.rows >= s.rows, max(p.rows, s.rows))
        if middle == rng.hi:  # no progress (a split that ignores the contract): compare row by row
            out.append((rng, p, s))
            continue
        left, right = KeyRange(rng.lo, middle), KeyRange(middle, rng.hi)
        right_digests = digest(right)
        left_digests = digest(left)
        stack.append((right, *right_digests))
        stack.append((left, *left_digests))  # popped first: key order
    return out


def diff_rows(primary: Sequence[tuple[Key, str]], standby: Sequence[tuple[Key, str]]) -> tuple[
        list[Key], list[Key], list[Key]]:
    """Missing on the standby, extra on the standby, and different, from ``(key, row text)`` lists."""
    left, right = dict(primary), dict(standby)
    missing = [k for k, _ in primary if k not in right]
    extra = [k for k, _ in standby if k not in left]
    different = [k for k, text in primary if k in right and right[k] != text]
    return missing, extra, different


# -- SQL ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TableSpec:
    """What the compare needs of a table: columns in the primary's order, key columns in key order."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: tuple[str, ...]
    key_types: tuple[str, ...]

    @classmethod
    def of(cls, meta: TableMeta) -> TableSpec:
        """From the primary's catalog (see consumers.postgresql.catalog); ValueError without a key."""
        keys = sorted((c for c in meta.columns if c.key_position), key=lambda c: c.key_position)
        if not keys:
            raise ValueError(f"{meta.table} has no primary key (nor replica identity index): verify compares "
                             "by key ranges and needs one")
        return cls(meta.table, tuple(c.name for c in meta.columns), tuple(pg_type(c) for c in meta.columns),
                   tuple(c.name for c in keys), tuple(pg_type(c) for c in keys))

    @property
    def name(self) -> str:
        """The quoted table name."""
        return qualified(self.table)

    def keys(self, prefix: str = "") -> str:
        """The key column list, optionally qualified."""
        return ", ".join(prefix + quote_ident(k) for k in self.key)

    def keys_text(self, prefix: str = "") -> str:
        """The key columns as text."""
        return ", ".join(f"{prefix}{quote_ident(k)}::text" for k in self.key)

    def where(self, rng: KeyRange) -> tuple[str, list[str]]:
        """The predicate of ``rng`` and its parameters."""
        parts: list[str] = []
        params: list[str] = []
        cast = ", ".join(f"%s::{t}" for t in self.key_types)
        if rng.lo is not None:
            parts.append(f"({self.keys()}) > ({cast})")
            params.extend(rng.lo)
        if rng.hi is not None:
            parts.append(f"({self.keys()}) <= ({cast})")
            params.extend(rng.hi)
        return (" AND ".join(parts) or "true"), params

    def select(self, rng: KeyRange) -> tuple[str, list[str]]:
        """The rows of ``rng`` with the compared columns, as a subquery body."""
        pred, params = self.where(rng)
        cols = ", ".join(quote_ident(c) for c in self.columns)
        return f"SELECT {cols} FROM {self.name} WHERE {pred}", params


def boundaries(conn: Conn, spec: TableSpec, every: int) -> list[Key]:
    """Every ``every``-th key of the table in key order (the chunk boundaries)."""
    query = (f"SELECT {spec.keys_text('s.')} FROM (SELECT {spec.keys()}, row_number() OVER (ORDER BY "
             f"{spec.keys()}) AS _ark_rn FROM {spec.name}) s WHERE s._ark_rn %% %s = 0 ORDER BY s._ark_rn")
    return [tuple(r) for r in conn.execute(query, [every]).fetchall()]


def digest(conn: Conn, spec: TableSpec, rng: KeyRange) -> Digest:
    """Row count and hash of ``rng`` on one side."""
    body, params = spec.select(rng)
    query = (f"SELECT count(*), coalesce(md5(string_agg(md5({_ROW}::text), '' ORDER BY {spec.keys(_ROW + '.')})), "
             f"'') FROM ({body}) {_ROW}")
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return Digest(int(row[0]), str(row[1]))


def middle_key(conn: Conn, spec: TableSpec, rng: KeyRange, rows: int) -> Key:
    """The key of row ``rows // 2`` (1-based) of ``rng`` on one side, which holds ``rows`` rows there."""
    pred, params = spec.where(rng)
    # ORDER BY the table's columns, not the text output columns of the same names (text order).
    query = (f"SELECT {spec.keys_text()} FROM {spec.name} _ark_t WHERE {pred} ORDER BY {spec.keys('_ark_t.')} "
             "OFFSET %s LIMIT 1")
    row = conn.execute(query, [*params, max(0, rows // 2 - 1)]).fetchone()
    if row is None:
        raise RuntimeError(f"{spec.table}: range {rng.describe()} changed while being split")
    return tuple(row)


def keyed_rows(conn: Conn, spec: TableSpec, rng: KeyRange) -> list[tuple[Key, str]]:
    """``(key, row text)`` of every row of ``rng``, in key order (only for small ranges)."""
    body, params = spec.select(rng)
    n = len(spec.key)
    query = f"SELECT {spec.keys_text(_ROW + '.')}, {_ROW}::text FROM ({body}) {_ROW} ORDER BY {spec.keys(_ROW + '.')}"
    return [(tuple(r[:n]), str(r[n])) for r in conn.execute(query, params).fetchall()]


def describe_range(primary: Conn, standby: Conn, spec: TableSpec, rng: KeyRange) -> RangeDiff:
    """The exact differing keys of a small range."""
    p_rows, s_rows = keyed_rows(primary, spec, rng), keyed_rows(standby, spec, rng)
    missing, extra, different = diff_rows(p_rows, s_rows)
    return RangeDiff(rng, len(p_rows), len(s_rows), missing, extra, different)


def repair_range(primary: Conn, standby: Conn, spec: TableSpec, rng: KeyRange) -> RangeDiff:
    """Make the standby's rows of ``rng`` equal to the primary's, in the standby's open transaction.

    Only the differing rows are written: extra and different rows are deleted by key, then the
    primary's missing and different rows are inserted (values as text, cast to the column types).
    Returns what was found (empty lists: already equal).
    """
    diff = describe_range(primary, standby, spec, rng)
    key_match = " AND ".join(f"{quote_ident(k)} = %s::{t}" for k, t in zip(spec.key, spec.key_types, strict=True))
    with standby.cursor() as cur:
        doomed = [list(k) for k in (*diff.extra, *diff.different)]
        if doomed:
            cur.executemany(f"DELETE FROM {spec.name} WHERE {key_match}", doomed)
        wanted = [*diff.missing, *diff.different]
        if wanted:
            cols = ", ".join(f"{quote_ident(c)}::text" for c in spec.columns)
            rows = []
            for key in wanted:
                row = primary.execute(f"SELECT {cols} FROM {spec.name} WHERE {key_match}", list(key)).fetchone()
                if row is None:
                    raise RuntimeError(f"{spec.table}: key {format_key(key)} vanished from the primary snapshot")
                rows.append(list(row))
            values = ", ".join(f"%s::{t}" for t in spec.types)
            names = ", ".join(quote_ident(c) for c in spec.columns)
            cur.executemany(f"INSERT INTO {spec.name} ({names}) VALUES ({values})", rows)
    return diff


def standby_shape_problem(standby: Conn, spec: TableSpec) -> str:
    """Why the standby's table cannot be compared with the primary's ('' when it can)."""
    row = standby.execute("SELECT to_regclass(%s)::oid", [spec.name]).fetchone()
    if row is None or row[0] is None:
        return f"{spec.table} does not exist on the standby"
    have = dict(standby.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s "
        "AND attnum > 0 AND NOT attisdropped", [row[0]]).fetchall())
    for name, typ in zip(spec.columns, spec.types, strict=True):
        if name not in have:
            return f"column {name} of {spec.table} is missing on the standby"
        if have[name] != typ:
            return f"column {name} of {spec.table} is {typ} on the primary but {have[name]} on the standby"
    return ""
