"""Where capture resumes: read back the tail of the redo topic and decide what is already published.

Kafka is the capture's checkpoint. After a crash the source re-sends what it was not told to forget;
:class:`ResumePoint` says which of it is already in Kafka, down to the row of a large transaction
whose first chunks were committed before the crash.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.redo import RedoLog, RedoRecord
from schemas import envelope
from schemas.entries import REDO_SCHEMA, EpochMarker, Position, TxnChunk, from_record
from schemas.errors import CorruptEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResumePoint:
    """What the redo topic already holds.

    ``complete_key`` is the commit key of the last fully published transaction (or checkpoint);
    ``complete_confirm`` its confirm position (what the source may have forgotten up to).
    ``partial_*`` describe a transaction whose last chunk is not yet in Kafka.
    """

    complete_key: bytes = b""
    complete_position: str = ""
    complete_confirm: str = ""
    partial_key: bytes | None = None
    partial_rows_done: int = 0
    partial_next_chunk: int = 0
    epoch: int = 0
    end_offset: int = 0
    #: The newest epoch any entry of the tail was written in (below ``epoch`` when the newest entry is an
    #: end-of-epoch marker: that epoch has ended and the next one has not begun).
    written_epoch: int = 0
    #: The primary the newest marker names (the next primary, after an end-of-epoch marker).
    marker_primary: str = ""

    def decide(self, commit: Position) -> tuple[str, int, int]:
        """What to do with a re-delivered transaction: ("skip"|"resume"|"new", rows to skip, next chunk)."""
        if self.complete_key and commit.key <= self.complete_key:
            return ("skip", 0, 0)
        if self.partial_key is not None and commit.key == self.partial_key:
            return ("resume", self.partial_rows_done, self.partial_next_chunk)
        return ("new", 0, 0)


def _decode(msg: RedoRecord, topic: str) -> TxnChunk | EpochMarker | None:
    try:
        dec = envelope.decode(msg.value, msg.headers, topic=topic, partition=0, offset=msg.offset,
                              expect=REDO_SCHEMA)
    except CorruptEntry as exc:
        # Read around, never trusted: resuming from an earlier entry only republishes more (appliers skip
        # what they applied), and the appliers quarantine the bad entry and ask for its retransmission.
        log.warning("capture resume point: skipping %s", exc)
        return None
    body = from_record(dec.record).body
    return body if isinstance(body, TxnChunk | EpochMarker) else None


def find_resume_point(redo: RedoLog) -> ResumePoint:
    """Scan back from the end of the redo log to the last complete transaction (reading as few as possible).

    Only the newest epoch counts: its positions are those of its own primary, and everything of an older
    epoch was published by another node (ARCHITECTURE.md, "Roles, epochs and failover"). A tail that ends
    with an end-of-epoch marker holds nothing of the new epoch yet: its capture starts from its own slot.
    """
    topic = redo.topic
    tail: list[tuple[RedoRecord, TxnChunk, int]] = []
    epoch = written = 0
    marker_primary = ""

    count = 16
    while True:
        messages = redo.tail(count)
        tail = []
        epoch = written = 0
        marker_primary = ""
        for msg in messages:
            body = _decode(msg, topic)
            hdr_epoch = int(envelope.header_map(msg.headers).get(envelope.H_EPOCH, "0") or 0)
            written = max(written, hdr_epoch)
            epoch = max(epoch, hdr_epoch)
            if isinstance(body, EpochMarker):
                if body.new_epoch >= epoch:
                    marker_primary = body.primary
                epoch = max(epoch, body.new_epoch)
            elif body is not None:
                tail.append((msg, body, hdr_epoch))
        older = any(e < epoch for _m, _c, e in tail) or written < epoch
        tail = [(m, c, e) for m, c, e in tail if e == epoch]
        complete = [c for _m, c, _e in tail if c.last]
        if complete or older or len(messages) < count:
            break
        count *= 8  # a long partial transaction at the end: look further back
    end = (messages[-1].offset + 1) if messages else 0
    last_complete = complete[-1] if complete else None
    base = {"epoch": epoch, "end_offset": end, "written_epoch": written, "marker_primary": marker_primary}
    point = ResumePoint(**base)  # type: ignore[arg-type]
    if last_complete is not None:
        point = ResumePoint(complete_key=last_complete.commit.key, complete_position=last_complete.commit.text,
                            complete_confirm=last_complete.confirm, **base)  # type: ignore[arg-type]
    if tail and not tail[-1][1].last:
        newest = tail[-1][1]
        point = ResumePoint(
            complete_key=point.complete_key,
            complete_position=point.complete_position,
            complete_confirm=point.complete_confirm,
            partial_key=newest.commit.key,
            partial_rows_done=newest.first_row + len(newest.changes),
            partial_next_chunk=newest.chunk_index + 1,
            **base,  # type: ignore[arg-type]
        )
    return point
