"""In-memory fake of a standby, for fast tests of the runners' own logic (see :mod:`tests.support.memory`).

:class:`MemoryApplier` writes a :class:`MemoryStandby`: tables as dicts by key, or lists of rows without a
unique key; transactions with rollback; the state row in the same transaction; exact data errors.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

import crc32c

from common.guard import TargetFacts
from common.identity import DatabaseIdentity
from common.problems import Problem
from common.snapshot import TableRows
from consumers.base import Applier, ApplyState, StagedTable
from consumers.errors import DataApplyError, StateMoved, TransientApplyError
from consumers.tables import TableState
from schemas.entries import (
    UNCHANGED,
    Op,
    Position,
    RowChange,
    SchemaStep,
    SequenceValue,
    TableMeta,
    Value,
    ValuePart,
)


# -- the standby ------------------------------------------------------------------------------------
class _Table:
    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta
        self.rows: dict[tuple[Value, ...], list[Value]] = {}  # identity "key"
        self.bag: list[list[Value]] = []  # identity "full"


@dataclass
class _Db:
    tables: dict[str, _Table] = field(default_factory=dict)
    state: ApplyState | None = None
    metas: dict[str, TableMeta] = field(default_factory=dict)
    table_states: dict[str, TableState] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    #: Schema steps run, in order: (commit position, step sql).
    ddl: list[tuple[str, str]] = field(default_factory=list)


class MemoryStandby:
    """A standby database: what every MemoryApplier of it shares (the committed data)."""

    def __init__(self, name: str = "standby") -> None:
        self.db = _Db()
        self.lock = threading.Lock()
        self.identity = DatabaseIdentity("memory", "standby-server", name, f"the in-memory standby {name}")
        #: Replication sources in this database (slots, publications), for the guard's IsASource.
        self.sources: list[str] = []
        #: How many times an applier prepared it (made it writable for itself, read-only for others).
        self.prepared = 0
        #: Parts of large values stored by appliers (a test checks that parts travelled).
        self.parts_seen = 0
        #: Every commit, in order: (state row after it, the transaction ids it applied).
        self.commits: list[tuple[ApplyState | None, list[str]]] = []
        #: Test hook: raise from apply_rows when it returns an exception for a change.
        self.fail_on: Callable[[RowChange], Exception | None] | None = None

    def rows(self, table: str) -> list[list[Value]]:
        """The committed rows of ``table`` (sorted by key; a keyless table's rows as they are)."""
        t = self.db.tables.get(table)
        if t is None:
            return []
        return [t.rows[k] for k in sorted(t.rows, key=repr)] if t.meta.identity == "key" else list(t.bag)


class MemoryApplier(Applier):
    """:class:`Applier` over a :class:`MemoryStandby` (see the module docstring)."""

    engine = "memory"

    def __init__(self, standby: MemoryStandby) -> None:
        self.standby = standby
        self._txn: _Db | None = None
        self._applied: list[str] = []
        self._parts: dict[tuple[int, int], list[bytes]] = {}

    def _require(self) -> _Db:
        if self._txn is None:
            raise RuntimeError("MemoryApplier: call begin() before writing")
        return self._txn

    def check_prerequisites(self) -> list[Problem]:
        return []

    def identity(self) -> DatabaseIdentity:
        return self.standby.identity

    def inspect(self) -> TargetFacts:
        rows = {(s.group, s.standby): s.extra.get("identity", "") for s in [self.standby.db.state] if s is not None}
        return TargetFacts(self.standby.identity, rows, list(self.standby.sources))

    def occupied(self, tables: Collection[str]) -> dict[str, int]:
        out = {}
        for t in tables:
            found = self.standby.rows(t)
            if found:
                out[t] = len(found)
        return out

    def prepare(self) -> None:
        self.standby.prepared += 1

    def load_state(self, group: str, standby: str) -> ApplyState | None:
        return self.standby.db.state

    def load_table_metas(self, group: str) -> dict[str, TableMeta]:
        return dict(self.standby.db.metas)

    def begin(self) -> None:
        if self._txn is None:
            with self.standby.lock:
                self._txn = copy.deepcopy(self.standby.db)
            self._applied = []

    def run_schema_step(self, group: str, step: SchemaStep, *, follow_drop: bool, what: str) -> bool:
        db = self._require()
        db.ddl.append((what, step.sql))
        return False

    def rename_table(self, group: str, old: str, new: str) -> None:
        db = self._require()
        if old in db.tables:
            db.tables[new] = db.tables.pop(old)
        if old in db.metas:
            db.metas[new] = db.metas.pop(old)

    def apply_table_meta(self, group: str, meta: TableMeta, previous: TableMeta | None) -> None:
        db = self._require()
        table = db.tables.get(meta.table)
        if table is None:
            db.tables[meta.table] = _Table(meta)
        else:
            table.meta = meta
        db.metas[meta.table] = meta

    def apply_rows(self, metas: Mapping[str, TableMeta], changes: Sequence[RowChange], txn_id: str,
                   position: str) -> None:
        db = self._require()
        try:
            for change in changes:
                if self.standby.fail_on is not None:
                    exc = self.standby.fail_on(change)
                    if exc is not None:
                        raise exc
                self._apply(db, metas[change.table], change, txn_id, position)
        except (DataApplyError, TransientApplyError):
            self.rollback()
            raise
        self._applied.append(txn_id)

    def _assemble(self, meta: TableMeta, ch: RowChange) -> RowChange:
        values = list(ch.values)
        for ref in ch.parts or []:
            data = b"".join(self._parts.pop((ref.row, ref.column), []))
            if len(data) != ref.total_bytes or crc32c.crc32c(data) != ref.crc:
                raise DataApplyError(f"the value of {meta.table} column {ref.column} arrived incomplete",
                                     table=meta.table, fix="test")
            values[ref.column] = data if meta.columns[ref.column].type == "bytes" else data.decode("utf-8")
        return RowChange(ch.table, ch.op, values, ch.old_key)

    def _apply(self, db: _Db, meta: TableMeta, ch: RowChange, txn_id: str, position: str) -> None:
        if ch.parts:
            ch = self._assemble(meta, ch)
        table = db.tables.setdefault(meta.table, _Table(meta))
        if ch.op is Op.TRUNCATE:
            table.rows.clear()
            table.bag.clear()
            return
        kidx = meta.key_indexes

        def missing(key: object) -> DataApplyError:
            return DataApplyError(f"{ch.op.value} of a missing row in {meta.table}, key {key!r}, source transaction "
                                  f"{txn_id} at {position}", table=meta.table, txn_id=txn_id, position=position,
                                  key=key, fix="resync the table")

        if meta.identity == "full":
            if ch.op is Op.INSERT:
                table.bag.append(list(ch.values))
                return
            old = list(ch.old_key or ch.values)
            if old not in table.bag:
                raise missing(old)
            i = table.bag.index(old)
            if ch.op is Op.DELETE:
                del table.bag[i]
            else:
                table.bag[i] = [o if v is UNCHANGED else v for v, o in zip(ch.values, old, strict=True)]
            return
        if ch.op is Op.INSERT:
            key = tuple(ch.values[i] for i in kidx)
            if key in table.rows:
                raise DataApplyError(f"duplicate key {key!r} in {meta.table}, source transaction {txn_id}",
                                     table=meta.table, txn_id=txn_id, position=position, key=key, fix="resync")
            table.rows[key] = list(ch.values)
            return
        key = tuple(ch.old_key) if ch.old_key is not None else tuple(ch.values[i] for i in kidx)
        if key not in table.rows:
            raise missing(key)
        if ch.op is Op.DELETE:
            del table.rows[key]
            return
        old = table.rows.pop(key)
        new = [o if v is UNCHANGED else v for v, o in zip(ch.values, old, strict=True)]
        table.rows[tuple(new[i] for i in kidx)] = new

    def advance_sequences(self, values: Sequence[SequenceValue]) -> int:
        db = self._require()
        moved = 0
        for v in values:
            if v.last_value > db.sequences.get(v.name, -(2**63)):
                db.sequences[v.name] = v.last_value
                moved += 1
        return moved

    def independent_tables(self, tables: Collection[str]) -> bool:
        return True

    def store_part(self, part: ValuePart) -> None:
        self._require()
        if part.index == 0:
            self._parts[(part.row, part.column)] = []
        self._parts.setdefault((part.row, part.column), []).append(part.data)
        self.standby.parts_seen += 1

    def save_state(self, state: ApplyState, previous: ApplyState | None = None) -> None:
        db = self._require()
        if previous is not None:
            now = self.standby.db.state  # what is committed (another applier may have moved it)
            if now is None or (now.next_offset, now.epoch) != (previous.next_offset, previous.epoch):
                self.rollback()
                raise StateMoved(f"state moved: read {previous.next_offset}, found "
                                 f"{now.next_offset if now else None}", fix="test")
        db.state = state

    def load_table_states(self, group: str, standby: str) -> dict[str, TableState]:
        return dict(self.standby.db.table_states)

    def save_table_state(self, group: str, standby: str, state: TableState) -> None:
        self._require().table_states[state.table] = state

    def clear_table_states(self, group: str, standby: str) -> None:
        self._require().table_states.clear()

    def bulk_load(self, rows: TableRows, *, into: str | None = None, replace: bool = False,
                  progress: Callable[[int], None] | None = None) -> int:
        db = self._require()
        name = into or rows.meta.table
        table = db.tables.setdefault(name, _Table(rows.meta))
        if replace:
            table.rows.clear()
            table.bag.clear()
        count = 0
        for values in rows.values():
            if rows.meta.identity == "full":
                table.bag.append(list(values))
            else:
                table.rows[tuple(values[i] for i in rows.meta.key_indexes)] = list(values)
            count += 1
        if progress is not None:
            progress(count)
        return count

    def replace_table(self, group: str, rows: TableRows, *, progress: Callable[[int], None] | None = None,
                      created: bool = False) -> int:
        db = self._require()
        db.tables[rows.meta.table] = _Table(rows.meta)
        db.metas[rows.meta.table] = rows.meta
        return self.bulk_load(rows, progress=progress)

    def stage_copy(self, rows: TableRows, position: Position, *,
                   on_rows: Callable[[int], None] | None = None) -> StagedTable:
        staging = f"ark_resync.{rows.meta.table}"
        self.begin()
        self._require().tables.pop(staging, None)
        count = self.bulk_load(rows, into=staging, progress=on_rows)
        self.commit()
        return StagedTable(rows.meta.table, staging, rows.meta, position, count)

    def swap_in_table(self, group: str, staged: StagedTable) -> None:
        db = self._require()
        copy_ = db.tables.pop(staged.staging)
        copy_.meta = staged.meta
        db.tables[staged.table] = copy_
        db.metas[staged.table] = staged.meta

    def drop_staging(self, table: str) -> None:
        with self.standby.lock:
            self.standby.db.tables.pop(f"ark_resync.{table}", None)

    def commit(self) -> None:
        if self._txn is None:
            return
        with self.standby.lock:
            self.standby.db = self._txn
            self.standby.commits.append((self._txn.state, list(self._applied)))
        self._txn = None

    def rollback(self) -> None:
        self._txn = None
        self._parts.clear()

    def close(self) -> None:
        self._txn = None
