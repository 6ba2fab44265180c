"""Delayed file targets: the delay gate, the delay in force (from the control topic), the retention check.

A delayed target's receiver applies each record no earlier than the time the sender published it
plus the target's delay. Like the database's delay (consumers/gate.py) nothing is spooled: the
receiver holds at most one record and pauses its partition while that record is not due, so the
delay in force can change at run time, even backwards, within the topic's retention.

The delay in force is the target's ``delay_seconds`` from the config, overridden by the last
``files-set-delay`` intent for it on the group's control topic (``ark files delay``); a
``files-pause`` intent holds the target until a ``files-resume``. **Every use of the control topic
by filesync is in this module** (kinds, publishing, following).

Intent records (typed and signed, schemas/control.py): :class:`FilesSetDelay`, :class:`FilesPause`,
:class:`FilesResume`; ``target`` ``"<set>/<target>"``, or ``"<set>/"`` for every target of the set.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from common.config import ArkConfig
from common.config_files import FileSetConfig
from common.control import ControlChannel, ControlRecord
from schemas.control import FilesPause, FilesResume, FilesSetDelay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DelayInForce:
    """What holds a target back: its delay in seconds, and whether an operator paused it."""

    seconds: float = 0.0
    paused: bool = False

    @property
    def holds(self) -> bool:
        """True when the target does not apply right away (delayed or paused)."""
        return self.paused or self.seconds > 0


# ---- pure


def control_target(file_set: str, target: str) -> str:
    """The control record target naming ``target`` of ``file_set`` ('' or 'all': every target)."""
    return f"{file_set}/{'' if target in ('', 'all') else target}"


def fold(records: Iterable[ControlRecord], file_set: str, target: str, start: DelayInForce) -> DelayInForce:
    """The setting in force for ``target`` after ``records`` (pure; the last word wins)."""
    mine = (control_target(file_set, target), control_target(file_set, ""))
    out = start
    for rec in records:
        if rec.target not in mine:
            continue
        if isinstance(rec.body, FilesSetDelay):
            if math.isfinite(rec.body.seconds):
                out = replace(out, seconds=max(0.0, rec.body.seconds))
            else:
                log.error("ignoring control record %d: files-set-delay without a finite delay", rec.offset)
        elif isinstance(rec.body, FilesPause | FilesResume):
            out = replace(out, paused=isinstance(rec.body, FilesPause))
    return out


def wait_seconds(published_us: int, setting: DelayInForce, now: float) -> float:
    """How long a record published at ``published_us`` must still wait (0: apply it now; inf: paused).

    Never before publication + delay: the receiver's side of "a deleted file stays for the delay".
    """
    if setting.paused:
        return math.inf
    return max(0.0, published_us / 1e6 + setting.seconds - now)


@dataclass(frozen=True)
class RetentionProblem:
    """The set's topic may drop records a delayed target still has to apply."""

    what: str
    fix: str


def retention_problems(file_set: str, topic: str, retention_ms: int, delays: Mapping[str, DelayInForce],
                       margin_hours: float) -> list[RetentionProblem]:
    """Targets whose delay plus the margin exceeds the topic's retention (-1: unlimited). Pure."""
    if retention_ms < 0:
        return []
    out = []
    for target, setting in sorted(delays.items()):
        needed_ms = (setting.seconds + margin_hours * 3600) * 1000
        if setting.seconds > 0 and retention_ms < needed_ms:
            out.append(RetentionProblem(
                f"file set {file_set}: target {target} is delayed {setting.seconds:g} s but {topic} keeps "
                f"records {retention_ms / 3_600_000:g} h; with the {margin_hours:g} h margin it needs "
                f"{needed_ms / 3_600_000:g} h, or records it has not applied yet may be deleted",
                f"raise files.{file_set}.retention_ms to {math.ceil(needed_ms)} or more (and the topic's "
                f"retention.ms if it exists), or lower the delay ('ark files delay {file_set} {target} SECONDS')"))
    return out


# ---- the control topic


def configured(config: FileSetConfig) -> dict[str, DelayInForce]:
    """The delays the config gives each target."""
    return {t.name: DelayInForce(t.delay_seconds) for t in config.targets}


def _publish(cfg: ArkConfig, body: FilesSetDelay | FilesPause | FilesResume, target: str) -> str:
    channel = ControlChannel.for_config(cfg, start=None)
    try:
        return channel.publish(body, target)
    finally:
        channel.close()


def publish_delay(cfg: ArkConfig, file_set: str, target: str, seconds: float) -> str:
    """Ask the receivers of ``target`` ('all': every target) of ``file_set`` to use ``seconds`` from now on."""
    return _publish(cfg, FilesSetDelay(seconds), control_target(file_set, target))


def publish_pause(cfg: ArkConfig, file_set: str, target: str, paused: bool) -> str:
    """Hold (``paused``) or release the receivers of ``target`` of ``file_set``."""
    return _publish(cfg, FilesPause() if paused else FilesResume(), control_target(file_set, target))


class DelayFollower:
    """The setting in force for every target of one set, kept current from the control topic.

    :meth:`refresh` is cheap (at most one non-blocking read every ``interval`` seconds).
    """

    def __init__(self, cfg: ArkConfig, file_set: str, config: FileSetConfig, interval: float = 0.5) -> None:
        self.file_set = file_set
        self.interval = interval
        self.settings: dict[str, DelayInForce] = configured(config)
        self._reader = ControlChannel.for_config(cfg)
        self._apply(self._reader.replay())
        self._last = time.monotonic()

    def _apply(self, records: list[ControlRecord]) -> None:
        if not records:
            return
        for target, before in self.settings.items():
            after = fold(records, self.file_set, target, before)
            if after != before:
                log.info("file set %s, target %s: delay now %g s%s", self.file_set, target, after.seconds,
                         " (paused)" if after.paused else "")
                self.settings[target] = after

    def refresh(self, force: bool = False) -> None:
        """Read control records that arrived since the last call (rate-limited unless ``force``)."""
        now = time.monotonic()
        if force or now - self._last >= self.interval:
            self._last = now
            self._apply(self._reader.poll())

    def of(self, target: str) -> DelayInForce:
        """The setting in force for ``target``."""
        return self.settings.get(target, DelayInForce())

    def close(self) -> None:
        """Release the control consumer."""
        self._reader.close()


def delays_in_force(cfg: ArkConfig, file_set: str, config: FileSetConfig) -> dict[str, DelayInForce]:
    """One look at the settings in force for every target of the set."""
    follower = DelayFollower(cfg, file_set, config)
    try:
        return dict(follower.settings)
    finally:
        follower.close()
