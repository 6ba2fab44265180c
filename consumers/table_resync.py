"""Table-level resync while the other tables keep applying (guarantees 4 and 7).

How one table T is resynced, and why nothing is lost or applied twice:

1. **Set aside.** At a transaction boundary, after committing what is applied, T's state becomes
   ``resyncing`` on the standby (its own small transaction). From then on the apply loop skips T's
   rows; every other table applies normally.
2. **Copy** (a background thread, its own connections): a temporary replication slot on the primary
   exports a snapshot at position P; T is copied from it into a staging table on the standby. The
   copy holds exactly the transactions that committed before P; F = just_before(P) is its floor.
3. **Remember what is skipped.** From then on, the loop records O_first: the offset of the
   first message with a T row that is not known to be in the copy (commit key > F, or F not known
   yet). Every T row after P is at or after O_first.
4. **Wait for the standby to reach P**: the copy stays staged until the loop has committed everything up
   to F. On a delayed standby that is commit(P) + D, so T is never visible ahead of the other tables
   (and never before commit + D); on a real-time standby it is at once.
   **Swap** (still the background thread, its own standby transaction): T is emptied and refilled
   from the staging copy. The apply loop never touches T while it is ``resyncing``, so the swap,
   whose cost grows with T's size, does not pause the other tables (in the loop's transaction it
   stopped them for seconds per million rows). Readers of T wait for that one commit, then see T
   as of P: no older and no more partial than T already was while its rows were skipped. The table's
   other objects as of the same snapshot (its keys, indexes, constraints, its sequences' definitions;
   the table itself when the standby lacks it) are created where missing, in that same transaction.
5. **Catch up**, once the loop has applied everything up to F (so that a delay is respected and T
   lands where the other tables are): inside the loop's normal target transaction, the T rows of
   transactions with commit key > F are re-read from O_first to the loop's current offset (a second
   consumer) and applied, and T's state becomes ``ok`` — committed together with the state row.

Restart safety: T stays ``resyncing`` on the standby until step 5 commits; a restarted applier
starts T's copy again from scratch (a new snapshot, which holds every row skipped so far). A shape
change of T during the resync restarts the copy too (the new snapshot has the new shape).
Nothing is silent: every step is logged, shown in the heartbeat message and recorded on the
control topic (``table-resync-started``, ``table-resync-progress``, ``table-resynced``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from common.config import ArkConfig, StandbySettings
from common.control import ControlChannel, ControlRecord
from common.errors import SourceError
from common.redo import RedoLog
from common.snapshot import SnapshotSource
from consumers.base import Applier, ApplyState, StagedTable
from consumers.hooks import ApplyHook, Boundary
from consumers.resync_replay import Batch, Replay
from consumers.tables import OK, RESYNCING, TableState, resyncing_tables, split_rows
from schemas.control import (
    ResyncTable,
    TableResynced,
    TableResyncProgress,
    TableResyncRefused,
    TableResyncStarted,
)
from schemas.entries import (
    Position,
    RowChange,
    SchemaStep,
    TableMeta,
    TxnChunk,
)
from schemas.positions import just_before

log = logging.getLogger(__name__)

#: Seconds before a failed copy is tried again.
RETRY_AFTER_S = 10.0
#: Skipped rows of a resyncing table kept in memory for its catch-up; beyond, they are re-read from Kafka.
STASH_MAX_ROWS = 500_000
#: How long a finished resync stays in the heartbeat message.
SHOW_DONE_S = 120.0

_DECISIONS = (TableResyncStarted, TableResyncProgress, TableResynced, TableResyncRefused)


def unanswered_requests(records: Iterable[ControlRecord], standby: str) -> list[ControlRecord]:
    """``resync-table`` intents for ``standby`` that no decision record answers yet (replayed at start-up)."""
    records = list(records)
    answered = {r.body.request for r in records if isinstance(r.body, _DECISIONS)}
    return [r for r in records if isinstance(r.body, ResyncTable) and r.target == standby
            and r.request_id not in answered]


class _Cancelled(Exception):
    pass


class _Decisions:
    """Publishes decision records through the agent's channel in the background: the loop never waits."""

    def __init__(self, standby: str) -> None:
        self._standby = standby
        self.channel: ControlChannel | None = None

    def publish(self, body: TableResyncStarted | TableResyncProgress | TableResynced | TableResyncRefused) -> None:
        if self.channel is None:
            log.warning("no control channel: %s of %s not recorded", body.KIND, body.table)
            return
        self.channel.publish_later(body, self._standby)


