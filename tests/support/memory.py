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
PostgreSQL. Nothing here may be used outside tests.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import crc32c

from common.control import ControlBus, ControlChannel, ControlRecord, Wire
from common.errors import FencedError, SourceError
from common.guard import TargetFacts
from common.identity import DatabaseIdentity
from common.problems import Problem
from common.redo import EndOfLog, RedoLog, RedoReader, RedoRecord, RedoWriter
from common.snapshot import TableRows
from consumers.base import Applier, ApplyState, StagedTable
from consumers.errors import DataApplyError, StateMoved, TransientApplyError
from consumers.tables import TableState
from producers.base import CaptureEvent, Idle, LogCapture, TxnBegin, TxnEnd
from producers.errors import SlotGapError
from schemas.control import Body, body_from_args
from schemas.entries import (
    UNCHANGED,
    Column,
    Op,
    Position,
    RowChange,
    SchemaChange,
    SchemaStep,
    SequenceValue,
    SequenceValues,
    TableMeta,
    Value,
    ValuePart,
)
from schemas.positions import pg_lsn

KEY = b"k" * 40
Headers = list[tuple[str, str | bytes | None]]


# -- control ----------------------------------------------------------------------------------------
class MemoryBus(ControlBus):
    """An in-memory control topic; several buses (channels) may share one ``store``."""

    def __init__(self, store: list[tuple[bytes, Headers]] | None = None, start: int = 0) -> None:
        self.store = store if store is not None else []
        self._next = start

    def send(self, value: bytes, headers: Headers) -> None:
        self.store.append((value, list(headers)))

    def fetch(self, max_records: int) -> list[Wire]:
        out: list[Wire] = []
        while self._next < len(self.store) and len(out) < max_records:
            value, headers = self.store[self._next]
            out.append((self._next, value, headers))
            self._next += 1
        return out

    def end(self) -> int:
        return len(self.store)

    def position(self) -> int:
        return self._next


def memory_channel(store: list[tuple[bytes, Headers]] | None = None, *, group: str = "g", key: bytes = KEY,
                   start: int = 0) -> ControlChannel:
    """A control channel on an in-memory topic (share ``store`` between channels to talk)."""
    return ControlChannel(group, key, MemoryBus(store, start), who="test@host")


def record(kind: str, target: str = "", *, at_offset: int = 0, rid: str = "r1", at_us: int | None = None,
           **args: str) -> ControlRecord:
    """A decoded control record built from v1-style string ``args`` (tests of record handling): ``rid`` is its
    request id, ``at_offset`` its offset, ``at_us`` when it was issued (now by default)."""
    body: Body | None = body_from_args(kind, args)
    assert body is not None, kind
    return ControlRecord(at_offset, body, target, "test@host", time.time_ns() // 1000 if at_us is None else at_us,
                         rid)


