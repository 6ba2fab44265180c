"""``ark alert test``, the group's recent events in ``ark status``, and ``ark check``'s look at the alert command
(failover/alerts.py runs it; common/events.py says what an event is)."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import click

from common.automation_settings import AlertSettings
from common.config import ArkConfig
from common.control import ControlRecord
from common.errors import ConfigError
from common.exit_codes import ExitCode
from ops.context import CliContext, console
from ops.errors import OpsError

pass_ctx = click.make_pass_decorator(CliContext)

#: Events ``ark status`` shows.
RECENT_EVENTS = 10


class AlertFailed(OpsError):
    """``ark alert test``: the alert command failed or timed out (twice)."""

    exit_code = ExitCode.CHECK_FAILED


def command_problem(settings: AlertSettings) -> str:
    """Why the alert command cannot run on this host ('' when it can)."""
    program = settings.command[0]
    if os.sep not in program:
        return "" if shutil.which(program) else f"alerts.command {program!r} is not on this host's PATH"
    if not os.path.exists(program):
        return f"alerts.command {program} does not exist on this host"
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        return f"alerts.command {program} is not executable"
    return ""


def check_findings(cfg: ArkConfig) -> list[tuple[bool, str, str]]:
    """``ark check``'s lines about alerts: (ok, what, fix)."""
    alerts = cfg.alerts
    if alerts is None:
        return [(True, "no alert command (alerts:): events are shown by 'ark status' only", "")]
    problem = command_problem(alerts)
    if problem:
        return [(False, problem, "install it (executable: chmod +x) on every host that runs 'ark controller', or "
                                 "correct alerts.command; then 'ark alert test'")]
    return [(True, f"alerts.command {alerts.command[0]} runs for {', '.join(alerts.kinds)} (timeout "
                   f"{alerts.timeout_s:g} s); 'ark alert test' fires a test event", "")]


@click.group()
def alert() -> None:
    """The alert command that the active controller runs once per event (README, "Alerts")."""


@alert.command("test")
@click.option("--message", default="a test event from 'ark alert test': the alert wiring works",
              help="The event's message.")
@click.option("--node", default="", help="The event's node (default: none).")
@pass_ctx
def alert_test(obj: CliContext, message: str, node: str) -> None:
    """Fire a test event (kind alert-test) through the configured alert command, here and now.

    \b
    It runs exactly as the controller would run it: no shell, a minimal environment plus the
    ARK_* variables, the event as one JSON object on stdin, killed after alerts.timeout_s, retried
    once. Nothing is written to Kafka. Run it on every host that runs 'ark controller'."""
    from common.events import Event
    from failover.alerts import run_alert

    cfg = obj.config()
    if cfg.alerts is None:
        raise ConfigError(f"{cfg.source_path}: no alert command is configured",
                          fix="add alerts: {command: /usr/local/bin/page-oncall} ('ark init' shows the block)")
    problem = command_problem(cfg.alerts)
    if problem:
        raise ConfigError(problem, fix="install it or correct alerts.command, then run 'ark alert test' again")
    event = Event(offset=-1, at_us=time.time_ns() // 1000, kind="alert-test", node=node, message=message)
    started = time.monotonic()
    outcome = run_alert(cfg.alerts, event, cfg.group)
    took = time.monotonic() - started
    if not outcome.ok:
        raise AlertFailed(f"the alert command {cfg.alerts.command[0]} {outcome.said}",
                          fix="run it by hand with the same stdin and ARK_* variables (README, \"Alerts\") and fix "
                              "what it reports")
    console.print(f"alert command {cfg.alerts.command[0]} {outcome.said} in {took:.1f} s "
                  f"({outcome.attempts} run{'s' if outcome.attempts > 1 else ''}): the wiring works")


def events_doc(records: list[ControlRecord], group: str, last: int = RECENT_EVENTS) -> list[dict[str, Any]]:
    """The group's last events, newest last, each with the outcome of its alert when one ran."""
    from common.events import events_of
    from schemas.control import AlertSent

    alerted = {r.body.event_offset: r.body.outcome for r in records if isinstance(r.body, AlertSent)}
    out = []
    for event in events_of(records)[-last:]:
        doc = event.document(group)
        doc["alert"] = alerted.get(event.offset)
        out.append(doc)
    return out


def event_lines(events: list[dict[str, Any]]) -> list[str]:
    """The status caption's lines: time, node, kind, sentence (and the alert's outcome when it failed)."""
    lines = []
    for ev in events:
        alert = ev.get("alert")
        note = f" [alert {alert}]" if alert and not alert.startswith("exited 0") else ""
        lines.append(f"event {ev['time']} {ev['node'] or '-'} {ev['kind']}: {ev['message']}{note}")
    return lines
