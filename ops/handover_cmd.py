"""``ark switchover``, ``ark failover``, ``ark skip``, ``ark reinstate`` and ``ark topology``: handing the service
over (failover/handover.py does the work; ops/handover.py says it to the operator)."""

from __future__ import annotations

from pathlib import Path

import click

from common.errors import ArkError
from ops.context import CliContext, pass_ctx


@click.command()
@click.argument("target")
@click.option("--grace", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="How long transactions in flight on the old primary may take to finish before their sessions "
                   "are ended.")
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SECONDS",
              help="Longest wait for each step (the capture to drain, TARGET to apply up to the marker).")
@pass_ctx
def switchover(obj: CliContext, target: str, grace: float, timeout: float) -> None:
    """Hand the service to TARGET, with nothing lost (the primary is up; the agents are running).

    \b
    The primary becomes read-only (transactions in flight get --grace, then their sessions end), the
    capture drains it and closes the epoch with a marker, TARGET applies up to it, sequences are set,
    TARGET is promoted (epoch E+1; the capture follows it) and the old primary becomes its standby,
    applying from the marker: no resync. The other standbys, delayed ones too, follow by themselves.
    Exit 41: refused, nothing changed; 42: stopped part-way (the message says how to complete it)."""
    from ops.handover import run_switchover

    if grace < 0:
        raise ArkError("--grace cannot be negative", fix="give 0 to end writing sessions at once")
    run_switchover(obj.config(), target, grace_s=grace, timeout_s=timeout)


@click.command()
@click.argument("target")
@click.option("--dry-run", is_flag=True, help="Say, per standby, what a failover to it would mean; change nothing.")
@click.option("--force", is_flag=True, help="Promote TARGET even when another standby is more advanced.")
@click.option("--timeout", type=float, default=300.0, show_default=True, metavar="SECONDS",
              help="Longest wait for TARGET to apply everything the redo topic holds.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable --dry-run.")
@click.option("--until", "until", default=None, metavar="TIME",
              help="Point in time (ISO-8601 UTC, or @unix-seconds): TARGET, a delayed standby, applies only what was "
                   "committed before TIME, then is promoted (the way back from a DROP TABLE or a bad DELETE).")
@pass_ctx
def failover(obj: CliContext, target: str, dry_run: bool, force: bool, timeout: float, as_json: bool,
             until: str | None) -> None:
    """Promote TARGET after the primary is gone: every transaction that reached Kafka survives.

    \b
    The epoch is closed by a marker written with the group's transactional.id (any capture still
    publishing for it is fenced by Kafka and rejected by every applier); the old primary is made
    read-only if it answers; TARGET applies everything the redo topic holds, is promoted (epoch
    E+1), and the old primary stays demoted until 'ark reinstate'. Refused (exit 41) when another
    standby is more advanced, naming it, unless --force.
    \b
    With --until TIME the rest of the epoch after TIME is cut out of the group's history: standbys
    that applied some of it stop and ask for 'ark resync'."""
    from ops.handover import run_failover
    from ops.recovery import parse_time

    run_failover(obj.config(), target, force=force, dry_run=dry_run, timeout_s=timeout, as_json=as_json,
                 until_us=parse_time(until) if until else 0)


@click.command()
@click.argument("standby")
@click.option("--offset", type=int, required=True, metavar="N", help="The redo offset where the transaction starts.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_ctx
def skip(obj: CliContext, standby: str, offset: int, yes: bool) -> None:
    """Never apply the transaction at redo offset N on STANDBY (a delayed standby that has not reached it).

    \b
    Shows what the transaction changes (tables, operations, keys) and asks first; the decision is
    recorded on the control topic, and the applier leaves every row of it out when it gets there."""
    from ops.recovery import run_skip

    run_skip(obj.config(), standby, offset, yes=yes)


@click.command()
@click.argument("old")
@click.option("--report", "report_path", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Where the readable divergence report goes (default divergence-GROUP-OLD-epochE.txt here).")
@click.option("--timeout", type=float, default=600.0, show_default=True, metavar="SECONDS",
              help="Longest wait for OLD's applier to rejoin (resyncs included).")
@pass_ctx
def reinstate(obj: CliContext, old: str, report_path: Path | None, timeout: float) -> None:
    """Bring a failed-over primary OLD back as a standby, with nothing thrown away unrecorded.

    \b
    OLD is made read-only; what it committed that never reached Kafka is decoded from its own log and
    recorded in the divergence ledger (topic ark.GROUP.divergence and a readable report: commit time,
    tables, keys, the row it wrote and the row the group holds now). Its slot and publication go, the
    tables those transactions touched are resynced from the primary, and OLD applies from the failover's
    marker as a standby ('ark apply OLD' must be running)."""
    from ops.handover import run_reinstate

    run_reinstate(obj.config(), old, report_path=report_path, timeout_s=timeout)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def topology(obj: CliContext, as_json: bool) -> None:
    """Draw the group: the primary and its epoch, who applies from the redo topic, delays, offsets."""
    from ops.handover import show_topology

    show_topology(obj.config(), as_json=as_json)
