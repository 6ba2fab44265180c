"""Planning ``apply_rows``: split a change list into runs that can each be applied by one statement.

A *run* is a maximal stretch of consecutive changes with the same table, operation, set of present
columns (UNCHANGED columns are left out) and key-change flag, in which no key occurs twice (old or
new key). Inside such a run no change can affect another, so the set-based path may apply it in any
order; the runs themselves are applied in the order given. Pure code: unit-tested without a server.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from consumers.errors import DataApplyError
from consumers.postgresql.sql import param_text, set_columns
from schemas.entries import UNCHANGED, Op, RowChange, TableMeta, Value

Key = tuple[Value, ...]


@dataclass(slots=True)
class Run:
    """Consecutive changes that one statement can apply (see the module docstring)."""

    table: str
    op: Op
    cols: tuple[int, ...]
    key_change: bool = False
    #: Per change: the values of the present columns (new image), in ``cols`` order.
    values: list[list[Value]] = field(default_factory=list)
    #: Per change: the key that locates the row before the change (empty for INSERT/TRUNCATE).
    keys: list[Key] = field(default_factory=list)
    #: Index of each change in the list given to ``apply_rows`` (for error messages).
    indexes: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indexes)

    def signature(self) -> tuple[str, Op, tuple[int, ...], bool]:
        """What must be equal for two changes to share a run."""
        return (self.table, self.op, self.cols, self.key_change)


@dataclass(frozen=True, slots=True)
class _TableInfo:
    meta: TableMeta
    kidx: tuple[int, ...]
    all_cols: tuple[int, ...]


def _info(cache: dict[str, _TableInfo], metas: Mapping[str, TableMeta], change: RowChange, txn_id: str,
          position: str) -> _TableInfo:
    info = cache.get(change.table)
    if info is not None:
        return info
    meta = metas.get(change.table)
    if meta is None:
        raise DataApplyError(f"no table metadata for {change.table}", table=change.table, txn_id=txn_id,
                             position=position, fix="the redo topic lacks the table's metadata entry; "
                             "resync the table (ark resync --table)")
    info = _TableInfo(meta, meta.key_indexes, tuple(range(len(meta.columns))))
    cache[change.table] = info
    return info


def _bad(change: RowChange, problem: str, txn_id: str, position: str, key: object = None) -> DataApplyError:
    return DataApplyError(f"{change.op.value} on {change.table} {problem}", table=change.table, txn_id=txn_id,
                          position=position, key=key, fix="resync the table (ark resync --table); if the "
                          "source table has no key, give it a primary key first")


def split_runs(metas: Mapping[str, TableMeta], changes: Sequence[RowChange], txn_id: str = "",
               position: str = "", ordered: Collection[str] = ()) -> list[Run]:
    """Split ``changes`` into runs, keeping their order (see the module docstring).

    For an UPDATE, key columns the source marked UNCHANGED are filled from the old key, so an UPDATE
    run always carries every key column. The UPDATEs of a table in ``ordered`` (one with unique or
    exclusion constraints beyond its key) are never folded into a later image of the same row: the
    intermediate value may be what lets another row take this one's value, in the source's order.
    """
    runs: list[Run] = []
    current: Run | None = None
    seen: set[Key] = set()
    positions: dict[Key, int] = {}  # key -> index in the current UPDATE run (for last-writer-wins)
    cache: dict[str, _TableInfo] = {}
    for index, change in enumerate(changes):
        op = change.op
        if op is Op.TRUNCATE:
            runs.append(Run(change.table, Op.TRUNCATE, (), indexes=[index]))
            current = None
            continue
        info = _info(cache, metas, change, txn_id, position)
        kidx = info.kidx
        values = change.values
        if op is not Op.DELETE and len(values) != len(info.all_cols):
            raise _bad(change, f"carries {len(values)} values for {len(info.all_cols)} columns", txn_id, position)
        if op is not Op.INSERT and not kidx:
            raise _bad(change, "has no key", txn_id, position)
        key_change = False
        if change.old_key is not None:
            key: Key = tuple(change.old_key)
        elif op is Op.DELETE and len(values) != len(info.all_cols):
            raise _bad(change, "carries neither an old key nor the row", txn_id, position)
        else:
            key = (values[kidx[0]],) if len(kidx) == 1 else tuple(values[i] for i in kidx)
        touched: tuple[Key, ...] = (key,) if kidx else ()
        if op is Op.UPDATE:
            if change.old_key is not None:
                if len(key) != len(kidx) or UNCHANGED in key:
                    raise _bad(change, "has an unusable old key", txn_id, position, key)
                new_key = tuple(key[p] if values[i] is UNCHANGED else values[i] for p, i in enumerate(kidx))
                if new_key != key:
                    key_change = True
                    touched = (key, new_key)
                if any(values[i] is UNCHANGED for i in kidx):
                    values = list(values)
                    for p, i in enumerate(kidx):
                        values[i] = new_key[p]
            elif UNCHANGED in key:
                raise _bad(change, "has no usable key", txn_id, position, key)
        if op is Op.DELETE:
            cols: tuple[int, ...] = ()
        elif UNCHANGED in values:
            cols = tuple(i for i, v in enumerate(values) if v is not UNCHANGED)
            values = [values[i] for i in cols]
        else:
            cols = info.all_cols
        same_shape = (current is not None and current.cols == cols and current.op is op
                      and current.table == change.table and current.key_change == key_change)
        if same_shape and op is Op.UPDATE and not key_change and key in positions and change.table not in ordered:
            # Last writer wins: a later image of the same row, with the same present columns and the
            # same key, sets every column the earlier one set. Inside one target transaction the
            # earlier image is never visible, and a missing row is still detected by the later one.
            assert current is not None
            pos = positions[key]
            current.values[pos] = values
            current.indexes[pos] = index
            continue
        if not same_shape or any(k in seen for k in touched):
            current = Run(change.table, op, cols, key_change)
            runs.append(current)
            seen = set()
            positions = {}
        assert current is not None
        seen.update(touched)
        if op is Op.UPDATE and not key_change:
            positions[key] = len(current.indexes)
        current.values.append(values if op is not Op.DELETE else [])
        current.keys.append(() if op is Op.INSERT else key)
        current.indexes.append(index)
    return runs


def merge_truncates(runs: Sequence[Run]) -> list[Run | list[str]]:
    """Runs, with consecutive TRUNCATE runs merged into one list of table names."""
    out: list[Run | list[str]] = []
    for run in runs:
        if run.op is Op.TRUNCATE:
            last = out[-1] if out else None
            if isinstance(last, list):
                if run.table not in last:
                    last.append(run.table)
            else:
                out.append([run.table])
        else:
            out.append(run)
    return out


def row_params(meta: TableMeta, run: Run, i: int) -> list[str | None]:
    """Parameters of change ``i`` of ``run`` for the per-row statements of :mod:`.sql`."""
    if run.op is Op.INSERT:
        return [param_text(v) for v in run.values[i]]
    key = [param_text(k) for k in run.keys[i]]
    if run.op is Op.DELETE:
        return key
    by_col = dict(zip(run.cols, run.values[i], strict=True))
    return [param_text(by_col[c]) for c in set_columns(meta, run.cols, run.key_change)] + key


def stage_row(run: Run, i: int) -> list[Value]:
    """Change ``i`` of ``run`` as the staging row of :func:`.sql.stage_columns` (sequence included)."""
    if run.op is Op.DELETE:
        return [*run.keys[i], i]
    if run.key_change:
        return [*run.values[i], *run.keys[i], i]
    return [*run.values[i], i]


def without_columns(meta: TableMeta, run: Run, names: frozenset[str]) -> Run:
    """``run`` without the non-key columns called ``names`` (an UPDATE then leaves them as they are).

    Key columns stay: they locate the rows (and a key change must set them)."""
    keys = set(meta.key_indexes)
    drop = {i for i in run.cols if i not in keys and meta.columns[i].name in names}
    if not drop:
        return run
    keep = [p for p, i in enumerate(run.cols) if i not in drop]
    return Run(run.table, run.op, tuple(run.cols[p] for p in keep), run.key_change,
               [[values[p] for p in keep] for values in run.values], run.keys, run.indexes)
