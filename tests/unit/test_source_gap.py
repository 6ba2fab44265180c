"""An accepted gap in the source's log: capture resumes past it only for the exact tail it names, and a
standby stops at it unless it was rebuilt past it."""

from __future__ import annotations

import pytest

from common.control import ControlRecord, source_gaps
from consumers.base import ApplyState
from consumers.gaps import SourceGap, SourceGaps
from producers.gap import resumes_past_gap
from producers.resume import ResumePoint
from tests.support.memory import record


def _record(after_key: bytes, offset: int, kind: str = "source-gap") -> ControlRecord:
    return record(kind, "", at_us=0, rid="r", after_key=after_key.hex(), offset=str(offset),
                  after_position="0/10", hole="slot recreated", reason="CRC")


K = (16).to_bytes(8, "big")


@pytest.mark.parametrize(("tail_key", "records", "expected"), [
    (K, [_record(K, 40)], True),                              # accepted for exactly this tail
    (K, [], False),                                           # nothing accepted
    ((17).to_bytes(8, "big"), [_record(K, 40)], False),       # capture published past it: normal checks again
    (K, [_record(K, 40, kind="retransmit")], False),          # another kind of record
    ((15).to_bytes(8, "big"), [_record(K, 40)], False),       # a different tail
])
def test_capture_resumes_past_an_accepted_gap_only_at_its_tail(tail_key: bytes, records: list[ControlRecord],
                                                              expected: bool) -> None:
    point = ResumePoint(complete_key=tail_key, complete_position="0/10", complete_confirm="0/11", end_offset=40)
    assert resumes_past_gap(source_gaps(records), point) is expected


def _state(key: bytes) -> ApplyState:
    return ApplyState("g", "sb1", "ark.g.redo", 0, 0, "", key, 0, 0, 0)


@pytest.mark.parametrize(("offset", "applied_key", "stops"), [
    (39, K, False),                        # before the gap: still the old history
    (40, K, True),                         # the first entry after the gap, standby not rebuilt
    (41, (3).to_bytes(8, "big"), True),    # further behind, still not rebuilt
    (40, (17).to_bytes(8, "big"), False),  # rebuilt by a resync after the gap (floor above the gap's position)
    (900, (99).to_bytes(8, "big"), False),
])
def test_standby_stops_at_a_gap_it_was_not_rebuilt_past(offset: int, applied_key: bytes, stops: bool) -> None:
    gaps = SourceGaps("sb1")
    gaps.on_control([_record(K, 40)])
    if stops:
        with pytest.raises(SourceGap) as info:
            gaps.before_entry(offset, _state(applied_key), "ark.g.redo")
        assert "ark.g.redo[0]@40" in info.value.message and "ark resync sb1" in info.value.fix
        assert info.value.exit_code == 15
    else:
        gaps.before_entry(offset, _state(applied_key), "ark.g.redo")
