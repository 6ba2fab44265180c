"""Accepting a hole in the source's log, explicitly and on the record.

When the replication slot was dropped and recreated (or the log it needed was purged), the source
can no longer supply the transactions between what Kafka holds and where the new slot starts.
Capture refuses to go on (:class:`~producers.errors.SlotGapError`) rather than lose them silently.
The way out is an operator decision: ``ark capture --accept-gap`` writes a ``source-gap`` record on
the control topic naming the hole (the last position Kafka holds, where the source resumes, and the
first redo offset after it); capture then resumes from the slot as it is, and every standby that has
not been rebuilt since stops at that offset until ``ark resync`` rebuilds it. Nothing crosses the
hole unannounced.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from common.control import ControlChannel
from common.exit_codes import ExitCode
from producers.base import LogCapture
from producers.errors import CaptureError
from producers.resume import ResumePoint
from schemas.control import SourceGap

log = logging.getLogger(__name__)


class NoGapToAccept(CaptureError):
    """``--accept-gap`` was asked for, but the source still holds everything after Kafka's tail."""

    exit_code = ExitCode.NO_GAP_TO_ACCEPT


def resumes_past_gap(gaps: Iterable[SourceGap], point: ResumePoint) -> bool:
    """Whether capture may start from the slot as it is: the operator accepted a gap right after
    exactly the tail Kafka holds now (once capture publishes past it, the normal check applies again)."""
    return any(g.after_key == point.complete_key for g in gaps)


def accept_gap(channel: ControlChannel, capture: LogCapture, point: ResumePoint) -> str:
    """Record the hole between Kafka's tail and the source's start; returns a sentence saying what was lost.

    Raises :class:`NoGapToAccept` when there is none (refusing to write a record nobody needs).
    """
    resume_after = capture.parse_position(point.complete_confirm) if point.complete_confirm else None
    hole = capture.gap_after(resume_after) if resume_after is not None else None
    if hole is None:
        raise NoGapToAccept("there is no gap to accept: the source still holds everything after what Kafka has "
                            f"({point.complete_position or 'nothing published yet'})",
                            fix="run 'ark capture' without --accept-gap")
    channel.publish(SourceGap(point.complete_position, point.complete_key, point.end_offset, hole))
    sentence = (f"accepted a gap in the source's log after {point.complete_position} ({hole}); redo entries from "
                f"offset {point.end_offset} on follow it, and every standby stops there until 'ark resync' "
                "rebuilds it")
    log.warning("%s", sentence)
    return sentence
