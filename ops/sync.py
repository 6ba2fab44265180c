"""``ark sync``: online initial sync of a standby from a running primary.

Order matters (no gap, no duplicate):

1. The capture's slot and publication exist (created now if needed), so the capture will publish
   every transaction that commits from here on.
2. The redo topic's current end offset ``E`` is read: everything before ``E`` committed before step 3.
3. A temporary slot exports a snapshot at LSN ``P``: the snapshot holds exactly the transactions
   that committed before ``P``.
4. Every table is copied from that snapshot, inside ONE standby transaction that also writes the
   state row (next offset ``E``, position ``P``). The applier then starts at ``E`` and skips every
   entry whose commit position is ``<= P``.

A faithful standby: in that same transaction, the primary's other objects, read from the same snapshot
(:meth:`common.snapshot.Snapshot.objects`; for PostgreSQL its own pg_dump), are created where the standby
lacks them: extensions, schemas, types, sequences, the tables themselves with their defaults, identity and
generated columns, check constraints and partitions BEFORE the rows; keys, unique and exclusion
constraints, indexes, foreign keys and triggers AFTER them, so the copy stays fast. Then the sequences are
set to the primary's values. The stream's table description (TableMeta) stays the applier's column map:
a table created from the primary's schema is checked against it, one that already existed is reshaped to
it as before.

On a standby that was synced before (``ark resync STANDBY`` after a retention gap, or ``ark sync``
again), the same transaction empties and refills every table, replaces the state row and forgets
every table-level resync: until it commits, readers keep seeing the old data; if it fails, nothing
changed. The applier must be stopped first (its state row is being replaced).
"""

from __future__ import annotations

import contextlib
import logging
import time

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from common.config import ArkConfig, StandbySettings
from common.errors import ArkError
from common.guard import Recorded
from common.identity import DatabaseIdentity
from common.kafka import end_offset, ensure_topic
from common.snapshot import SchemaObjects
from consumers.base import Applier, ApplyState
from ops.context import console
from ops.engines import applier_factory, capture_factory, require_prerequisites, snapshot_source
from ops.guard import primary_refusal_check, record_standby, recorded, refuse_if_harmful
from ops.status import STALE_AFTER_S, latest_beats
from schemas.positions import just_before
from schemas.topics import redo_topic

log = logging.getLogger(__name__)


def _refuse_if_applying(cfg: ArkConfig, standby: StandbySettings, verb: str = "sync") -> None:
    beat = latest_beats(cfg, window_s=STALE_AFTER_S).get(("apply", standby.name))
    age = time.time() - beat["sent_at_us"] / 1e6 if beat is not None else None
    if beat is not None and age is not None and beat["state"] not in ("stopped", "error") and age < STALE_AFTER_S:
        raise ArkError(f"the applier of {standby.name} is running (pid {beat['pid']} on {beat['host']}, "
                       f"last heartbeat {age:.0f} s ago)",
                       fix=f"stop 'ark apply {standby.name}' first ({verb} replaces the standby's tables and its "
                           f"position), then run 'ark {verb} {standby.name}' again; to rebuild one table while "
                           f"it runs, use 'ark resync {standby.name} --table SCHEMA.TABLE'")


def sync_standby(cfg: ArkConfig, standby: StandbySettings, *, verb: str = "sync", overwrite: bool = False) -> None:
    """Bring ``standby`` up from the running primary; prints progress; raises ArkError on failure.

    ``verb`` is the command that asked (``sync`` or ``resync``), for messages. Before anything is written
    anywhere, the standby is identified and checked (common/guard.py): never the primary, another standby or
    a capture's source; never over data Ark did not put there unless ``overwrite``.
    """
    applier = applier_factory(standby)()
    try:
        with contextlib.closing(capture_factory(cfg)()) as capture:
            require_prerequisites(capture)
            _refuse_if_applying(cfg, standby, verb)
            rec = recorded(cfg)
            primary_refusal_check(cfg, capture.identity())
            looked = refuse_if_harmful(cfg, standby, applier, "sync", overwrite=overwrite, rec=rec)
            for line in capture.ensure_setup() or ():
                console.print(f"set-up: {line}")
        _copy(cfg, standby, applier, looked.facts.identity, verb=verb, overwrite=overwrite, rec=rec)
    finally:
        applier.rollback()
        applier.close()
    record_standby(cfg, standby, looked.facts.identity)


def _current_epoch(cfg: ArkConfig) -> int:
    """The group's epoch now: a copy's positions are those of the current primary (common/roles.py)."""
    from ops.handover import current_roles

    return current_roles(cfg).epoch


