"""The apply interface: one standby database, written only by the applier.

Each engine has an :class:`Applier` dialect; the apply runner (:mod:`consumers.runner`) is
engine-neutral: it reads the redo topic, checks CRCs, gates on the delay, groups transactions and
decides when to commit.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from common.guard import TargetFacts
from common.identity import DatabaseIdentity
from common.problems import Problem
from common.snapshot import SchemaObjects, TableRows
from consumers.tables import TableState
from schemas.entries import Position, RowChange, SchemaStep, SequenceValue, TableMeta, ValuePart


@dataclass(frozen=True, slots=True)
class ApplyState:
    """Where a standby stands, stored in the standby inside the same transaction as the data.

    ``next_offset`` is the first redo offset not yet applied. ``position_key`` is the commit position
    of the last applied source transaction; entries at or below it are skipped (exactly once, and
    the initial-sync floor). Kafka consumer-group offsets are informational only.
    """

    group: str
    standby: str
    topic: str
    partition: int
    next_offset: int
    position: str
    position_key: bytes
    epoch: int
    commit_time_us: int
    applied_at_us: int
    #: Source transactions applied since the state row was created (for reports).
    applied_txns: int = 0
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StagedTable:
    """A fresh copy of one table, taken from a snapshot of the primary, waiting in a staging table.

    ``position`` is the snapshot's consistent point: the copy holds exactly the transactions that
    committed before it. ``meta`` is the table's shape in that snapshot.
    """

    table: str
    staging: str
    meta: TableMeta
    position: Position
    rows: int
    #: The table's other objects as of the same snapshot (indexes, constraints ...), when the source gives them.
    objects: SchemaObjects | None = None


class Applier(ABC):
    """A standby database.

    Guarantees an implementation must give:

    * **One transaction.** Everything between :meth:`begin` and :meth:`commit` — table shapes, rows,
      and the state row of :meth:`save_state` — commits or rolls back together.
    * **Order kept.** :meth:`apply_rows` applies the changes in the order given; a set-based path
      may reorder only changes that cannot affect each other (different keys).
    * **Exact.** An UPDATE or DELETE that finds no row, or an INSERT that hits an existing key, raises
      :class:`consumers.errors.DataApplyError` naming table, key and transaction: nothing is
      skipped silently. Lost connections, deadlocks and serialization failures raise
      :class:`consumers.errors.TransientApplyError` after rolling back.
    * **Read-only for others.** After :meth:`prepare`, sessions other than the applier's cannot
      write to the standby by accident; queries keep working.
    * **Harmless until told.** :meth:`identity`, :meth:`inspect`, :meth:`occupied` and :meth:`load_state`
      write nothing (not even a schema): the refusals of common/guard.py are checked with them before
      :meth:`prepare` changes anything.
    """

    engine: str = "?"
    #: False when the engine's DDL commits by itself (MariaDB, MySQL, Oracle): the apply session then
    #: commits everything before a shape change (with its state row) before :meth:`apply_table_meta`, and
    #: before a transaction of several chunks starts (a shape may change between its chunks); the applier
    #: runs its DDL beside the target transaction and adapts tables idempotently (from the standby's
    #: catalog, not from ``previous``), since a crash may replay a shape that is already in force.
    transactional_ddl: bool = True

    @abstractmethod
    def check_prerequisites(self) -> list[Problem]:
        """What is missing on the standby (privileges, version), each with its fix."""

    @abstractmethod
    def identity(self) -> DatabaseIdentity:
        """Which database this really is (read-only; TargetError when it cannot be read)."""

    @abstractmethod
    def inspect(self) -> TargetFacts:
        """What the database says about itself for the refusals of common/guard.py, without writing anything:
        its identity, the Ark state rows it holds, and the replication slots and publications in it."""

    @abstractmethod
    def occupied(self, tables: Collection[str]) -> dict[str, int]:
        """Those of ``tables`` that exist and hold rows, with their row counts (counted up to a million and one)."""

    @abstractmethod
    def prepare(self) -> None:
        """Create Ark's state tables and make the standby read-only for everyone else."""

    @abstractmethod
    def load_state(self, group: str, standby: str) -> ApplyState | None:
        """The saved state, or None when this standby was never synced."""

    @abstractmethod
    def load_table_metas(self, group: str) -> dict[str, TableMeta]:
        """Table shapes as of the saved state (stored with it)."""

    @abstractmethod
    def begin(self) -> None:
        """Open the target transaction."""

    @abstractmethod
    def apply_table_meta(self, group: str, meta: TableMeta, previous: TableMeta | None) -> None:
        """Create or adapt the table to ``meta`` (same transaction), and remember the shape."""

    @abstractmethod
    def apply_rows(self, metas: Mapping[str, TableMeta], changes: Sequence[RowChange], txn_id: str,
                   position: str) -> None:
        """Apply changes of one source transaction (or one chunk of it), in order."""

    @abstractmethod
    def store_part(self, part: ValuePart) -> None:
        """Keep one part of a value too large for one message, in the open transaction, until the row that
        uses it (a later :meth:`apply_rows` of the same source transaction; its ``RowChange.parts`` names it)
        is applied. Part 0 starts a value again. Never hold the whole value in memory."""

    # -- schema changes (DDL of the primary; see consumers/schema_change.py) ---------------------------
    def run_schema_step(self, group: str, step: SchemaStep, *, follow_drop: bool, what: str) -> bool:
        """Run one ``sql``, ``optional-sql``, ``drop-table`` or ``drop-schema`` step inside the open transaction.

        ``sql`` that fails raises :class:`consumers.errors.SchemaChangeFailed` (the standby stops before it)
        or a transient error; ``optional-sql`` that fails is rolled back to before it and logged; the drops run
        only with ``follow_drop`` (a dropped table's stored shape is forgotten). ``what`` names the DDL for
        messages. Returns True when the target transaction must commit at the end of this source transaction
        (a new enum value, which PostgreSQL lets later transactions use only once committed).
        """
        raise NotImplementedError(f"the {self.engine} applier cannot follow schema changes")

    def rename_table(self, group: str, old: str, new: str) -> None:
        """The primary renamed table ``old`` to ``new`` (or moved it to another schema): do the same here, and
        move its stored shape, inside the open transaction. A table that does not exist here is left alone."""
        raise NotImplementedError(f"the {self.engine} applier cannot follow schema changes")

    def independent_tables(self, tables: Collection[str]) -> bool:
        """True when changes to different ``tables`` may be applied in any order inside one target
        transaction (no foreign keys between them on the standby). The runner then groups a batch's
        rows by table, which turns many small statements into a few set-based ones."""
        return False

    @abstractmethod
    def save_state(self, state: ApplyState, previous: ApplyState | None = None) -> None:
        """Write the state row (same transaction). With ``previous``, a compare-and-set: the row must still
        hold ``previous``'s ``next_offset`` and epoch, else :class:`consumers.errors.StateMoved` (rolled back),
        so an applier that lost its lock never moves the state backwards."""

    def lock_standby(self, group: str, standby: str) -> None:  # noqa: B027 - optional: engines without locks
        """Hold the standby for this applier as long as this instance lives (one applier per standby), or raise
        :class:`consumers.errors.ApplierRunning` naming the holder."""

    # -- table-level resync ----------------------------------------------------------------------
    @abstractmethod
    def load_table_states(self, group: str, standby: str) -> dict[str, TableState]:
        """Every stored per-table state of this standby (tables in resync, last resync floors)."""

    @abstractmethod
    def save_table_state(self, group: str, standby: str, state: TableState) -> None:
        """Write one table's state (same transaction as whatever else is open; :meth:`begin` first)."""

    @abstractmethod
    def clear_table_states(self, group: str, standby: str) -> None:
        """Forget every per-table state and staging copy (a whole-standby resync; same transaction)."""

    @abstractmethod
    def bulk_load(self, rows: TableRows, *, into: str | None = None, replace: bool = False,
                  progress: Callable[[int], None] | None = None) -> int:
        """Load a snapshot's rows of one table, inside the open transaction; returns the row count.

        Into ``rows.meta.table`` (which must exist: :meth:`apply_table_meta` first), or into the staging
        table ``into``. ``replace`` empties the target first, MVCC-safely (readers keep the old rows until
        the commit). ``progress`` is called with the running row count every block or so and may raise
        to cancel. An applier may use ``rows.native_format`` when it speaks it (a fast path); otherwise
        it loads ``rows.values()``, the stream's own value representation.
        """

    @abstractmethod
    def replace_table(self, group: str, rows: TableRows, *, progress: Callable[[int], None] | None = None,
                      created: bool = False) -> int:
        """Make ``rows.meta.table`` exactly the snapshot's table, in the open transaction: empty it (MVCC-safely),
        give it the snapshot's shape (recreating it when it cannot be reshaped), load the rows, and remember
        the shape. What an initial sync does per table; returns the row count. ``created``: the table was just
        created empty by :meth:`create_objects`, with the source's own shape (nothing to empty or reshape)."""

    # -- the source's other objects (ark sync, table resync) and its sequences ---------------------
    def create_objects(self, objects: SchemaObjects, *, after_rows: bool) -> set[str]:
        """Create, in the open transaction, the objects the standby lacks among ``objects``: those that come
        before the rows (extensions, schemas, types, sequences, tables, partitions), or those that come after
        them (keys, indexes, constraints, foreign keys). Objects that exist are kept as they are. Returns the
        tables created. An applier that cannot run the source engine's definitions creates nothing (its tables
        come from :meth:`replace_table`, shaped by the stream's description)."""
        return set()

    def advance_sequences(self, values: Sequence[SequenceValue]) -> int:
        """Move the standby's sequences forward to ``values`` (never back), in the open transaction; how many
        moved. A promoted standby must never hand out a value the primary already did."""
        return 0

    @abstractmethod
    def stage_copy(self, rows: TableRows, position: Position, *,
                   on_rows: Callable[[int], None] | None = None) -> StagedTable:
        """Copy a snapshot's rows of one table into that table's staging table here, and commit.

        Called on an applier instance of its own (its own connection), in a background thread, while
        the main instance keeps applying the other tables. A previous staging copy of the table is
        replaced; the copy is committed (durable) when this returns. ``position`` is the snapshot's.
        ``on_rows`` may raise to cancel (the staging copy is then rolled back).
        """

    @abstractmethod
    def swap_in_table(self, group: str, staged: StagedTable) -> None:
        """Replace the table's rows (and shape) with the staging copy, then drop the copy.

        Runs inside the open transaction (:meth:`begin`; the resync's own instance), so the swap
        commits or rolls back as a whole: readers see the old contents until the commit. The table's
        stored shape becomes ``staged.meta``; a table that cannot be reshaped in place is recreated.
        """

    @abstractmethod
    def drop_staging(self, table: str) -> None:
        """Drop ``table``'s staging copy if one exists (own transaction; for abandoned resyncs)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit the target transaction."""

    @abstractmethod
    def rollback(self) -> None:
        """Roll back the target transaction. Safe when none is open."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection. Safe to call twice."""
