"""In-memory fakes of the outside systems, for fast tests of the runners' own logic.

- :class:`MemoryRedoLog`: the redo topic, with Kafka's transaction semantics (aborted records never
  visible; commit markers take offsets; a newer writer fences an older one; retention drops a prefix).
- :class:`MemoryBus` and :func:`memory_channel`: the control topic, with real signed records.
- :class:`MemorySource` / :class:`MemoryCapture`: a source database's log (committed transactions with
  LSN-like positions, a slot that re-sends everything after its confirmed position, failure injection).
- :class:`MemoryApplier`: a standby (tables as dicts by key, or lists of rows without a unique key;
  transactions with rollback; the state row in the same transaction; exact data errors).

They implement the same interfaces as the real adapters (common/redo.py, common/control.py,
producers/base.py, consumers/base.py), which the integration and fault tiers prove on real Kafka and
PostgreSQL. Nothing here may be used outside tests. The topics' fakes live in :mod:`.memory_topics`, the
standby's in :mod:`.memory_standby`; this module holds the source, the row helpers and the agent runner,
and is where tests import all of them from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from common.errors import SourceError
from common.identity import DatabaseIdentity
from common.problems import Problem
from producers.base import CaptureEvent, Idle, LogCapture, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from schemas.entries import (
    Column,
    Op,
    Position,
    RowChange,
    SchemaChange,
    SchemaStep,
    SequenceValue,
    SequenceValues,
    TableMeta,
)
from schemas.positions import pg_lsn
from tests.support.memory_standby import MemoryApplier, MemoryStandby
from tests.support.memory_topics import (
    KEY,
    Headers,
    MemoryBus,
    MemoryReader,
    MemoryRedoLog,
    MemoryWriter,
    memory_channel,
    record,
)

# The fakes of the topics and of the standby live in their own modules; tests import them all from here.
__all__ = [
    "KEY", "Headers", "MemoryApplier", "MemoryBus", "MemoryCapture", "MemoryReader", "MemoryRedoLog",
    "MemorySource", "MemoryStandby", "MemoryWriter", "NullHeartbeat", "Running", "SourceTxn", "dele", "ins",
    "memory_channel", "record", "table_meta", "upd", "wait_until",
]


# -- the source -------------------------------------------------------------------------------------
@dataclass
class SourceTxn:
    """One committed source transaction of the fake log."""

    xid: int
    commit: int  # its commit position (an LSN)
    changes: list[RowChange]
    commit_time_us: int = 0
    metas: dict[str, TableMeta] = field(default_factory=dict)  # shapes announced before their first row
    #: DDL statements before change i (yielded as SchemaChange events, one per statement, seq in order).
    ddl_at: dict[int, list[str]] = field(default_factory=dict)


class MemorySource:
    """A source database's log: committed transactions and a slot (shared by every MemoryCapture of it)."""

    def __init__(self) -> None:
        self.txns: list[SourceTxn] = []
        self.confirmed = 0  # the slot's confirmed position (an LSN)
        self.next_lsn = 0x100
        self.lock = threading.Lock()
        #: Raise SourceError after this many yielded events of a stream (then it is reset), to simulate a crash.
        self.fail_after: int | None = None
        #: Crashes planned ahead: each new stream takes the next count as its ``fail_after`` (a test that sets
        #: ``fail_after`` between streams races the capture, which may finish first).
        self.fail_plan: list[int] = []
        #: How many simulated crashes happened.
        self.crashes = 0
        #: The source's sequences (name -> last value handed out); published by the capture like PostgreSQL's.
        self.sequences: dict[str, int] = {}
        #: How often the capture read them.
        self.sequence_reads = 0

    def commit(self, changes: list[RowChange], metas: Sequence[TableMeta] = (),
               *, at_us: int | None = None, ddl_at: dict[int, list[str]] | None = None) -> SourceTxn:
        """Append one committed transaction; returns it."""
        with self.lock:
            txn = SourceTxn(len(self.txns) + 1000, self.next_lsn, list(changes),
                            time.time_ns() // 1000 if at_us is None else at_us, {m.table: m for m in metas},
                            dict(ddl_at or {}))
            self.txns.append(txn)
            self.next_lsn += 0x100
            return txn

    @property
    def end(self) -> int:
        return self.next_lsn


