"""Re-reading one table's rows from the redo topic for a table resync's catch-up (consumers/table_resync.py).

After a table's copy is swapped in, the rows of that table in transactions above the copy's floor are re-read
from Kafka (a second consumer) and applied in the loop's own transaction, with the loop's own skip rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from common.redo import RedoLog
from consumers.base import Applier
from schemas import envelope
from schemas.entries import REDO_SCHEMA, EpochMarker, RowChange, TableMeta, TxnChunk, ValuePart, from_record

#: What a replay yields: (txn id, position, the table's rows), or a part of one of its large values.
Replayed = tuple[str, str, list[RowChange]] | ValuePart


class Replay:
    """Re-reads the redo topic for one table's rows above the copy's floor, in consecutive ranges.

    Applies the loop's own skip rules (entries of older epochs, transactions at or below what was
    already replayed), CRC-checked; state carries over from one range to the next.
    """

    def __init__(self, redo: RedoLog, table: str, floor_key: bytes, epoch: int) -> None:
        self._redo, self.table = redo, table
        self.done_key, self.max_epoch = floor_key, epoch
        self.rows = 0

    def between(self, start: int, stop: int) -> Iterator[Replayed]:
        """(txn id, position, the table's rows) of the transactions in offsets [start, stop), and the
        parts of the table's large values, each before the chunk whose row uses it."""
        if start >= stop:
            return
        topic = self._redo.topic
        for rec in self._redo.read_range(start, stop):
            dec = envelope.decode(rec.value, rec.headers, topic=topic, partition=0, offset=rec.offset,
                                  expect=REDO_SCHEMA)
            body = from_record(dec.record).body
            if isinstance(body, EpochMarker):
                self.max_epoch = max(self.max_epoch, body.new_epoch)
                continue
            if not isinstance(body, TxnChunk) or dec.epoch < self.max_epoch or body.commit.key <= self.done_key:
                continue
            if body.part is not None:
                if body.part.table == self.table:
                    yield body.part
                continue
            rows = [c for c in body.changes if c.table == self.table]
            if rows:
                self.rows += len(rows)
                yield body.txn_id, body.commit.text, rows
            if body.last:
                self.done_key = body.commit.key


class Batch:
    """One table's replayed rows of many transactions, applied in few calls (commit order kept), so the
    applier's set-based path takes them, as the loop does with a batch of small transactions."""

    MAX_ROWS = 50_000

    def __init__(self, applier: Applier, metas: Mapping[str, TableMeta]) -> None:
        self._applier, self._metas = applier, metas
        self._rows: list[RowChange] = []
        self._first: tuple[str, str] | None = None
        self._last: tuple[str, str] = ("", "")
        self.applied = 0

    def add_item(self, item: Replayed) -> None:
        """A replayed transaction's rows, or a part of a large value (stored at once: rows of other
        transactions must not see it, so what is pending goes first)."""
        if isinstance(item, ValuePart):
            self.flush()
            self._applier.store_part(item)
        else:
            self.add(*item)

    def add(self, txn_id: str, position: str, rows: list[RowChange]) -> None:
        self._first = self._first or (txn_id, position)
        self._last = (txn_id, position)
        self._rows.extend(rows)
        if len(self._rows) >= self.MAX_ROWS:
            self.flush()

    def flush(self) -> int:
        """Apply what is collected; returns the rows applied so far."""
        if self._rows and self._first is not None:
            (t0, p0), (t1, p1) = self._first, self._last
            txns, where = (t0, p0) if t0 == t1 else (f"{t0}..{t1}", f"{p0}..{p1}")
            self._applier.apply_rows(self._metas, self._rows, txns, where)
            self.applied += len(self._rows)
        self._rows, self._first = [], None
        return self.applied
