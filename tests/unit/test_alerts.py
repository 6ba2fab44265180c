"""Events and the alert command: which records are events, which alert, the command's environment and stdin, the
timeout kill, the one retry, and no second alert for an event after a restart or a takeover."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.automation_settings import DEFAULT_ALERT_KINDS, AlertSettings
from common.config import parse_config
from common.control import ControlRecord
from common.errors import ConfigError
from common.events import Event, event_of
from failover.alerts import AlertCursor, Alerter, Outcome, run_alert, run_once
from failover.automation import Controller
from failover.controller import Settings
from schemas.control import AlertSent, ControllerDecision, NodeFenced, NodeState, SetDelay
from tests.support.memory import memory_channel

NOW_US = time.time_ns() // 1000


def rec(offset: int, body: Any, target: str = "", at_us: int = NOW_US) -> ControlRecord:
    return ControlRecord(offset, body, target, "test@host", at_us, f"r{offset}")


def event(offset: int = 7, kind: str = "node-failed", at_us: int = NOW_US) -> Event:
    return Event(offset, at_us, kind, "n1", "n1 failed after its local restarts (query: login failed)", 3, "c1")


# -- which records are events ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "target", "kind"), [
    (ControllerDecision("failover", 2, "primary n1 silent for 6.0 s: failing over to n2", "c1"), "n2", "failover"),
    (ControllerDecision("failover-done", 3, "n2 is the primary of epoch 3", "c1"), "n2", "failover-done"),
    (ControllerDecision("failover-failed", 2, "n2 did not apply in time", "c1"), "n2", "failover-failed"),
    (ControllerDecision("active", 2, "c1 is the active controller", "c1"), "", "controller-active"),
    (ControllerDecision("error", 2, "controller c1: RuntimeError: boom", "c1"), "", "controller-error"),
    (NodeState("failed", "restarting", "primary", 2, "query: login failed; 3 local restart(s)"), "n1", "node-failed"),
    (NodeState("restarting", "healthy", "primary", 2, "restarting the database, try 1 of 3"), "n1",
     "node-restarting"),
    (NodeState("healthy", "restarting", "primary", 2, "all checks pass"), "n1", "node-recovered"),
    (NodeState("healthy", "starting", "standby", 2, "all checks pass"), "n1", None),
    (NodeFenced(2, "read-only (self-fenced: Kafka unreachable)", 4), "n1", "node-fenced"),
    (NodeFenced(2, "read-only (switchover)", 0), "n1", "handover-fence"),
    (SetDelay(30.0), "n2", None),
])
def test_which_records_are_events(body: Any, target: str, kind: str | None) -> None:
    found = event_of(rec(5, body, target))
    assert (found.kind if found else None) == kind
    if found is not None:
        assert found.offset == 5 and found.node == (target or "c1") and found.message


def test_the_default_kinds_are_those_that_need_a_human() -> None:
    assert DEFAULT_ALERT_KINDS == ("failover", "failover-done", "failover-failed", "node-failed", "node-fenced",
                                   "controller-error")


# -- the command: environment, stdin, timeout, retry ----------------------------------------------------------
def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "alert.sh"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_the_command_gets_the_event_as_variables_and_json_but_no_secret(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARK_CONTROL_KEY", "k" * 64)
    monkeypatch.setenv("ARK_PRIMARY_PASSWORD", "hunter2")
    out = tmp_path / "out"
    cmd = script(tmp_path, f'env > {out}.env\ncat > {out}.json\n')
    ok, said = run_once((cmd,), event(), "bank", 5.0)
    assert ok and said == "exited 0"
    env = dict(line.split("=", 1) for line in (tmp_path / "out.env").read_text().splitlines() if "=" in line)
    assert env["ARK_GROUP"] == "bank" and env["ARK_EVENT_KIND"] == "node-failed" and env["ARK_EVENT_NODE"] == "n1"
    assert env["ARK_EVENT_MESSAGE"].startswith("n1 failed") and env["ARK_EVENT_TIME"].endswith("Z")
    assert "ARK_CONTROL_KEY" not in env and "ARK_PRIMARY_PASSWORD" not in env and "hunter2" not in str(env)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert doc == {"group": "bank", "kind": "node-failed", "node": "n1", "time": env["ARK_EVENT_TIME"],
                   "message": env["ARK_EVENT_MESSAGE"], "epoch": 3, "offset": 7, "by": "c1"}


def test_a_hanging_command_is_killed_with_its_children_at_the_timeout(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    cmd = script(tmp_path, f"sleep 60 &\necho $! > {pids}\nsleep 60\n")
    started = time.monotonic()
    ok, said = run_once((cmd,), event(), "bank", 0.5)
    took = time.monotonic() - started
    assert not ok and said == "did not finish in 0.5 s (killed)" and took < 5
    child = int(pids.read_text())

    def gone() -> bool:
        try:
            return psutil.Process(child).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 5  # SIGKILL is delivered asynchronously: wait for the condition, bounded
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert gone(), "the command's child outlived the kill of its process group"


def test_a_failing_command_says_its_status_and_last_error_line(tmp_path: Path) -> None:
    cmd = script(tmp_path, "echo first >&2\necho 'webhook answered 503' >&2\nexit 3\n")
    assert run_once((cmd,), event(), "bank", 5.0) == (False, "exited 3: webhook answered 503")
    assert run_once((str(tmp_path / "missing"),), event(), "bank", 5.0)[1].startswith("could not run")


def test_a_failed_run_is_retried_once_and_only_once() -> None:
    settings = AlertSettings(command="/bin/page", timeout_s=1)
    answers = [(False, "exited 1"), (True, "exited 0")]
    calls: list[int] = []

    def run(argv: tuple[str, ...], ev: Event, group: str, timeout: float) -> tuple[bool, str]:
        calls.append(ev.offset)
        return answers.pop(0)

    assert run_alert(settings, event(), "g", run=run, sleep=lambda _s: None) == Outcome(True, "exited 0", 2)
    answers[:] = [(False, "exited 1"), (False, "did not finish in 1 s (killed)"), (True, "never asked")]
    out = run_alert(settings, event(), "g", run=run, sleep=lambda _s: None)
    assert not out.ok and out.attempts == 2 and out.said == "exited 1; retried: did not finish in 1 s (killed)"
    assert len(calls) == 4


# -- the cursor: once per event, across restarts and takeovers ------------------------------------------------
KINDS = DEFAULT_ALERT_KINDS
FAILED = NodeState("failed", "restarting", "primary", 0, "3 local restart(s) did not help")


def test_a_group_that_never_alerted_starts_at_the_end_of_the_topic() -> None:
    backlog = [rec(0, FAILED, "n1"), rec(1, SetDelay(3.0), "n2")]
    cursor = AlertCursor.of(KINDS, backlog, end=2)
    assert cursor.due() == []
    cursor.update([rec(2, FAILED, "n1"), rec(3, NodeState("restarting", "healthy", "primary", 0, "try 1"), "n1")])
    assert [e.offset for e in cursor.due()] == [2]  # node-restarting is not among the default kinds


def test_a_restarted_controller_alerts_only_what_was_not_alerted_yet() -> None:
    backlog = [rec(0, FAILED, "n1"), rec(1, AlertSent(0, "node-failed", "exited 0", 1, "c1"), "n1"),
               rec(2, ControllerDecision("failover", 0, "failing over to n2", "c1"), "n2"),
               rec(3, ControllerDecision("failover-done", 1, "n2 is the primary", "c1"), "n2")]
    cursor = AlertCursor.of(KINDS, backlog, end=4)
    assert [(e.offset, e.kind) for e in cursor.due()] == [(2, "failover"), (3, "failover-done")]
    cursor.update([rec(4, AlertSent(3, "failover-done", "exited 0", 1, "c2"), "n2")])  # the other controller
    assert cursor.due() == []
    cursor.update([rec(2, ControllerDecision("failover", 0, "again, replayed", "c1"), "n2")])
    assert cursor.due() == [], "an event at or below the last alerted offset never alerts again"


# -- the worker: never blocks, once per event, only while allowed ---------------------------------------------
def test_the_worker_runs_each_event_once_and_records_it() -> None:
    ran: list[int] = []
    recorded: list[tuple[int, str]] = []
    alerter = Alerter(AlertSettings(command="x"), "g", record=lambda e, o: recorded.append((e.offset, o.said)),
                      run=lambda e: ran.append(e.offset) or Outcome(True, "exited 0", 1))
    try:
        for _ in range(3):
            alerter.offer(event(7))
        alerter.offer(event(8, "failover"))
        assert alerter.idle(5)
        assert ran == [7, 8] and recorded == [(7, "exited 0"), (8, "exited 0")]
        assert alerter.counts["sent"] == 2
    finally:
        alerter.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_tick() -> None:
    gate = threading.Event()
    alerter = Alerter(AlertSettings(command="x"), "g", record=lambda e, o: None,
                      run=lambda e: gate.wait(10) and Outcome(True, "exited 0", 1) or Outcome(False, "x", 1))
    try:
        started = time.monotonic()
        for offset in range(150):
            alerter.offer(event(offset))
        assert time.monotonic() - started < 1.0
        assert alerter.counts["dropped"] >= 49
    finally:
        gate.set()
        alerter.close()


def test_nothing_runs_without_the_lease_and_old_events_are_skipped() -> None:
    ran: list[int] = []
    recorded: list[str] = []
    allowed = {"yes": False}
    alerter = Alerter(AlertSettings(command="x"), "g", record=lambda e, o: recorded.append(o.said),
                      may_run=lambda: allowed["yes"], run=lambda e: ran.append(e.offset) or Outcome(True, "ok", 1))
    try:
        alerter.offer(event(1))
        assert alerter.idle(5) and ran == [] and recorded == []  # the next lease holder alerts it
        allowed["yes"] = True
        alerter.offer(event(2, at_us=time.time_ns() // 1000 - 2 * 3600 * 10**6))  # now, not at import: no drift
        assert alerter.idle(5) and ran == [] and recorded == ["skipped: 120 min old"]
    finally:
        alerter.close()


# -- the controller wires it: alerts only while active ----------------------------------------------------------
def _controller(alerts: dict[str, Any]) -> Controller:
    cfg = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"}, "alerts": alerts,
                        "primary": {"name": "n1", "engine": "postgresql", "tables": ["public.*"]},
                        "standbys": [{"name": "n2", "engine": "postgresql"}]})
    return Controller(cfg, lambda target: None, settings=Settings(), name="c1")


def test_the_active_controller_alerts_new_events_and_records_them(tmp_path: Path) -> None:
    out = tmp_path / "alerts.log"
    body = _controller({"command": [script(tmp_path, f'echo "$ARK_EVENT_KIND $ARK_EVENT_NODE" >> {out}\n')]})
    store: list[Any] = []
    channel = memory_channel(store)
    channel.publish(FAILED, "n1")  # history: not paged when the controller starts
    body.attach(channel, channel.replay())
    body.lease = type("L", (), {"active": lambda self: True})()  # type: ignore[assignment]
    writer = memory_channel(store)
    writer.publish(NodeState("failed", "restarting", "primary", 0, "login failed"), "n1")
    writer.publish(NodeState("restarting", "healthy", "primary", 0, "try 1"), "n1")
    body._fold(channel.poll())
    body._offer_alerts(active=False)  # standing by: nothing runs
    assert body.alerter is not None and body.alerter.idle(5) and not out.exists()
    body._offer_alerts(active=True)
    assert body.alerter.idle(10)
    channel.flush_later(10)
    assert out.read_text() == "node-failed n1\n"
    sent = [r.body for r in memory_channel(store).poll() if isinstance(r.body, AlertSent)]
    assert [(s.event_offset, s.event_kind, s.outcome, s.holder) for s in sent] == [(1, "node-failed", "exited 0", "c1")]
    body.alerter.close()


# -- config ----------------------------------------------------------------------------------------------------
BASE = {"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
        "primary": {"name": "n1", "engine": "postgresql", "tables": ["public.*"]}}


@pytest.mark.parametrize(("alerts", "needle"), [
    ({"command": "/bin/page", "kinds": ["failover", "node-exploded"]}, "unknown event kind(s) node-exploded"),
    ({"command": ""}, "alerts.command: is empty"),
    ({"command": "/bin/page", "kinds": []}, "alerts.kinds"),
    ({"kinds": ["failover"]}, "alerts.command: Field required"),
    ({"command": "/bin/page", "timeout_s": 0}, "alerts.timeout_s"),
])
def test_bad_alert_settings_name_the_key(alerts: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**BASE, "alerts": alerts})
    assert needle in err.value.message


def test_alert_settings_default_and_split() -> None:
    cfg = parse_config({**BASE, "alerts": {"command": "/usr/local/bin/page-oncall --team 'dba on call'"}})
    assert cfg.alerts is not None
    assert cfg.alerts.command == ("/usr/local/bin/page-oncall", "--team", "dba on call")
    assert cfg.alerts.kinds == DEFAULT_ALERT_KINDS and cfg.alerts.timeout_s == 10


def test_ark_check_reports_a_missing_or_not_executable_command(tmp_path: Path) -> None:
    from ops.alerts_cmd import command_problem

    plain = tmp_path / "page"
    plain.write_text("#!/bin/sh\n")
    assert command_problem(AlertSettings(command=str(tmp_path / "nope"))).endswith("does not exist on this host")
    assert command_problem(AlertSettings(command=str(plain))).endswith("is not executable")
    assert command_problem(AlertSettings(command="no-such-pager-anywhere")).endswith("is not on this host's PATH")
    plain.chmod(0o755)
    assert command_problem(AlertSettings(command=str(plain))) == ""
    assert command_problem(AlertSettings(command="sh")) == "" and os.access("/bin/sh", os.X_OK)


def test_the_console_feed_shows_how_an_alert_ended() -> None:
    from ops.console.model import event_of as feed_line

    ok = feed_line(rec(9, AlertSent(7, "node-failed", "exited 0", 1, "c1"), "n1"))
    bad = feed_line(rec(10, AlertSent(8, "failover", "did not finish in 10 s (killed); retried: exited 1", 2, "c1")))
    assert ok is not None and ok.severity == "info" and ok.text == "c1: alert for node-failed of n1: exited 0"
    assert bad is not None and bad.severity == "error" and "of the group: did not finish" in bad.text


def test_a_controller_error_is_recorded_once_per_ten_minutes_and_never_without_kafka() -> None:
    from common.errors import KafkaUnavailable

    body = _controller({"command": "x"})
    store: list[Any] = []
    body._channel = channel = memory_channel(store)
    for _ in range(3):
        body.recover(RuntimeError("the heartbeat view broke"))
    body.recover(KafkaUnavailable("broker gone", fix="start it"))
    body.recover(ValueError("another one"))
    channel.flush_later(5)
    said = [(r.body.action, r.body.sentence) for r in memory_channel(store).poll()
            if isinstance(r.body, ControllerDecision)]
    assert said == [("error", "controller c1: RuntimeError: the heartbeat view broke"),
                    ("error", "controller c1: ValueError: another one")]


def test_the_failover_decision_is_alerted_before_the_failover_runs(tmp_path: Path) -> None:
    from failover.controller import Tick

    out = tmp_path / "alerts.log"
    alerted_before: list[bool] = []

    def failover(target: str) -> None:  # the failover: the decision must have paged by now
        assert body.alerter is not None
        alerted_before.append(body.alerter.idle(10) and out.exists())

    cfg = _controller({"command": [script(tmp_path, f'echo "$ARK_EVENT_KIND $ARK_EVENT_NODE" >> {out}\n')]}).cfg
    body = Controller(cfg, failover, settings=Settings(), name="c1")
    store: list[Any] = []
    channel = memory_channel(store)
    body.attach(channel, channel.replay())
    lease = type("L", (), {"active": lambda self: True, "describe": lambda self: "active (term 1)"})()
    body.lease = lease  # type: ignore[assignment]
    body._was_active = True
    body._step(channel, lease, Tick("failover", "primary n1 silent for 6.0 s: failing over to n2", "n2"))
    assert alerted_before == [True] and out.read_text() == "failover n2\n"
    body.alerter.close()  # type: ignore[union-attr]
