"""CRC retransmission, pure parts: the confirm window, the "is this my retransmission" predicate, and
request deduplication (producers/retransmit.py, consumers/quarantine.py)."""

from __future__ import annotations

import pytest

from common.control import ControlRecord
from common.redo import RedoRecord
from consumers.quarantine import Awaiting, answers, is_retransmission
from producers.resume import ResumePoint
from producers.retransmit import ConfirmWindow, RequestQueue
from schemas.envelope import H_RETRANSMIT_FROM
from schemas.positions import pg_lsn
from tests.support.memory import MemoryRedoLog, record


def _p(n: int):
    return pg_lsn(n)


# (window_s, pushes [(time, lsn)], now, ceiling lsn or None, expected lsn or None, left in the deque)
WINDOW_CASES = [
    (900, [], 1000.0, 10, None, 0),                                   # nothing pushed
    (900, [(0.0, 5)], 899.9, 10, None, 1),                             # not old enough
    (900, [(0.0, 5)], 900.0, 10, 5, 0),                                # exactly the window
    (900, [(0.0, 5), (10.0, 7), (950.0, 9)], 1000.0, 10, 7, 1),        # newest of the old ones
    (900, [(0.0, 7), (10.0, 5)], 1000.0, 10, 7, 0),                    # keys out of order: the highest
    (0, [(0.0, 5), (0.0, 8)], 0.0, 10, 8, 0),                          # window 0: at once
    (900, [(0.0, 5)], 2000.0, None, None, 1),                          # no tail yet in this session
    (900, [(0.0, 5), (1.0, 20), (2.0, 8)], 2000.0, 10, 8, 1),          # above the tail (re-read): held
    (900, [(0.0, 20)], 2000.0, 19, None, 1),                           # only above the tail: nothing
]


@pytest.mark.parametrize(("window", "pushes", "now", "ceiling", "expected", "left"), WINDOW_CASES)
def test_confirm_window(window: float, pushes: list[tuple[float, int]], now: float, ceiling: int | None,
                        expected: int | None, left: int) -> None:
    w = ConfirmWindow(window)
    for at, lsn in pushes:
        w.push(at, _p(lsn))
    got = w.due(now, None if ceiling is None else _p(ceiling).key)
    assert (got.key if got else None) == (_p(expected).key if expected is not None else None)
    assert len(w) == left


def test_confirm_window_held_entries_come_out_once_the_tail_passes_them() -> None:
    w = ConfirmWindow(10)
    w.push(0.0, _p(20))
    w.push(1.0, _p(8))
    assert w.due(100.0, _p(10).key) == _p(8)
    assert w.due(100.0, _p(15).key) is None
    assert w.due(100.0, _p(25).key) == _p(20)
    assert len(w) == 0


# (header value or None, applied lsn, expected)
PREDICATE_CASES = [
    (None, 100, False),                          # an ordinary entry
    (_p(100).key.hex(), 100, True),              # re-read from exactly our position
    (_p(50).key.hex(), 100, True),               # from below: covers us too
    (_p(101).key.hex(), 100, False),             # from above: would leave a gap
    ("zz", 100, False),                          # unreadable tag
    ("", 100, True),                             # from the very start covers everyone
]


@pytest.mark.parametrize(("tag", "applied", "expected"), PREDICATE_CASES)
def test_is_retransmission(tag: str | None, applied: int, expected: bool) -> None:
    headers = [("ark-crc", b"00000000")] + ([(H_RETRANSMIT_FROM, tag.encode())] if tag is not None else [])
    assert is_retransmission(headers, _p(applied).key) is expected


def test_is_retransmission_for_a_standby_without_position() -> None:
    assert is_retransmission({H_RETRANSMIT_FROM: ""}, b"") is True


def _rec(kind: str, rid: str, target: str = "s1", offset: int = 0, **args: str) -> ControlRecord:
    return record(kind, target, at_offset=offset, rid=rid, at_us=0, **args)


def _req(rid: str, lsn: int, target: str = "s1", position: str | None = None) -> ControlRecord:
    return _rec("retransmit", rid, target, after_position=position or _p(lsn).text, after_key=_p(lsn).key.hex(),
                offset="7", reason="CRC")


def test_one_reread_serves_every_pending_request_from_the_lowest_key() -> None:
    q = RequestQueue()
    q.add([_req("a", 300), _req("b", 100, "s2"), _req("c", 200)])
    plan = q.plan(ResumePoint(complete_key=_p(500).key, complete_position=_p(500).text))
    assert plan is not None
    assert plan.key == _p(100).key and plan.resume_text == _p(100).text
    assert {r.request_id for r in plan.requests} == {"a", "b", "c"}
    assert plan.standbys == "s1,s2"
    assert [r.request_id for r in RequestQueue.lowest_group(plan)] == ["b"]


