"""``ark status`` when Kafka is unreachable: say so, then show what the databases themselves know.

Heartbeats and the redo topic's end live in Kafka; the standbys' state rows and the primary's
replication slot do not. So with the broker down the operator still sees each standby's applied
position and commit time, and how much WAL the primary is holding for the capture. The command
exits with :data:`OFFLINE_EXIT` (KafkaUnavailable's code, 3) so scripts can tell this apart.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

from rich.markup import escape
from rich.table import Table

from common.config import ArkConfig
from common.errors import ArkError, KafkaUnavailable
from common.kafka import check_reachable
from common.probe import SourceLog
from ops.context import console
from ops.engines import applier_factory, source_probe
from ops.status import iso_time

#: Exit code of ``ark status`` when the broker is unreachable.
OFFLINE_EXIT = KafkaUnavailable.exit_code

#: How long ``ark status`` waits for the broker before reporting it unreachable.
PROBE_TIMEOUT_S = 5.0


def _primary(cfg: ArkConfig) -> SourceLog:
    """What the primary says about the capture's place in its log."""
    return source_probe(cfg).source_log()


def _standby(cfg: ArkConfig, name: str, current: str | None, now: float) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name, "state": "unknown (Kafka unreachable)", "applied_position": "",
                           "applied_offset": -1, "applied_commit_time": None, "commit_age_seconds": None,
                           "applied_at": None, "log_behind_bytes": None, "message": ""}
    try:
        with contextlib.closing(applier_factory(cfg.standby(name))()) as applier:
            st = applier.load_state(cfg.group, name)
    except ArkError as exc:
        row.update(state="database unreachable", message=exc.message)
        return row
    if st is None:
        row["state"] = "never synced"
        return row
    row.update(applied_position=st.position, applied_offset=st.next_offset - 1,
               applied_commit_time=iso_time(st.commit_time_us), applied_at=iso_time(st.applied_at_us),
               commit_age_seconds=round(now - st.commit_time_us / 1e6, 1) if st.commit_time_us else None,
               log_behind_bytes=source_probe(cfg).bytes_between(st.position, current) if current and st.position
               else None)
    return row


def gather_offline(cfg: ArkConfig, reason: str) -> dict[str, Any]:
    """The status document from the databases alone (what ``--json`` prints with the broker down)."""
    now = time.time()
    log = _primary(cfg)
    primary = {"node": log.node, "summary": log.summary, "current_position": log.current_position,
               "retained_bytes": log.retained_bytes, "message": log.message, **log.details}
    return {"group": cfg.group,
            "kafka": {"reachable": False, "bootstrap": cfg.kafka.bootstrap, "error": reason,
                      "fix": "start the broker or fix kafka.bootstrap; positions below come from the databases"},
            "primary": primary,
            "standbys": [_standby(cfg, s.name, log.current_position, now) for s in cfg.standbys],
            "at": iso_time(int(now * 1e6))}


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)


def render_offline(doc: dict[str, Any]) -> Table:
    """The human table."""
    p = doc["primary"]
    where = p["summary"] or p["message"] or "-"
    table = Table(title=f"group {doc['group']} · Kafka UNREACHABLE · primary {p['node']}: {where}",
                  title_justify="left")
    for col in ("standby", "state", "applied position", "offset", "last applied commit", "commit age s",
                "log behind"):
        table.add_column(col)
    for sb in doc["standbys"]:
        table.add_row(sb["name"], sb["state"], sb["applied_position"] or "-", str(sb["applied_offset"]),
                      sb["applied_commit_time"] or "-",
                      "-" if sb["commit_age_seconds"] is None else f"{sb['commit_age_seconds']:.0f}",
                      _bytes(sb["log_behind_bytes"]))
    notes = [f"{sb['name']}: {sb['message']}" for sb in doc["standbys"] if sb["message"]]
    if p["summary"] and p["message"]:
        notes.append(f"{p['node']}: {p['message']}")
    if notes:
        table.caption = "\n".join(notes)
    return table


def probe(cfg: ArkConfig, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the broker answers, else why not."""
    try:
        check_reachable(cfg.kafka, timeout=timeout)
    except KafkaUnavailable as exc:
        return exc.message
    return None


def report_offline(cfg: ArkConfig, reason: str, *, as_json: bool) -> None:
    """Print the broker-unreachable line and the databases' view, then exit with OFFLINE_EXIT."""
    doc = gather_offline(cfg, reason)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        console.print(f"[bold red]Kafka unreachable:[/] {escape(reason)}", soft_wrap=True)
        console.print(f"[bold]fix:[/] {escape(doc['kafka']['fix'])}", soft_wrap=True)
        console.print(render_offline(doc))
    sys.exit(OFFLINE_EXIT)


def exit_if_broker_down(cfg: ArkConfig, *, as_json: bool) -> None:
    """Called first by ``ark status``: with the broker unreachable, report from the databases and exit."""
    reason = probe(cfg)
    if reason is not None:
        report_offline(cfg, reason, as_json=as_json)
