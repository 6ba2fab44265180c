"""``ark status``: what every agent of the group last said, plus the standbys' own state rows."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from rich.live import Live
from rich.table import Table

from common.config import ArkConfig
from common.errors import ArkError
from common.kafka import end_offset, make_consumer, offset_for_time, read_range, topic_exists, watermarks
from consumers.gate import lag_seconds
from ops.context import console
from ops.engines import applier_factory
from schemas import envelope
from schemas.errors import CorruptEntry
from schemas.topics import control_topic, heartbeat_topic, redo_topic

#: A heartbeat older than this means the agent is down.
STALE_AFTER_S = 10.0


def latest_heartbeats(cfg: ArkConfig, window_s: float = 30.0) -> dict[tuple[str, str], dict[str, Any]]:
    """The newest heartbeat per (agent, name) sent in the last ``window_s`` seconds."""
    topic = heartbeat_topic(cfg.group)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    if not topic_exists(cfg.kafka, topic):
        return out  # no agent ever ran
    consumer = make_consumer(cfg.kafka, group_id="ark-status")
    try:
        _low, high = watermarks(consumer, topic)
        start = offset_for_time(cfg.kafka, topic, int((time.time() - window_s) * 1000))
        for msg in read_range(consumer, topic, start, high, timeout=10):
            with contextlib.suppress(CorruptEntry):
                rec = envelope.decode(msg.value(), msg.headers(), topic=topic, offset=msg.offset()).record
                out[(rec["agent"], rec["name"])] = rec
    except ArkError:
        pass  # no heartbeat topic yet: every agent is reported as not running
    finally:
        consumer.close()
    return out


def gather(cfg: ArkConfig) -> dict[str, Any]:
    """The status document (what ``--json`` prints)."""
    now = time.time()
    beats = latest_heartbeats(cfg)
    redo_end = end_offset(cfg.kafka, redo_topic(cfg.group)) if topic_exists(cfg.kafka, redo_topic(cfg.group)) else -1
    cap = beats.get(("capture", cfg.primary.name)) or next((b for (a, _n), b in beats.items() if a == "capture"), None)
    capture = {"node": cfg.primary.name, "state": "not running", "source_position": "", "produced_offset": -1,
               "message": ""}
    if cap is not None:
        age = now - cap["sent_at_us"] / 1e6
        capture.update(state=cap["state"] if age < STALE_AFTER_S else f"down (last heard {age:.0f} s ago)",
                       source_position=cap["source_position"], produced_offset=cap["produced_offset"],
                       message=cap["message"], node=cap["name"])
    standbys = []
    for sb in cfg.standbys:
        row: dict[str, Any] = {"name": sb.name, "state": "not running", "delay_seconds": sb.delay_seconds,
                               "applied_position": "", "applied_offset": -1, "lag_entries": None,
                               "lag_seconds": None, "applied_commit_time": None, "message": ""}
        beat = beats.get(("apply", sb.name))
        if beat is not None and now - beat["sent_at_us"] / 1e6 < STALE_AFTER_S:
            row.update(state=beat["state"], delay_seconds=beat["delay_seconds"],
                       applied_position=beat["source_position"], applied_offset=beat["applied_offset"],
                       lag_entries=max(0, redo_end - beat["applied_offset"] - 1) if redo_end >= 0 else None,
                       lag_seconds=round(lag_seconds(beat["applied_commit_time_us"], beat["applied_offset"] + 1,
                                                     redo_end, now), 3),
                       applied_commit_time=iso_time(beat["applied_commit_time_us"]), message=beat["message"])
        else:
            if beat is not None:
                row["state"] = f"down (last heard {now - beat['sent_at_us'] / 1e6:.0f} s ago)"
                row["message"] = beat["message"]
            _fill_from_state_table(cfg, sb.name, row, redo_end, now)
        standbys.append(row)
    from ops.retention import status_warnings

    return {"group": cfg.group, "redo_end_offset": redo_end, "capture": capture, "standbys": standbys,
            "warnings": status_warnings(cfg, standbys), "retransmits": recent_retransmits(cfg),
            "at": iso_time(int(now * 1e6))}


def recent_retransmits(cfg: ArkConfig, last: int = 5) -> list[dict[str, Any]]:
    """The last retransmit requests and the capture's answers (CRC retransmission, guarantee 4)."""
    from common.control import RETRANSMIT, RETRANSMIT_DONE, RETRANSMIT_FAILED, ControlReader

    if not topic_exists(cfg.kafka, control_topic(cfg.group)):
        return []
    reader = ControlReader(cfg.kafka, cfg.group)
    try:
        records = [r for r in reader.replay() if r.kind in (RETRANSMIT, RETRANSMIT_DONE, RETRANSMIT_FAILED)]
    finally:
        reader.close()
    return [{"at": iso_time(r.issued_at_us), "kind": r.kind, "target": r.target, "request": r.request_id,
             **{k: v for k, v in r.args.items() if k in ("after_position", "offset", "reason", "request_ids")}}
            for r in records[-last:]]


