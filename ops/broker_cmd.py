"""``ark broker start|stop|status``: the local single-node Kafka broker of demos and tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ops.context import console


@click.group()
def broker() -> None:
    """The local single-node Kafka broker (KRaft, from Maven Central jars) for demos and tests."""


def _broker(home: Path | None, port: int) -> Any:
    from deploy.kafka import KafkaBroker

    base = home or Path.home() / ".ark" / "broker"
    return KafkaBroker(base, port, port + 1)


_home = click.option("--home", type=click.Path(path_type=Path), default=None, help="Broker dir (~/.ark/broker).")
_port = click.option("--port", type=int, default=9092, show_default=True, help="Client port (controller: +1).")


@broker.command("start")
@_home
@_port
def broker_start(home: Path | None, port: int) -> None:
    """Fetch the jars once, then start the broker (no-op when running)."""
    b = _broker(home, port)
    with console.status("starting Kafka (first run fetches jars from Maven Central)..."):
        b.start()
    console.print(f"Kafka running at {b.bootstrap} (home {b.home})")


@broker.command("stop")
@_home
@_port
def broker_stop(home: Path | None, port: int) -> None:
    """Stop the broker (SIGTERM, then SIGKILL)."""
    _broker(home, port).stop()
    console.print("Kafka stopped")


@broker.command("status")
@_home
@_port
def broker_status(home: Path | None, port: int) -> None:
    """Say whether the broker runs."""
    st = _broker(home, port).status()
    console.print(("running" if st["running"] else "stopped") + f" at {st['bootstrap']} (home {st['home']})")
    if not st["running"]:
        sys.exit(1)
