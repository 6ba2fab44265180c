"""``ark console``: roles and epochs in the topology, handovers in the feed, and the switchover action (decision
first, confirmation only on "go", the run in a worker thread with its steps and outcome), driven by Textual's
Pilot with the fake source of test_console.py and a fake switchover runner where ops.handover.run_switchover is
called. The roles' refresh is checked on GroupSource with an in-memory control topic."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot

from common.roles import roles_of
from ops.console.app import ArkConsole
from ops.console.dialogs import ConfirmScreen, HelpScreen
from ops.console.model import ConsoleView, switchover_decision, topology_lines
from schemas.control import EpochBegun, HandoverStep, StandbyFrom
from tests.support.memory import memory_channel
from tests.unit.test_console import (
    NOW,
    FakeSource,
    FakeSwitchover,
    _beat,
    _cells,
    _cfg,
    _rec,
    _run,
    _settle,
    _snapshot,
    _switched_back_and_forth,
    _text,
    _view,
)


def _failed_over() -> ConsoleView:
    """node1 (the configured primary) was failed over from: node2 is primary of epoch 1, node1 is demoted."""
    roles = roles_of(_cfg(), [_rec(10, EpochBegun(1, "node2", "node1", "failover", 700), "node2", 300)])
    status = {"capture": {"node": "node2", "state": "running", "source_position": "0/2000000", "produced_offset": 900,
                          "message": "", "stalled": ""},
              "standbys": [{"name": "node1", "role": "demoted", "state": "demoted", "delay_seconds": 0.0,
                            "applied_position": "", "applied_offset": -1, "lag_entries": None, "lag_seconds": None,
                            "message": ""},
                           {"name": "node3-delayed", "role": "standby", "state": "delayed", "delay_seconds": 3600.0,
                            "applied_position": "0/19000000", "applied_offset": 600, "lag_entries": 300,
                            "lag_seconds": 3600.5, "message": ""}]}
    return _view(roles, status, {("capture", "node2"): _beat("capture", "node2", NOW - 0.5)})


async def _until(app: ArkConsole, pilot: Pilot[None], what: str, check: Any, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {app.last_action}"
        await pilot.pause(0.02)


# -- the topology ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_the_topology_shows_roles_the_epoch_since_when_who_feeds_whom_and_delays(size: tuple[int, int]) -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        topo = _text(app, "#topology").splitlines()
        since = time.strftime("%m-%d %H:%M:%S", time.localtime(NOW - 1200))  # the console's local time
        assert topo[0] == f"epoch 2: primary node1 (after a switchover from node2) since {since}"
        assert topo[1] == "node1 [primary] → capture running → redo topic"
        assert "  └→ node2 [standby] running, real time" in topo
        assert "  └→ node3-delayed [standby] delayed, delay 3600 s" in topo
        svg = app.export_screenshot()
        assert "epoch&#160;2" in svg and "node3-delayed&#160;[standby]" in svg  # on screen, not just in the widget

    _run(FakeSource(), size, steps)


def test_a_failed_over_group_shows_the_new_primary_and_the_demoted_one_with_its_fix() -> None:
    lines = topology_lines(_failed_over())
    assert lines[0].startswith("epoch 1: primary node2 (after a failover from node1) since ")
    assert lines[1] == "node2 [primary] → capture running → redo topic"
    assert "  ✗ node1 [demoted: former primary; 'ark reinstate node1' makes it a standby]" in lines
    decision = switchover_decision(_failed_over(), "node1")
    assert not decision.go and "node1 is demoted" in decision.sentence
    assert decision.fix == "run 'ark reinstate node1' first"


def test_handovers_and_epochs_are_in_the_feed() -> None:
    texts = [(e.kind, e.text) for e in _view().events]
    assert ("switchover", "epoch 2: started: node2 -> node1") in texts
    assert ("fenced", "node2 fenced in epoch 1: read-only (switchover), 0 sessions ended") in texts
    assert any(k == "epoch" and t.startswith("epoch 1 ended at 0/3000060: marker at redo offset 900") for k, t in texts)
    assert any(k == "epoch" and t.startswith("epoch 2 begins: node1 is primary (after a switchover from node2")
               for k, t in texts)
    assert ("role", "node2 applies as a standby of epoch 2 from redo offset 901 (switchover)") in texts


def test_a_switchover_done_elsewhere_shows_at_the_next_refresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """GroupSource replays the control topic once, then folds each refresh's records into the roles and the feed
    (one consumer: the feed's)."""
    import ops.console.source as source_mod

    store: list[Any] = []
    elsewhere = memory_channel(store, group="bank")
    for rec in _switched_back_and_forth():
        elsewhere.publish(rec.body, rec.target)
    opened: list[int | None] = []

    def for_config(_cfg: Any, *, start: int | None = 0) -> Any:
        opened.append(start)
        return memory_channel(store, group="bank", start=start or 0)

    monkeypatch.setattr(source_mod.ControlChannel, "for_config", staticmethod(for_config))
    src = source_mod.GroupSource(_cfg())
    src._read_control()
    assert src.roles is not None and (src.roles.epoch, src.roles.primary) == (2, "node1")
    elsewhere.publish(HandoverStep("switchover", 3, "started", "node1 -> node2", 0.0), "node1")
    elsewhere.publish(EpochBegun(3, "node2", "node1", "switchover", 2000), "node2")
    elsewhere.publish(StandbyFrom(3, 2001, "switchover"), "node1")
    src._read_control()
    assert (src.roles.epoch, src.roles.primary, src.roles.role_of("node1")) == (3, "node2", "standby")
    assert any(e.text.startswith("epoch 3 begins: node2 is primary") for e in src.feed.events)
    assert opened == [0]  # replayed once, then followed


# -- the switchover action -------------------------------------------------------------------------------
def test_a_refused_switchover_shows_the_decision_and_runs_nothing() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("down", "s")  # node3-delayed applies an hour behind
        await _settle(app, pilot)
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.last_action == (
            "switchover to node3-delayed refused: node3-delayed applies with a delay of 3600 s: it would reach the "
            "end of the epoch only that much later, with the primary read-only meanwhile; nothing was changed (fix: "
            "'ark delay node3-delayed 0' first, or switch over to a real-time standby)")
        assert source.switchover.calls == [] and source.written() == []
        await pilot.press("3")
        await _settle(app, pilot)
        assert any("switchover to node3-delayed refused" in r[3] for r in _cells(app, "#events-table"))

    _run(source, (80, 24), steps)


def test_a_switchover_without_a_running_capture_is_refused() -> None:
    view = _view(beat_over={("capture", "node1"): _beat("capture", "node1", NOW - 30)})  # its last beat is old
    source = FakeSource(view)

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("s")
        await _settle(app, pilot)
        assert app.last_action.startswith("switchover to node2 refused: the capture of node1 is not running: ")
        assert "(fix: start 'ark capture'" in app.last_action
        assert source.switchover.calls == [] and source.written() == []

    _run(source, (80, 24), steps)


def test_no_at_the_confirmation_runs_nothing(tmp_path: Path) -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("s")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert _text(app, "#question") == "Switch over from node1 to node2?"
        detail = _text(app, "#detail")
        assert detail.startswith("switchover from node1 to node2: epoch 2 ends, epoch 3 begins with node2, and node1 "
                                 "becomes its standby.")
        assert "node3-delayed (standby) follows the new primary by itself" in detail
        assert "Runs 'ark switchover node2'" in detail
        _snapshot(app, "console-switchover-confirm.svg", tmp_path)
        await pilot.press("enter")  # the focused button is No
        await _settle(app, pilot)
        await pilot.press("s", "n")
        await _settle(app, pilot)
        await pilot.press("s", "escape")
        await _settle(app, pilot)
        assert app.last_action == "switchover to node2: cancelled, nothing changed"
        assert source.switchover.calls == [] and source.written() == []

    _run(source, (80, 24), steps)


def test_yes_runs_the_switchover_once_and_shows_its_steps_and_outcome(tmp_path: Path) -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("s", "y")
        await _until(app, pilot, "the outcome", lambda: app.switchover.running is None and "done" in app.last_action)
        await _settle(app, pilot)
        assert source.switchover.calls == ["node2"]
        assert app.last_action == "switchover to node2 done in 1.23 s: node2 is the primary of epoch 3"
        said = "\n".join(app.switchover.lines)
        for line in ("switchover to node2 started", "started  node1 -> node2", "fenced  node1 read-only",
                     "end-of-epoch marker at redo offset 51240", "promoted  node2 is the primary of epoch 3",
                     "switchover to node2 done in 1.23 s"):
            assert line in said, line
        panel = _text(app, "#handover")  # the last lines: 80x24 keeps the standbys in sight
        assert "last switchover from this console" in panel and "promoted  node2" in panel
        assert "switchover to node2 done in 1.23 s" in panel and "started  node1" not in panel
        _snapshot(app, "console-switchover-done.svg", tmp_path)
        await pilot.press("3")
        await _settle(app, pilot)
        assert any(r[3].startswith("switchover to node2 done") for r in _cells(app, "#events-table"))

    _run(source, (80, 24), steps)


def test_while_a_switchover_runs_the_console_answers_and_a_second_one_is_refused() -> None:
    gate = threading.Event()
    source = FakeSource(switchover=FakeSwitchover(gate=gate))

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("s", "y")
        await _until(app, pilot, "the first step", lambda: "started  node1 -> node2" in _text(app, "#handover"))
        assert app.switchover.running == "node2"
        before = source.snapshots
        await pilot.press("f5", "2", "1")  # responsive: tabs change, a refresh runs
        await _until(app, pilot, "a refresh", lambda: source.snapshots > before)
        await pilot.press("s")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert app.last_action.startswith("switchover not started: the switchover to node2 is still running")
        await pilot.press("q")  # leaving would hide the outcome
        await pilot.pause()
        assert app.is_running
        gate.set()
        await _until(app, pilot, "the outcome", lambda: app.switchover.running is None)
        assert source.switchover.calls == ["node2"]
        assert app.last_action.startswith("switchover to node2 done")

    _run(source, (80, 24), steps)


@pytest.mark.parametrize(("outcome", "said"), [
    ("refused", "switchover to node2 refused (exit 41): the capture of node1 is retrying (slot busy): a switchover "
                "drains it to the end of the epoch; nothing was changed (fix: start 'ark capture')"),
    ("part-way", "switchover to node2 stopped part-way (exit 42): switchover to node2 stopped after the end-of-epoch "
                 "marker (redo offset 51240): timed out waiting for node2 to apply up to 51240 (fix: fix that, then "
                 "run 'ark switchover node2' again: it goes on from where it stopped)")])
def test_a_switchover_refused_or_stopped_by_the_run_says_so_with_its_exit_code_and_fix(outcome: str,
                                                                                       said: str) -> None:
    source = FakeSource(switchover=FakeSwitchover(outcome))

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("s", "y")
        await _until(app, pilot, "the outcome", lambda: app.switchover.running is None and "exit" in app.last_action)
        assert app.last_action == said
        assert _text(app, "#handover").splitlines()[-1] == said
        await pilot.press("s")  # another may start now
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)

    _run(source, (80, 24), steps)


def test_help_lists_the_keys_and_says_why_failover_is_not_offered() -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        text = _text(app, "#help")
        assert "s            switch over to the selected standby" in text
        assert "Failover is deliberately not offered here" in text and "'ark failover TARGET --dry-run'" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)

    _run(FakeSource(), (80, 24), steps)


def test_with_kafka_down_the_roles_are_the_last_read_and_no_switchover_is_offered() -> None:
    view = _view()
    view.kafka_ok = False
    assert topology_lines(view)[0].endswith("(as last read: Kafka is unreachable)")
    decision = switchover_decision(view, "node2")
    assert not decision.go and "cannot read the control topic" in decision.sentence