class ResyncJob:
    """One table's background copy, and what the apply loop noted while it ran."""

    def __init__(self, table: str, reason: str, request: str, factory: Callable[[], Applier],
                 group: str, decisions: _Decisions, *, source: SnapshotSource | None = None,
                 redo: RedoLog | None = None, seen_offset: int = -1,
                 committed: Callable[[], int] = lambda: -1, after: ResyncJob | None = None,
                 applied_key: Callable[[], bytes] | None = None) -> None:
        self.table = table
        self._applied_key = applied_key  # the commit key the loop has committed (None: do not wait for it)
        self.waiting = False  # staged, waiting for the standby to apply up to the copy's floor
        self._group = group
        self._source = source
        self._redo = redo
        self._committed = committed  # the loop's committed next offset
        self.reason = reason
        self.request = request
        self._factory = factory
        self._decisions = decisions
        self.position: Position | None = None  # the snapshot's consistent point P
        self.floor: Position | None = None  # just_before(P): transactions at or below are in the copy
        self.rows = 0
        self.staged: StagedTable | None = None  # set once swapped in and caught up in the background
        self.replay: Replay | None = None  # the loop finishes the replay from resume_offset
        self.resume_offset = -1
        self.error = ""
        self.retry_at = 0.0
        self.o_first: int | None = None  # first offset with a T row after the floor
        self.first_epoch = 0
        self._unsure: list[tuple[int, bytes, int]] = []  # skipped before the floor was known
        # The skipped T rows that may be above the floor, by offset (a re-read after a session restart
        # overwrites its own offsets): the loop's catch-up applies them without reading Kafka again.
        self.stash: dict[int, tuple[str, Position, list[RowChange]]] = {}
        self.stash_ok = True
        self._stash_rows = 0
        self.started = time.monotonic()
        #: The highest redo offset the loop had read when this job was created: a shape change at or
        #: below it was published before this job's snapshot, which therefore already has it.
        self.seen_offset = seen_offset
        self._after = after  # a cancelled predecessor: it must be gone before this copy starts
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"resync-{table}", daemon=True)

    def start(self) -> ResyncJob:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self) -> None:
        """Abandon the copy at its next block (its staging copy is rolled back)."""
        self._cancel.set()

    def note_skipped(self, offset: int, chunk: TxnChunk, rows: list[RowChange], epoch: int) -> None:
        """The loop skipped ``rows`` of T at ``offset`` (a chunk of a transaction it accepted)."""
        floor = self.floor
        commit_key = chunk.commit.key
        if self.stash_ok and any(r.parts for r in rows):
            # The stash keeps rows, not their parts: the catch-up re-reads this one from Kafka.
            self.stash_ok, self.stash, self._stash_rows = False, {}, 0
        if self.stash_ok and (floor is None or commit_key > floor.key):
            if offset not in self.stash:
                self._stash_rows += len(rows)
            self.stash[offset] = (chunk.txn_id, chunk.commit, rows)
            if self._stash_rows > STASH_MAX_ROWS:
                log.info("resync of %s: over %d skipped rows; its catch-up will re-read them from Kafka", self.table,
                         STASH_MAX_ROWS)
                self.stash_ok, self.stash, self._stash_rows = False, {}, 0
        if floor is None:
            if len(self._unsure) < 1_000_000:
                self._unsure.append((offset, commit_key, epoch))
            elif self.o_first is None or offset < self.o_first:
                self.o_first, self.first_epoch = offset, epoch  # too many to sort out later: keep it (safe)
            return
        self._resolve(floor)
        if commit_key <= floor.key:
            return  # in the copy
        if self.o_first is None or offset < self.o_first:
            self.o_first, self.first_epoch = offset, epoch

    def _resolve(self, floor: Position) -> None:
        """Sort out the rows skipped before the floor was known (the loop may lag behind the snapshot)."""
        unsure, self._unsure = self._unsure, []
        for offset, key, epoch in unsure:
            if key > floor.key and (self.o_first is None or offset < self.o_first):
                self.o_first, self.first_epoch = offset, epoch

    def first_offset(self) -> int | None:
        """The first offset with a T row above the floor, so far (the floor must be known)."""
        if self.floor is not None:
            self._resolve(self.floor)
        return self.o_first

    def _on_snapshot(self, position: Position) -> None:
        self.position, self.floor = position, just_before(position)
        log.info("resync of %s: snapshot taken at %s", self.table, position.text)
        self._decisions.publish(TableResyncProgress(self.table, self.request, "snapshot", position.text))

    def _on_rows(self, rows: int) -> None:
        self.rows = rows
        if self._cancel.is_set():
            raise _Cancelled

    def _run(self) -> None:
        if self._after is not None:
            self._after._thread.join()  # its staging copy is rolled back (or dropped below) first
            self._after = None
        applier = self._factory()
        try:
            if self._cancel.is_set():
                return
            if self._source is None:
                raise SourceError("this applier was started without the primary's snapshot source",
                                  fix="run the applier with 'ark apply STANDBY'")
            with self._source.open() as snap:
                self._on_snapshot(snap.position)
                meta = snap.table(self.table)
                if meta is None:
                    raise SourceError(f"table {self.table} is not on the primary (or is not an ordinary, logged "
                                      "table)", fix="check the table name (schema.table) and primary.tables")
                objects = snap.objects([meta])  # the table's keys, indexes ...: created at the swap where missing
                staged = applier.stage_copy(snap.rows(meta), snap.position, on_rows=self._on_rows)
                staged = replace(staged, objects=objects)
            self.rows = staged.rows
            log.info("resync of %s: %d rows copied into %s", self.table, staged.rows, staged.staging)
            self._decisions.publish(TableResyncProgress(self.table, self.request, "copied", staged.position.text,
                                                        staged.rows))
            if self._cancel.is_set():
                return
            self._await_floor()
            started = time.monotonic()
            applier.begin()
            applier.swap_in_table(self._group, staged)
            if self._cancel.is_set():
                applier.rollback()
                return
            applier.commit()
            log.info("resync of %s: swapped in (%.2f s)", self.table, time.monotonic() - started)
            self._decisions.publish(TableResyncProgress(self.table, self.request, "swapped", staged.position.text,
                                                        staged.rows))
            self._catch_up(applier, staged)
            self.staged = staged  # the loop finishes from resume_offset
        except _Cancelled:
            log.info("resync copy of %s abandoned", self.table)
        except Exception as exc:  # noqa: BLE001 - thread boundary: reported, then retried by the loop
            if self._cancel.is_set():
                log.info("resync copy of %s abandoned (%s)", self.table, exc)
                return
            self.error = f"{type(exc).__name__}: {exc}"
            self.retry_at = time.monotonic() + RETRY_AFTER_S
            log.warning("resync copy of %s failed: %s; retrying in %.0f s", self.table, self.error, RETRY_AFTER_S)
            self._decisions.publish(TableResyncProgress(self.table, self.request, "failed", error=self.error[:500]))
        finally:
            applier.close()

    def _await_floor(self) -> None:
        """Keep the copy staged until the loop has committed everything up to its floor F (step 4): a delayed
        standby shows the table as of P only once it shows the other tables as of P too."""
        floor, applied = self.floor, self._applied_key
        if floor is None or applied is None or applied() >= floor.key:
            return
        log.info("resync of %s: copy staged; it becomes visible when the standby has applied up to %s (its delay)",
                 self.table, floor.text)
        self.waiting = True
        try:
            while applied() < floor.key:
                if self._cancel.is_set():
                    raise _Cancelled
                time.sleep(0.2)
        finally:
            self.waiting = False

    def _catch_up(self, applier: Applier, staged: StagedTable) -> None:
        """Replay, here, the T rows the loop has already committed past: the loop is left a short tail.

        Offsets below the loop's committed offset were all noted before that commit, so O_first is
        final for them; the loop never writes T while it is resyncing, so this cannot race it.
        """
        assert self._redo is not None and self.floor is not None
        upto = self._committed()
        first = self.first_offset()
        replay = Replay(self._redo, self.table, self.floor.key, self.first_epoch)
        start = first if first is not None else upto
        for _round in range(3):
            if upto - start < 100 or self._cancel.is_set() or self.stash_ok:
                break
            applier.begin()
            batch = Batch(applier, {self.table: staged.meta})
            for item in replay.between(start, upto):
                batch.add_item(item)
            batch.flush()
            applier.commit()
            log.info("resync of %s: re-applied its rows of offsets %d..%d (%d rows so far)", self.table, start,
                     upto - 1, replay.rows)
            start, upto = upto, self._committed()
        self.replay, self.resume_offset = replay, start

    def describe(self) -> str:
        if self.error:
            return f"{self.table} resyncing: copy failed ({self.error[:120]}), retrying"
        if self.staged is not None:
            return (f"{self.table} resyncing: {self.staged.rows} rows swapped in from {self.staged.position.text}, "
                    f"{self.replay.rows if self.replay else 0} re-applied, waiting for apply to reach that point")
        at = f", snapshot at {self.position.text}" if self.position else ""
        if self.waiting:
            return (f"{self.table} resyncing: {self.rows} rows staged{at}, visible when the standby has applied up to "
                    "that point (its delay)")
        return f"{self.table} resyncing: copying{at}, {self.rows} rows so far"


