"""The one protocol through which the apply loop's collaborators plug in.

The loop (:mod:`consumers.session`) applies entries; around it, four collaborators act at well-defined
points, each through :class:`ApplyHook` and the :class:`Boundary` the loop lends them, never by
reading the loop's or the runner's private state:

================= ==================================================================================
hook              what it is for
================= ==================================================================================
``on_control``    new control records (the channel is the agent's one channel)
``at_boundary``   between two source transactions, nothing open but the batch: the verify hold
                  answers, table resyncs set tables aside and swap them in
``admit``         before a record is decoded: a standby awaiting a retransmission skips everything
                  until the retransmitted range starts
``before_entry``  before an entry is handled: a source gap stops the standby
``before_txn``    before the first chunk of a transaction (or a checkpoint): the verify hold waits
``on_meta``       a table's new shape: a table being resynced is not adapted by the loop
``rows``          a chunk's rows: those of tables being resynced are held back
``describe``      a sentence for the heartbeat's message
================= ==================================================================================
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.control import ControlRecord
from common.redo import RedoRecord
from consumers.base import Applier, ApplyState
from schemas.entries import RowChange, TableMeta, TxnChunk


@dataclass
class Boundary:
    """What the loop lends a hook at a transaction boundary."""

    applier: Applier
    metas: dict[str, TableMeta]
    #: The state the next commit writes (the batch's end); ``committed`` is what the standby holds now.
    pending: Callable[[], ApplyState]
    committed: Callable[[], ApplyState]
    #: Open the loop's target transaction / commit it together with the state row.
    begin: Callable[[], None]
    commit: Callable[[], None]
    #: Keep the loop's housekeeping going while a hook waits (control polls, heartbeat state).
    tick: Callable[[], None]
    stopping: threading.Event
    #: Set the agent's reported state (e.g. "held for verify") and publish a heartbeat.
    report: Callable[[str], None]


class ApplyHook:
    """A collaborator of the apply loop; every method has a do-nothing default (see the module docstring)."""

    def on_control(self, records: Sequence[ControlRecord]) -> None:
        """New control records."""

    def at_boundary(self, b: Boundary) -> None:
        """Between two source transactions."""

    def admit(self, record: RedoRecord | None, applied_key: bytes) -> bool:
        """False: skip this record (``None`` when nothing was read) without applying anything."""
        return True

    def before_entry(self, offset: int, pending: ApplyState, topic: str) -> None:
        """Before an entry is handled (may raise to stop the standby)."""

    def before_txn(self, chunk: TxnChunk, b: Boundary) -> None:
        """Before the first chunk of a new transaction, or a checkpoint (may wait; the batch is committed)."""

    def blocks(self, chunk: TxnChunk) -> bool:
        """True when :meth:`before_txn` must be called for ``chunk`` (the loop commits its batch first)."""
        return False

    def on_meta(self, meta: TableMeta, previous: TableMeta | None, offset: int) -> bool:
        """True when the hook takes care of this shape change (the loop records it but does not adapt)."""
        return False

    def rows(self, offset: int, chunk: TxnChunk, epoch: int, rows: Sequence[RowChange]) -> Sequence[RowChange]:
        """The rows of ``chunk`` to apply (a hook may hold some back)."""
        return rows

    def urgent(self) -> bool:
        """True while the hook needs control records within milliseconds (the loop polls faster)."""
        return False

    def describe(self) -> str:
        """A sentence for the heartbeat's message ('' when there is nothing to say)."""
        return ""

    def close(self) -> None:
        """The agent stops."""