def _copy(cfg: ArkConfig, standby: StandbySettings, applier: Applier, ident: DatabaseIdentity, *, verb: str,
          overwrite: bool, rec: Recorded) -> None:
    """The copy itself, in ONE standby transaction with the state row (see the module docstring)."""
    topic = redo_topic(cfg.group)
    ensure_topic(cfg.kafka, topic, retention_ms=cfg.kafka.redo_retention_ms)
    start_offset = end_offset(cfg.kafka, topic)
    started = time.monotonic()
    before = applier.load_state(cfg.group, standby.name)
    with snapshot_source(cfg.primary).open() as snap:
        # A commit exactly at the consistent point is NOT in the snapshot: the floor sits just below.
        floor = just_before(snap.position)
        metas = snap.tables(cfg.primary.tables)
        if not metas:
            raise ArkError(f"no table of {cfg.primary.describe()} matches {list(cfg.primary.tables)}",
                           fix="check primary.tables in the config")
        occupied = applier.occupied([m.table for m in metas])
        refuse_if_harmful(cfg, standby, applier, "sync", overwrite=overwrite, occupied=occupied, rec=rec)
        objects = snap.objects(metas)  # read before anything is written: a missing tool fails here
        applier.prepare()  # only now: schema ark, and the read-only guard of a database we may write to
        if before is not None:
            console.print(f"{verb} {standby.name}: replacing its data (applied up to {before.position}, offset "
                          f"{before.next_offset - 1}); readers see the old data until the new copy commits")
        console.print(f"{verb} {standby.name}: snapshot at {snap.position.text}, {len(metas)} tables, "
                      f"streaming from offset {start_offset}")
        applier.begin()
        applier.clear_table_states(cfg.group, standby.name)  # a whole copy supersedes table resyncs
        created = _objects(applier, objects, standby, verb, after_rows=False)
        total_rows = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rows]} rows"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            for meta in metas:
                task = progress.add_task(f"copy {meta.table}", total=None, rows=0)

                def report(rows: int, task: TaskID = task) -> None:
                    progress.update(task, rows=rows)

                done = applier.replace_table(cfg.group, snap.rows(meta), progress=report,
                                             created=meta.table in created)
                progress.update(task, rows=done, total=1, completed=1)
                total_rows += done
        _objects(applier, objects, standby, verb, after_rows=True)
        if objects is not None and objects.sequences:
            moved = applier.advance_sequences(objects.sequences)
            console.print(f"{verb} {standby.name}: {moved} of {len(objects.sequences)} sequences set to the primary's "
                          "values")
        now_us = time.time_ns() // 1000
        applier.save_state(ApplyState(
            group=cfg.group, standby=standby.name, topic=topic, partition=0, next_offset=start_offset,
            position=floor.text, position_key=floor.key, epoch=_current_epoch(cfg), commit_time_us=now_us,
            applied_at_us=now_us, applied_txns=0, extra={"synced_from_snapshot": snap.token, "identity": ident.key},
        ))
        applier.commit()
    console.print(f"[green]✓[/] {standby.name} synced: {total_rows} rows in {time.monotonic() - started:.1f} s; "
                  f"start 'ark apply {standby.name}' to stream from {snap.position.text}")
    if start_offset == 0:
        # The capture has never published: it will start from what the primary's log still holds then. An
        # engine without a slot (MariaDB) keeps its log by age only, so a capture started too late misses
        # the transactions after the snapshot.
        console.print(f"[yellow]![/] nothing is captured for group {cfg.group} yet: start 'ark capture' soon; "
                      f"until it runs, only the primary's log retention keeps what commits after "
                      f"{snap.position.text}")


def _objects(applier: Applier, objects: SchemaObjects | None, standby: StandbySettings, verb: str, *,
             after_rows: bool) -> set[str]:
    """Create the primary's objects the standby lacks, on one side of the rows; the tables created."""
    if objects is None:
        return set()
    if not after_rows:
        console.print(f"{verb} {standby.name}: schema from the primary: {len(objects.before_rows)} objects before the "
                      f"rows, {len(objects.after_rows)} after them (keys, indexes, constraints), "
                      f"{len(objects.extensions)} extensions, {len(objects.sequences)} sequences in use")
        for what in objects.left_out:
            console.print(f"[yellow]left out[/]: {what}; 'ark check --promotable {standby.name}' lists it")
    else:
        console.print(f"{verb} {standby.name}: building keys, indexes and constraints")
    started = time.monotonic()
    created = applier.create_objects(objects, after_rows=after_rows)
    log.info("%s %s: objects %s the rows in %.1f s", verb, standby.name, "after" if after_rows else "before",
             time.monotonic() - started)
    return created
