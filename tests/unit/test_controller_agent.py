"""The controller agent's step: only the lease holder acts; a failover is recorded, a failed one retried later."""

from __future__ import annotations

from typing import Any

import pytest

from common.config import parse_config
from common.errors import HandoverFailed
from failover.automation import Controller
from failover.controller import Settings, Tick
from schemas.control import ControllerDecision
from tests.support.memory import memory_channel


class FakeLease:
    def __init__(self, active: bool) -> None:
        self.is_active = active

    def active(self) -> bool:
        return self.is_active

    def describe(self) -> str:
        return "active (lease term 1, ttl 5 s)" if self.is_active else "standing by: c2 holds the lease (term 1)"


GO = Tick("failover", "primary n1 silent for 6.0 s (ttl 5 s): failing over to n2, ...", "n2")


def _controller(calls: list[str], fail: bool = False) -> Controller:
    def run(target: str) -> Any:
        calls.append(target)
        if fail:
            raise HandoverFailed("failover to n2 stopped: n2 did not apply in time", fix="run it again")
        return None

    cfg = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                        "primary": {"name": "n1", "engine": "postgresql", "tables": ["public.*"]},
                        "standbys": [{"name": "n2", "engine": "postgresql"}]})
    return Controller(cfg, run, settings=Settings(), name="c1")


def _decisions(store: list[Any]) -> list[tuple[str, str]]:
    return [(r.body.action, r.target) for r in memory_channel(store).poll() if isinstance(r.body, ControllerDecision)]


def test_a_standing_by_controller_never_acts() -> None:
    calls: list[str] = []
    body, store = _controller(calls), []
    body._step(memory_channel(store), FakeLease(False), GO)  # type: ignore[arg-type]
    assert calls == [] and body.state == "standby" and body.sentence.startswith("standing by: c2 holds the lease")
    assert _decisions(store) == []


def test_the_active_controller_fails_over_and_records_it() -> None:
    calls: list[str] = []
    body, store = _controller(calls), []
    body._step(memory_channel(store), FakeLease(True), GO)  # type: ignore[arg-type]
    assert calls == ["n2"]
    assert _decisions(store) == [("active", ""), ("failover", "n2"), ("failover-done", "n2")]


def test_a_failed_failover_is_recorded_and_not_retried_at_once() -> None:
    calls: list[str] = []
    body, store = _controller(calls, fail=True), []
    channel = memory_channel(store)
    body._step(channel, FakeLease(True), GO)  # type: ignore[arg-type]
    body._step(channel, FakeLease(True), GO)  # type: ignore[arg-type]
    assert calls == ["n2"]
    assert _decisions(store) == [("active", ""), ("failover", "n2"), ("failover-failed", "n2")]
    assert "the last attempt failed: trying again in" in body.sentence


class FakeBeats:
    def __init__(self) -> None:
        self.beats: dict[tuple[str, str], Any] = {}

    def beat(self, agent: str, name: str, state: str, epoch: int, sent_at: float) -> None:
        from failover.view import Beat

        self.beats[(agent, name)] = Beat(agent, name, state, epoch, -1, 0.0, "", sent_at, {})


def test_only_a_capture_running_for_the_current_epoch_vouches() -> None:
    from common.roles import Reign
    from failover.controller import tick

    body = _controller([])
    beats = FakeBeats()
    beats.beat("capture", "n1", "running", 0, 100.0)
    body.view_of(beats, 0.0)  # type: ignore[arg-type]  # one tick saw it
    beats.beat("capture", "n1", "retrying", 0, 103.0)  # the newest beat does not vouch: the last running one does
    view = body.view_of(beats, 0.0)  # type: ignore[arg-type]
    assert view.capture is not None and view.capture.alive_at == 100.0
    body.roles.reigns = [Reign(1, "n2", "n1", "switchover", 10, 104_000_000)]
    beats.beat("capture", "n1", "starting", 1, 105.0)  # the new epoch's capture, not reading yet
    view = body.view_of(beats, 0.0)  # type: ignore[arg-type]
    assert view.capture is not None and view.capture.alive_at == 0.0
    assert tick(view, 106.5).sentence.startswith("primary n2 not heard from in epoch 1")
    beats.beat("capture", "n1", "running", 1, 106.0)
    view = body.view_of(beats, 0.0)  # type: ignore[arg-type]
    assert tick(view, 106.5).sentence.startswith("primary n2 healthy, epoch 1")


def _stopped_failover(body: Controller, decided_by: str, outcome: str, now: float) -> None:
    """Roles and automation after a failover to n2 decided by ``decided_by`` that recorded its 'started' and
    'fenced' steps and then stopped (the broker killed: its 'failed' step never reached the control topic);
    ``outcome`` is what the deciding controller recorded afterwards ('failover-failed', or '' for nothing)."""
    from common.control import ControlRecord
    from schemas.control import HandoverStep

    def rec(i: int, body_: Any, ago: float) -> ControlRecord:
        return ControlRecord(i, body_, "n2", decided_by, int((now - ago) * 1e6), f"r{i}")

    records = [rec(1, ControllerDecision("failover", 0, "primary n1 silent", decided_by), 5.0),
               rec(2, HandoverStep("failover", 1, "started", "n1 -> n2", 0.0), 4.5),
               rec(3, HandoverStep("failover", 1, "fenced", "epoch 0 closed", 0.6), 3.9)]
    if outcome:
        records.append(rec(4, ControllerDecision(outcome, 0, "Kafka unreachable", decided_by), 1.0))
    body.roles.update(records)
    body.automation.update(records)


def _silent_primary_view(body: Controller, now: float) -> Any:
    """The view of a controller that holds the lease: n1's capture silent for 10 s, n2 applying."""
    from failover.view import Beat

    body.lease = FakeLease(True)  # type: ignore[assignment]
    beats = FakeBeats()
    beats.beat("capture", "n1", "running", 0, now - 10.0)
    beats.beats[("apply", "n2")] = Beat("apply", "n2", "running", 1, 3727, 0.0, "", now - 0.5, {})
    return body.view_of(beats, now - 600)  # type: ignore[arg-type]


@pytest.mark.parametrize(("decided_by", "outcome"), [
    ("c1", "failover-failed"),  # this controller's failover failed, its 'failed' step lost with the broker
    ("c1", ""),  # this controller's session ended before it could record anything (a restart with the same name)
    ("c2", "failover-failed"),  # another controller's failover failed the same way, then it lost the lease
])
def test_a_failover_that_stopped_without_recording_its_end_is_tried_again(decided_by: str, outcome: str) -> None:
    """F23 (the broker killed mid-failover): the steps on the control topic end at 'fenced', never 'failed'; the
    controller that holds the lease must not wait for that failover to end (300 s) but try it again."""
    from failover.controller import tick

    body = _controller([])
    now = 1_000_000.0
    _stopped_failover(body, decided_by, outcome, now)
    got = tick(_silent_primary_view(body, now), now)
    assert got.acts and got.target == "n2", got.sentence
    assert got.sentence.endswith(f"; trying again the failover {decided_by} began, which stopped before its end")


def test_a_failover_done_is_not_tried_again() -> None:
    from failover.controller import tick

    body = _controller([])
    now = 1_000_000.0
    _stopped_failover(body, "c1", "failover-done", now)
    got = tick(_silent_primary_view(body, now), now)
    assert not got.acts and "is in progress" in got.sentence, got.sentence
