"""``ark controller`` and ``ark maintenance on|off``: automatic failover (failover/automation.py); and what
``ark status`` shows of it."""

from __future__ import annotations

from typing import Any

import click

from common.control import ControlRecord
from ops.context import CliContext, console, metrics_options

pass_ctx = click.make_pass_decorator(CliContext)


@click.command()
@click.option("--ttl", type=click.FloatRange(min=0.5), default=None, metavar="SECONDS",
              help="Fail over when every heartbeat of the primary (capture, node agent) is older than this; also the "
                   "controllers' lease: a standby controller takes over about this long after the active one dies. "
                   "Default: controller.ttl_s of the config (5 s).")
@click.option("--window", "anti_flapping", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Anti-flapping: no second automatic failover within this long of the last one. Default: "
                   "controller.anti_flapping_s of the config (300 s).")
@click.option("--name", default=None, metavar="NAME",
              help="This controller's name in the lease and the log (default: host:pid).")
@click.option("--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True, metavar="SECONDS",
              help="Longest wait, in a failover, for the target to apply everything the redo topic holds.")
@metrics_options
@pass_ctx
def controller(obj: CliContext, ttl: float | None, anti_flapping: float | None, name: str | None, timeout: float,
               metrics_port: int | None, metrics_host: str) -> None:
    """Watch the group and fail over by itself when the primary is gone (runs until stopped).

    \b
    It fails over when the primary's node agent reports it failed after its local restarts, or when
    every heartbeat of the primary is older than --ttl; to the most advanced standby that applies
    without delay, through the same steps as 'ark failover' (nothing that reached Kafka is lost).
    It does not act in maintenance ('ark maintenance on'), nor twice within --window.

    \b
    Run several, on different hosts: one holds the group's lease on Kafka and acts, the others
    watch and take over within about --ttl when it dies. Every tick's decision sentence is logged
    when it changes (and every minute); decisions are recorded on the control topic ('ark status').

    \b
    The active one also runs the alert command (config alerts:) once per event of its kinds
    (failover, node-failed, node-fenced...); 'ark alert test' checks the wiring."""
    from common.heartbeat import agent_on_kafka
    from common.kafka import check_reachable
    from failover.automation import Controller
    from failover.controller import Settings
    from ops.cli import _run_until_signal
    from ops.handover import run_failover

    cfg = obj.config()
    cfg.control_key_bytes()  # a missing or short key fails here, before anything starts
    ttl = cfg.controller.ttl_s if ttl is None else ttl
    anti_flapping = cfg.controller.anti_flapping_s if anti_flapping is None else anti_flapping
    _warn_short_ttl(cfg, ttl)
    _warn_alert_command(cfg)
    check_reachable(cfg.kafka)

    def failover(target: str) -> object:
        # capture_wait_s=0: the tick goes on right after the promotion (it may have to ask the new primary to lift
        # a self-fence, F23); the supervised capture follows the primary by itself and its heartbeat shows it.
        return run_failover(cfg, target, force=False, dry_run=False, timeout_s=timeout, say=_log_step,
                            capture_wait_s=0)

    body = Controller(cfg, failover, settings=Settings(ttl_s=ttl, anti_flapping_s=anti_flapping), name=name)
    _run_until_signal(agent_on_kafka(cfg, body, metrics_port=metrics_port, metrics_host=metrics_host))


def _warn_short_ttl(cfg: Any, ttl: float) -> None:
    """--ttl below what the node agents' fence lease needs (the config itself refuses such a controller.ttl_s): said
    loudly, not refused, so a test or a group without node agents may run a short ttl on purpose."""
    import logging

    from common.automation_settings import lease_problems
    from common.roles import nodes

    for problem in lease_problems(list(nodes(cfg)), ttl, ttl_key="--ttl"):
        logging.getLogger("ops.automation").warning("%s (only safe where no node agent self-fences)", problem)


