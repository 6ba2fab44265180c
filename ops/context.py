"""What every CLI command shares: the config path, loading it once, and printing errors."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from common.config import ArkConfig, load_config
from common.errors import ArkError

DEFAULT_CONFIG = "ark.yaml"

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)


def metrics_options(fn: Any) -> Any:
    """``--metrics-port`` and ``--metrics-host`` of every agent command (Prometheus /metrics)."""
    fn = click.option("--metrics-host", default="0.0.0.0", show_default=True, metavar="ADDR",
                      help="Address /metrics listens on.")(fn)
    return click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, metavar="PORT",
                        help="Serve Prometheus /metrics on PORT (lag, rates, positions, health, host and database "
                             "facts; one port per agent on a host).")(fn)


@dataclass
class CliContext:
    """Options of the top-level ``ark`` command."""

    config_path: Path = field(default_factory=lambda: Path(os.environ.get("ARK_CONFIG", DEFAULT_CONFIG)))
    _config: ArkConfig | None = None

    def __getitem__(self, key: str) -> object:
        """Dict-style access for subcommands that read ``ctx.obj["config_path"]``."""
        return getattr(self, key)

    def get(self, key: str, default: object = None) -> object:
        """Dict-style ``get``."""
        return getattr(self, key, default)

    def config(self) -> ArkConfig:
        """The validated config, loaded on first use."""
        if self._config is None:
            self._config = load_config(self.config_path)
        return self._config



#: Hands a command its :class:`CliContext` (``@pass_ctx``).
pass_ctx = click.make_pass_decorator(CliContext)


def report_error(exc: ArkError) -> int:
    """Print a user error as 'error: ...' and 'fix: ...' (no traceback) and return its exit code."""
    err_console.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True, soft_wrap=True)
    if exc.fix:
        err_console.print(f"[bold]fix:[/] {escape(exc.fix)}", markup=True, soft_wrap=True)
    return exc.exit_code
