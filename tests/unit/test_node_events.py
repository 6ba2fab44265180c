"""A node agent records its changes into and out of trouble on the control topic (``node-state``), and only those:
a restart, a failure and the recovery are events; rounds that change nothing are not."""

from __future__ import annotations

from typing import Any

from common.events import events_of
from schemas.control import NodeState
from tests.support.memory import memory_channel
from tests.unit.test_node_health import agent_with, rounds


def _states(store: list[Any]) -> list[tuple[str, str, str]]:
    return [(r.body.previous, r.body.state, r.target) for r in memory_channel(store).poll()
            if isinstance(r.body, NodeState)]


def test_restarting_failed_and_recovered_are_recorded_once_each() -> None:
    agent, probe, clock, _ran = agent_with(restart_ok=False, failures_before_restart=1, restart_backoff_s=1)
    agent.beat_now = lambda: None
    store: list[Any] = []
    agent._channel = channel = memory_channel(store)
    assert rounds(agent, clock, 2) == ["healthy", "healthy"]
    probe.up = False
    states = rounds(agent, clock, 8)
    assert states[0] == "restarting" and states[-1] == "failed", states
    probe.up = True
    assert rounds(agent, clock, 3)[-1] == "healthy"
    channel.flush_later(5)
    assert _states(store) == [("healthy", "restarting", "p"), ("restarting", "failed", "p"),
                              ("failed", "healthy", "p")]
    kinds = [e.kind for e in events_of(memory_channel(store).poll())]
    assert kinds == ["node-restarting", "node-failed", "node-recovered"]


def test_an_agent_without_a_channel_records_nothing() -> None:
    agent, probe, clock, _ran = agent_with(restart_ok=True)
    agent.beat_now = lambda: None
    probe.up = False
    rounds(agent, clock, 4)  # no session yet: no channel, and no error
    assert agent._channel is None
