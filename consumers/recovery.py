"""A delayed standby as a recovery point: ``ark skip`` of one bad transaction, and the point-in-time cut of a
``ark failover --until``.

* :class:`Skips` leaves out every row of a transaction an operator asked to skip (``skip-transaction`` records
  for this standby, by the redo offset where the transaction starts): the transaction's offsets are consumed,
  its rows are never applied, and the applier logs it.
* A point-in-time failover holds its target at the first transaction committed at or after the chosen time
  (``apply-until``), then publishes the cut (``epoch-cut``): the entries of that epoch from the cut's offset on
  are not part of the group's history. Every applier skips them; one that already applied some holds what
  the new primary does not, and stops with :class:`CutPassed` (``ark resync`` rebuilds it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from common.control import ControlRecord
from common.errors import ArkError
from common.exit_codes import ExitCode
from consumers.hooks import ApplyHook
from schemas.control import EpochCut, SkipTransaction
from schemas.entries import RowChange, TxnChunk

log = logging.getLogger(__name__)


class CutPassed(ArkError):
    """The standby applied transactions that a point-in-time failover cut out of the group's history."""

    exit_code = ExitCode.NOT_SYNCED


def cut_mark(cut: EpochCut) -> str:
    """What a state row records once the applier skipped from a cut (it applied nothing past it)."""
    return f"{cut.epoch}:{cut.from_offset}"


def cut_passed(standby: str, cut: EpochCut, next_offset: int) -> CutPassed:
    """The error of a standby that applied past ``cut``."""
    return CutPassed(f"standby {standby} applied transactions of epoch {cut.epoch} after the point-in-time "
                     f"failover's cut (redo offset {cut.from_offset}; it is at {next_offset}): it holds changes the "
                     "new primary does not have", fix=f"run 'ark resync {standby}' (a fresh copy of the new primary)")


class Skips(ApplyHook):
    """Transactions this standby must not apply (see the module docstring)."""

    def __init__(self, standby: str, applied: Callable[[], int] = lambda: -1) -> None:
        self.standby = standby
        #: The next redo offset the standby applies (-1: unknown): a skip below it came too late.
        self._applied = applied
        self.offsets: dict[int, str] = {}
        self._active: bytes | None = None
        self.skipped = 0

    def remember(self, records: Sequence[ControlRecord]) -> None:
        """The skips recorded so far (the backlog at start: those below the state row were already honored)."""
        for rec in records:
            if isinstance(rec.body, SkipTransaction) and rec.target == self.standby:
                self.offsets[rec.body.offset] = rec.body.txn_id

    def on_control(self, records: Sequence[ControlRecord]) -> None:
        self.remember(records)
        applied = self._applied()
        for rec in records:
            if isinstance(rec.body, SkipTransaction) and rec.target == self.standby and rec.body.offset < applied:
                # 'ark skip' checks the applier's heartbeat first, but a heartbeat is a moment old: say it loudly
                # when the transaction was applied meanwhile, so that the operator turns to a recovery point.
                log.error("standby %s was asked to skip transaction %s at redo offset %d after it had applied it "
                          "(it is at %d): the skip had no effect; 'ark failover STANDBY --until TIME' on a more "
                          "delayed standby brings back the state before it", self.standby, rec.body.txn_id,
                          rec.body.offset, applied)

    def rows(self, offset: int, chunk: TxnChunk, epoch: int, rows: Sequence[RowChange]) -> Sequence[RowChange]:
        if chunk.chunk_index == 0 and offset in self.offsets:
            self._active = chunk.commit.key
            log.warning("standby %s skips transaction %s at redo offset %d (%s), as the operator asked", self.standby,
                        chunk.txn_id, offset, chunk.commit.text)
        if self._active is not None and chunk.commit.key == self._active:
            if chunk.last:
                self._active = None
                self.skipped += 1
            return []
        return rows

    def describe(self) -> str:
        return f"{self.skipped} transactions skipped as asked" if self.skipped else ""
