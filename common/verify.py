"""The compare behind ``ark verify``: the engine-neutral algorithm and the interface each engine implements.

Each side of a compare (the primary inside a snapshot, the standby inside a snapshot taken at the same
position) is a :class:`VerifySide`. Everything that touches rows runs inside the database: a key range
is summarised by a row count and a hash of its rows in key order, so no row crosses the wire until a
range is small. A differing range is bisected (:func:`bisect_ranges`) down to a few rows, whose keys
and row texts are then compared (:func:`diff_rows`). Both sides of one engine print values the same
way, so their hashes agree exactly when their rows do.

A key range is ``lo < key <= hi`` (``None`` = unbounded); keys travel as their text form and are
ordered by the database, so Python never orders keys itself. The key is the table's replication
identity (the stream's key). The pure parts take callables and are unit-tested without a server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from common.settings import PrimarySettings, StandbySettings
from common.snapshot import Snapshot
from schemas.entries import TableMeta

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys ``lo < key <= hi``; ``None`` is unbounded."""

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


@dataclass(frozen=True)
class TableSpec:
    """What the compare needs of a table: its description (the stream's) and its key columns in key order."""

    meta: TableMeta

    @classmethod
    def of(cls, meta: TableMeta) -> TableSpec:
        """ValueError when the table has no key columns at all (the stream could not apply it either)."""
        if not meta.key_columns:
            raise ValueError(f"{meta.table} has no primary key (nor replica identity): verify compares by key "
                             "and needs one")
        return cls(meta)

    @property
    def multiset(self) -> bool:
        """True for a table without a unique key: compared as a multiset of rows, in hash buckets."""
        return self.meta.identity == "full"

    @property
    def table(self) -> str:
        """``schema.table``."""
        return self.meta.table

    @property
    def columns(self) -> tuple[str, ...]:
        """Column names, in the source's order."""
        return tuple(c.name for c in self.meta.columns)

    @property
    def key(self) -> tuple[str, ...]:
        """Key column names, in key order."""
        return tuple(c.name for c in self.meta.key_columns)


def format_key(key: Key) -> str:
    """A key for people: ``7`` or ``(7, 'x')``."""
    return key[0] if len(key) == 1 else "(" + ", ".join(key) + ")"


class VerifySide(ABC):
    """One database's side of a compare, inside one consistent snapshot (close it to end the snapshot)."""

    @abstractmethod
    def boundaries(self, spec: TableSpec, every: int) -> list[Key]:
        """Every ``every``-th key of the table in key order (the chunk boundaries)."""

    @abstractmethod
    def digest(self, spec: TableSpec, rng: KeyRange) -> Digest:
        """Row count and hash of ``rng``."""

    @abstractmethod
    def middle_key(self, spec: TableSpec, rng: KeyRange, rows: int) -> Key:
        """The key of row ``rows // 2`` (1-based) of ``rng``, which holds ``rows`` rows here."""

    @abstractmethod
    def keyed_rows(self, spec: TableSpec, rng: KeyRange) -> list[tuple[Key, str]]:
        """``(key, row text)`` of every row of ``rng``, in key order (only for small ranges)."""

    @abstractmethod
    def bucket_digests(self, spec: TableSpec, buckets: int) -> dict[int, Digest]:
        """Rows per hash bucket (of the row's text) with an order-independent hash: a multiset's summary."""

    @abstractmethod
    def bucket_rows(self, spec: TableSpec, bucket: int, buckets: int) -> dict[str, int]:
        """The rows of one bucket: row text → how many times it occurs (only for small buckets)."""

    @abstractmethod
    def close(self) -> None:
        """End the snapshot (rolls back whatever is open); safe to call twice."""


class SourceSide(VerifySide):
    """The primary's side: also reads whole rows for a repair."""

    @abstractmethod
    def row_values(self, spec: TableSpec, keys: Sequence[Key]) -> list[list[str | None]]:
        """The rows with these keys, every column as text, in ``keys``' order (RuntimeError when one vanished)."""

    @abstractmethod
    def bucket_values(self, spec: TableSpec, bucket: int, buckets: int) -> list[list[str | None]]:
        """Every row of one hash bucket, every column as text (duplicates included)."""


