"""``ark files``: replicate file sets (filesync).

\b
  ark files sync SET                one pass now; waits until every target acknowledged it
                                    (receivers of targets on this host run inside the command)
  ark files watch SET               keep syncing: inotify events (debounced) and the set's schedule;
                                    local targets applied here too
  ark files send SET                long-running sender only (schedule, and watching if the set says so)
  ark files receive SET --target T  long-running receiver of one target (run it on the target's host)
  ark files status SET              per target: entries acknowledged, changes still to ship
  ark files verify SET              full-hash comparison of the source with each local target
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

from common.config import ArkConfig, load_config

console = Console(stderr=True)


def _config(ctx: click.Context, path: Path | None) -> ArkConfig:
    if path is None:
        obj: Any = ctx.find_root().obj
        try:
            path = Path(obj["config_path"]) if obj is not None else Path("ark.yaml")
        except (KeyError, TypeError, AttributeError):
            path = Path("ark.yaml")
    return load_config(path)


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
    """Replicate file sets: only differences, every attribute, through the set's Kafka topic."""


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


@files.command("watch")
@click.argument("file_set")
@config_option
@click.pass_context
def watch_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """Keep SET in sync in real time (inotify, debounced) and on its schedule, until Ctrl-C."""
    from filesync import service

    cfg = _config(ctx, config_path)
    console.print(f"watching {cfg.files[file_set].source.path if file_set in cfg.files else file_set} (Ctrl-C stops)")
    service.serve(cfg, file_set, _stop_on_signal(), watch=True)


@files.command("send")
@click.argument("file_set")
@config_option
@click.pass_context
def send_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """Run the sender of SET (schedule, and watching when the set has watch: true) until stopped."""
    from filesync import service

    service.serve(_config(ctx, config_path), file_set, _stop_on_signal(), local_targets=False)


@files.command("receive")
@click.argument("file_set")
@click.option("--target", "target", required=True, help="Which of the set's targets this host is.")
@config_option
@click.pass_context
def receive_cmd(ctx: click.Context, file_set: str, target: str, config_path: Path | None) -> None:
    """Run the receiver of one target of SET until stopped."""
    from filesync import service

    service.receive(_config(ctx, config_path), file_set, target, _stop_on_signal())


@files.command("status")
@click.argument("file_set")
@config_option
@click.pass_context
def status_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """What each target acknowledged, and what is still to ship."""
    from filesync import service

    cfg = _config(ctx, config_path)
    rows = service.status(cfg, file_set)
    table = Table(title=f"file set {file_set}")
    for col in ("target", "host", "acknowledged entries", "to ship"):
        table.add_column(col)
    for row in rows:
        table.add_row(row.target, row.host, str(row.acked), str(row.pending))
    Console().print(table)


@files.command("verify")
@click.argument("file_set")
@config_option
@click.pass_context
def verify_cmd(ctx: click.Context, file_set: str, config_path: Path | None) -> None:
    """Compare SET's source with each target by full content hash and attributes."""
    from filesync import service
    from filesync.errors import FilesyncError

    diffs = service.verify(_config(ctx, config_path), file_set)
    for d in diffs[:50]:
        console.print(f"{d.target}: {d.path} differs ({d.what})")
    if diffs:
        raise FilesyncError(f"{len(diffs)} differences between the source and the targets of {file_set}",
                            fix=f"run 'ark files sync {file_set}'")
    console.print(f"[green]set {file_set}: every target matches the source[/]")