def _warn_alert_command(cfg: Any) -> None:
    """An alert command that cannot run here is logged at start (failover never waits for alerts)."""
    import logging

    from ops.alerts_cmd import command_problem

    if cfg.alerts is not None and (problem := command_problem(cfg.alerts)):
        logging.getLogger("ops.automation").error("%s: events will not be alerted from this host (fix: install it, "
                                                  "then 'ark alert test')", problem)


def _log_step(line: str) -> None:
    """A failover step, in the controller's log (with its time, unlike the terminal's lines)."""
    import logging

    logging.getLogger("ops.automation").info("failover: %s", line)


@click.command()
@click.argument("mode", type=click.Choice(["on", "off"]))
@click.option("--reason", default="", help="Why, for the record (shown by 'ark status').")
@pass_ctx
def maintenance(obj: CliContext, mode: str, reason: str) -> None:
    """Pause (on) or resume (off) automatic failover for the whole group.

    \b
    An intent on the control topic: every controller reads it and, while on, only says what it
    would do. 'ark switchover' and 'ark failover' still work by hand."""
    from ops.intents import control_channel
    from schemas.control import SetMaintenance

    cfg = obj.config()
    with control_channel(cfg) as channel:
        channel.publish(SetMaintenance(mode, reason))
    console.print(f"maintenance {mode} for group {cfg.group}: " + (
        "no controller fails over automatically until 'ark maintenance off'" if mode == "on" else
        "controllers fail over automatically again"))


# -- what ark status shows -------------------------------------------------------------------------------------
def automation_doc(records: list[ControlRecord]) -> dict[str, Any]:
    """Maintenance and the last controller decision, from the control topic's records."""
    from failover.automation import automation_of
    from ops.status import iso_time
    from schemas.control import ControllerDecision, SetMaintenance

    auto = automation_of(records)
    maint = next((r for r in reversed(records) if isinstance(r.body, SetMaintenance)), None)
    doc: dict[str, Any] = {"maintenance": auto.maintenance, "maintenance_by": auto.maintenance_by,
                           "maintenance_reason": maint.body.reason if maint is not None and auto.maintenance
                           and isinstance(maint.body, SetMaintenance) else "",
                           "maintenance_since": iso_time(maint.issued_at_us) if maint is not None else None,
                           "last_decision": None}
    last = auto.last_decision
    if last is not None and isinstance(last.body, ControllerDecision):
        doc["last_decision"] = {"at": iso_time(last.issued_at_us), "action": last.body.action, "target": last.target,
                                "epoch": last.body.epoch, "sentence": last.body.sentence, "by": last.body.holder}
    return doc


def controllers_of(beats: dict[tuple[str, str], dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The controllers heard from lately: name, state (active, standby...), their last decision sentence."""
    from ops.lag import STALE_AFTER_S

    out = []
    for (agent, name), beat in sorted(beats.items()):
        if agent != "controller":
            continue
        age = now - beat["sent_at_us"] / 1e6
        out.append({"name": name, "state": beat["state"] if age < STALE_AFTER_S else f"down ({age:.0f} s)",
                    "sentence": beat["message"]})
    return out


def automation_lines(doc: dict[str, Any]) -> list[str]:
    """The lines of the status table's caption."""
    if not doc:
        return []
    lines = []
    if doc.get("maintenance"):
        why = f": {doc['maintenance_reason']}" if doc.get("maintenance_reason") else ""
        lines.append(f"maintenance on since {doc['maintenance_since']} (by {doc['maintenance_by']}{why}): no automatic "
                     "failover until 'ark maintenance off'")
    for c in doc.get("controllers", []):
        lines.append(f"controller {c['name']}: {c['state']}" + (f": {c['sentence']}" if c["state"] == "active" else ""))
    last = doc.get("last_decision")
    if last:
        lines.append(f"last controller decision {last['at']}: {last['action']} {last['target']} ({last['sentence']})")
    from ops.alerts_cmd import event_lines

    return lines + event_lines(doc.get("events", []))
