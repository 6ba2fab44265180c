"""``ark resync STANDBY [--table T]``: rebuild a standby, or one of its tables, while the primary runs.

* ``--table T``: an intent on the control topic; the standby's running applier carries it out
  (:mod:`consumers.table_resync`) while every other table keeps applying. The command follows the
  applier's decision records (quarantined, snapshot taken, rows copied, swapped in) until the table
  is back, unless ``--no-wait``.
* The whole standby: the initial sync path (:mod:`ops.sync`), which replaces every table and the
  state row in one standby transaction. It needs the applier stopped: the applier owns the state
  row, and a copy that replaces it under a running applier would race it. Doing it as an intent would
  only move the same stop-copy-restart into the agent, so the command says so instead.
"""

from __future__ import annotations

import time

from common.config import ArkConfig, StandbySettings
from common.control import (
    RESYNC_TABLE,
    TABLE_QUARANTINED,
    TABLE_RESYNC_PROGRESS,
    TABLE_RESYNC_REFUSED,
    TABLE_RESYNCED,
    ControlReader,
    ControlRecord,
    publish_intent,
)
from common.errors import ArkError
from common.kafka import end_offset, ensure_topic
from ops.context import console
from ops.status import STALE_AFTER_S, latest_heartbeats
from ops.sync import sync_standby
from schemas.topics import control_topic

#: Seconds between looks at the applier's heartbeat while waiting.
_BEAT_EVERY_S = 3.0


def run_resync(cfg: ArkConfig, standby_name: str, table: str | None, *, wait: bool = True,
               timeout: float = 3600.0) -> None:
    """The ``ark resync`` command."""
    standby = cfg.standby(standby_name)
    if table is None:
        sync_standby(cfg, standby, verb="resync")
        return
    resync_table(cfg, standby, table if "." in table else f"public.{table}", wait=wait, timeout=timeout)


def _applier_beat(cfg: ArkConfig, standby: str) -> dict[str, object] | None:
    """The applier's newest heartbeat when it is alive (recent, not stopped), else None."""
    beat = latest_heartbeats(cfg, window_s=STALE_AFTER_S).get(("apply", standby))
    if beat is None or beat["state"] in ("stopped", "error"):
        return None
    if time.time() - beat["sent_at_us"] / 1e6 >= STALE_AFTER_S:
        return None
    return beat


def _line(rec: ControlRecord) -> str:
    args = rec.args
    if rec.kind == TABLE_QUARANTINED:
        return f"quarantined: {args.get('reason', '')}; the other tables keep applying"
    if rec.kind == TABLE_RESYNC_PROGRESS:
        phase = args.get("phase", "")
        if phase == "snapshot":
            return f"snapshot taken at {args.get('position', '?')}"
        if phase == "copied":
            return f"{args.get('rows', '?')} rows copied from the snapshot at {args.get('position', '?')}"
        if phase == "swapped":
            return f"swapped in: {args.get('rows', '?')} rows as of {args.get('position', '?')}"
        if phase == "failed":
            return f"copy failed: {args.get('error', '?')} (the applier retries)"
        return f"{phase}"
    if rec.kind == TABLE_RESYNCED:
        return (f"caught up: {args.get('replayed', '0')} rows after {args.get('position', '?')} re-applied from "
                "the redo topic; the table follows the stream again; done")
    return f"{rec.kind}: {args}"


def resync_table(cfg: ArkConfig, standby: StandbySettings, table: str, *, wait: bool, timeout: float) -> None:
    """Ask ``standby``'s applier to resync ``table``; with ``wait``, print its progress until done."""
    topic = control_topic(cfg.group)
    ensure_topic(cfg.kafka, topic, retention_ms=-1)
    start = end_offset(cfg.kafka, topic)
    alive = _applier_beat(cfg, standby.name) is not None
    request = publish_intent(cfg.kafka, cfg.group, RESYNC_TABLE, standby.name, table=table)
    console.print(f"resync of {table} on {standby.name} requested (request {request[:8]})")
    if not alive:
        console.print(f"the applier of {standby.name} is not running: it starts the resync when it starts "
                      f"('ark apply {standby.name}')")
        return
    if not wait:
        console.print(f"follow it with 'ark status' (the applier's message names {table})")
        return
    reader = ControlReader(cfg.kafka, cfg.group, start_offset=start)
    deadline = time.monotonic() + timeout
    next_beat = time.monotonic() + _BEAT_EVERY_S
    last_note = ""
    try:
        while time.monotonic() < deadline:
            for rec in reader.poll():
                if rec.target != standby.name or rec.args.get("table") != table:
                    continue
                if rec.kind == TABLE_RESYNC_REFUSED:
                    raise ArkError(f"the applier of {standby.name} refused to resync {table}: "
                                   f"{rec.args.get('reason', '')}",
                                   fix="name a replicated table as schema.table ('ark status' lists the standby)")
                if rec.kind in (TABLE_QUARANTINED, TABLE_RESYNC_PROGRESS, TABLE_RESYNCED):
                    console.print(f"{table}: {_line(rec)}")
                if rec.kind == TABLE_RESYNCED:
                    return
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + _BEAT_EVERY_S
                beat = _applier_beat(cfg, standby.name)
                if beat is None:
                    raise ArkError(f"the applier of {standby.name} stopped before the resync of {table} finished",
                                   fix=f"start 'ark apply {standby.name}': it starts the table's copy again by "
                                       "itself (the table stays quarantined until then)")
                note = next((p.strip() for p in str(beat.get("message", "")).split(";")
                             if p.strip().startswith(f"{table} resyncing: copying")), "")
                if note and note != last_note:
                    console.print(f"  {note}")
                    last_note = note
            time.sleep(0.2)
    finally:
        reader.close()
    raise ArkError(f"the resync of {table} on {standby.name} did not finish in {timeout:g} s",
                   fix="see 'ark status' for its progress; the applier keeps going")
