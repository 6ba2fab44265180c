"""``ark status``: what every agent of the group last said, plus the standbys' own state rows."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.live import Live
from rich.table import Table

from common.config import ArkConfig
from common.errors import ArkError, KafkaUnavailable
from common.kafka import end_offset, make_consumer, offset_for_time, read_range, topic_exists, watermarks
from consumers.gate import lag_seconds
from ops.automation_cmd import automation_lines, controllers_of
from ops.context import console
from ops.engines import applier_factory
from ops.lag import STALE_AFTER_S, CaptureView, capture_stall, standby_lag
from schemas import envelope
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import control_topic, heartbeat_topic, redo_topic


def latest_heartbeats(cfg: ArkConfig, window_s: float = 30.0) -> tuple[dict[tuple[str, str], dict[str, Any]], int]:
    """The newest authentic heartbeat per (agent, name) sent in the last ``window_s`` seconds, and how many
    heartbeats were refused (unsigned, or signed with another key)."""
    topic = heartbeat_topic(cfg.group)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    refused = 0
    if not topic_exists(cfg.kafka, topic):
        return out, refused  # no agent ever ran
    key = cfg.control_key_bytes()
    consumer = make_consumer(cfg.kafka, group_id="ark-status")
    try:
        _low, high = watermarks(consumer, topic)
        start = offset_for_time(cfg.kafka, topic, int((time.time() - window_s) * 1000))
        for msg in read_range(consumer, topic, start, high, timeout=10):
            try:
                envelope.check_signature(msg.value(), msg.headers(), key)
                rec = envelope.decode(msg.value(), msg.headers(), topic=topic, offset=msg.offset()).record
            except NotAuthentic:
                refused += 1
                continue
            except CorruptEntry:
                continue
            out[(rec["agent"], rec["name"])] = rec
    except KafkaUnavailable:
        pass  # no heartbeat topic yet: every agent is reported as not running
    finally:
        consumer.close()
    return out, refused


def latest_beats(cfg: ArkConfig, window_s: float = 30.0) -> dict[tuple[str, str], dict[str, Any]]:
    """:func:`latest_heartbeats` without the refusal count."""
    return latest_heartbeats(cfg, window_s)[0]


def _roles(cfg: ArkConfig) -> tuple[Any, dict[str, Any]]:
    """The group's roles (common/roles.py; the configured ones when the control topic does not exist yet), and
    what the control topic says of automatic failover (ops/automation_cmd.py)."""
    from common.roles import roles_of
    from ops.alerts_cmd import events_doc
    from ops.automation_cmd import automation_doc
    from ops.handover import control_records

    records = control_records(cfg)
    doc = automation_doc(records)
    doc["events"] = events_doc(records, cfg.group)
    return roles_of(cfg, records), doc


def gather(cfg: ArkConfig, heartbeats: tuple[dict[tuple[str, str], dict[str, Any]], int] | None = None,
           roles: Any = None) -> dict[str, Any]:
    """The status document (what ``--json`` prints; the console's model). ``heartbeats``: the newest
    heartbeats and the refusal count when the caller already follows the topic (the console); ``roles``:
    the group's roles when the caller already follows the control topic (the console), else replayed here."""
    from common.roles import as_standby, config_under, nodes

    now = time.time()
    if roles is None:
        roles, automation = _roles(cfg)
    else:
        automation = {}  # the caller follows the control topic itself (the console shows decisions as events)
    beats, beats_refused = heartbeats if heartbeats is not None else latest_heartbeats(cfg)
    redo_end = end_offset(cfg.kafka, redo_topic(cfg.group)) if topic_exists(cfg.kafka, redo_topic(cfg.group)) else -1
    cap = beats.get(("capture", cfg.primary.name)) or next((b for (a, _n), b in beats.items() if a == "capture"), None)
    capture: dict[str, Any] = {"node": roles.primary, "state": "not running", "source_position": "",
                               "produced_offset": -1, "message": "", "caught_up_at": None, "stalled": ""}
    view = CaptureView.of(cap) if cap is not None else None
    if cap is not None and view is not None:
        age = now - cap["sent_at_us"] / 1e6
        capture.update(state=cap["state"] if age < STALE_AFTER_S else f"down (last heard {age:.0f} s ago)",
                       source_position=cap["source_position"], produced_offset=cap["produced_offset"],
                       message=cap["message"], node=roles.primary, epoch=cap["epoch"],
                       caught_up_at=iso_time(int(view.caught_up_at_s * 1e6)))
    capture["stalled"] = capture_stall(now, view)
    standbys = []
    for sb in (as_standby(cfg, n.name) for n in nodes(cfg) if n.name != roles.primary):
        row: dict[str, Any] = {"name": sb.name, "role": roles.role_of(sb.name), "state": "not running",
                               "delay_seconds": sb.delay_seconds,
                               "applied_position": "", "applied_offset": -1, "lag_entries": None,
                               "lag_seconds": None, "applied_commit_time": None, "message": ""}
        beat = beats.get(("apply", sb.name))
        if beat is not None and now - beat["sent_at_us"] / 1e6 < STALE_AFTER_S:
            row.update(state=beat["state"], delay_seconds=beat["delay_seconds"],
                       applied_position=beat["source_position"], applied_offset=beat["applied_offset"],
                       lag_entries=max(0, redo_end - beat["applied_offset"] - 1) if redo_end >= 0 else None,
                       lag_seconds=_lag(now, beat["applied_commit_time_us"], beat["applied_offset"] + 1, redo_end,
                                        view),
                       applied_commit_time=iso_time(beat["applied_commit_time_us"]), message=beat["message"])
        else:
            if beat is not None:
                row["state"] = f"down (last heard {now - beat['sent_at_us'] / 1e6:.0f} s ago)"
                row["message"] = beat["message"]
            if row["role"] == "standby":
                _fill_from_state_table(cfg, sb.name, row, redo_end, now, view)
            else:
                row["state"] = row["role"]
        standbys.append(row)
    from ops.retention import status_warnings

    retransmits, refused = recent_retransmits(cfg)
    warnings = status_warnings(cfg, standbys)
    if refused:
        warnings.append(f"{sum(refused.values())} control records were refused as not authentic "
                        f"({', '.join(f'{n} {r}' for r, n in sorted(refused.items()))}): someone without the group's "
                        "control key writes to the control topic, or an agent runs with another key")
    if beats_refused:
        warnings.append(f"{beats_refused} heartbeats were refused as not authentic (unsigned or another key)")
    if any(r["role"] == "demoted" for r in standbys):
        warnings += [f"{r['name']} is a demoted former primary: 'ark reinstate {r['name']}' records what it committed "
                     "that never reached Kafka and makes it a standby" for r in standbys if r["role"] == "demoted"]
    agents = node_agents(beats, now)
    warnings += [f"node {a['name']} is {a['state']}: {a['message']}" for a in agents if a["state"] == "failed"]
    capture["source_log"] = _source_log(config_under(cfg, roles.primary), warnings)
    automation["controllers"] = controllers_of(beats, now)
    roles_doc = {"epoch": roles.epoch, "primary": roles.primary, "description": roles.describe(),
                 "nodes": {n.name: roles.role_of(n.name) for n in nodes(cfg)}}
    return {"group": cfg.group, "roles": roles_doc, "redo_end_offset": redo_end, "capture": capture,
            "standbys": standbys, "automation": automation, "node_agents": agents,
            "warnings": warnings, "retransmits": retransmits, "control_refused": refused,
            "not_protected": not_protected(cfg), "at": iso_time(int(now * 1e6))}


def node_agents(beats: dict[tuple[str, str], dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """What each node agent (``ark agent NODE``) last said: healthy, restarting, failed, or down when silent."""
    out = []
    for (kind, name), beat in sorted(beats.items()):
        if kind != "node":
            continue
        age = now - beat["sent_at_us"] / 1e6
        state = beat["state"] if age < STALE_AFTER_S else f"down (last heard {age:.0f} s ago)"
        out.append({"name": name, "state": state, "role": beat["role"], "message": beat["message"],
                    "host": beat["host"], "heard_s_ago": round(age, 1)})
    return out


def not_protected(cfg: ArkConfig) -> list[dict[str, str]]:
    """What the primary's own catalog says is not fully protected: tables not replicated or replicated in part
    (keyless policy, UNLOGGED), and DDL the capture cannot follow exactly (no DDL hook). Asked of the primary now,
    so it is right whether the capture runs or not."""
    from ops.engines import capture_factory

    try:
        capture = capture_factory(cfg)()
        try:
            found = capture.protection()
        finally:
            capture.close()
    except ArkError as exc:
        return [{"what": f"cannot ask the primary what is protected: {exc.message}", "fix": exc.fix}]
    return [{"what": p.what, "fix": p.fix} for p in found]


def _source_log(cfg: ArkConfig, warnings: list[str]) -> str:
    """What the source's log holds back for Ark (a sentence; its threats go to ``warnings``)."""
    import contextlib

    from ops.engines import capture_factory

    try:
        with contextlib.closing(capture_factory(cfg)()) as capture:
            text, problems = capture.log_report(settings=False)
    except ArkError as exc:
        return f"unknown: {exc.message}"
    warnings.extend(f"{p.what} (fix: {p.fix})" for p in problems)
    return text


def recent_retransmits(cfg: ArkConfig, last: int = 5) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The last retransmit requests and the capture's answers (CRC retransmission, guarantee 4), and the
    control records refused as not authentic (by reason)."""
    from common.control import ControlChannel
    from schemas.control import Retransmit, RetransmitDone, RetransmitFailed

    if not topic_exists(cfg.kafka, control_topic(cfg.group)):
        return [], {}
    channel = ControlChannel.for_config(cfg)
    try:
        records = [r for r in channel.replay() if isinstance(r.body, Retransmit | RetransmitDone | RetransmitFailed)]
        refused = dict(channel.refused)
    finally:
        channel.close()
    out = []
    for r in records[-last:]:
        body = r.body
        doc: dict[str, Any] = {"at": iso_time(r.issued_at_us), "kind": r.kind, "target": r.target,
                               "request": r.request_id, "after_position": getattr(body, "after_position", "")}
        if isinstance(body, Retransmit):
            doc.update(offset=body.offset, reason=body.reason)
        elif isinstance(body, RetransmitFailed):
            doc.update(reason=body.reason, request_ids=",".join(body.request_ids))
        elif isinstance(body, RetransmitDone):
            doc.update(request_ids=",".join(body.request_ids))
        out.append(doc)
    return out, refused


def _lag(now: float, applied_commit_us: int, next_offset: int, redo_end: int, view: CaptureView | None) -> float | None:
    """Lag from the source (ops/lag.py); without a capture ever heard of, from the redo topic's end."""
    if view is None:
        return round(lag_seconds(applied_commit_us, next_offset, redo_end, now), 3)
    lag = standby_lag(now, applied_commit_us, next_offset, view)
    return None if lag is None else round(lag, 3)


def _fill_from_state_table(cfg: ArkConfig, name: str, row: dict[str, Any], redo_end: int, now: float,
                           view: CaptureView | None) -> None:
    """When the applier is not running, read where it stopped from the standby itself."""
    try:
        from common.roles import as_standby

        applier = applier_factory(as_standby(cfg, name))()
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
               lag_seconds=_lag(now, st.commit_time_us, st.next_offset, redo_end, view),
               applied_commit_time=iso_time(st.commit_time_us))


def iso_time(us: int) -> str | None:
    """Microseconds since the epoch as ISO-8601 UTC with milliseconds (None for 0)."""
    if not us:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us / 1e6)) + f".{int(us % 1_000_000 / 1000):03d}Z"


