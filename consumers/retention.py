"""The retention gap: the redo entries a standby still needs are no longer in Kafka.

A standby that was down resumes from its state row by itself, as long as the redo topic still holds
the entry at ``next_offset`` (guarantee 7). When retention has removed it, nothing can be replayed
safely: the applier refuses to start and says exactly what is missing (offsets and times) and how
to rebuild the standby.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from common.errors import ArkError
from common.exit_codes import ExitCode
from common.redo import RedoLog
from consumers.base import ApplyState


class RetentionGap(ArkError):
    """The redo topic no longer holds entries this standby has not applied yet."""

    exit_code = ExitCode.RETENTION_GAP

    def __init__(self, message: str, *, fix: str, standby: str, first_missing: int, last_missing: int) -> None:
        self.standby = standby
        self.first_missing = first_missing
        self.last_missing = last_missing
        super().__init__(message, fix=fix)


def _when(us: int | None) -> str:
    if not us:
        return "an unknown time"
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def retention_gap(standby: str, topic: str, state: ApplyState, low: int, first_retained_us: int | None) -> RetentionGap:
    """The error for a standby whose ``state.next_offset`` is below the topic's low watermark ``low``."""
    count = low - state.next_offset
    message = (f"standby {standby} cannot resume: it needs redo entries {topic}[0]@{state.next_offset}.."
               f"{low - 1} ({count} offsets), which retention has already deleted. Missing: everything "
               f"committed after {_when(state.commit_time_us)} (the last transaction applied, at "
               f"{state.position or '?'}) up to {_when(first_retained_us)} (the oldest retained entry, "
               f"offset {low}).")
    fix = (f"rebuild the standby from a fresh snapshot while the primary keeps running: stop 'ark apply {standby}', "
           f"then run 'ark resync {standby}'; to let standbys stay down longer, raise kafka.redo_retention_hours")
    return RetentionGap(message, fix=fix, standby=standby, first_missing=state.next_offset, last_missing=low - 1)


def check_retention(redo: RedoLog, standby: str, state: ApplyState) -> None:
    """Raise :class:`RetentionGap` when the entry at ``state.next_offset`` is gone."""
    low, high = redo.watermarks()
    if state.next_offset >= low:
        return
    first_us: int | None = None
    with contextlib.suppress(ArkError):
        for rec in redo.read_range(low, high):
            if rec.timestamp_ms > 0:
                first_us = rec.timestamp_ms * 1000
            break
    raise retention_gap(standby, redo.topic, state, low, first_us)