class MemoryCapture(LogCapture):
    """:class:`LogCapture` over a :class:`MemorySource` (positions are PostgreSQL-style LSNs)."""

    engine = "memory"

    def __init__(self, source: MemorySource, *, idle_sleep: float = 0.002) -> None:
        self.source = source
        self.idle_sleep = idle_sleep
        self.confirms: list[Position] = []

    def check_prerequisites(self) -> list[Problem]:
        return []

    def identity(self) -> DatabaseIdentity:
        return DatabaseIdentity("memory", "source", "db", "the in-memory source")

    def ensure_setup(self) -> None:
        pass

    def parse_position(self, text: str) -> Position:
        return pg_lsn(text)

    def gap_after(self, resume_after: Position) -> str | None:
        confirmed = self.source.confirmed
        if confirmed > int.from_bytes(resume_after.key, "big") + 1:
            return f"the slot starts at {pg_lsn(confirmed).text} but Kafka ends at {resume_after.text}"
        return None

    def retained_from(self) -> str:
        return pg_lsn(self.source.confirmed).text

    def confirm(self, position: Position) -> None:
        lsn = int.from_bytes(position.key, "big")
        self.confirms.append(position)
        with self.source.lock:
            self.source.confirmed = max(self.source.confirmed, lsn)

    def close(self) -> None:
        pass

    def sequence_values(self, refresh: bool = False) -> SequenceValues | None:
        with self.source.lock:
            self.source.sequence_reads += 1
            values = tuple(SequenceValue(n, v) for n, v in sorted(self.source.sequences.items()))
        return SequenceValues(time.time_ns() // 1000, values, pg_lsn(self.source.end).text)  # empty: none (as PG)

    def stream(self, resume_after: Position | None) -> Iterator[CaptureEvent]:
        if resume_after is not None:
            hole = self.gap_after(resume_after)
            if hole is not None:
                raise SlotGapError(hole, fix="test")
        floor = max(self.source.confirmed, int.from_bytes(resume_after.key, "big") if resume_after else 0)
        yielded = 0
        if self.source.fail_plan and self.source.fail_after is None:
            self.source.fail_after = self.source.fail_plan.pop(0)
        announced: dict[str, str] = {}  # table -> the version last announced (a new version is announced again)
        index = 0
        while True:
            with self.source.lock:
                txns = self.source.txns[index:]
            for txn in txns:
                index += 1
                if txn.commit < floor:
                    continue
                commit = pg_lsn(txn.commit)
                events: list[CaptureEvent] = [TxnBegin(str(txn.xid), commit, txn.commit_time_us)]
                seq = 0
                for i, change in enumerate([*txn.changes, None]):
                    for statement in txn.ddl_at.get(i, ()):
                        events.append(SchemaChange(commit, seq, "TEST DDL", (SchemaStep("sql", "t", statement),),
                                                   statement=statement))
                        seq += 1
                    if change is None:
                        break
                    meta = txn.metas.get(change.table)
                    if meta is not None and announced.get(change.table) != meta.version:
                        announced[change.table] = meta.version
                        events.append(meta)
                    events.append(change)
                events.append(TxnEnd(commit, pg_lsn(txn.commit + 1)))
                for event in events:
                    yielded += 1
                    if self.source.fail_after is not None and yielded > self.source.fail_after:
                        self.source.fail_after = None
                        self.source.crashes += 1
                        raise SourceError("the source connection broke (test)", fix="none: retried")
                    yield event
            yield Idle(pg_lsn(self.source.end), drained=True)
            time.sleep(self.idle_sleep)


# -- tables -----------------------------------------------------------------------------------------
def table_meta(table: str = "public.t", *, identity: str = "key", version: str = "v1") -> TableMeta:
    """A two-column table: ``id int64`` (the key) and ``v string``; with identity "full" both are key columns."""
    columns = (Column("id", "int64", "bigint", False, 1),
               Column("v", "string", "text", True, 0 if identity == "key" else 2))
    return TableMeta(table, columns, version, identity=identity)


def ins(table: str, i: int, v: Any = "x") -> RowChange:
    """INSERT (i, v)."""
    return RowChange(table, Op.INSERT, [i, v])


def upd(table: str, i: int, v: Any) -> RowChange:
    """UPDATE the row with key i to (i, v)."""
    return RowChange(table, Op.UPDATE, [i, v])


def dele(table: str, i: int) -> RowChange:
    """DELETE the row with key i."""
    return RowChange(table, Op.DELETE, [], [i])


# -- running agents in threads ------------------------------------------------------------------------
class NullHeartbeat:
    """A heartbeat that records what it would send."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self.snapshot = snapshot
        self.beats = 0

    def start(self) -> None:
        pass

    def beat_now(self) -> None:
        self.beats += 1

    def stop(self) -> None:
        pass


class Running:
    """An agent running in a thread (``error`` holds what it stopped with)."""

    def __init__(self, body: Any, store: list[tuple[bytes, Headers]]) -> None:
        from common.agent import Agent

        self.body = body
        self.agent = Agent(body, channel=lambda: memory_channel(store), heartbeat=NullHeartbeat)  # type: ignore[arg-type]
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.agent.run()
        except BaseException as exc:  # noqa: BLE001 - the test reads it
            self.error = exc

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the agent and wait for it."""
        self.agent.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent did not stop"

    def wait_exit(self, timeout: float = 10.0) -> BaseException | None:
        """Wait until the agent stops by itself; what it stopped with."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent did not stop by itself"
        return self.error


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll until ``predicate()`` (raises AssertionError naming ``what`` on timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")