def render(doc: dict[str, Any]) -> Table:
    """The human table."""
    cap = doc["capture"]
    roles = doc.get("roles", {})
    table = Table(title=f"group {doc['group']} · {roles.get('description', '')} · redo end offset "
                        f"{doc['redo_end_offset']} · capture on {cap['node']}: {cap['state']} at "
                        f"{cap['source_position'] or '-'}",
                  title_justify="left")
    for col in ("standby", "state", "delay s", "applied position", "offset", "lag entries", "lag s",
                "last applied commit"):
        table.add_column(col)
    for sb in doc["standbys"]:
        table.add_row(sb["name"], sb["state"], f"{sb['delay_seconds']:g}", sb["applied_position"] or "-",
                      str(sb["applied_offset"]), "-" if sb["lag_entries"] is None else str(sb["lag_entries"]),
                      "-" if sb["lag_seconds"] is None else f"{sb['lag_seconds']:.1f}",
                      sb["applied_commit_time"] or "-")
    if cap.get("source_log"):
        table.caption = f"primary's log: {cap['source_log']}\n"
    if cap.get("stalled"):
        table.caption = (table.caption or "") + f"{cap['stalled']}\n"
    for na in doc.get("node_agents", []):
        table.caption = (table.caption or "") + f"node agent {na['name']} ({na['role']}): {na['state']}" + \
            (f" ({na['message']})" if na["message"] else "") + "\n"
    for sb in doc["standbys"]:
        if sb["message"]:
            table.caption = (table.caption or "") + f"{sb['name']}: {sb['message']}\n"
    for line in automation_lines(doc.get("automation", {})):
        table.caption = (table.caption or "") + f"{line}\n"
    for w in doc["warnings"]:
        table.caption = (table.caption or "") + f"warning: {w}\n"
    for p in doc.get("not_protected", []):
        table.caption = (table.caption or "") + f"not fully protected: {p['what']} (fix: {p['fix']})\n"
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
