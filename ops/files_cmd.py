"""``ark files``: replicate file sets (filesync).

\b
  ark files sync SET                one pass now; waits until every target acknowledged it
                                    (receivers of targets on this host run inside the command)
  ark files watch SET               keep syncing: inotify events (debounced) and the set's schedule;
                                    local targets applied here too
  ark files send SET                long-running sender only (schedule, and watching if the set says so)
  ark files receive SET --target T  long-running receiver of one target (run it on the target's host)
  ark files status SET              per target: delay, entries acknowledged, in flight, still to ship,
                                    the last pass applied and its consistency point (redo offsets)
  ark files verify SET              full-hash comparison of the source with each local target
  ark files delay SET TARGET S      change a target's delay at run time (TARGET may be 'all')
  ark files pause SET TARGET        hold a target: it applies nothing until 'ark files resume'
  ark files resume SET TARGET       let a paused target apply again (after its delay)

\b
Delayed targets (targets[].delay_seconds) apply each change that long after it was sent, so a
mistaken 'rm -rf' on the source can be undone from them within the delay: pause the target (or
raise its delay), copy back what was lost, then resume.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from common.config import ArkConfig, load_config
from ops.context import metrics_options

console = Console(stderr=True)


def _config(ctx: click.Context, path: Path | None) -> ArkConfig:
    if path is None:
        obj: Any = ctx.find_root().obj
        try:
            path = Path(obj["config_path"]) if obj is not None else Path("ark.yaml")
        except (KeyError, TypeError, AttributeError):
            path = Path("ark.yaml")
    return load_config(path)


def _run_agent(cfg: ArkConfig, file_set: str, role: str, run: Callable[[threading.Event], None],
               target: str = "", metrics: tuple[int | None, str] = (None, "0.0.0.0")) -> None:
    """Run one role of a file set as a supervised agent with heartbeats; SIGTERM/SIGINT stop it."""
    from common.heartbeat import agent_on_kafka
    from filesync.agent import FilesAgent
    from filesync.service import file_set as check_set

    check_set(cfg, file_set)  # an unknown set fails at once, with the known ones
    agent = agent_on_kafka(cfg, FilesAgent(cfg, file_set, role, run, target), metrics_port=metrics[0],
                           metrics_host=metrics[1])
    stop = _stop_on_signal()

    def relay() -> None:
        stop.wait()
        agent.stop()

    threading.Thread(target=relay, daemon=True).start()
    agent.run()


def _stop_on_signal() -> threading.Event:
    stop = threading.Event()

    def handler(_sig: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


config_option = click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), default=None,
                             help="The group's YAML config (default: the ark -c value, else ark.yaml).")


@click.group("files")
def files() -> None:
    """Replicate file sets: only differences, every attribute, through the set's Kafka topic.

    A delayed target (targets[].delay_seconds) applies each change that long after it was sent.
    After a mistaken deletion on the source: 'ark files pause SET TARGET', copy back from that
    target what was lost, then 'ark files resume SET TARGET'.
    """


@files.command("sync")
@click.argument("file_set")
@config_option
@click.option("--timeout", type=float, default=None, help="Seconds to wait for acknowledgements.")
@click.pass_context
def sync_cmd(ctx: click.Context, file_set: str, config_path: Path | None, timeout: float | None) -> None:
    """Ship SET once and wait until its targets applied it."""
    from filesync import service

    cfg = _config(ctx, config_path)
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(path: str, done: int, total: int) -> None:
            if path not in tasks:
                tasks[path] = bar.add_task(path[-40:], total=total)
            bar.update(tasks[path], completed=done)

        report = service.sync(cfg, file_set, progress=progress, timeout=timeout)
    console.print(f"[green]set {file_set} in sync[/]: {report.changes} changes in the last pass, "
                  f"{report.literal_bytes:,} literal bytes")
    for target, seconds in report.delayed:
        due = _when(report.published_us / 1e6 + seconds) if report.published_us else "later"
        console.print(f"target {target} is delayed {seconds:g} s: it applies this pass from {due} "
                      f"(its receiver must be running: 'ark files receive {file_set} --target {target}')")


@files.command("watch")
@click.argument("file_set")
@config_option
@metrics_options
@click.pass_context
def watch_cmd(ctx: click.Context, file_set: str, config_path: Path | None, metrics_port: int | None,
              metrics_host: str) -> None:
    """Keep SET in sync in real time (inotify, debounced) and on its schedule, until Ctrl-C."""
    from filesync import service

    cfg = _config(ctx, config_path)
    console.print(f"watching {cfg.files[file_set].source.path if file_set in cfg.files else file_set} (Ctrl-C stops)")
    _run_agent(cfg, file_set, "sender", lambda stop: service.serve(cfg, file_set, stop, watch=True),
               metrics=(metrics_port, metrics_host))


@files.command("send")
@click.argument("file_set")
@config_option
@metrics_options
@click.pass_context
def send_cmd(ctx: click.Context, file_set: str, config_path: Path | None, metrics_port: int | None,
             metrics_host: str) -> None:
    """Run the sender of SET (schedule, and watching when the set has watch: true) until stopped."""
    from filesync import service

    cfg = _config(ctx, config_path)
    _run_agent(cfg, file_set, "sender", lambda stop: service.serve(cfg, file_set, stop, local_targets=False),
               metrics=(metrics_port, metrics_host))


@files.command("receive")
@click.argument("file_set")
@click.option("--target", "target", required=True, help="Which of the set's targets this host is.")
@config_option
@metrics_options
@click.pass_context
def receive_cmd(ctx: click.Context, file_set: str, target: str, config_path: Path | None, metrics_port: int | None,
                metrics_host: str) -> None:
    """Run the receiver of one target of SET until stopped."""
    from filesync import service

    cfg = _config(ctx, config_path)
    _run_agent(cfg, file_set, "receiver", lambda stop: service.receive(cfg, file_set, target, stop), target,
               metrics=(metrics_port, metrics_host))


@files.command("status")
@click.argument("file_set")
@config_option
@click.pass_context
def status_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """What each target acknowledged, what is in flight and still to ship, and consistency points."""
    from filesync import service

    cfg = _config(ctx, config_path)
    st = service.status(cfg, file_set)
    table = Table(title=f"file set {file_set}")
    for col in ("target", "host", "delay", "acknowledged entries", "in flight", "to ship", "applied pass",
                "redo offsets"):
        table.add_column(col)
    for row in st.targets:
        delay = f"{row.delay.seconds:g} s" + (" (paused)" if row.delay.paused else "")
        applied = row.applied or {}
        when = _when(applied["applied_us"] / 1e6) if applied.get("applied_us") else "-"
        table.add_row(row.target, row.host, delay, str(row.acked), str(row.in_flight), str(row.pending),
                      f"{str(applied.get('pass_id', ''))[:8] or '-'} {when}".strip(),
                      _redo(applied.get("redo_start"), applied.get("redo_end")))
    out = Console()
    out.print(table)
    last = st.last_pass
    if last is not None:
        out.print(f"last pass shipped: {last.pass_id[:8]} (#{last.seq}) at {_when(last.published_us / 1e6)}, "
                  f"{last.changes} changes, redo offsets {_redo(last.redo_start, last.redo_end)}")
    if any(row.applied and row.applied.get("redo_end") is not None for row in st.targets):
        out.print("a target that applied a pass holds the files as scanned between its redo offsets: a database "
                  "standby applied up to an offset in that range is at the same point")
    for problem in st.problems:
        console.print(f"[yellow]warning:[/] {problem.what}\n  fix: {problem.fix}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _redo(start: int | None, end: int | None) -> str:
    return "-" if start is None or end is None else f"{start}..{end}"


@files.command("verify")
@click.argument("file_set")
@config_option
@click.pass_context
def verify_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """Compare SET's source with each target by full content hash and attributes."""
    from filesync import service
    from filesync.errors import FilesyncError

    found = service.verify(_config(ctx, config_path), file_set)
    diffs = [d for d in found if not d.warning]
    for d in diffs[:50]:
        console.print(f"{d.target}: {d.path} differs ({d.what})")
    for w in [d for d in found if d.warning][:50]:
        console.print(f"[yellow]warning:[/] {w.target}: {w.path + ': ' if w.path else ''}{w.what}")
    if diffs:
        raise FilesyncError(f"{len(diffs)} differences between the source and the targets of {file_set}",
                            fix=f"run 'ark files sync {file_set}'")
    console.print(f"[green]set {file_set}: every target matches[/]")


