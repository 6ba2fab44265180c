"""Planning ``apply_rows`` on MariaDB: split a change list into runs one statement kind can apply.

A run is a maximal stretch of consecutive changes of one table and one operation (an UPDATE that
moves its key is a run of its own kind) in which no key occurs twice. Inside a run no change can
affect another, so the set-based path may apply it as one multi-row statement; runs keep their
order. Rows from a MariaDB source always carry every column (full row images); an UPDATE from a
PostgreSQL source may leave unchanged TOAST columns out (UNCHANGED): such UPDATEs form runs of their own
(``partial``), applied row by row on the columns they carry. Pure code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from consumers.errors import DataApplyError
from schemas.entries import UNCHANGED, Op, RowChange, TableMeta, Value

Key = tuple[Value, ...]


@dataclass(slots=True)
class Run:
    """Consecutive changes that one kind of statement applies (see the module docstring)."""

    table: str
    op: Op
    key_change: bool = False
    #: UPDATEs that leave some columns out (UNCHANGED: a PostgreSQL source's unchanged TOAST values)
    partial: bool = False
    values: list[list[Value]] = field(default_factory=list)
    keys: list[Key] = field(default_factory=list)

    def __len__(self) -> int:
        return max(len(self.values), len(self.keys))


def _bad(change: RowChange, problem: str, txn_id: str, position: str) -> DataApplyError:
    return DataApplyError(f"{change.op.value} on {change.table} {problem} (source transaction {txn_id} at "
                          f"{position})", table=change.table, txn_id=txn_id, position=position,
                          fix="resync the table (ark resync --table); if the source table has no key, give it a "
                              "primary key first")


def split_runs(metas: Mapping[str, TableMeta], changes: Sequence[RowChange], txn_id: str = "",
               position: str = "") -> list[Run]:
    """Split ``changes`` into runs, keeping their order."""
    runs: list[Run] = []
    current: Run | None = None
    seen: set[Key] = set()
    for change in changes:
        op = change.op
        if op is Op.TRUNCATE:
            runs.append(Run(change.table, Op.TRUNCATE))
            current = None
            continue
        meta = metas.get(change.table)
        if meta is None:
            raise DataApplyError(f"no table metadata for {change.table}", table=change.table, txn_id=txn_id,
                                 position=position, fix="resync the table (ark resync --table)")
        kidx = meta.key_indexes
        if op is not Op.DELETE and len(change.values) != len(meta.columns):
            raise _bad(change, f"carries {len(change.values)} values for {len(meta.columns)} columns", txn_id,
                       position)
        partial = op is not Op.DELETE and any(v is UNCHANGED for v in change.values)
        if partial and (op is Op.INSERT or any(change.values[i] is UNCHANGED for i in meta.key_indexes)):
            raise _bad(change, "leaves a key column or an inserted column out (UNCHANGED)", txn_id, position)
        if op is not Op.INSERT and not kidx:
            raise _bad(change, "has no key", txn_id, position)
        new_key: Key = tuple(change.values[i] for i in kidx) if op is not Op.DELETE else ()
        key: Key = tuple(change.old_key) if change.old_key is not None else new_key
        if op is not Op.INSERT and len(key) != len(kidx):
            raise _bad(change, "has an unusable old key", txn_id, position)
        key_change = op is Op.UPDATE and change.old_key is not None and key != new_key
        touched = {k for k in (key, new_key) if k} if kidx else set()
        same = (current is not None and current.table == change.table and current.op is op
                and current.key_change == key_change and current.partial == partial)
        if not same or touched & seen:
            current = Run(change.table, op, key_change, partial)
            runs.append(current)
            seen = set()
        assert current is not None
        seen |= touched
        if op is not Op.DELETE:
            current.values.append(list(change.values))
        if op is not Op.INSERT:
            current.keys.append(key)
    return runs
