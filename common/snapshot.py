"""The snapshot interface: a consistent picture of the source at one position, read while it keeps serving.

Each engine implements :class:`SnapshotSource` next to its capture (``producers/<engine>/``). Initial
sync, whole-standby resync, table resync and ``ark verify`` all read the primary through it, and the
appliers load what it gives with :meth:`consumers.base.Applier.bulk_load`, so that every target reads
every source through one interface (not one implementation per pair of engines).

Guarantees an implementation must give:

* **One position.** :attr:`Snapshot.position` is P: the snapshot holds exactly the transactions whose
  commit is before P, and every later transaction's commit position is at or after P. A standby
  loaded from it applies the stream from ``just_before(P)`` on with nothing lost or applied twice.
* **The stream's own description.** :meth:`Snapshot.tables` returns, for each table, the very
  :class:`~schemas.entries.TableMeta` the capture publishes for it (same key, which is the source's
  replication identity; same neutral types; same shape ``version``), with an empty ``position``.
* **The stream's own values.** :meth:`TableRows.values` yields each row as the list of engine-neutral
  values a RowChange would carry for it (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``).
* **Bounded memory.** Rows are streamed, never held whole.
* **The source keeps serving.** Opening a snapshot blocks no writer.
* **The other objects, optionally.** :meth:`Snapshot.objects` describes, in the source's own SQL, every
  object a standby of those tables needs to be a real copy (types, sequences and their values, defaults,
  constraints, indexes, partitions, extensions), split into what must exist before the rows are loaded and
  what is built after them. An engine that cannot returns None; the standby then gets the tables only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from common.identity import DatabaseIdentity
from schemas.entries import Position, SequenceValue, TableMeta, Value


@dataclass(frozen=True, slots=True)
class ObjectDef:
    """One object of the source, as the source's own statement(s), to run on a standby of the same engine."""

    #: The source's word for it (PostgreSQL: pg_dump's TABLE, INDEX, CONSTRAINT, FK CONSTRAINT, TYPE ...).
    kind: str
    #: How the source names it (``schema.name``; ``schema.table name`` for what belongs to a table).
    name: str
    sql: str
    #: The replicated table it belongs to (``schema.table``), "" for a type, a function, a schema ...
    table: str = ""


@dataclass(frozen=True, slots=True)
class Extension:
    """A source extension the objects use: created on the standby when missing (it must be installed there)."""

    name: str
    schema: str
    version: str


@dataclass(frozen=True)
class SchemaObjects:
    """Everything but the rows that a standby of some tables needs (see :meth:`Snapshot.objects`)."""

    engine: str
    #: Extensions first, then these, before the rows: schemas, types, functions, sequences, tables (with
    #: defaults, identity and generated columns, check constraints), partitions.
    before_rows: tuple[ObjectDef, ...]
    #: After the rows, so the copy stays fast: primary and unique keys, exclusion constraints, indexes,
    #: foreign keys, triggers, rules, policies.
    after_rows: tuple[ObjectDef, ...]
    extensions: tuple[Extension, ...] = ()
    #: The sequences' values when the objects were read (at or after the snapshot: never behind its rows).
    sequences: tuple[SequenceValue, ...] = ()
    #: What was left out and why (a foreign key to a table that is not replicated ...), for the operator.
    left_out: tuple[str, ...] = ()


class TableRows(ABC):
    """The rows of one table in a snapshot, to be read once and to the end (a read abandoned half-way may
    end the snapshot: open a new one)."""

    #: A bulk format both ends may speak natively (e.g. PostgreSQL's COPY text), or None.
    native_format: str | None = None

    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta

    @abstractmethod
    def values(self) -> Iterator[list[Value]]:
        """Each row as engine-neutral values, in the columns' order."""

    def native_blocks(self) -> Iterator[bytes]:
        """The rows as blocks of :attr:`native_format` (only when it is not None)."""
        raise NotImplementedError(f"{type(self).__name__} has no native bulk format")


class Snapshot(ABC):
    """An open, consistent snapshot (use as a context manager; close it when done)."""

    #: The snapshot's position P (see the module docstring).
    position: Position
    #: What another session of the same engine needs to share this snapshot (PostgreSQL: the exported
    #: snapshot id), or "" when it cannot be shared.
    token: str = ""

    @abstractmethod
    def tables(self, patterns: Sequence[str]) -> list[TableMeta]:
        """The tables matching ``schema.table`` fnmatch ``patterns``, described as the stream does."""

    def table(self, name: str) -> TableMeta | None:
        """One table's description, or None when the snapshot has no such table."""
        return next((m for m in self.tables([name]) if m.table == name), None)

    @abstractmethod
    def rows(self, meta: TableMeta) -> TableRows:
        """The rows of ``meta.table`` as of :attr:`position`."""

    def objects(self, tables: Sequence[TableMeta]) -> SchemaObjects | None:
        """The other objects a standby of ``tables`` needs, as of this snapshot (None: this engine cannot tell).

        Read with the snapshot's own view of the catalog, so they match its rows."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release the snapshot (safe to call twice)."""

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class SnapshotSource(ABC):
    """Opens consistent snapshots of one source database."""

    @abstractmethod
    def identity(self) -> DatabaseIdentity:
        """Which database the source really is (SourceError when unreachable)."""

    @abstractmethod
    def open(self) -> Snapshot:
        """A new snapshot at the source's current position (raises SourceError when unreachable)."""
