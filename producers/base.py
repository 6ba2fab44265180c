"""The capture interface: one source database's transaction log, read as committed transactions.

Each engine adapter (PostgreSQL logical decoding, MariaDB binlog, Oracle LogMiner, SQL Server CDC)
implements :class:`LogCapture`. The capture runner (:mod:`producers.runner`) is engine-neutral: it
turns the event stream into Kafka transactions and decides when the source may forget its log.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

from common.identity import DatabaseIdentity
from common.problems import Problem
from schemas.entries import Position, RowChange, SchemaChange, SequenceValues, TableMeta


@dataclass(frozen=True, slots=True)
class TxnBegin:
    """A committed transaction starts. ``commit`` is the position of its commit record."""

    txn_id: str
    commit: Position
    commit_time_us: int


@dataclass(frozen=True, slots=True)
class TxnEnd:
    """The transaction that began last is complete.

    ``confirm`` is the position to hand to :meth:`LogCapture.confirm` once this transaction is
    durably in Kafka (for PostgreSQL, the commit LSN + 1: the slot then re-sends exactly the
    transactions after this one).
    """

    commit: Position
    confirm: Position


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing to read right now; ``position`` is where the log stands (may be confirmed when
    nothing is pending, so that an idle source does not retain its log forever)."""

    position: Position | None
    #: True when the source had nothing more to send (everything it had committed has been read), False
    #: for a pause taken between reads of a busy log.
    drained: bool = False


CaptureEvent = TxnBegin | RowChange | TableMeta | SchemaChange | TxnEnd | Idle


class LogCapture(ABC):
    """A source database's log, read in commit order.

    Guarantees an implementation must give:

    * **Committed only, in commit order.** :meth:`stream` yields ``TxnBegin``, its ``RowChange``
      events, ``TableMeta`` events (before the first row that uses a new or changed shape) and
      ``SchemaChange`` events (a DDL, at its place among the rows), then ``TxnEnd``. Transactions never
      interleave, and commit positions strictly increase.
    * **Nothing forgotten before it is safe.** The source keeps its log (slot, archived logs, CDC
      tables) from the last position passed to :meth:`confirm`; the runner confirms a position only
      after the Kafka transaction holding it has committed.
    * **Resumable.** ``stream(resume_after=p)`` never yields a transaction whose commit position is
      ``<= p`` ... except when the source cannot tell, in which case the runner skips them by
      comparing commit positions with what Kafka already holds.
    * **Gaps are errors.** If the source can no longer supply everything after ``resume_after``
      (slot recreated, log purged), :meth:`stream` raises :class:`producers.errors.SlotGapError`.
    * **Bounded memory.** Rows are yielded as they are decoded; a transaction is never held whole.
    * **Never in the way of the source's shutdown or restart** (issue 19). Whatever the capture is
      doing (idle, streaming, inside a large transaction, re-reading, blocked on Kafka), a shutdown of
      the source in any mode completes within a few seconds of the time it takes without the capture:
      the adapter keeps no idle session open on the source, answers what the source waits for at
      shutdown without confirming anything, and lets go of its connections when it cannot answer in
      time. After the source is back, :meth:`stream` works again with no operator step (a source that
      is down or restarting raises :class:`common.errors.SourceError`, which the runner retries within
      seconds). PostgreSQL: see :mod:`producers.postgresql.shutdown_watch`; a MariaDB adapter's binlog
      dump connection must likewise never block ``mysqladmin shutdown``. Fault case F11 proves it.
    """

    engine: str = "?"

    @abstractmethod
    def check_prerequisites(self) -> list[Problem]:
        """What is missing on the source for capture to be safe (each with its fix)."""

    @abstractmethod
    def identity(self) -> DatabaseIdentity:
        """Which database the source really is (SourceError when it cannot be read)."""

    def log_report(self, *, settings: bool = True) -> tuple[str, list[Problem]]:
        """The source log Ark holds back (size, the bound, free disk) in one sentence, and what threatens the
        source's disk, each with its fix (``ark check``; ``ark status`` passes ``settings=False`` for present
        dangers only, without advice on settings). Default: nothing to say."""
        return "", []

    @abstractmethod
    def ensure_setup(self) -> list[str] | None:
        """Create what capture needs on the source (slot, publication, supplemental logging, hooks); return what
        it did, a line per change (what it did to which tables), for the operator."""

    def protection(self) -> list[Problem]:
        """Every table of ``primary.tables`` that is not fully protected (not replicated, or only in part), and
        anything of the source's set-up that leaves changes unfollowed, each with what would protect it
        (``ark status`` and ``ark check`` list them). Never fatal."""
        return []

    @abstractmethod
    def parse_position(self, text: str) -> Position:
        """The Position of its text form, as written in entries and state tables."""

    @abstractmethod
    def stream(self, resume_after: Position | None) -> Iterator[CaptureEvent]:
        """Yield capture events from just after ``resume_after`` (or from the slot's start)."""

    @abstractmethod
    def gap_after(self, resume_after: Position) -> str | None:
        """Why the source can no longer supply everything after ``resume_after`` (a sentence naming
        both positions), or None when it still can. :meth:`stream` raises SlotGapError in that case."""

    def retained_from(self) -> str:
        """Where the source's retained log starts now (text position), "" when the adapter cannot tell.
        Named in a refused retransmission, so the operator sees what is no longer re-readable."""
        return ""

    @abstractmethod
    def confirm(self, position: Position) -> None:
        """Let the source discard its log up to ``position`` (already durable in Kafka)."""

    def nudge(self) -> None:  # noqa: B027 - optional: a source that reports its log end by itself needs nothing
        """Ask the source to say soon where its log stands (an :class:`Idle` with a fresh position): an epoch's end
        waits for the log to be drained past a position."""

    def sequence_values(self, refresh: bool = False) -> SequenceValues | None:
        """The values of the replicated sequences now (those in use), or None when the source has none or
        cannot read them right now (the reason is logged). Called between transactions, about once a
        heartbeat: it must be cheap for the source and take no lock that a writer waits for. ``refresh``: the
        set of sequences may have changed (a shape change was seen): look it up again."""
        return None

    @abstractmethod
    def close(self) -> None:
        """Release connections. Safe to call twice."""
