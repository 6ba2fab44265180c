"""``ark cutover TARGET``: the last step of a migration (ops/cutover.py does the work)."""

from __future__ import annotations

import click

from common.errors import ArkError
from ops.context import CliContext, pass_ctx


@click.command()
@click.argument("target")
@click.option("--grace", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="How long transactions in flight on the source may take to finish before their sessions are "
                   "ended.")
@click.option("--max-lag", type=float, default=5.0, show_default=True, metavar="SECONDS",
              help="Refuse (changing nothing) when TARGET applies further behind the source than this: writes would "
                   "stop while it catches up.")
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SECONDS",
              help="Longest wait for TARGET to apply everything the source committed before the fence.")
@click.option("--chunk-rows", type=click.IntRange(min=1), default=10_000, show_default=True,
              help="Rows per compared chunk (hash partition) of the verify.")
@pass_ctx
def cutover(obj: CliContext, target: str, grace: float, max_lag: float, timeout: float, chunk_rows: int) -> None:
    """Move the service for good to TARGET, a current standby of any engine (a MariaDB → PostgreSQL migration).

    \b
    The source becomes read-only (transactions in flight get --grace), TARGET applies everything the
    source committed and is compared with it row by row ('ark verify'), its applier stops, every
    sequence and AUTO_INCREMENT/identity column is set on TARGET past its highest value, and TARGET
    becomes writable. The write downtime (fence → TARGET writable) is printed with the next steps.
    The source stays read-only: there is no way back through the stream (use 'ark switchover' between
    nodes of one engine to keep one).
    Exit 0 done; 41 refused or undone (the source is writable again, nothing half-applied);
    42 TARGET could not be made writable (the message says how to finish)."""
    from ops.cutover import Cutover, print_report

    if grace < 0 or max_lag < 0:
        raise ArkError("--grace and --max-lag cannot be negative", fix="give 0 for none")
    cfg = obj.config()
    if target == cfg.primary.name:
        raise ArkError(f"{target} is the source: the cutover moves the service to one of its standbys",
                       fix="name a standby of the config (ark status lists them)")
    report = Cutover(cfg, target, grace_s=grace, timeout_s=timeout, chunk_rows=chunk_rows, max_lag_s=max_lag).run()
    print_report(cfg, report)
