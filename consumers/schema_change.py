"""Applying a :class:`SchemaChange` (a DDL of the primary) on a standby, inside its source transaction.

The apply loop hands each schema change here when it reaches it, inside the target transaction of the
source transaction it belongs to: it commits with that transaction's rows and the state row (exactly
once), and no earlier than the transaction's delay. A capture that restarted may publish a change again;
each ``(commit, seq)`` is applied once per source transaction (:class:`Applied`).

The steps run in order: ``table`` steps are the loop's own shape changes (the same path as a TableMeta
entry: a table being resynced is recorded, not adapted); ``rename-table`` moves the table and its stored
shape; ``resync-table`` sets the table aside for a resync in this same transaction; the rest is the
applier's (:meth:`consumers.base.Applier.run_schema_step`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from consumers.base import Applier
from consumers.hooks import ApplyHook
from consumers.table_resync import TableResyncs
from schemas.entries import SchemaChange, TableMeta

log = logging.getLogger(__name__)


@dataclass
class Applied:
    """The schema changes applied in the open source transaction (reset at its first chunk)."""

    commit_key: bytes = b""
    seqs: set[int] = field(default_factory=set)

    def first(self, change: SchemaChange) -> bool:
        """True the first time ``change`` is met in its transaction (and remembers it)."""
        if change.commit.key != self.commit_key:
            self.commit_key, self.seqs = change.commit.key, set()
        if change.seq in self.seqs:
            return False
        self.seqs.add(change.seq)
        return True


def describe(change: SchemaChange) -> str:
    """``ALTER TABLE at 0/1A2B (seq 0)``: the change, for messages."""
    return f"{change.tag} at {change.commit.text} (#{change.seq})"


def apply_change(change: SchemaChange, *, group: str, applier: Applier, metas: dict[str, TableMeta],
                 hooks: Sequence[ApplyHook], resyncs: TableResyncs, follow_drop: bool, offset: int) -> bool:
    """Run ``change``'s steps in the open target transaction; True when it must commit at the end of this
    source transaction (see :meth:`Applier.run_schema_step`)."""
    what = describe(change)
    shapes = {m.table: m for m in change.tables}
    commit_after = False
    log.info("schema change %s: %d steps (%s)", what, len(change.steps), " ".join(change.statement.split())[:200])
    for step in change.steps:
        if step.object in resyncs.resyncing and step.action in ("sql", "optional-sql"):
            resyncs.defer(step.object, step)  # its copy brings the columns; these need them
            continue
        if step.action == "table":
            meta = shapes.get(step.object)
            if meta is None:
                continue
            previous = metas.get(meta.table)
            if any(hook.on_meta(meta, previous, offset) for hook in hooks):
                metas[meta.table] = meta  # a table being resynced: its copy brings the new shape
                continue
            if previous is None or previous.version != meta.version:
                applier.apply_table_meta(group, meta, previous)
                metas[meta.table] = meta
        elif step.action == "rename-table":
            applier.rename_table(group, step.object, step.detail)
            moved = metas.pop(step.object, None)
            if moved is not None:
                metas[step.detail] = replace(moved, table=step.detail)
            resyncs.renamed(step.object, step.detail)
        elif step.action == "resync-table":
            if step.object in resyncs.resyncing:
                continue
            resyncs.set_aside(applier, step.object, step.detail, offset)
        else:
            commit_after |= applier.run_schema_step(group, step, follow_drop=follow_drop, what=what)
            if step.action == "drop-table" and follow_drop:
                metas.pop(step.object, None)
    return commit_after
