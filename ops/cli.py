"""``ark``: the one command operators use. Commands write intents or run agents; errors print a fix."""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import click

from common.errors import ArkError
from common.exit_codes import ExitCode
from common.logs import setup_logging
from ops.context import CliContext, console, metrics_options, pass_ctx, report_error


class ArkGroup(click.Group):
    """A click group that turns ArkError into 'error:'/'fix:' lines and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArkError as exc:
            sys.exit(report_error(exc))
        except KeyboardInterrupt:
            sys.exit(ExitCode.INTERRUPTED)


@click.group(cls=ArkGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), envvar="ARK_CONFIG",
              default="ark.yaml", show_default=True, help="The group's YAML config (env ARK_CONFIG).")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (env ARK_LOG_LEVEL; default INFO).")
@click.version_option(package_name="ark-replication")
@click.pass_context
def cli(ctx: click.Context, config_path: Path, log_level: str | None) -> None:
    """Ark: log-based database replication and business continuity over Apache Kafka.

    \b
    Typical flow:
      ark init                 write a commented example config (ark.yaml)
      ark check                validate config, Kafka, primary and standbys, with fixes
      ark check --promotable S what a promotion of standby S would lack, object by object
      ark sync STANDBY         copy a consistent snapshot online, then stream from that point
      ark capture              run the capture of the primary (one per group)
      ark apply STANDBY        run the applier of one standby
      ark agent NODE           check a database node every second, restart it locally first
      ark status               applied position, lag and delay per standby
      ark console              the operations console (terminal UI): watch and act on the group
      ark report               statistics per hour and table (--html with charts, --json, --csv)

    \b
    Handing the service over:
      ark switchover NODE      planned, nothing lost: the old primary becomes a standby
      ark failover NODE        the primary is gone (--dry-run first); ark topology shows roles
      ark reinstate NODE       the old primary back as a standby, its divergence recorded

    \b
    Automation (one agent per node, one or more controllers; README "Automatic failover"):
      ark agent NODE           check the node, restart it locally first, hold the service address
      ark controller           fail over by itself when the primary fails or goes silent
      ark maintenance on|off   pause the controllers (planned work)
      ark alert test           fire a test event through the alert command (config alerts:)

    \b
    Integrity and healing:
      ark verify STANDBY       compare primary and standby at one position (--repair fixes)
      ark resync STANDBY       rebuild a standby, or one --table while the others keep applying
      ark purge                delete redo entries no standby needs any more (--dry-run first)
    """
    setup_logging(log_level)
    ctx.obj = CliContext(config_path=config_path)


def _run_until_signal(runner: Any) -> None:
    """Run an agent in the foreground; SIGTERM/SIGINT stop it at the next safe point."""

    def stop(_sig: int, _frame: object) -> None:
        runner.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    runner.run()


@cli.command()
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@pass_ctx
def init(obj: CliContext, force: bool) -> None:
    """Write a commented example config to the --config path, and a new control key beside it."""
    from ops.keys import write_key
    from ops.templates import example_config

    path = obj.config_path
    if path.exists() and not force:
        raise ArkError(f"{path} already exists", fix="use --force to overwrite, or -c OTHER.yaml")
    key_file = path.absolute().with_suffix(".control-key")
    if not key_file.exists():
        write_key(key_file)
    path.write_text(example_config(str(key_file)))
    console.print(f"wrote {path} and its control key {key_file} (mode 0600; copy it to every node of the group); "
                  f"edit the config, then run 'ark -c {path} check'")


@cli.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing key (every node must then get the new one).")
def keygen(file: Path, force: bool) -> None:
    """Write a new random control key (256 bits, hex) to FILE, readable only by its owner.

    \b
    Every control record and heartbeat of a group is signed with its key; agents refuse what is not.
    Point the config at it with  control_key: {file: FILE}  and copy FILE to every node of the group.
    """
    from ops.keys import write_key

    if file.exists() and not force:
        raise ArkError(f"{file} already exists", fix="use --force to replace it (then give every node the new key)")
    write_key(file)
    console.print(f"wrote a new control key to {file} (mode 0600); reference it as control_key: {{file: {file}}}")


@cli.command()
@click.option("--promotable", "promotable", metavar="STANDBY", default=None,
              help="Instead: compare STANDBY with the primary object by object (extensions, types and enum labels, "
                   "sequences at or ahead of the primary, tables and partitions, columns with defaults, identity and "
                   "generation, constraints, indexes, triggers, row counts; on MariaDB: tables, columns, "
                   "AUTO_INCREMENT, secondary indexes, foreign keys, SEQUENCEs, row counts) and list what a "
                   "promotion would lack, each with its fix. Exit 0 only when nothing is missing, 32 otherwise.")
@pass_ctx
def check(obj: CliContext, promotable: str | None) -> None:
    """Validate the config and connectivity, and check source prerequisites, each with its fix.

    Also lists every table that is not fully protected (no usable key under primary.keyless insert-only or skip,
    UNLOGGED, not published yet) and, on a primary without Ark's DDL hook, exactly what is then not followed.
    """
    if promotable is not None:
        from ops.promotable import run_promotable

        run_promotable(obj.config(), promotable)
        return
    from ops.check import run_check
    from ops.handover import config_now

    run_check(config_now(obj.config(), without_kafka=True))


@cli.command()
@click.option("--accept-gap", is_flag=True,
              help="The source lost part of its log (slot recreated): record the gap on the control topic and "
                   "resume past it. Every standby then stops at the gap until 'ark resync' rebuilds it.")
@click.option("--node", default=None, metavar="NODE",
              help="Capture NODE only, and refuse (exit 40) when it is not the primary of the current epoch "
                   "(default: follow whichever node the control topic names primary, across switchovers).")
@metrics_options
@pass_ctx
def capture(obj: CliContext, accept_gap: bool, node: str | None, metrics_port: int | None, metrics_host: str) -> None:
    """Run the capture of the primary: its log → the group's redo topic (runs until stopped).

    \b
    The primary is the one the control topic names for the current epoch (at first the config's
    primary). After a switchover or failover the capture follows the new primary by itself.

    It first sets up the primary and prints what it did to which tables: the DDL hook (event triggers in schema
    ark_capture, when its user is a superuser), the keyless policy (primary.keyless: REPLICA IDENTITY FULL, or the
    insert-only publication, or none) before any publication covers a table, the publications and the slot.
    DDL on the primary then travels in the stream, at its place, and standbys follow it (README: DDL on the
    primary).
    """
    from common.control import ControlChannel
    from common.errors import NotPrimary
    from common.heartbeat import agent_on_kafka
    from common.kafka import check_reachable
    from common.redo_kafka import KafkaRedoLog
    from common.roles import config_under
    from common.roles import node as node_of
    from ops.engines import capture_factory, require_prerequisites
    from ops.guard import primary_refusal_check
    from ops.handover import current_roles
    from producers.gap import accept_gap as record_gap
    from producers.resume import find_resume_point
    from producers.runner import CaptureRunner

    base = obj.config()
    base.control_key_bytes()  # a missing or short key fails here, before anything starts
    check_reachable(base.kafka)
    roles = current_roles(base)
    if node is not None:
        node_of(base, node)
        if node != roles.primary:  # before anything is set up on it: never a slot on a demoted primary
            raise NotPrimary(f"node {node} is not the primary of group {base.group}: {roles.describe()}",
                             fix=f"run 'ark capture' without --node (it follows the primary), or on {roles.primary}")
    cfg = config_under(base, roles.primary)
    factory = capture_factory(cfg)
    redo = KafkaRedoLog(cfg.kafka, cfg.group)
    with contextlib.closing(factory()) as probe:
        require_prerequisites(probe)
        check_reachable(cfg.kafka)
        primary_refusal_check(cfg, probe.identity())  # never set up a slot on one of the group's standbys
        for line in probe.ensure_setup() or ():
            click.echo(f"set-up: {line}")  # what it did to which tables (keyless policy, publications, hooks)
        if accept_gap:
            channel = ControlChannel.for_config(cfg, start=None)
            try:
                click.echo(record_gap(channel, probe, find_resume_point(redo)))
            finally:
                channel.close()
    runner = CaptureRunner(base, capture_factory(base), redo, node=node or base.primary.name,
                           factory_for=capture_factory, pinned=node is not None)
    _run_until_signal(agent_on_kafka(base, runner, interval=cfg.capture.heartbeat_interval_s,
                                     metrics_port=metrics_port, metrics_host=metrics_host))


@cli.command()
@click.argument("standby")
@metrics_options
@pass_ctx
def apply(obj: CliContext, standby: str, metrics_port: int | None, metrics_host: str) -> None:
    """Run the applier of STANDBY: redo topic → standby, exactly once (runs until stopped).

    \b
    Any node of the group may be named: the applier writes only while the node is a standby (after a
    switchover the old primary applies from the end of its epoch; while a node is the primary, its
    applier waits)."""
    from common.heartbeat import agent_on_kafka
    from common.redo_kafka import KafkaRedoLog
    from common.roles import as_standby
    from consumers.runner import ApplyRunner
    from ops.engines import applier_factory, snapshot_source

    cfg = obj.config()
    settings = as_standby(cfg, standby)
    cfg.control_key_bytes()  # a missing or short key fails here, before anything starts
    runner = ApplyRunner(cfg, settings, applier_factory(settings), KafkaRedoLog(cfg.kafka, cfg.group),
                         snapshot_source(cfg.primary), source_for=snapshot_source)
    _run_until_signal(agent_on_kafka(cfg, runner, metrics_port=metrics_port, metrics_host=metrics_host))


@cli.command()
@click.argument("standby", required=False)
@click.option("--all", "all_standbys", is_flag=True, help="Sync every standby of the group.")
@click.option("--overwrite", is_flag=True,
              help="Replace tables that already hold data Ark did not put there (refused otherwise, naming them).")
@pass_ctx
def sync(obj: CliContext, standby: str | None, all_standbys: bool, overwrite: bool) -> None:
    """Initial sync of STANDBY from the running primary: consistent snapshot, COPY, then streaming.

    With the rows, in the same standby transaction and from the same snapshot, the primary's other objects
    are created where the standby lacks them (its own pg_dump of the replicated schemas): extensions, types,
    sequences and their values, defaults, identity and generated columns, constraints, partitions; keys,
    indexes and foreign keys after the rows, so the copy stays fast.

    \b
    The primary keeps running. Before anything is written, the standby is identified (not by its
    address) and refused when it is the primary, another standby, the source of a capture (exit 18,
    19), or when it holds data Ark did not put there (exit 29; --overwrite replaces it).
    """
    from ops.handover import config_now
    from ops.sync import sync_standby

    cfg = config_now(obj.config())
    if all_standbys == bool(standby):
        raise ArkError("give one STANDBY or --all", fix="ark sync standby1   or   ark sync --all")
    names = [s.name for s in cfg.standbys] if all_standbys else [standby or ""]
    for name in names:
        sync_standby(cfg, cfg.standby(name), overwrite=overwrite)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", "watch", type=float, default=None, metavar="SECONDS", help="Refresh every SECONDS.")
@pass_ctx
def status(obj: CliContext, as_json: bool, watch: float | None) -> None:
    """Per standby: applied position, lag in seconds and entries, delay and state.

    Below the table: warnings, and every table the primary's catalog says is not fully protected (keyless policy,
    UNLOGGED, not published yet, no DDL hook); --json puts them in "not_protected".
    """
    from ops.status import show_status

    show_status(obj.config(), as_json=as_json, watch=watch)


@cli.command("console")
@click.option("--refresh", type=click.FloatRange(min=0.5), default=2.0, show_default=True, metavar="SECONDS",
              help="Read what is new every SECONDS.")
@pass_ctx
def console_cmd(obj: CliContext, refresh: float) -> None:
    """The operations console (a terminal UI; works over SSH in 80x24 and grows with the terminal).

    \b
    Tabs: 1 Group (topology with roles and epochs, standbys with lag/rate sparklines, the capture),
    2 Agents (heartbeats, health, host and database facts, processes, server-log alerts), 3 Events
    (quarantines, retransmissions, resyncs, gaps, handovers, intents, alerts).
    Actions on the selected standby, each confirmed first and written as a signed intent, like the
    CLI's: d delay, p pause, r resume, t resync a table, v verify, s switch over to it (the decision
    first, then confirmation). Failover is not offered here: decide with 'ark failover TARGET
    --dry-run', then run 'ark failover TARGET'. ? help, q quits.
    It reads only Kafka (heartbeat and control topics) and, when reachable, the databases; with a
    database or the broker down it keeps running and says what it cannot see. Its own log goes to
    ~/.local/state/ark/console-GROUP.log ($XDG_STATE_HOME/ark/...).
    """
    from ops.console.app import run_console

    cfg = obj.config()
    cfg.control_key_bytes()  # heartbeats are verified with the group's key: a missing key fails here
    run_console(cfg, refresh_s=refresh)


@cli.command()
@click.option("--since", default="24h", show_default=True, metavar="DURATION",
              help="The window: the last 30m, 6h, 24h, 7d... (heartbeats are kept one day).")
@click.option("--html", "html_file", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Write the report as one HTML page with charts (self-contained: mail it, open it anywhere).")
@click.option("--json", "as_json", is_flag=True, help="Print the report document as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV: a row per hour (total), per hour and table, per "
              "hour and standby.")
@click.option("--every", default=None, metavar="DURATION", help="Run as a scheduled job: write a report every "
              "DURATION (e.g. 1d) into --to DIR, as HTML and JSON.")
@click.option("--to", "to_dir", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="Where --every writes its reports.")
@pass_ctx
def report(obj: CliContext, since: str, html_file: Path | None, as_json: bool, as_csv: bool, every: str | None,
           to_dir: Path | None) -> None:
    """Replication statistics per hour and per table, from Kafka.

    \b
    Transactions, rows and bytes per hour and table (from the redo topic itself), per standby the lag
    percentiles, apply rate, delay in force and time in error (from the heartbeats), quarantines,
    retransmissions, resyncs, gaps and operators' intents (from the control topic), and the archive's
    (redo topic's) size and the commit times it spans. Without --html/--json/--csv: a summary.
    """
    from ops.context import err_console
    from ops.purge import parse_duration
    from ops.report import run_every, write_report

    cfg = obj.config()
    window = parse_duration(since)
    if sum(map(bool, (html_file, as_json, as_csv))) > 1:
        raise ArkError("give one of --html, --json, --csv", fix="run the command once per format")
    progress = (lambda text: err_console.print(text, soft_wrap=True)) if sys.stderr.isatty() else None
    if every is not None:
        if to_dir is None:
            raise ArkError("--every needs --to DIR", fix="ark report --every 1d --to /var/lib/ark/reports")
        run_every(cfg, since_s=window, every=every, to_dir=to_dir, progress=progress)
        return
    fmt = "html" if html_file else "json" if as_json else "csv" if as_csv else "text"
    text = write_report(cfg, since_s=window, fmt=fmt, path=html_file, progress=progress)
    if html_file is not None:
        console.print(f"wrote {html_file}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@cli.command()
@click.argument("standby")
@click.argument("seconds", type=float)
@click.option("--force", is_flag=True, help="Set it even when the redo topic's retention cannot hold the delay plus "
              "the margin (a warning is printed; the standby stops, exit 13, if retention deletes what it needs).")
@pass_ctx
def delay(obj: CliContext, standby: str, seconds: float, force: bool) -> None:
    """Set the apply delay of STANDBY (or 'all') to SECONDS, at run time, even backwards.

    Refused (exit 2) when the redo topic's retention is shorter than the delay plus
    kafka.retention_margin_hours: retention would delete entries before the standby applies them.
    """
    from ops import intents

    cfg = obj.config()
    intents.target_of(cfg, standby)  # an unknown standby fails before Kafka is asked
    warning = intents.check_delay(cfg, seconds, force=force)
    if warning is not None:
        console.print(f"[yellow]warning:[/] {warning}")
    with intents.control_channel(cfg) as channel:
        intents.set_delay(channel, cfg, standby, seconds)
    console.print(f"delay of {standby} set to {seconds:g} s (the applier picks it up within a second)")


@cli.command()
@click.argument("standby")
@pass_ctx
def pause(obj: CliContext, standby: str) -> None:
    """Pause apply on STANDBY (or 'all'); entries wait in Kafka."""
    from ops import intents

    cfg = obj.config()
    with intents.control_channel(cfg) as channel:
        intents.pause(channel, cfg, standby)
    console.print(f"pause of {standby} requested")


@cli.command()
@click.argument("standby")
@pass_ctx
def resume(obj: CliContext, standby: str) -> None:
    """Resume apply on STANDBY (or 'all')."""
    from ops import intents

    cfg = obj.config()
    with intents.control_channel(cfg) as channel:
        intents.resume(channel, cfg, standby)
    console.print(f"resume of {standby} requested")


@cli.command()
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--keep-hours", type=float, default=None, metavar="H",
              help="Never delete entries newer than H hours (default: longest delay in force + margin).")
@click.option("--ignore", multiple=True, metavar="STANDBY",
              help="Purge even though STANDBY's state cannot be read (you will rebuild it with 'ark resync').")
@click.option("--every", default=None, metavar="DURATION", help="Run as a scheduled job: every 30m, 1h, 1d...")
@pass_ctx
def purge(obj: CliContext, dry_run: bool, keep_hours: float | None, ignore: tuple[str, ...],
          every: str | None) -> None:
    """Delete redo entries below the lowest offset any standby (or the capture) still needs."""
    from ops.purge import run_purge

    run_purge(obj.config(), dry_run=dry_run, keep_hours=keep_hours, ignore=set(ignore), every=every)


@cli.command()
@click.argument("standby")
@click.option("--table", "tables", multiple=True, metavar="T", help="Only table T (schema.table; repeatable).")
@click.option("--repair", is_flag=True, help="Rewrite the differing rows on the standby, after a fresh compare.")
@click.option("--chunk-rows", type=click.IntRange(min=2), default=10_000, show_default=True,
              help="Rows per hashed chunk, in primary-key order.")
@click.option("--leaf-rows", type=click.IntRange(min=1), default=100, show_default=True,
              help="Differing chunks are bisected down to this many rows, then compared row by row.")
@click.option("--timeout", type=float, default=None, metavar="SECONDS",
              help="Wait this long for the standby to reach the position (default: its delay + 120).")
@click.option("--max-hold", type=float, default=30.0, show_default=True, metavar="SECONDS",
              help="Longest the applier may stay held for this command.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def verify(obj: CliContext, standby: str, tables: tuple[str, ...], repair: bool, chunk_rows: int, leaf_rows: int,
           timeout: float | None, max_hold: float, as_json: bool) -> None:
    """Compare primary and STANDBY at one source position, while replication runs.

    \b
    The applier stops for a moment (well under a second) at a position P that a primary snapshot
    also sees; both sides are then compared in SQL: row counts and hashes per chunk of primary-key
    rows, differing chunks bisected down to the exact keys (missing, extra, different).
    --repair then holds the applier at a new position, compares those ranges again and rewrites only
    their differing rows on the standby, in one transaction.
    \b
    A standby of another engine (MariaDB → PostgreSQL) is compared at P too, with every value read and
    written in one canonical form per neutral type, in hash partitions of about --chunk-rows keys;
    the differing keys are named. --repair is for one engine only ('ark resync --table' across engines).
    \b
    Exit codes: 0 equal (or repaired), 11 differences found, 12 a table could not be compared.
    """
    from ops.handover import config_now
    from ops.verify import Options, run_verify

    options = Options(tables=tables, chunk_rows=chunk_rows, leaf_rows=leaf_rows, repair=repair, timeout=timeout,
                      max_hold_s=max_hold, as_json=as_json)
    sys.exit(run_verify(config_now(obj.config()), standby, options))


@cli.command()
@click.argument("standby")
@click.option("--table", default=None, metavar="SCHEMA.TABLE", help="Only this table; apply goes on meanwhile.")
@click.option("--no-wait", is_flag=True, help="Ask for the table resync and return at once.")
@click.option("--timeout", type=float, default=3600.0, show_default=True, help="Longest wait for --table.")
@pass_ctx
def resync(obj: CliContext, standby: str, table: str | None, no_wait: bool, timeout: float) -> None:
    """Rebuild STANDBY from a fresh snapshot while the primary runs (apply stopped), or one --table
    while apply runs and the other tables keep applying."""
    from ops.handover import config_now
    from ops.resync import run_resync

    run_resync(config_now(obj.config()), standby, table, wait=not no_wait, timeout=timeout)


@cli.command()
@click.option("--seconds", type=float, default=30.0, show_default=True, help="How long the live workload runs.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=None, help="Demo dir (./.ark/demo).")
@click.option("--keep", is_flag=True, help="Leave the broker and databases running afterwards.")
@click.option("--no-mariadb", is_flag=True, help="PostgreSQL only: no MariaDB standby (cross-engine) in the demo.")
def demo(seconds: float, workdir: Path | None, keep: bool, no_mariadb: bool) -> None:
    """Start Kafka, three PostgreSQL instances and a MariaDB one, replicate a live bank workload to a real-time,
    a delayed and a cross-engine standby, show status and lag, and compare row by row."""
    from ops.demo import run_demo

    run_demo(seconds=seconds, workdir=workdir or Path(".ark/demo"), keep=keep, mariadb=not no_mariadb)


def _register() -> None:
    from ops.agent_cmd import agent
    from ops.alerts_cmd import alert
    from ops.automation_cmd import controller, maintenance
    from ops.broker_cmd import broker
    from ops.cutover_cmd import cutover
    from ops.handover_cmd import failover, reinstate, skip, switchover, topology

    for command in (switchover, failover, skip, reinstate, topology, cutover, broker, agent, controller, maintenance,
                    alert):
        cli.add_command(command)
    with contextlib.suppress(ImportError):
        from ops.files_cmd import files

        cli.add_command(files)


_register()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="ark")
