"""``ark console`` driven by Textual's Pilot: every screen, every action, its confirmation and the signed
intent it writes (on an in-memory control topic; the real source is exercised in
tests/integration/test_console_live.py). ``ARK_UPDATE_DOCS=1`` rewrites the SVG snapshots in docs/."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from common.config import ArkConfig, parse_config
from common.control import ControlRecord
from common.errors import HandoverFailed, HandoverRefused
from common.roles import Roles, roles_of
from failover.handover import Report, Say
from ops.console.app import ArkConsole
from ops.console.dialogs import AskScreen, ConfirmScreen
from ops.console.model import ConsoleView, Feed, History, build_view, describe_state, sparkline
from ops.console.source import ConsoleSource, IntentActions
from ops.errors import DelayTooLong
from schemas.control import (
    EpochBegun,
    EpochEnded,
    HandoverStep,
    NodeFenced,
    Pause,
    Resume,
    ResyncTable,
    Retransmit,
    SetDelay,
    StandbyFrom,
    TableResynced,
)
from tests.support.memory import Headers, memory_channel

DOCS = Path(__file__).resolve().parents[2] / "docs"
NOW = 1_767_000_000.0


def _cfg() -> ArkConfig:
    pg = {"engine": "postgresql", "host": "127.0.0.1", "port": 5432, "dbname": "bank", "user": "postgres"}
    return parse_config({"group": "bank", "control_key": {"env": "ARK_CONTROL_KEY"},
                         "primary": {"name": "node1", **pg},
                         "standbys": [{"name": "node2", **pg}, {"name": "node3-delayed", "delay_seconds": 3600, **pg}],
                         "files": {"scans": {"source": "/srv/scans", "targets": [{"name": "dr", "path": "/srv/s"}]}}})


def _beat(agent: str, name: str, at: float, **over: Any) -> dict[str, Any]:
    beat: dict[str, Any] = {
        "group": "bank", "agent": agent, "name": name, "host": "db1" if agent == "capture" else "db2", "pid": 4242,
        "role": {"capture": "primary", "apply": "standby", "filesync": "sender"}[agent], "epoch": 1,
        "state": "running", "message": "", "sent_at_us": int(at * 1e6), "lag_seconds": 0.4, "db_healthy": True,
        "delay_seconds": 0.0, "applied_offset": 51233,
        "metrics": {"rows": 0.0, "host.cpu_pct": 23.0, "host.mem_used_pct": 41.0, "host.load1": 0.7,
                    "host.load5": 0.6, "host.load15": 0.5, "disk.used_pct@/": 37.0, "db.up": 1.0, "db.sessions": 12.0,
                    "db.max_connections": 100.0, "db.long_txns": 0.0, "db.oldest_txn_s": 2.0, "db.lock_waits": 1.0,
                    "log.panic": 0.0, "log.fatal": 0.0, "log.error": 2.0},
        "alerts": [], "processes": [{"name": "postgres", "pid": 900, "running": True, "cpu_pct": 12.0,
                                     "rss_bytes": 80 << 20, "uptime_s": 86400.0, "children": 14}]}
    beat.update(over)
    return beat


ENGINES = {"node1": "postgresql", "node2": "postgresql", "node3-delayed": "postgresql"}


def _rec(offset: int, body: Any, target: str, ago_s: float) -> ControlRecord:
    return ControlRecord(offset, body, target, "dba@ops1", int((NOW - ago_s) * 1e6), f"r{offset}")


def _switched_back_and_forth() -> list[ControlRecord]:
    """node1 handed the service to node2 (epoch 1), and node2 back to node1 (epoch 2, 20 minutes ago)."""
    return [_rec(10, EpochBegun(1, "node2", "node1", "switchover", 400), "node2", 3600),
            _rec(11, StandbyFrom(1, 401, "switchover"), "node1", 3599),
            _rec(20, HandoverStep("switchover", 2, "started", "node2 -> node1", 0.0), "node1", 1201),
            _rec(21, NodeFenced(1, "read-only (switchover)", 0), "node2", 1201),
            _rec(22, EpochEnded(1, "node1", 900, "0/3000060"), "node2", 1200.5),
            _rec(23, EpochBegun(2, "node1", "node2", "switchover", 900), "node1", 1200),
            _rec(24, StandbyFrom(2, 901, "switchover"), "node2", 1200)]


def _view(roles: Roles | None = None, status_over: dict[str, Any] | None = None,
          beat_over: dict[tuple[str, str], dict[str, Any]] | None = None) -> ConsoleView:
    """A group of one primary, a real-time standby and a delayed one, after ten minutes of heartbeats (in epoch
    2 after two switchovers, unless ``roles`` says otherwise)."""
    history, feed = History(), Feed()
    for i in range(120):
        at = NOW - 600 + i * 5
        history.add_beat(_beat("capture", "node1", at, metrics={"rows": i * 900.0}))
        history.add_beat(_beat("apply", "node2", at, lag_seconds=0.3 + (i % 17) / 10, metrics={"rows": i * 880.0}))
        history.add_beat(_beat("apply", "node3-delayed", at, lag_seconds=3600 + i % 5, metrics={"rows": i * 850.0}))
    error = {"at_us": int((NOW - 30) * 1e6), "severity": "ERROR", "source": "node1 server.log",
             "text": "2026-12-29 09:19:30 UTC [4711] ERROR:  canceling statement due to lock timeout"}
    feed.add_beat(_beat("apply", "node2", NOW - 200))
    feed.add_beat(_beat("apply", "node2", NOW - 100, state="retrying",
                        message="standby restarting: connection refused"))
    feed.add_beat(_beat("apply", "node2", NOW - 90))
    feed.add_beat(_beat("capture", "node1", NOW - 30, alerts=[error]))
    feed.add_records([
        ControlRecord(1, Retransmit("0/16B3748", b"k", 1042, "CRC mismatch"), "node2", "ark", int((NOW - 80) * 1e6),
                      "a"),
        ControlRecord(2, TableResynced("public.history", "r", "0/17000A0", 5000, 12), "node2", "ark",
                      int((NOW - 60) * 1e6), "b"),
        ControlRecord(3, SetDelay(3600), "node3-delayed", "dba@ops1", int((NOW - 40) * 1e6), "c")])
    status = {
        "group": "bank", "redo_end_offset": 51234, "warnings": [],
        "capture": {"node": "node1", "state": "running", "source_position": "0/1A2B3C4D", "produced_offset": 51233,
                    "message": "", "stalled": ""},
        "standbys": [
            {"name": "node2", "state": "running", "delay_seconds": 0.0, "applied_position": "0/1A2B3C4D",
             "applied_offset": 51233, "lag_entries": 0, "lag_seconds": 0.4, "applied_commit_time":
             "2026-12-29T09:19:59.600Z", "message": ""},
            {"name": "node3-delayed", "state": "delayed", "delay_seconds": 3600.0, "applied_position": "0/19000000",
             "applied_offset": 40110, "lag_entries": 11123, "lag_seconds": 3601.2, "applied_commit_time":
             "2026-12-29T08:19:58.800Z", "message": ""}]}
    beats = {("capture", "node1"): _beat("capture", "node1", NOW - 0.5, alerts=[error],
                                         metrics={**_beat("capture", "node1", 0)["metrics"],
                                                  "db.slot_retained_bytes": 3.5 * (1 << 20)}),
             ("apply", "node2"): _beat("apply", "node2", NOW - 0.4),
             ("apply", "node3-delayed"): _beat("apply", "node3-delayed", NOW - 0.7, state="delayed",
                                               delay_seconds=3600.0, applied_offset=40110),
             ("filesync", "scans"): _beat("filesync", "scans", NOW - 0.9, processes=[], alerts=[])}
    status.update(status_over or {})
    beats.update(beat_over or {})
    roles = roles if roles is not None else roles_of(_cfg(), _switched_back_and_forth())
    feed.add_records(_switched_back_and_forth())
    return build_view(status, beats, history, feed, ["scans"], now=NOW, roles=roles, engines=ENGINES)


class FakeSwitchover:
    """Stands where ops.handover.run_switchover is called: says its steps, optionally waits for ``gate`` after
    the first, then succeeds or raises what the real one raises."""

    def __init__(self, outcome: str = "done", gate: threading.Event | None = None) -> None:
        self.outcome, self.gate = outcome, gate
        self.calls: list[str] = []
        self.started = threading.Event()

    def __call__(self, target: str, say: Say) -> Report:
        self.calls.append(target)
        say(f"   started  node1 -> {target} (0.00 s)")
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(20), "the test never opened the gate"
        if self.outcome == "refused":
            raise HandoverRefused("the capture of node1 is retrying (slot busy): a switchover drains it to the end "
                                  "of the epoch; nothing was changed", fix="start 'ark capture'")
        say("    fenced  node1 read-only, 0 sessions ended after 5 s grace, log at 0/1A2B3D00 (0.31 s)")
        say("   drained  everything node1 committed is in Kafka; end-of-epoch marker at redo offset 51240 (0.52 s)")
        if self.outcome == "part-way":
            raise HandoverFailed(f"switchover to {target} stopped after the end-of-epoch marker (redo offset 51240): "
                                 f"timed out waiting for {target} to apply up to 51240",
                                 fix=f"fix that, then run 'ark switchover {target}' again: it goes on from where it "
                                     "stopped")
        say(f"  promoted  {target} is the primary of epoch 3 (0.40 s)")
        return Report("switchover", 3, "node1", target, marker_offset=51240,
                      phases={"started": 0.0, "fenced": 0.31, "drained": 0.52, "promoted": 0.4})


class FakeSource(ConsoleSource):
    """Canned views; actions are the real IntentActions on an in-memory control topic."""

    def __init__(self, view: ConsoleView | None = None, switchover: FakeSwitchover | None = None) -> None:
        self.store: list[tuple[bytes, Headers]] = []
        self.switchover = switchover or FakeSwitchover()
        self.verified: list[str] = []

        def verify(name: str) -> tuple[dict[str, Any], int]:
            self.verified.append(name)
            return {"verdict": "equal", "position": "0/1A2B3C4D", "tables": [
                {"table": "public.accounts", "verdict": "equal"}, {"table": "public.history", "verdict": "equal"}]}, 0

        def check_delay(_cfg: ArkConfig, seconds: float) -> str | None:
            if seconds > 86400:  # as the real check refuses a delay the redo topic's retention cannot hold
                raise DelayTooLong("the redo topic keeps 24 h: too short for that delay", fix="raise retention")
            return None

        self.actions = IntentActions(_cfg(), memory_channel(self.store, group="bank"), verify, check_delay,
                                     self.switchover)
        self.view = view or _view()
        self.snapshots = 0

    def snapshot(self) -> ConsoleView:
        self.snapshots += 1
        return self.view

    def written(self) -> list[ControlRecord]:
        return memory_channel(self.store, group="bank").replay()


def _run(source: FakeSource, size: tuple[int, int], steps: Callable[[ArkConsole, Pilot[None]], Awaitable[None]]
         ) -> None:
    async def main() -> None:
        app = ArkConsole(source, refresh_s=0)
        async with app.run_test(size=size) as pilot:
            await _settle(app, pilot)
            await steps(app, pilot)

    asyncio.run(main())


async def _settle(app: ArkConsole, pilot: Pilot[None]) -> None:
    """Wait until the workers (refresh, actions) are done and the screen is drawn."""
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


def _text(app: ArkConsole, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def _cells(app: ArkConsole, selector: str) -> list[list[str]]:
    table = app.query_one(selector, DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def _snapshot(app: ArkConsole, name: str, tmp_path: Path) -> str:
    svg = app.export_screenshot(title="ark console")
    (tmp_path / name).write_text(svg)
    if os.environ.get("ARK_UPDATE_DOCS"):
        (DOCS / name).write_text(svg)
    return svg


# -- the model ---------------------------------------------------------------------------------------
def test_sparklines_fold_to_their_width_and_keep_spikes() -> None:
    assert sparkline([], 5) == "     "
    assert sparkline([0.0, 1.0], 4) == "  ▁█"
    folded = sparkline([0.0] * 50 + [10.0] + [0.0] * 49, 10)
    assert len(folded) == 10 and folded.count("█") == 1
    assert sparkline([None, 2.0, None], 3) == " █ "


def test_states_read_as_an_operator_says_them() -> None:
    assert describe_state("awaiting-retransmit", "") == "waiting for retransmit"
    assert describe_state("running", "public.history resyncing: copying 5000 rows") == "resyncing public.history"
    assert describe_state("error", "data error") == "stopped"
    assert describe_state("paused", "") == "paused"


def test_the_feed_carries_quarantines_resyncs_intents_state_changes_and_alerts() -> None:
    kinds = [(e.kind, e.severity) for e in _view().events]
    assert ("quarantine", "warn") in kinds and ("resync", "info") in kinds and ("intent", "info") in kinds
    assert ("agent", "warn") in kinds and ("alert", "warn") in kinds
    texts = " ".join(e.text for e in _view().events)
    assert "apply node2: running → retrying: standby restarting" in texts and "lock timeout" in texts


# -- the screens -------------------------------------------------------------------------------------
def test_group_screen_in_80x24_shows_topology_standbys_and_capture(tmp_path: Path) -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        rows = _cells(app, "#standbys")
        assert [r[0] for r in rows] == ["node2", "node3-delayed"]
        assert rows[0][1] == "running" and rows[1][1] == "delayed" and rows[1][2] == "3600"
        assert rows[1][3] == "3601.2" and rows[1][4] == "11123"
        assert float(rows[0][5]) > 100  # rows/s from the heartbeats' counters
        assert any(ch in rows[0][6] for ch in "▂▃▄▅▆▇█")  # the lag sparkline
        topo = _text(app, "#topology")
        assert "epoch 2: primary node1 (after a switchover from node2) since " in topo
        assert "node1 [primary] → capture running → redo topic" in topo
        assert "└→ node2 [standby] running, real time" in topo
        assert "└→ node3-delayed [standby] delayed, delay 3600 s" in topo
        assert "files scans: scans sender running" in topo
        cap = _text(app, "#capture")
        assert "0/1A2B3C4D" in cap and "redo offset 51233" in cap and "log held 3.5 MiB" in cap
        svg = _snapshot(app, "console-group.svg", tmp_path)
        assert "node3-delayed" in svg

    _run(FakeSource(), (80, 24), steps)


def test_a_wide_terminal_shows_more_columns_and_longer_sparklines() -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        table = app.query_one("#standbys", DataTable)
        labels = [str(c.label) for c in table.columns.values()]
        assert "applied position" in labels and "last commit" in labels
        assert len(_cells(app, "#standbys")[0][6]) > 20
        await pilot.resize_terminal(80, 24)
        await _settle(app, pilot)
        assert "applied position" not in [str(c.label) for c in table.columns.values()]

    _run(FakeSource(), (160, 40), steps)


def test_agents_screen_shows_health_host_database_processes_and_alerts(tmp_path: Path) -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("2")
        await _settle(app, pilot)
        rows = _cells(app, "#agents-table")
        assert [(r[0], r[1]) for r in rows] == [("apply", "node2"), ("apply", "node3-delayed"), ("capture", "node1"),
                                                ("filesync", "scans")]
        assert rows[0][4:11] == ["23", "41", "0.70", "37", "12", "1", "2"]
        await pilot.press("down", "down")  # the capture
        await _settle(app, pilot)
        detail = _text(app, "#agent-detail")
        assert "capture node1 on db1" in detail and "sessions 12/100" in detail and "slot holds 3.5 MiB" in detail
        assert "process postgres pid 900: running" in detail and "14 children" in detail
        assert "lock timeout" in detail and "2 ERROR since the agent started" in detail
        _snapshot(app, "console-agents.svg", tmp_path)

    _run(FakeSource(), (100, 30), steps)


def test_events_screen_lists_the_feed_newest_first(tmp_path: Path) -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("3")
        await _settle(app, pilot)
        rows = _cells(app, "#events-table")
        assert rows[0][2] == "alert" and "lock timeout" in rows[0][3]
        kinds = [r[2] for r in rows]
        assert {"quarantine", "resync", "intent", "agent"} <= set(kinds)
        _snapshot(app, "console-events.svg", tmp_path)

    _run(FakeSource(), (100, 30), steps)


def test_what_the_console_cannot_see_is_said() -> None:
    view = _view()
    view.blind = ["standby node2 is not running: connection refused"]
    view.kafka_ok = True

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        banner = _text(app, "#banner")
        assert "cannot see: standby node2 is not running: connection refused" in banner

    _run(FakeSource(view), (80, 24), steps)


# -- the actions -------------------------------------------------------------------------------------
def test_pause_asks_first_and_writes_a_signed_pause_intent(tmp_path: Path) -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("p")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Pause apply on node2?" in _text(app, "#question")
        _snapshot(app, "console-confirm.svg", tmp_path)
        assert source.written() == []  # nothing before the answer
        await pilot.press("y")
        await _settle(app, pilot)
        written = source.written()
        assert [(type(r.body), r.target, r.issued_by) for r in written] == [(Pause, "node2", "test@host")]
        assert app.last_action.startswith("pause of node2: intent written (request ")

    _run(source, (80, 24), steps)


def test_no_writes_nothing_and_enter_alone_does_not_confirm() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("p", "enter")  # the focused button is No
        await _settle(app, pilot)
        await pilot.press("r", "n")
        await _settle(app, pilot)
        await pilot.press("r", "escape")
        await _settle(app, pilot)
        assert source.written() == []
        assert app.last_action == "resume of node2: cancelled, nothing written"

    _run(source, (80, 24), steps)


def test_resume_on_the_selected_standby() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("down", "r", "y")
        await _settle(app, pilot)
        assert [(type(r.body), r.target) for r in source.written()] == [(Resume, "node3-delayed")]

    _run(source, (80, 24), steps)


def test_delay_asks_for_seconds_refuses_nonsense_then_writes_set_delay() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("down", "d")
        await pilot.pause()
        assert isinstance(app.screen, AskScreen)
        await pilot.press("ctrl+a", "ctrl+k", "-", "5", "enter")
        await pilot.pause()
        assert "cannot be negative" in _text(app, "#error")
        await pilot.press("ctrl+a", "ctrl+k", "a", "b", "enter")
        await pilot.pause()
        assert "give seconds" in _text(app, "#error")
        await pilot.press("ctrl+a", "ctrl+k", "1", "2", "0", "enter")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        assert "Set the apply delay of node3-delayed to 120 s?" in _text(app, "#question")
        await pilot.press("y")
        await _settle(app, pilot)
        written = source.written()
        assert len(written) == 1 and written[0].body == SetDelay(120.0) and written[0].target == "node3-delayed"
        await pilot.press("d", "ctrl+a", "ctrl+k", *"999999", "enter", "y")  # beyond retention: refused, like the CLI
        await _settle(app, pilot)
        assert "not done: the redo topic keeps 24 h" in app.last_action and len(source.written()) == 1

    _run(source, (80, 24), steps)


def test_resync_asks_for_a_table_then_writes_resync_table() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, AskScreen)
        await pilot.press(*"history", "enter")
        await pilot.pause()
        assert "Resync table public.history on node2?" in _text(app, "#question")
        await pilot.press("y")
        await _settle(app, pilot)
        written = source.written()
        assert [(r.body, r.target) for r in written] == [(ResyncTable("public.history"), "node2")]

    _run(source, (80, 24), steps)


def test_verify_asks_then_runs_and_shows_the_verdict() -> None:
    source = FakeSource()

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("v")
        await pilot.pause()
        assert "Verify node2 against the primary?" in _text(app, "#question")
        assert source.verified == []
        await pilot.press("y")
        await _settle(app, pilot)
        assert source.verified == ["node2"]
        assert app.last_action.startswith("verify of node2: equal at 0/1A2B3C4D (2 tables")
        await pilot.press("3")
        await _settle(app, pilot)
        assert any("verify of node2: equal" in r[3] for r in _cells(app, "#events-table"))

    _run(source, (80, 24), steps)


def test_an_action_that_fails_says_why_and_writes_nothing() -> None:
    source = FakeSource()
    source.actions.cfg = parse_config({**_cfg().model_dump(mode="json", exclude={"source_path"}),
                                       "standbys": []})  # node2 vanished from the config

    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        await pilot.press("p", "y")
        await _settle(app, pilot)
        assert "pause of node2: not done: no standby named 'node2'" in app.last_action
        assert source.written() == []

    _run(source, (80, 24), steps)


def test_the_console_refreshes_by_itself() -> None:
    source = FakeSource()

    async def main() -> None:
        app = ArkConsole(source, refresh_s=0.05)
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 10
            while source.snapshots < 3 and time.monotonic() < deadline:
                await pilot.pause(0.05)
            assert source.snapshots >= 3

    asyncio.run(main())


@pytest.mark.parametrize("size", [(120, 40)])
def test_every_tab_renders_at_the_usual_sizes(size: tuple[int, int]) -> None:
    async def steps(app: ArkConsole, pilot: Pilot[None]) -> None:
        for key in ("2", "3", "1"):
            await pilot.press(key)
            await _settle(app, pilot)
            assert app.export_screenshot()

    _run(FakeSource(), size, steps)


def test_with_kafka_down_the_console_shows_the_databases_view_and_says_what_it_cannot_see(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import ops.status_offline as offline
    from ops.console.source import GroupSource

    doc = {"primary": {"node": "node1", "summary": "slot ark_bank active, WAL held 1.0 MiB", "message": "",
                       "current_position": "0/5000000"},
           "standbys": [{"name": "node2", "state": "applied", "applied_position": "0/4000000", "applied_offset": 41,
                         "commit_age_seconds": 12.5, "message": ""},
                        {"name": "node3-delayed", "state": "database unreachable", "applied_position": "",
                         "applied_offset": -1, "commit_age_seconds": None, "message": "connection refused"}]}
    monkeypatch.setattr(offline, "probe", lambda cfg, timeout=5.0: "Kafka at 127.0.0.1:9 is unreachable")
    monkeypatch.setattr(offline, "gather_offline", lambda cfg, reason: doc)
    view = GroupSource(_cfg()).snapshot()
    assert view.kafka_ok is False
    assert view.blind[0].startswith("Kafka unreachable (Kafka at 127.0.0.1:9 is unreachable)")
    assert "standby node3-delayed: connection refused" in view.blind
    assert [(s.name, s.lag_s) for s in view.standbys] == [("node2", 12.5), ("node3-delayed", None)]
    assert view.capture["stalled"] == "slot ark_bank active, WAL held 1.0 MiB"