def _fill_from_state_table(cfg: ArkConfig, name: str, row: dict[str, Any], redo_end: int, now: float) -> None:
    """When the applier is not running, read where it stopped from the standby itself."""
    try:
        applier = applier_factory(cfg.standby(name))()
        try:
            st = applier.load_state(cfg.group, name)
        finally:
            applier.close()
    except ArkError as exc:
        row["message"] = row["message"] or exc.message
        return
    if st is None:
        row["state"] = "never synced" if row["state"] == "not running" else row["state"]
        return
    row.update(applied_position=st.position, applied_offset=st.next_offset - 1,
               lag_entries=max(0, redo_end - st.next_offset) if redo_end >= 0 else None,
               lag_seconds=round(lag_seconds(st.commit_time_us, st.next_offset, redo_end, now), 3),
               applied_commit_time=iso_time(st.commit_time_us))


def iso_time(us: int) -> str | None:
    """Microseconds since the epoch as ISO-8601 UTC with milliseconds (None for 0)."""
    if not us:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + f".{int(us % 1_000_000 / 1000):03d}Z"


def render(doc: dict[str, Any]) -> Table:
    """The human table."""
    cap = doc["capture"]
    table = Table(title=f"group {doc['group']} · redo end offset {doc['redo_end_offset']} · capture on "
                        f"{cap['node']}: {cap['state']} at {cap['source_position'] or '-'}",
                  title_justify="left")
    for col in ("standby", "state", "delay s", "applied position", "offset", "lag entries", "lag s",
                "last applied commit"):
        table.add_column(col)
    for sb in doc["standbys"]:
        table.add_row(sb["name"], sb["state"], f"{sb['delay_seconds']:g}", sb["applied_position"] or "-",
                      str(sb["applied_offset"]), "-" if sb["lag_entries"] is None else str(sb["lag_entries"]),
                      "-" if sb["lag_seconds"] is None else f"{sb['lag_seconds']:.1f}",
                      sb["applied_commit_time"] or "-")
    for sb in doc["standbys"]:
        if sb["message"]:
            table.caption = (table.caption or "") + f"{sb['name']}: {sb['message']}\n"
    for w in doc["warnings"]:
        table.caption = (table.caption or "") + f"warning: {w}\n"
    for ev in doc.get("retransmits", []):
        table.caption = (table.caption or "") + (f"{ev['at']} {ev['kind']} {ev['target']} after "
                                                 f"{ev.get('after_position') or '-'}: {ev.get('reason', '')}\n")
    return table


def show_status(cfg: ArkConfig, *, as_json: bool, watch: float | None) -> None:
    """Print once, or refresh every ``watch`` seconds until interrupted."""
    from ops.status_offline import exit_if_broker_down

    exit_if_broker_down(cfg, as_json=as_json)  # Kafka unreachable: the databases' view, exit 3
    if as_json:
        print(json.dumps(gather(cfg), indent=2))
        return
    if watch is None:
        console.print(render(gather(cfg)))
        return
    with Live(render(gather(cfg)), console=console, refresh_per_second=4) as live:
        while True:
            time.sleep(watch)
            live.update(render(gather(cfg)))