class StandbySide(VerifySide):
    """A standby's side: its state row, its table shapes, and (in write mode) the repair."""

    @abstractmethod
    def held_state(self, group: str, standby: str) -> tuple[int, str, bytes]:
        """(next offset, position, position key) of the state row; read first, so the snapshot is taken there.
        In write mode the row is locked, so the applier cannot move on while the repair runs."""

    @abstractmethod
    def shape_problem(self, spec: TableSpec) -> str:
        """Why the standby's table cannot be compared with the primary's ('' when it can)."""

    @abstractmethod
    def rewrite(self, spec: TableSpec, doomed: Sequence[Key], rows: Sequence[Sequence[str | None]]) -> None:
        """Delete the rows with keys ``doomed``, then insert ``rows`` (text values, every column)."""

    @abstractmethod
    def rewrite_bucket(self, spec: TableSpec, bucket: int, buckets: int,
                       rows: Sequence[Sequence[str | None]]) -> None:
        """Replace the rows of one hash bucket with ``rows`` (a multiset table's repair)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit the repair."""


class Verifier(ABC):
    """An engine's way to open both sides of a compare."""

    @abstractmethod
    def open_source(self, primary: PrimarySettings, snapshot: Snapshot) -> SourceSide:
        """The primary's side inside ``snapshot`` (opened by this engine's SnapshotSource)."""

    @abstractmethod
    def open_standby(self, standby: StandbySettings, *, write: bool) -> StandbySide:
        """A standby's side in a new snapshot; ``write`` gets past the read-only guard for a repair."""


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


def describe_range(primary: VerifySide, standby: VerifySide, spec: TableSpec, rng: KeyRange) -> RangeDiff:
    """The exact differing keys of a small range."""
    p_rows, s_rows = primary.keyed_rows(spec, rng), standby.keyed_rows(spec, rng)
    missing, extra, different = diff_rows(p_rows, s_rows)
    return RangeDiff(rng, len(p_rows), len(s_rows), missing, extra, different)


def repair_range(primary: SourceSide, standby: StandbySide, spec: TableSpec, rng: KeyRange) -> RangeDiff:
    """Make the standby's rows of ``rng`` equal to the primary's, in the standby's open transaction.

    Only the differing rows are written: extra and different rows are deleted by key, then the
    primary's missing and different rows are inserted. Returns what was found (empty: already equal).
    """
    diff = describe_range(primary, standby, spec, rng)
    wanted = [*diff.missing, *diff.different]
    standby.rewrite(spec, [*diff.extra, *diff.different], primary.row_values(spec, wanted) if wanted else [])
    return diff


# -- tables without a unique key: multisets in hash buckets ------------------------------------------
@dataclass
class BucketDiff:
    """One hash bucket of a multiset table that differs: how many rows are missing and extra on the standby."""

    bucket: int
    buckets: int
    primary_rows: int
    standby_rows: int
    missing: int = 0
    extra: int = 0

    def describe(self) -> str:
        """For people: which bucket and how it differs (row values are never shown)."""
        return (f"hash bucket {self.bucket}/{self.buckets}: {self.primary_rows} rows on the primary, "
                f"{self.standby_rows} on the standby ({self.missing} missing, {self.extra} extra on the standby)")


def bucket_count(rows: int, per_bucket: int) -> int:
    """How many hash buckets give about ``per_bucket`` rows each (at least 1)."""
    return max(1, -(-rows // max(1, per_bucket)))


def diff_multisets(primary: dict[str, int], standby: dict[str, int]) -> tuple[int, int]:
    """Rows missing on the standby and extra on it, counting duplicates (row text → count on each side)."""
    missing = sum(max(0, n - standby.get(row, 0)) for row, n in primary.items())
    extra = sum(max(0, n - primary.get(row, 0)) for row, n in standby.items())
    return missing, extra


def differing_buckets(primary: VerifySide, standby: VerifySide, spec: TableSpec, buckets: int
                      ) -> tuple[int, int, list[BucketDiff]]:
    """(rows on the primary, rows on the standby, the buckets that differ with their counts)."""
    p, s = primary.bucket_digests(spec, buckets), standby.bucket_digests(spec, buckets)
    out: list[BucketDiff] = []
    for bucket in sorted(set(p) | set(s)):
        dp, ds = p.get(bucket, Digest(0, "")), s.get(bucket, Digest(0, ""))
        if dp == ds:
            continue
        missing, extra = diff_multisets(primary.bucket_rows(spec, bucket, buckets),
                                        standby.bucket_rows(spec, bucket, buckets))
        out.append(BucketDiff(bucket, buckets, dp.rows, ds.rows, missing, extra))
    return sum(d.rows for d in p.values()), sum(d.rows for d in s.values()), out