def _shape(meta: TableMeta) -> list[tuple[str, str, bool, int]]:
    """What a copy depends on (version strings differ between the capture and a snapshot's catalog)."""
    return [(c.name, c.source_type, c.nullable, c.key_position) for c in meta.columns]


class TableResyncs(ApplyHook):
    """The apply runner's table resyncs: lives as long as the runner, across session restarts."""

    def __init__(self, cfg: ArkConfig, standby: StandbySettings, factory: Callable[[], Applier], redo: RedoLog,
                 committed: Callable[[], int] = lambda: -1, source: SnapshotSource | None = None,
                 applied_key: Callable[[], bytes] | None = None) -> None:
        self.cfg = cfg
        self._applied_key = applied_key
        self._source = source
        self._committed = committed
        self.standby = standby.name
        self.redo = redo
        self._factory = factory
        self._decisions = _Decisions(standby.name)
        self.jobs: dict[str, ResyncJob] = {}
        self.resyncing: set[str] = set()  # tables whose rows are skipped (as stored on the standby)
        self._requests: dict[str, tuple[str, str, bool]] = {}  # table -> (reason, request id, restart)
        self._done: dict[str, tuple[float, str]] = {}  # table -> (when, sentence), for the heartbeat
        self._known: set[str] = set()
        self._attempts: dict[tuple[str, int], int] = {}
        self._high = -1  # the highest redo offset the loop has read (across session restarts)
        self.skipped_rows = 0
        self._set_aside: dict[str, str] = {}  # table -> reason: set aside in the open transaction, copy not started
        #: Steps of a primary's DDL on a table being resynced, run once its copy is in (the copy brings columns and
        #: key; defaults, indexes and constraints come from these). Kept in memory: a restart loses them (logged).
        self._deferred: dict[str, list[SchemaStep]] = {}

    def use_source(self, source: SnapshotSource | None) -> None:
        """Copy tables from this primary from now on (a switchover or failover changed the primary)."""
        self._source = source

    # -- requests ------------------------------------------------------------------------------

    def request(self, table: str, reason: str, request: str = "", *, restart: bool = True, offset: int = -1) -> None:
        """Quarantine and resync ``table`` at the next transaction boundary (a data error, a DDL, an intent).

        ``offset`` is the redo offset that failed, when one did (the loop has read up to there)."""
        self._high = max(self._high, offset)
        log.warning("table %s will be resynced: %s", table, reason)
        self._requests[table] = (reason, request, restart)

    def set_aside(self, applier: Applier, table: str, reason: str, offset: int) -> None:
        """A resync marker of the stream (a table published after rows were written to it, a DDL whose values
        the log does not carry): ``table`` stops following the stream here, inside the open transaction, so the
        decision commits with the marker, exactly once. Its copy starts at the next boundary, after the commit
        (a standby that restarts before it finds the table ``resyncing`` and starts the copy then)."""
        self._high = max(self._high, offset)
        self._known.add(table)
        applier.save_table_state(self.cfg.group, self.standby, TableState(table, RESYNCING, reason=reason))
        self.resyncing.add(table)
        self._set_aside[table] = reason
        log.warning("table %s will be resynced on %s: %s; the other tables keep applying", table, self.standby, reason)

    def defer(self, table: str, step: SchemaStep) -> None:
        """A step of a DDL on ``table`` while it is being resynced: run after its copy is swapped in."""
        log.info("%s is being resynced: '%s' runs once its copy is in (an applier restart before then loses it: "
                 "'ark check --promotable' shows what is missing)", table, step.sql[:200])
        self._deferred.setdefault(table, []).append(step)

    def renamed(self, old: str, new: str) -> None:
        """The primary renamed a table: what is known of it follows the new name."""
        if old in self._known:
            self._known.add(new)

    def may_resync(self, table: str, applied: ApplyState | None) -> bool:
        """True when a data error on ``table`` can be handled by resyncing it (policy ``resync-table``):
        a replicated table, and not already tried twice from the same applied offset (no endless loop)."""
        if not table or table not in self._known:
            return False
        key = (table, applied.next_offset if applied else -1)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        return self._attempts[key] <= 2

    def attach_channel(self, channel: ControlChannel) -> None:
        """The agent's control channel (decisions are published on it)."""
        self._decisions.channel = channel

    def on_control(self, records: Iterable[ControlRecord]) -> None:
        """Pick up ``resync-table`` intents addressed to this standby."""
        for rec in records:
            if isinstance(rec.body, ResyncTable) and rec.target == self.standby:
                self.request(rec.body.table, f"requested by {rec.issued_by}", rec.request_id, restart=False)

    # -- session hooks -------------------------------------------------------------------------
    def attach(self, applier: Applier, metas: Mapping[str, TableMeta]) -> None:
        """At session start: load the stored table states; (re)start the copy of every resyncing table."""
        self._known = set(metas)
        self._set_aside.clear()  # what the last session set aside and committed is in the states below
        states = applier.load_table_states(self.cfg.group, self.standby)
        self.resyncing = resyncing_tables(states)
        for table, job in list(self.jobs.items()):
            if table not in self.resyncing:
                job.cancel()
                del self.jobs[table]
        for table in sorted(self.resyncing - set(self.jobs)):
            log.warning("table %s is still being resynced (%s): starting its copy again from scratch", table,
                        states[table].reason)
            self._start(table, states[table].reason, "")

    def rows(self, offset: int, chunk: TxnChunk, epoch: int, rows: Sequence[RowChange]) -> Sequence[RowChange]:
        """``chunk``'s rows to apply: those of resyncing tables are left out (and noted for the replay)."""
        if not self.resyncing:
            return rows
        self._high = max(self._high, offset)
        kept, skipped = split_rows(rows, self.resyncing)
        for table, rows in skipped.items():
            self.skipped_rows += len(rows)
            job = self.jobs.get(table)
            if job is not None:
                job.note_skipped(offset, chunk, rows, epoch)
        return kept

    def on_meta(self, meta: TableMeta, previous: TableMeta | None, offset: int) -> bool:
        """True when ``meta`` (at ``offset``) is for a resyncing table: the loop must not adapt the table.

        A new shape published after the copy's snapshot was taken restarts the copy (the next snapshot
        has the new shape); one the loop had already read when the copy started is in its snapshot.
        """
        self._known.add(meta.table)  # a table the stream carries, even if the standby could not create it
        if meta.table not in self.resyncing:
            self._high = max(self._high, offset)
            return False
        job = self.jobs.get(meta.table)
        newer = previous is None or _shape(previous) != _shape(meta)
        if newer and (job is None or offset > job.seen_offset):
            log.warning("table %s changed shape (version %s) during its resync: copying it again", meta.table,
                        meta.version)
            self._start(meta.table, job.reason if job else "shape changed", job.request if job else "")
        self._high = max(self._high, offset)
        return True

    def at_boundary(self, b: Boundary) -> None:
        """Between two source transactions: start requested resyncs, retry failed copies, catch finished ones
        up. ``b.begin``/``b.commit`` are the loop's own (commit also writes the state row)."""
        applier, metas, pending, begin, commit = b.applier, b.metas, b.pending(), b.begin, b.commit
        if self._set_aside:
            commit()  # the markers are durable before the copies start
            started, self._set_aside = self._set_aside, {}
            for table, reason in started.items():
                self._decisions.publish(TableResyncStarted(table, "", reason))
                self._start(table, reason, "")
        if self._requests:
            self._start_requested(applier, metas, begin, commit)
        now = time.monotonic()
        for table, job in list(self.jobs.items()):
            if job.staged is not None:
                assert job.floor is not None
                if pending.position_key >= job.floor.key:
                    self._catch_up(job, applier, metas, pending, begin, commit)
            elif job.error and now >= job.retry_at:
                self.jobs[table] = self._job(table, job.reason, job.request).start()
        for table, (when, _text) in list(self._done.items()):
            if now - when > SHOW_DONE_S:
                del self._done[table]

    def _job(self, table: str, reason: str, request: str, after: ResyncJob | None = None) -> ResyncJob:
        return ResyncJob(table, reason, request, self._factory, self.cfg.group, self._decisions, source=self._source,
                         redo=self.redo, seen_offset=self._high, committed=self._committed, after=after,
                         applied_key=self._applied_key)

    def _start(self, table: str, reason: str, request: str) -> None:
        old = self.jobs.get(table)
        if old is not None:
            old.cancel()
        self.jobs[table] = self._job(table, reason, request, after=old).start()

    def _start_requested(self, applier: Applier, metas: Mapping[str, TableMeta], begin: Callable[[], None],
                         commit: Callable[[], None]) -> None:
        requests, self._requests = self._requests, {}
        for table, (reason, request, restart) in requests.items():
            if table not in metas and table not in self._known and not restart:  # an operator's typo, not Ark's own
                log.error("cannot resync %s on %s: it is not a replicated table", table, self.standby)
                self._decisions.publish(TableResyncRefused(
                    table, request, f"{table} is not a replicated table of group {self.cfg.group}"))
                continue
            if table in self.resyncing and not restart:
                self._decisions.publish(TableResyncStarted(table, request, f"already resyncing; {reason}"))
                continue
            commit()  # what is applied so far (T rows included) is durable before T stops following the stream
            begin()
            applier.save_table_state(self.cfg.group, self.standby, TableState(table, RESYNCING, reason=reason))
            commit()
            self.resyncing.add(table)
            log.warning("table %s is being resynced on %s: %s; the other tables keep applying", table, self.standby,
                        reason)
            self._decisions.publish(TableResyncStarted(table, request, reason))
            self._start(table, reason, request)

    def _catch_up(self, job: ResyncJob, applier: Applier, metas: dict[str, TableMeta], pending: ApplyState,
                  begin: Callable[[], None], commit: Callable[[], None]) -> None:
        staged, floor = job.staged, job.floor
        assert staged is not None and floor is not None
        started = time.monotonic()
        begin()
        metas[staged.table] = staged.meta
        self._known.add(staged.table)
        replay = job.replay
        assert replay is not None
        first = job.first_offset()
        start = job.resume_offset if first is None else max(job.resume_offset, first)
        replayed = replay.rows
        if pending.position_key > floor.key and job.stash_ok:
            batch = Batch(applier, metas)
            for offset in sorted(o for o in job.stash if start <= o < pending.next_offset):
                txn_id, at, rows = job.stash[offset]
                if at.key > floor.key:
                    batch.add(txn_id, at.text, rows)
            replayed += batch.flush()
        elif pending.position_key > floor.key:
            batch = Batch(applier, metas)
            for item in replay.between(start, pending.next_offset):
                batch.add_item(item)
            batch.flush()
            replayed = replay.rows
        for step in self._deferred.pop(staged.table, []):
            applier.run_schema_step(self.cfg.group, SchemaStep("optional-sql", step.object, step.sql, "after the "
                                    "table's resync"), follow_drop=False, what=f"a DDL deferred by the resync of "
                                    f"{staged.table}")
        applier.save_table_state(self.cfg.group, self.standby, TableState(
            staged.table, OK, floor.text, floor.key, reason=f"resynced from a snapshot at {staged.position.text}"))
        commit()
        self.resyncing.discard(staged.table)
        del self.jobs[staged.table]
        text = (f"{staged.table} resynced: {staged.rows} rows from the snapshot at {staged.position.text}, "
                f"{replayed} rows re-applied from offset {job.o_first} (the last from {start})")
        self._done[staged.table] = (time.monotonic(), text)
        log.warning("%s (catching up took %.2f s; %s)", text, time.monotonic() - started, job.reason)
        self._decisions.publish(TableResynced(staged.table, job.request, staged.position.text, staged.rows, replayed))

    # -- reporting -----------------------------------------------------------------------------
    def describe(self) -> str:
        """A sentence for the heartbeat message ('' when nothing is being resynced)."""
        parts = [job.describe() for job in self.jobs.values()]
        parts += [f"{t} resyncing (queued)" for t in self._requests]
        parts += [text for _when, text in self._done.values()]
        return "; ".join(parts)

    def close(self) -> None:
        """Abandon running copies (their tables stay ``resyncing`` on the standby) and flush decisions."""
        for job in self.jobs.values():
            job.cancel()