def _target_arg(cfg: ArkConfig, file_set: str, target: str) -> str:
    """``target`` checked against the set ('all' passes)."""
    from filesync import service
    from filesync.errors import UnknownFileSet

    fs = service.file_set(cfg, file_set)
    if target != "all":
        try:
            fs.target(target)
        except ValueError as exc:
            raise UnknownFileSet(str(exc), fix="name one of the set's targets, or 'all'") from None
    return target


@files.command("delay")
@click.argument("file_set")
@click.argument("target")
@click.argument("seconds", type=float)
@config_option
@click.pass_context
def delay_cmd(ctx: click.Context, file_set: str, target: str, seconds: float, config_path: Path | None) -> None:
    """Apply changes to TARGET of SET (or 'all' targets) SECONDS after they were sent, from now on.

    Takes effect within a second, even backwards: a shorter delay applies what is now due at once; a
    longer one holds what has not been applied yet. Bounded by the topic's retention.
    """
    from common.errors import ArkError
    from filesync import service
    from filesync.delay import DelayInForce, delays_in_force, publish_delay

    cfg = _config(ctx, config_path)
    _target_arg(cfg, file_set, target)
    if seconds < 0:
        raise ArkError("a delay cannot be negative", fix="give 0 for no delay")
    publish_delay(cfg, file_set, target, seconds)
    console.print(f"delay of {file_set}/{target} set to {seconds:g} s (its receivers pick it up within a second)")
    delays = delays_in_force(cfg, file_set, service.file_set(cfg, file_set))
    if target == "all":
        delays = {t: DelayInForce(seconds, d.paused) for t, d in delays.items()}
    for problem in service.retention_check(cfg, file_set, delays):
        console.print(f"[yellow]warning:[/] {problem.what}\n  fix: {problem.fix}")


@files.command("pause")
@click.argument("file_set")
@click.argument("target")
@config_option
@click.pass_context
def pause_cmd(ctx: click.Context, file_set: str, target: str, config_path: Path | None) -> None:
    """Hold TARGET of SET (or 'all'): it applies nothing until resumed (records wait in Kafka)."""
    from filesync.delay import publish_pause

    cfg = _config(ctx, config_path)
    publish_pause(cfg, file_set, _target_arg(cfg, file_set, target), True)
    console.print(f"{file_set}/{target} paused (within a second); 'ark files resume {file_set} {target}' resumes it")


@files.command("resume")
@click.argument("file_set")
@click.argument("target")
@config_option
@click.pass_context
def resume_cmd(ctx: click.Context, file_set: str, target: str, config_path: Path | None) -> None:
    """Let TARGET of SET (or 'all') apply again, each change after its delay."""
    from filesync.delay import publish_pause

    cfg = _config(ctx, config_path)
    publish_pause(cfg, file_set, _target_arg(cfg, file_set, target), False)
    console.print(f"{file_set}/{target} resumed")
