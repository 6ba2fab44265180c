"""Offset continuity on every read: a standby never skips a redo entry that retention deleted under it.

The start-of-session check (:mod:`consumers.retention`) sees a standby that was *down* while retention
deleted what it needed. This one sees the same loss while the applier *runs* (a long delay hold keeps
it at an old offset while Kafka deletes segments below the log start). Holes in the offsets are normal:
transaction markers take offsets, and a read_committed reader skips aborted records. So a hole alone
proves nothing; a hole that starts below the log start offset does:

* the Kafka reader never jumps by itself (``auto.offset.reset=error``): asked for a deleted offset, it
  raises :class:`~common.redo.RedoRangeDeleted`;
* at every hole (record offset > the offset expected), the log start offset is compared with the
  expected offset. Kafka deletes only below the log start offset, which only grows: if it is still at or
  below the expected offset now, nothing between the two was deleted, and the hole was markers or
  aborted records. If it is above and the record read lies below it too, the record was fetched before
  the deletion (the next fetch meets it). If the record lies at or above it, the reader jumped over
  deleted offsets: the applier stops. (Conservative at the very edge of retention: a deletion landing
  exactly inside a marker's hole between the fetch and the check stops the standby, which was about to
  lose entries anyway.)

Either way the applier stops with :class:`~consumers.retention.RetentionGap` (exit 13), naming the lost
offsets, the last transaction applied and the way out (``ark resync``). The check reads the log start
offset the broker returned with its last fetch (no extra request): it costs nothing per transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from common.redo import EndOfLog, RedoRangeDeleted, RedoReader, RedoRecord
from consumers.base import ApplyState
from consumers.retention import RetentionGap, _when

log = logging.getLogger(__name__)


def lost_while_running(standby: str, topic: str, first: int, last: int, state: ApplyState) -> RetentionGap:
    """The error for redo offsets ``first..last`` deleted by retention before this running applier read them."""
    message = (f"standby {standby} stopped: redo entries {topic}[0]@{first}..{last} ({last - first + 1} offsets) "
               f"were deleted by retention before it applied them (it was holding them back for its delay, or "
               f"lagging). Lost: what was committed after {_when(state.commit_time_us)} (the last transaction "
               f"applied, at {state.position or '?'}); nothing after it was applied")
    fix = (f"rebuild the standby from a fresh snapshot while the primary keeps running: stop 'ark apply {standby}', "
           "then run 'ark resync " + standby + "'; keep the redo topic's retention above the longest delay plus the "
           "margin ('ark check' says how)")
    return RetentionGap(message, fix=fix, standby=standby, first_missing=first, last_missing=last)


class ContinuousReader(RedoReader):
    """A :class:`RedoReader` that stops at a hole retention made (see the module docstring)."""

    def __init__(self, inner: RedoReader, *, standby: str, topic: str, applied: Callable[[], ApplyState]) -> None:
        self.inner = inner
        self.standby = standby
        self.topic = topic
        self._applied = applied  # what the standby holds (named in the error)
        self.expected = -1  # the next offset that must be read (-1: not positioned yet)
        self.holes = 0  # holes seen (markers, aborted records): for tests and logs

    def seek(self, offset: int) -> None:
        self.expected = offset
        self.inner.seek(offset)

    def resume(self, offset: int) -> None:
        self.expected = offset
        self.inner.resume(offset)

    def pause(self) -> None:
        self.inner.pause()

    def poll(self, timeout: float) -> RedoRecord | EndOfLog | None:
        try:
            got = self.inner.poll(timeout)
        except RedoRangeDeleted as exc:
            raise lost_while_running(self.standby, self.topic, exc.first, exc.low - 1, self._applied()) from None
        if got is None:
            return None
        if self.expected >= 0 and got.offset > self.expected:
            self._check_hole(got.offset)
        if isinstance(got, RedoRecord):
            self.expected = max(self.expected, got.offset + 1)
        else:
            self.expected = max(self.expected, got.offset)
        return got

    def _check_hole(self, found: int) -> None:
        """Offsets ``expected..found-1`` were not delivered: fine unless retention deleted some of them."""
        self.holes += 1
        low = self.inner.low_watermark()
        if low <= self.expected:
            return  # nothing at or above the expected offset was deleted: markers or aborted records
        if found < low:
            # Deleted since, but fetched before: the fetch started at the expected offset while it was retained
            # (else the reader would have raised), so the hole was markers. The next fetch meets the deletion.
            return
        last = low - 1
        log.error("redo offsets %d..%d were deleted by retention before standby %s read them", self.expected, last,
                  self.standby)
        raise lost_while_running(self.standby, self.topic, self.expected, last, self._applied())

    def watermarks(self) -> tuple[int, int]:
        return self.inner.watermarks()

    def end_hint(self) -> int:
        # The inner reader's cheap hint (Kafka: the end its last fetch response carried), not the base class's
        # live end: that is a broker round trip, once a second, inside the apply loop.
        return self.inner.end_hint()

    def low_watermark(self) -> int:
        return self.inner.low_watermark()

    def report(self, next_offset: int) -> None:
        self.inner.report(next_offset)

    def close(self) -> None:
        self.inner.close()