def test_answered_requests_are_dropped() -> None:
    q = RequestQueue()
    q.add([_req("a", 300), _req("b", 100), _req("c", 200),
           _rec("retransmit-done", "x", request_ids="a,b"), _rec("retransmit-failed", "y", request_id="c")])
    assert len(q) == 0
    q.add([_req("d", 100)])
    assert len(q) == 1
    plan = q.plan(ResumePoint())
    assert plan is not None
    q.answered(plan.requests)
    assert len(q) == 0 and q.plan(ResumePoint()) is None


def test_plan_never_starts_above_the_topic_tail_nor_inside_a_partial_transaction() -> None:
    q = RequestQueue()
    q.add([_req("a", 300)])
    tail = ResumePoint(complete_key=_p(250).key, complete_position=_p(250).text, complete_confirm=_p(251).text)
    plan = q.plan(tail)
    assert plan is not None and plan.key == _p(250).key and plan.resume_text == _p(251).text
    assert q.plan(ResumePoint(complete_key=_p(500).key, partial_key=_p(600).key)) is None


def test_a_checkpoint_position_resumes_at_its_idle_position() -> None:
    q = RequestQueue()
    before = _p(0x1000 - 1)
    q.add([_rec("retransmit", "a", after_position="<0/1000", after_key=before.key.hex())])
    plan = q.plan(ResumePoint())
    assert plan is not None and plan.key == before.key and plan.resume_text == "0/1000"


def test_unreadable_v1_requests_are_refused_by_the_channel() -> None:
    from schemas.control import body_from_args

    with pytest.raises(ValueError):  # the channel counts it as unreadable and never hands it on
        body_from_args("retransmit", {"after_position": "0/1", "after_key": "not hex"})


def _wait(lsn: int) -> Awaiting:
    return Awaiting("r1", "ark.g.redo[0]@42", 42, _p(lsn).text, _p(lsn).key, "CRC", 0.0)


# (kind, target, args, expected): is this record the capture's refusal of our request?
ANSWER_CASES = [
    ("retransmit-failed", "s1", {"request_id": "r1", "request_ids": "r1"}, True),
    ("retransmit-failed", "s1", {"request_ids": "r0,r1"}, True),
    ("retransmit-failed", "s1", {"request_id": "r9", "after_key": _p(100).key.hex()}, True),   # same position
    ("retransmit-failed", "s1", {"request_id": "r9", "after_key": _p(200).key.hex()}, True),   # higher: covers us
    ("retransmit-failed", "s1", {"request_id": "r9", "after_key": _p(50).key.hex()}, False),   # lower: not us
    ("retransmit-failed", "s2", {"request_id": "r9", "after_key": _p(200).key.hex()}, False),  # other standby
    ("retransmit-done", "s1", {"request_ids": "r1"}, False),
    ("retransmit", "s1", {"after_key": _p(100).key.hex()}, False),
]


@pytest.mark.parametrize(("kind", "target", "args", "expected"), ANSWER_CASES)
def test_failure_answers(kind: str, target: str, args: dict[str, str], expected: bool) -> None:
    assert answers(record(kind, target, rid="x", **args), _wait(100), "s1") is expected


class _Reports:
    state = ""
    message = ""


@pytest.mark.parametrize(("offset", "tag", "applies"), [
    (7265, _p(90).key, False),   # an older corruption's retransmission, before the corrupt entry: not ours
    (7411, _p(90).key, False),   # the corrupt entry itself
    (7500, None, False),         # an ordinary entry after it: skipped, never applied
    (7600, _p(120).key, False),  # a retransmission from above our position: would leave a hole
    (7700, _p(90).key, True),    # published after the corrupt entry, from at or below our position
])
def test_only_a_retransmission_after_the_corrupt_entry_ends_the_wait(offset: int, tag: bytes | None,
                                                                    applies: bool) -> None:
    import time

    from consumers.quarantine import Retransmits

    waits = Retransmits(MemoryRedoLog(), "sb1", _Reports())
    waits.awaiting = Awaiting("r1", "t[0]@7411", 7411, "0/64", _p(100).key, "CRC", time.monotonic())
    headers = [(H_RETRANSMIT_FROM, tag.hex().encode())] if tag is not None else []
    assert waits.admit(RedoRecord(offset, b"", headers), _p(100).key) is applies
    assert (waits.awaiting is None) is applies
