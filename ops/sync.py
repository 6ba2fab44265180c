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

On a standby that was synced before (``ark resync STANDBY`` after a retention gap, or ``ark sync``
again), the same transaction empties and refills every table, replaces the state row and forgets
every table-level resync: until it commits, readers keep seeing the old data; if it fails, nothing
changed. The applier must be stopped first (its state row is being replaced).
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from common.config import ArkConfig, StandbySettings
from common.errors import ArkError
from common.kafka import end_offset, ensure_topic
from consumers.base import ApplyState
from ops.context import console
from ops.engines import applier_factory, capture_factory, require_prerequisites, snapshot_source
from ops.status import STALE_AFTER_S, latest_heartbeats
from schemas.positions import just_before
from schemas.topics import redo_topic

log = logging.getLogger(__name__)


def _refuse_if_applying(cfg: ArkConfig, standby: StandbySettings, verb: str = "sync") -> None:
    beat = latest_heartbeats(cfg, window_s=STALE_AFTER_S).get(("apply", standby.name))
    age = time.time() - beat["sent_at_us"] / 1e6 if beat is not None else None
    if beat is not None and age is not None and beat["state"] not in ("stopped", "error") and age < STALE_AFTER_S:
        raise ArkError(f"the applier of {standby.name} is running (pid {beat['pid']} on {beat['host']}, "
                       f"last heartbeat {age:.0f} s ago)",
                       fix=f"stop 'ark apply {standby.name}' first ({verb} replaces the standby's tables and its "
                           f"position), then run 'ark {verb} {standby.name}' again; to rebuild one table while "
                           f"it runs, use 'ark resync {standby.name} --table SCHEMA.TABLE'")


def _source_kwargs(cfg: ArkConfig) -> dict[str, object]:
    kwargs = cfg.primary.connect_kwargs()
    kwargs.pop("application_name", None)
    return kwargs


def sync_standby(cfg: ArkConfig, standby: StandbySettings, *, verb: str = "sync") -> None:
    """Bring ``standby`` up from the running primary; prints progress; raises ArkError on failure.

    ``verb`` is the command that asked (``sync`` or ``resync``), for messages.
    """
    source = snapshot_source(cfg)
    if source is not None:
        _sync_from_snapshot_source(cfg, standby, source, verb)
        return
    if cfg.primary.engine != "postgresql":
        raise ArkError(f"initial sync of {cfg.primary.engine} is not available yet", fix="use engine: postgresql")
    from consumers.postgresql.exported_snapshot import ExportedSnapshot
    from consumers.postgresql.snapshot import CopyProgress, copy_table, describe_source_tables, open_snapshot

    with contextlib.closing(capture_factory(cfg)()) as capture:
        require_prerequisites(capture)
        _refuse_if_applying(cfg, standby, verb)
        capture.ensure_setup()
    topic = redo_topic(cfg.group)
    ensure_topic(cfg.kafka, topic, retention_ms=cfg.kafka.redo_retention_ms)
    start_offset = end_offset(cfg.kafka, topic)
    applier = applier_factory(standby)()
    started = time.monotonic()
    try:
        applier.prepare()
        before = applier.load_state(cfg.group, standby.name)
        if before is not None:
            console.print(f"{verb} {standby.name}: replacing its data (applied up to {before.position}, offset "
                          f"{before.next_offset - 1}); readers see the old data until the new copy commits")
        with ExportedSnapshot(cfg.primary) as snap, \
                contextlib.closing(open_snapshot("", snap.name, **_source_kwargs(cfg))) as src:
            assert snap.position is not None
            # A commit exactly at the consistent point is NOT in the snapshot: the floor sits just below.
            floor = just_before(snap.position)
            metas = describe_source_tables(src, cfg.primary.tables)
            if not metas:
                raise ArkError(f"no table of {cfg.primary.describe()} matches {list(cfg.primary.tables)}",
                               fix="check primary.tables in the config")
            console.print(f"sync {standby.name}: snapshot {snap.name} at {snap.position.text}, "
                          f"{len(metas)} tables, streaming from offset {start_offset}")
            applier.begin()
            applier.clear_table_states(cfg.group, standby.name)  # a whole copy supersedes table resyncs
            existing = applier.load_table_metas(cfg.group)
            total_rows = 0
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rows]} rows"),
                          TimeElapsedColumn(), console=console, transient=False) as progress:
                for meta in metas:
                    task = progress.add_task(f"copy {meta.table}", total=None, rows=0)
                    applier.apply_table_meta(cfg.group, meta, existing.get(meta.table))

                    def report(state: CopyProgress, task: TaskID = task) -> None:
                        progress.update(task, rows=state.rows)

                    done = copy_table(src, applier, meta, progress=report, truncate=True)  # type: ignore[arg-type]
                    progress.update(task, rows=done.rows, total=1, completed=1)
                    total_rows += done.rows
            now_us = time.time_ns() // 1000
            applier.save_state(ApplyState(
                group=cfg.group, standby=standby.name, topic=topic, partition=0, next_offset=start_offset,
                position=floor.text, position_key=floor.key, epoch=0, commit_time_us=now_us,
                applied_at_us=now_us, applied_txns=0, extra={"synced_from_snapshot": snap.name},
            ))
            applier.commit()
        console.print(f"[green]✓[/] {standby.name} synced: {total_rows} rows in {time.monotonic() - started:.1f} s; "
                      f"start 'ark apply {standby.name}' to stream from {snap.position.text}")
    finally:
        applier.rollback()
        applier.close()


