"""Waits that must end: a reinstate's decode of the old primary's log, and the controller's failover.

- ``divergence._decode`` once checked its deadline only on Idle events. A log decoded from an old checkpoint can
  send row after row and no Idle for minutes: F23's 8-run attempt saw ``ark reinstate`` not return in 300 s. The
  deadline now holds on every event.
- An automatic failover (``capture_wait_s`` 0) returns right after the promotion instead of waiting up to 60 s for
  a capture to begin the epoch: the controller's tick must go on, F23 (it may have to ask the new primary to lift
  a self-fence that a broker outage caused).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from failover import divergence
from failover.handover import Handover, Report
from producers.base import Idle, TxnBegin
from schemas.entries import Op, Position, RowChange


def _pos(n: int) -> Position:
    return Position(f"0/{n:X}", n.to_bytes(8, "big"))


class _EndlessRows:
    """A capture whose log never drains: one transaction's rows, for ever."""

    def stream(self, _after: Any) -> Iterator[Any]:
        yield TxnBegin("1", _pos(10), 0)
        for i in itertools.count():
            yield RowChange("public.t", Op.INSERT, [i])

    def nudge(self) -> None:
        pass


class _Drains:
    def stream(self, _after: Any) -> Iterator[Any]:
        yield Idle(_pos(5), drained=False)
        yield Idle(_pos(20), drained=True)
        raise AssertionError("read past the end")

    def nudge(self) -> None:
        pass


def test_the_decode_deadline_holds_when_no_idle_ever_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(divergence, "DECODE_TIMEOUT_S", 0.05)
    with pytest.raises(TimeoutError, match="not decoded up to 0/14 in 0.05 s"):
        list(divergence._decode(_EndlessRows(), None, _pos(20)))


def test_the_decode_stops_at_a_drained_idle_past_the_end() -> None:
    assert list(divergence._decode(_Drains(), None, _pos(20))) == []


class _Channel:
    def __init__(self) -> None:
        self.published: list[Any] = []

    def publish(self, body: Any, key: str) -> None:
        self.published.append(body)


class _View:
    def __init__(self, beat: Any) -> None:
        self.beat = beat

    def capture(self) -> Any:
        return self.beat


class _Beat:
    def __init__(self, epoch: int, state: str) -> None:
        self.epoch, self.state = epoch, state


def _handover(capture_wait_s: float, beat: Any) -> Handover:
    h = Handover.__new__(Handover)  # no Kafka: only the capture wait runs here
    h.say = lambda _line: None
    h.channel = _Channel()  # type: ignore[assignment]
    h.view = _View(beat)  # type: ignore[assignment]
    h._last = 0.0
    h.timeout_s = 120.0
    h.capture_wait_s = capture_wait_s
    h._poll = lambda: None  # type: ignore[method-assign]
    return h


@pytest.mark.parametrize("beat, detail", [
    (None, "its capture begins epoch 2 when it next reconnects (not waited for)"),
    (_Beat(1, "running"), "its capture begins epoch 2 when it next reconnects (not waited for)"),
    (_Beat(2, "starting"), "its capture begins epoch 2 when it next reconnects (not waited for)"),
    (_Beat(2, "running"), "the capture publishes epoch 2 from new"),
])
def test_an_automatic_failover_does_not_wait_for_the_capture(beat: Any, detail: str) -> None:
    h, report = _handover(0, beat), Report("failover", 2, "old", "new")
    h._wait_capture(2, "new", report, "failover")
    (step,) = h.channel.published  # type: ignore[attr-defined]
    assert step.phase == "done" and detail in step.detail
    assert not report.notes


def test_ark_failover_by_hand_still_waits_for_the_capture_and_says_so() -> None:
    h, report = _handover(0.1, None), Report("failover", 2, "old", "new")
    h._wait_capture(2, "new", report, "failover")
    (step,) = h.channel.published  # type: ignore[attr-defined]
    assert "no capture was seen beginning epoch 2 yet: start 'ark capture'" in step.detail
    assert report.notes
