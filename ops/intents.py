"""Operator intents, written as signed records on the group's control topic: the one way the CLI and the
console act on a group. Agents read the topic and carry them out (ARCHITECTURE.md); nothing here
touches a database or an agent directly, so the console can never do behind the controller's back
what the CLI does not.

Each function validates its arguments against the config (a standby that does not exist, a negative
delay, a table name) and returns the request id of the record it wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from common.config import ArkConfig
from common.control import ControlChannel
from common.errors import ArkError
from schemas.control import Body, Pause, Resume, ResyncTable, SetDelay

#: The target that means every standby of the group.
ALL = "all"


class Publisher(Protocol):
    """What writes an intent: a :class:`~common.control.ControlChannel` (signs, waits until Kafka has it)."""

    def publish(self, body: Body, target: str = "") -> str:
        """Write one signed record; its request id."""
        ...


@contextmanager
def control_channel(cfg: ArkConfig) -> Iterator[ControlChannel]:
    """A channel that writes (it reads only what comes after now), closed afterwards."""
    channel = ControlChannel.for_config(cfg, start=None)
    try:
        yield channel
    finally:
        channel.close()


def target_of(cfg: ArkConfig, standby: str) -> str:
    """The control record's target: '' for 'all', else a standby of the config (ConfigError otherwise)."""
    return "" if standby == ALL else cfg.standby(standby).name


def qualified_table(table: str) -> str:
    """``schema.table``; a bare name is in ``public``."""
    table = table.strip()
    if not table:
        raise ArkError("no table given", fix="name it as schema.table, e.g. public.history")
    return table if "." in table else f"public.{table}"


def check_delay(cfg: ArkConfig, seconds: float, *, force: bool = False) -> str | None:
    """Refuse (DelayTooLong) a delay the redo topic's retention cannot hold with its margin, unless
    ``force``; then the warning to show. None when the delay is fine. Reads the topic's retention."""
    from ops.errors import DelayTooLong
    from ops.retention import delay_problem

    if seconds < 0:
        raise ArkError("a delay cannot be negative", fix="give 0 for real time")
    problem = delay_problem(cfg, seconds)
    if problem is None:
        return None
    if not force:
        raise DelayTooLong(problem.what, fix=problem.fix)
    return f"{problem.what} (--force: set anyway; fix: {problem.fix})"


def set_delay(channel: Publisher, cfg: ArkConfig, standby: str, seconds: float) -> str:
    """Apply ``standby`` (or all) no earlier than commit + ``seconds``; the applier picks it up within a second.
    Call :func:`check_delay` first (the retention check)."""
    if seconds < 0:
        raise ArkError("a delay cannot be negative", fix="give 0 for real time")
    return channel.publish(SetDelay(float(seconds)), target_of(cfg, standby))


def pause(channel: Publisher, cfg: ArkConfig, standby: str) -> str:
    """Stop applying on ``standby`` (or all); entries wait in Kafka."""
    return channel.publish(Pause(), target_of(cfg, standby))


def resume(channel: Publisher, cfg: ArkConfig, standby: str) -> str:
    """Apply again on ``standby`` (or all)."""
    return channel.publish(Resume(), target_of(cfg, standby))


def resync_table(channel: Publisher, cfg: ArkConfig, standby: str, table: str) -> str:
    """Ask ``standby``'s applier to resync one table while the others keep applying."""
    if standby == ALL:
        raise ArkError("a table resync names one standby", fix="ark resync STANDBY --table T")
    return channel.publish(ResyncTable(qualified_table(table)), target_of(cfg, standby))
