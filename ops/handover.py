"""``ark switchover``, ``ark failover``, ``ark topology``: the CLI side of failover/handover.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from common.config import ArkConfig
from common.control import ControlChannel, ControlRecord
from common.kafka import end_offset, topic_exists
from common.roles import Roles, roles_of
from failover.handover import CAPTURE_WAIT_S, Handover, Reinstate, Report, Say, topology_lines
from failover.plan import dry_run_rows
from failover.view import HeartbeatView
from ops.context import console
from schemas.topics import redo_topic


def _say(line: str) -> None:
    console.print(escape(line), soft_wrap=True)


def _summary(report: Report, say: Say = _say) -> None:
    say(f"{report.action} done in {report.seconds:.2f} s: {report.primary} is the primary of epoch "
        f"{report.epoch} (end-of-epoch marker at redo offset {report.marker_offset})")
    for note in report.notes:
        say(f"note: {note}")


def run_switchover(cfg: ArkConfig, target: str, *, grace_s: float, timeout_s: float, say: Say = _say) -> Report:
    """Hand the service to ``target`` (failover/handover.py has the steps); each step line goes to ``say``
    (the terminal; the console passes its own, since a full-screen UI has no stdout to print on)."""
    handover = Handover(cfg, say, timeout_s=timeout_s)
    try:
        report = handover.switchover(target, grace_s=grace_s)
    finally:
        handover.close()
    _summary(report, say)
    return report


def run_failover(cfg: ArkConfig, target: str, *, force: bool, dry_run: bool, timeout_s: float,
                 as_json: bool = False, until_us: int = 0, say: Say = _say,
                 capture_wait_s: float = CAPTURE_WAIT_S) -> Report | None:
    """Promote ``target`` after the primary is gone, or (``dry_run``) say what that would mean per standby; each
    step line goes to ``say`` (the terminal; ``ark controller`` logs them, and passes ``capture_wait_s`` 0)."""
    handover = Handover(cfg, say, timeout_s=timeout_s, capture_wait_s=capture_wait_s)
    try:
        if dry_run:
            _dry_run(cfg, handover, target, force=force, as_json=as_json)
            return None
        report = handover.failover(target, force=force, until_us=until_us)
    finally:
        handover.close()
    _summary(report, say)
    return report


def run_reinstate(cfg: ArkConfig, old: str, *, report_path: Path | None, timeout_s: float) -> Report:
    """Record what ``old`` committed that never reached Kafka, then make it a standby again."""
    handover = Handover(cfg, _say, timeout_s=timeout_s)
    try:
        report = Reinstate(handover).run(old, report_path)
    finally:
        handover.close()
    console.print(f"reinstate done in {report.seconds:.2f} s: {old} is a standby of {report.primary}")
    for note in report.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)
    return report


def _dry_run(cfg: ArkConfig, handover: Handover, target: str, *, force: bool, as_json: bool) -> None:
    from failover.plan import decide_failover

    views = handover.node_views()
    redo = redo_topic(cfg.group)
    end = end_offset(cfg.kafka, redo) if topic_exists(cfg.kafka, redo) else -1
    rows = dry_run_rows(handover.roles, views, end)
    decision = decide_failover(handover.roles, target, views, force=force)
    if as_json:
        print(json.dumps({"roles": handover.roles.describe(), "redo_end_offset": end, "standbys": rows,
                          "decision": {"go": decision.go, "sentence": decision.sentence, "fix": decision.fix}},
                         indent=2))
        return
    table = Table(title=f"failover --dry-run · {handover.roles.describe()} · redo end offset {end}",
                  title_justify="left")
    for col in ("standby", "role", "applier", "applied offset", "lag entries", "delay s",
                "lost of what Kafka holds", "s to promote"):
        table.add_column(col)
    for r in rows:
        table.add_row(*(("-" if v is None else str(v)) for v in r.values()))
    table.caption = ((("would go: " if decision.go else "would refuse: ") + decision.sentence)
                     + (f"\nfix: {decision.fix}" if decision.fix and not decision.go else "")
                     + "\nwhat the old primary committed that never reached Kafka is found by 'ark reinstate'")
    console.print(table)


def current_roles(cfg: ArkConfig, timeout: float = 10.0) -> Roles:
    """The group's roles as the control topic says now (the configured ones before the topic exists)."""
    return roles_of(cfg, control_records(cfg, timeout))


def control_records(cfg: ArkConfig, timeout: float = 10.0) -> list[ControlRecord]:
    """Every record of the control topic now (none before the topic exists)."""
    from schemas.topics import control_topic

    if not topic_exists(cfg.kafka, control_topic(cfg.group), timeout=timeout):
        return []
    channel = ControlChannel.for_config(cfg)
    try:
        return channel.replay()
    finally:
        channel.close()


def config_now(cfg: ArkConfig, *, without_kafka: bool = False) -> ArkConfig:
    """The config under the current roles: after a switchover or failover the primary is the node the control
    topic names, and the old primary is one of the standbys (common/roles.py). ``without_kafka``: the config as
    written when Kafka cannot be reached (for commands that report on Kafka themselves)."""
    from common.errors import KafkaUnavailable
    from common.roles import config_under

    try:
        return config_under(cfg, current_roles(cfg, timeout=3.0 if without_kafka else 10.0).primary)
    except KafkaUnavailable:
        if not without_kafka:
            raise
        return cfg


def show_topology(cfg: ArkConfig, *, as_json: bool) -> None:
    """Print who feeds whom."""
    roles = current_roles(cfg)
    view = HeartbeatView(cfg)
    try:
        view.catch_up()
        if as_json:
            doc: dict[str, Any] = {"epoch": roles.epoch, "primary": roles.primary,
                                   "nodes": {n: roles.role_of(n) for n in [cfg.primary.name,
                                                                           *(s.name for s in cfg.standbys)]},
                                   "reigns": [vars(r) for r in roles.reigns]}
            print(json.dumps(doc, indent=2))
            return
        for line in topology_lines(cfg, roles, view):
            console.print(escape(line), soft_wrap=True)
    finally:
        view.close()