def _sync_from_snapshot_source(cfg: ArkConfig, standby: StandbySettings, source: Any, verb: str) -> None:
    """The engine-kit way (MariaDB today): a snapshot source's rows bulk-loaded by the applier.

    Same order as above: the capture's prerequisites hold, the redo topic's end ``E`` is read, then
    the snapshot at ``P`` is opened; one standby transaction empties and loads every table and writes
    the state row (next offset ``E``, floor just below ``P``). A standby whose DDL is not
    transactional has its tables created or reshaped by the applier's side session before the load.
    """
    with contextlib.closing(capture_factory(cfg)()) as capture:
        require_prerequisites(capture)
        _refuse_if_applying(cfg, standby, verb)
        capture.ensure_setup()
    topic = redo_topic(cfg.group)
    ensure_topic(cfg.kafka, topic, retention_ms=cfg.kafka.redo_retention_ms)
    start_offset = end_offset(cfg.kafka, topic)
    applier = applier_factory(standby)()
    load = getattr(applier, "bulk_load", None)
    empty = getattr(applier, "empty_table", None)
    if load is None or empty is None:
        raise ArkError(f"the {standby.engine} applier cannot bulk-load a snapshot yet",
                       fix="use a standby engine with bulk_load (the engine kit adds it to every applier)")
    started = time.monotonic()
    snap = source.open()
    try:
        applier.prepare()
        before = applier.load_state(cfg.group, standby.name)
        if before is not None:
            console.print(f"{verb} {standby.name}: replacing its data (applied up to {before.position}, offset "
                          f"{before.next_offset - 1}); readers see the old data until the new copy commits")
        floor = just_before(snap.position)
        metas = snap.tables(cfg.primary.tables)
        if not metas:
            raise ArkError(f"no table of {cfg.primary.describe()} matches {list(cfg.primary.tables)}",
                           fix="check primary.tables in the config")
        console.print(f"sync {standby.name}: snapshot at {snap.position.text}, {len(metas)} tables, streaming from "
                      f"offset {start_offset}")
        applier.begin()
        applier.clear_table_states(cfg.group, standby.name)
        existing = applier.load_table_metas(cfg.group)
        total_rows = 0
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[rows]} rows"),
                      TimeElapsedColumn(), console=console, transient=False) as progress:
            for meta in metas:
                task = progress.add_task(f"copy {meta.table}", total=None, rows=0)
                applier.apply_table_meta(cfg.group, meta, existing.get(meta.table))
                if meta.table in existing:
                    empty(meta.table)

                def report(rows: int, task: TaskID = task) -> None:
                    progress.update(task, rows=rows)

                done = load(meta, snap.rows(meta), progress=report)
                progress.update(task, rows=done, total=1, completed=1)
                total_rows += done
        now_us = time.time_ns() // 1000
        applier.save_state(ApplyState(
            group=cfg.group, standby=standby.name, topic=topic, partition=0, next_offset=start_offset,
            position=floor.text, position_key=floor.key, epoch=0, commit_time_us=now_us, applied_at_us=now_us,
            applied_txns=0, extra={"synced_from_snapshot": snap.position.text}))
        applier.commit()
        console.print(f"[green]✓[/] {standby.name} synced: {total_rows} rows in {time.monotonic() - started:.1f} s; "
                      f"start 'ark apply {standby.name}' to stream from {snap.position.text}")
        if start_offset == 0:
            # No slot keeps the source's log for a capture that has never run: it starts from the oldest log
            # the primary still holds, which must not be newer than this snapshot.
            console.print(f"[yellow]![/] nothing is captured for group {cfg.group} yet: start 'ark capture' before "
                          f"the primary purges {snap.position.text.split(':')[0]} (its log retention), or the "
                          "transactions in between never reach the standby")
    finally:
        snap.close()
        applier.rollback()
        applier.close()
