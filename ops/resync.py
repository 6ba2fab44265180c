"""``ark resync STANDBY [--table T]``: rebuild a standby, or one of its tables, while the primary runs.

* ``--table T``: an intent on the control topic; the standby's running applier carries it out
  (:mod:`consumers.table_resync`) while every other table keeps applying. The command follows the
  applier's decision records (resync started, snapshot taken, rows copied, swapped in) until the table
  is back, unless ``--no-wait``.
* The whole standby: the initial sync path (:mod:`ops.sync`), which replaces every table and the
  state row in one standby transaction. It needs the applier stopped: the applier owns the state
  row, and a copy that replaces it under a running applier would race it. Doing it as an intent would
  only move the same stop-copy-restart into the agent, so the command says so instead.
"""

from __future__ import annotations

import time

from common.config import ArkConfig, StandbySettings
from common.control import ControlChannel, ControlRecord
from common.errors import ArkError
from ops import intents
from ops.context import console
from ops.intents import qualified_table
from ops.status import STALE_AFTER_S, latest_beats
from ops.sync import sync_standby
from schemas.control import TableResynced, TableResyncProgress, TableResyncRefused, TableResyncStarted

#: Seconds between looks at the applier's heartbeat while waiting.
_BEAT_EVERY_S = 3.0


def run_resync(cfg: ArkConfig, standby_name: str, table: str | None, *, wait: bool = True,
               timeout: float = 3600.0) -> None:
    """The ``ark resync`` command."""
    standby = cfg.standby(standby_name)
    if table is None:
        sync_standby(cfg, standby, verb="resync")
        return
    resync_table(cfg, standby, qualified_table(table), wait=wait, timeout=timeout)


def _applier_beat(cfg: ArkConfig, standby: str) -> dict[str, object] | None:
    """The applier's newest heartbeat when it is alive (recent, not stopped), else None."""
    beat = latest_beats(cfg, window_s=STALE_AFTER_S).get(("apply", standby))
    if beat is None or beat["state"] in ("stopped", "error"):
        return None
    if time.time() - beat["sent_at_us"] / 1e6 >= STALE_AFTER_S:
        return None
    return beat


def _line(rec: ControlRecord) -> str:
    body = rec.body
    if isinstance(body, TableResyncStarted):
        return f"resync started: {body.reason}; the other tables keep applying"
    if isinstance(body, TableResyncProgress):
        if body.phase == "snapshot":
            return f"snapshot taken at {body.position}"
        if body.phase == "copied":
            return f"{body.rows} rows copied from the snapshot at {body.position}"
        if body.phase == "swapped":
            return f"swapped in: {body.rows} rows as of {body.position}"
        if body.phase == "failed":
            return f"copy failed: {body.error} (the applier retries)"
        return body.phase
    if isinstance(body, TableResynced):
        return (f"caught up: {body.replayed} rows after {body.position} re-applied from the redo topic; the table "
                "follows the stream again; done")
    return rec.kind


def resync_table(cfg: ArkConfig, standby: StandbySettings, table: str, *, wait: bool, timeout: float) -> None:
    """Ask ``standby``'s applier to resync ``table``; with ``wait``, print its progress until done."""
    channel = ControlChannel.for_config(cfg, start=None)  # follows what comes after the request
    alive = _applier_beat(cfg, standby.name) is not None
    try:
        request = intents.resync_table(channel, cfg, standby.name, table)
        _follow(cfg, channel, standby, table, request, alive=alive, wait=wait, timeout=timeout)
    finally:
        channel.close()


def _follow(cfg: ArkConfig, channel: ControlChannel, standby: StandbySettings, table: str, request: str, *,
            alive: bool, wait: bool, timeout: float) -> None:
    console.print(f"resync of {table} on {standby.name} requested (request {request[:8]})")
    if not alive:
        console.print(f"the applier of {standby.name} is not running: it starts the resync when it starts "
                      f"('ark apply {standby.name}')")
        return
    if not wait:
        console.print(f"follow it with 'ark status' (the applier's message names {table})")
        return
    deadline = time.monotonic() + timeout
    next_beat = time.monotonic() + _BEAT_EVERY_S
    last_note = ""
    decisions = (TableResyncStarted, TableResyncProgress, TableResynced, TableResyncRefused)
    while time.monotonic() < deadline:
        for rec in channel.poll():
            body = rec.body
            if rec.target != standby.name or not isinstance(body, decisions) or body.table != table:
                continue
            if isinstance(body, TableResyncRefused):
                raise ArkError(f"the applier of {standby.name} refused to resync {table}: {body.reason}",
                               fix="name a replicated table as schema.table ('ark status' lists the standby)")
            console.print(f"{table}: {_line(rec)}")
            if isinstance(body, TableResynced):
                return
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + _BEAT_EVERY_S
            beat = _applier_beat(cfg, standby.name)
            if beat is None:
                raise ArkError(f"the applier of {standby.name} stopped before the resync of {table} finished",
                               fix=f"start 'ark apply {standby.name}': it starts the table's copy again by "
                                   "itself (the table's rows wait until then)")
            note = next((p.strip() for p in str(beat.get("message", "")).split(";")
                         if p.strip().startswith(f"{table} resyncing: copying")), "")
            if note and note != last_note:
                console.print(f"  {note}")
                last_note = note
        time.sleep(0.2)
    raise ArkError(f"the resync of {table} on {standby.name} did not finish in {timeout:g} s",
                   fix="see 'ark status' for its progress; the applier keeps going")
