"""Standbys stop at a gap in the source's log that the operator accepted (``ark capture --accept-gap``).

The capture publishes nothing across a hole in the source's log until an operator accepts it; the
``source-gap`` control record then names Kafka's last complete position before the hole and the
first redo offset after it. A standby whose applied position is at or below that position has not
been rebuilt since: applying on past the offset would silently miss the lost transactions, so it
stops there with :class:`SourceGap`. A standby rebuilt by ``ark resync`` after the gap holds a
floor above that position and goes on.
"""

from __future__ import annotations

from collections.abc import Iterable

from common.control import ControlRecord, source_gaps
from common.exit_codes import ExitCode
from consumers.base import ApplyState
from consumers.errors import ApplyError
from consumers.hooks import ApplyHook
from schemas.control import SourceGap as SourceGapRecord


class SourceGap(ApplyError):
    """The redo topic continues after a hole in the source's log that this standby has not been rebuilt past."""

    exit_code = ExitCode.SOURCE_GAP_REACHED


class SourceGaps(ApplyHook):
    """The accepted gaps seen on the control topic, and the check made before each entry."""

    def __init__(self, standby: str) -> None:
        self._standby = standby
        self._gaps: list[SourceGapRecord] = []

    def on_control(self, records: Iterable[ControlRecord]) -> None:
        """Take note of ``source-gap`` records among ``records``."""
        self._gaps.extend(source_gaps(list(records)))

    def before_entry(self, offset: int, pending: ApplyState, topic: str) -> None:
        """Raise SourceGap if the entry at ``offset`` lies past a gap this standby has not been rebuilt past."""
        applied_key = pending.position_key
        for gap in self._gaps:
            if offset >= gap.first_offset and applied_key <= gap.after_key:
                raise SourceGap(
                    f"the source's log has a gap after {gap.after_position} ({gap.hole}); redo entries from "
                    f"{topic}[0]@{gap.first_offset} on follow it, and standby {self._standby} has applied only up "
                    "to that position: going on would miss the lost transactions",
                    fix=f"stop 'ark apply {self._standby}', rebuild it with 'ark resync {self._standby}', then start "
                        "it again")