# -- the redo log -----------------------------------------------------------------------------------
class MemoryRedoLog(RedoLog):
    """The redo topic in memory (see the module docstring)."""

    def __init__(self, topic: str = "ark.g.redo", limit: int = 1 << 20) -> None:
        self.topic = topic
        #: The message limit (Kafka's default broker limit is about 1 MB): a larger record is refused.
        self.limit = limit
        #: offset -> record; offsets of aborted records and commit markers are absent.
        self.records: dict[int, RedoRecord] = {}
        self.next_offset = 0
        self.low = 0
        self.writer_epoch = 0
        self.quarantined: list[tuple[bytes | None, Headers, str]] = []
        self.lock = threading.Lock()

    def ensure(self) -> None:
        pass

    def writer(self) -> MemoryWriter:
        with self.lock:
            self.writer_epoch += 1
            return MemoryWriter(self, self.writer_epoch)

    def reader(self, name: str) -> MemoryReader:
        return MemoryReader(self)

    def watermarks(self) -> tuple[int, int]:
        return self.low, self.next_offset

    def read_range(self, start: int, stop: int) -> Iterator[RedoRecord]:
        for offset in range(max(start, self.low), min(stop, self.next_offset)):
            rec = self.records.get(offset)
            if rec is not None:
                yield rec

    def tail(self, count: int, accept: Callable[[RedoRecord], bool] | None = None) -> list[RedoRecord]:
        found = [r for o, r in sorted(self.records.items()) if o >= self.low and (accept is None or accept(r))]
        return found[-count:] if count else []

    def message_limit(self) -> int:
        return self.limit

    def quarantine(self, value: bytes | None, headers: Headers, key: str) -> None:
        self.quarantined.append((value, list(headers), key))

    def delete_below(self, offset: int) -> None:
        """Retention: records below ``offset`` are gone."""
        self.low = max(self.low, offset)
        for o in [o for o in self.records if o < self.low]:
            del self.records[o]

    def corrupt(self, offset: int) -> None:
        """Flip a byte of the record at ``offset`` (as a damaged disk would)."""
        rec = self.records[offset]
        value = bytearray(rec.value or b"")
        value[len(value) // 2] ^= 0xFF
        self.records[offset] = RedoRecord(rec.offset, bytes(value), rec.headers, rec.timestamp_ms)

    def entries(self) -> list[RedoRecord]:
        """Every committed record, in order."""
        return [r for _o, r in sorted(self.records.items())]


class MemoryWriter(RedoWriter):
    """A transactional writer; a newer one (from the same log) fences it."""

    def __init__(self, log: MemoryRedoLog, epoch: int) -> None:
        self._log = log
        self._epoch = epoch
        self._open: list[tuple[bytes, Headers, int]] | None = None
        self.last_offset = -1
        #: Test hook: called before each commit (raise to simulate a failed commit).
        self.before_commit: Callable[[], None] | None = None

    def _check(self) -> None:
        if self._log.writer_epoch != self._epoch:
            raise FencedError("fenced by a newer writer", fix="test")

    def begin(self) -> None:
        self._check()
        self._open = []

    def produce(self, value: bytes, headers: Headers, timestamp_ms: int) -> None:
        assert self._open is not None, "produce outside a transaction"
        size = len(value) + sum(len(k) + len(v or b"") for k, v in headers)
        assert size <= self._log.limit, f"a record of {size} bytes is over the log's {self._log.limit}-byte limit"
        self._open.append((value, list(headers), timestamp_ms))

    def commit(self) -> None:
        self._check()
        if self.before_commit is not None:
            self.before_commit()
        assert self._open is not None
        with self._log.lock:
            for value, headers, ts in self._open:
                offset = self._log.next_offset
                self._log.records[offset] = RedoRecord(offset, value, headers, ts)
                self._log.next_offset += 1
                self.last_offset = offset
            self._log.next_offset += 1  # the commit marker takes an offset too
        self._open = None

    def abort(self) -> None:
        if self._open is not None:
            self._log.next_offset += len(self._open) + 1  # aborted records and the marker leave a hole
        self._open = None


class MemoryReader(RedoReader):
    """A reader of the in-memory log (read_committed: only what is committed)."""

    def __init__(self, log: MemoryRedoLog) -> None:
        self._log = log
        self._next = 0
        self._paused = False
        self.reported = -1

    def seek(self, offset: int) -> None:
        self._next = offset

    def poll(self, timeout: float) -> RedoRecord | EndOfLog | None:
        if self._paused:
            time.sleep(min(timeout, 0.01))
            return None
        log = self._log
        self._next = max(self._next, log.low)
        while self._next < log.next_offset:
            rec = log.records.get(self._next)
            self._next += 1
            if rec is not None:
                return rec
        if timeout:
            time.sleep(min(timeout, 0.005))
        return EndOfLog(self._next)

    def pause(self) -> None:
        self._paused = True

    def resume(self, offset: int) -> None:
        self._paused = False
        self._next = offset

    def watermarks(self) -> tuple[int, int]:
        return self._log.watermarks()

    def report(self, next_offset: int) -> None:
        self.reported = next_offset

    def close(self) -> None:
        pass


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
        return SequenceValues(time.time_ns() // 1000, values, pg_lsn(self.source.end).text) if values else None

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
