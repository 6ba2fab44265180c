"""The redo log: one group's ``ark.<group>.redo`` topic, as the capture writes it and the appliers read it.

The runners speak to Kafka only through these interfaces, so that their logic (chunking, skipping
after a restart, the delay gate, grouping, exactly-once, retransmission, gaps) is tested in seconds
against an in-memory log (tests/support/memory.py) and proven against real Kafka by the integration
and fault tiers (:mod:`common.redo_kafka`).

Guarantees an implementation must give (Kafka gives them with a transactional, idempotent producer
and read_committed consumers):

* **One partition, total order.** Offsets increase; a record's offset never changes.
* **Transactions.** What a :class:`RedoWriter` produces between :meth:`~RedoWriter.begin` and
  :meth:`~RedoWriter.commit` becomes visible to readers at once, or never (abort, crash). Commit
  markers take offsets too: never assume that offset + 1 holds a record.
* **Fencing.** A newer writer of the group fences an older one: the older one's next call raises
  :class:`~common.errors.FencedError`.
* **Retention.** Records below :meth:`RedoLog.watermarks`' low mark are gone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from common.errors import ArkError
from common.exit_codes import ExitCode
from schemas.envelope import Headers


class RedoRangeDeleted(ArkError):
    """A reader asked for ``first`` but retention has deleted everything below ``low``: the reader does not
    jump to the oldest retained offset by itself (a silent jump would skip transactions)."""

    exit_code = ExitCode.RETENTION_GAP

    def __init__(self, topic: str, first: int, low: int) -> None:
        self.topic, self.first, self.low = topic, first, low
        super().__init__(f"redo entries {topic}[0]@{first}..{low - 1} were deleted by retention before they were read",
                         fix="rebuild the standby: 'ark resync STANDBY'; raise the redo topic's retention")


@dataclass(frozen=True, slots=True)
class RedoRecord:
    """One committed record of the redo log."""

    offset: int
    value: bytes | None
    headers: Headers
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class EndOfLog:
    """A reader reached the end of what is committed: ``offset`` is where the next record would be."""

    offset: int


class RedoWriter(ABC):
    """The capture's transactional writer (one per capture session)."""

    #: The highest offset of a record this writer delivered (-1 before the first).
    last_offset: int = -1

    @abstractmethod
    def begin(self) -> None:
        """Open a transaction (FencedError when a newer writer took over)."""

    @abstractmethod
    def produce(self, value: bytes, headers: list[tuple[str, str | bytes | None]], timestamp_ms: int) -> None:
        """Add one record to the open transaction (blocks while the local queue is full)."""

    @abstractmethod
    def commit(self) -> None:
        """Commit: everything produced since :meth:`begin` is now durable and visible."""

    @abstractmethod
    def abort(self) -> None:
        """Abort: nothing produced since :meth:`begin` ever becomes visible (never raises)."""

    def poll(self) -> None:  # noqa: B027 - an optional hook
        """Serve delivery callbacks (a no-op where there are none)."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release the writer."""


class RedoReader(ABC):
    """A standby's reader of the redo log, positioned by the applier (never by a consumer group)."""

    @abstractmethod
    def seek(self, offset: int) -> None:
        """Read from ``offset`` on (a record held back and dropped is read again)."""

    @abstractmethod
    def poll(self, timeout: float) -> RedoRecord | EndOfLog | None:
        """The next committed record, :class:`EndOfLog` when there is none now, or None after ``timeout``.

        Raises :class:`RedoRangeDeleted` when the next offset to read is no longer retained: a reader never
        moves on to the oldest retained offset by itself."""

    @abstractmethod
    def pause(self) -> None:
        """Stop fetching and drop what was fetched ahead (nothing is spooled while an entry is not due)."""

    @abstractmethod
    def resume(self, offset: int) -> None:
        """Fetch again, from ``offset``."""

    @abstractmethod
    def watermarks(self) -> tuple[int, int]:
        """(low, high): the first retained offset and the end of what is committed."""

    def end_hint(self) -> int:
        """The end of the log as the reader last saw it (may lag a little; for lag reports, never for
        decisions). By default the live end."""
        return self.watermarks()[1]

    def low_watermark(self) -> int:
        """The first retained offset as of the last fetch or later (cheap: called at every hole in the offsets)."""
        return self.watermarks()[0]

    def report(self, next_offset: int) -> None:  # noqa: B027 - an optional hook
        """Tell lag tools how far the standby has applied (informational; the state row is the truth)."""

    @abstractmethod
    def close(self) -> None:
        """Release the reader."""


class RedoLog(ABC):
    """One group's redo log, and its companion quarantine (corrupt entries kept as evidence)."""

    topic: str

    @abstractmethod
    def ensure(self) -> None:
        """Create the log (and its retention) when it does not exist yet."""

    @abstractmethod
    def writer(self) -> RedoWriter:
        """A new transactional writer; it fences any older one of the group."""

    @abstractmethod
    def reader(self, name: str) -> RedoReader:
        """A new reader for standby ``name``, not yet positioned (:meth:`RedoReader.seek`)."""

    @abstractmethod
    def watermarks(self) -> tuple[int, int]:
        """(low, high) of the log."""

    @abstractmethod
    def read_range(self, start: int, stop: int) -> Iterator[RedoRecord]:
        """Committed records with ``start <= offset < stop``, in order."""

    @abstractmethod
    def tail(self, count: int, accept: Callable[[RedoRecord], bool] | None = None) -> list[RedoRecord]:
        """The last ``count`` committed records that ``accept`` keeps (oldest first)."""

    @abstractmethod
    def message_limit(self) -> int:
        """The largest message (bytes) the log accepts: what the writer, the topic and the broker all allow."""

    @abstractmethod
    def quarantine(self, value: bytes | None, headers: list[tuple[str, str | bytes | None]], key: str) -> None:
        """Keep a corrupt entry's raw bytes and headers as evidence (durable when this returns)."""
