"""What the control topic says of automation (maintenance, the last decision), and how ark status says it."""

from __future__ import annotations

from typing import Any

from failover.automation import automation_of
from ops.automation_cmd import automation_doc, automation_lines, controllers_of
from schemas.control import ControllerDecision, SetMaintenance
from tests.support.memory import memory_channel


def _records(*bodies: tuple[Any, str]) -> list[Any]:
    store: list[Any] = []
    writer = memory_channel(store)
    for body, target in bodies:
        writer.publish(body, target)
    return memory_channel(store).poll()


def test_maintenance_and_the_last_failover_are_read_back() -> None:
    records = _records((SetMaintenance("on", "patching"), ""),
                       (ControllerDecision("failover", 0, "silent", "c1"), "n2"),
                       (ControllerDecision("failover-done", 1, "n2 is the primary", "c1"), "n2"))
    auto = automation_of(records)
    assert auto.maintenance and auto.maintenance_by == "test@host"
    assert auto.last_failover_to == "n2" and auto.last_failover_at > 0
    doc = automation_doc(records)
    assert doc["maintenance_reason"] == "patching" and doc["last_decision"]["action"] == "failover-done"
    lines = automation_lines({**doc, "controllers": [{"name": "c1", "state": "active", "sentence": "all good"}]})
    assert lines[0].startswith("maintenance on since ") and "(by test@host: patching)" in lines[0]
    assert lines[1] == "controller c1: active: all good"
    assert lines[2].endswith("failover-done n2 (n2 is the primary)")


def test_maintenance_off_clears_it() -> None:
    records = _records((SetMaintenance("on", ""), ""), (SetMaintenance("off", ""), ""))
    doc = automation_doc(records)
    assert not doc["maintenance"] and not automation_lines(doc)
    assert automation_of(records).last_failover_at == 0


def test_a_silent_controller_shows_as_down() -> None:
    beats = {("controller", "c1"): {"state": "active", "message": "x", "sent_at_us": 1_000_000_000},
             ("apply", "n2"): {"state": "running", "message": "", "sent_at_us": 1_000_000_000}}
    assert controllers_of(beats, 1000.0 + 60) == [{"name": "c1", "state": "down (60 s)", "sentence": "x"}]
