"""The node agents' fence lease against the controller's ttl: a group where a promotion could overlap a writable
old primary is refused when its config is loaded, naming both settings and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from common.automation_settings import FENCE_TIME_S, lease_problems
from common.config import parse_config
from common.errors import ConfigError


def doc(agent: dict[str, Any] | None = None, controller: dict[str, Any] | None = None,
        standby_agent: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                           "primary": {"name": "n1", "engine": "postgresql", "tables": ["public.*"],
                                       "agent": agent or {}},
                           "standbys": [{"name": "n2", "engine": "postgresql", "agent": standby_agent or {}}]}
    if controller is not None:
        out["controller"] = controller
    return out


@pytest.mark.parametrize(("agent", "controller", "standby_agent"), [
    (None, None, None),  # the defaults: 3 + 1 + 1 = 5 s, the ttl
    ({"fence_lease_s": 6}, {"ttl_s": 10}, None),  # a longer ttl allows a longer lease
    ({"fence_lease_s": 1, "check_interval_s": 0.5}, {"ttl_s": 2.5}, {"fence_lease_s": 1, "check_interval_s": 0.5}),
    ({"fence_lease_s": 30, "self_fence": False}, None, None),  # a node that never fences bounds nothing
])
def test_safe_combinations_load(agent: Any, controller: Any, standby_agent: Any) -> None:
    parse_config(doc(agent, controller, standby_agent))


@pytest.mark.parametrize(("agent", "controller", "standby_agent", "node", "needle"), [
    ({"fence_lease_s": 4}, None, None, "n1", "4 s + agent.check_interval_s 1 s + 1 s for the fence = 6 s is longer "
                                            "than controller.ttl_s 5 s"),
    (None, {"ttl_s": 3}, None, "n1", "lower n1's agent.fence_lease_s to at most 1.0 s or raise controller.ttl_s to "
                                     "at least 5 s"),
    (None, None, {"check_interval_s": 2}, "n2", "node n2: agent.fence_lease_s 3 s + agent.check_interval_s 2 s"),
])
def test_a_fence_that_comes_after_the_ttl_is_refused(agent: Any, controller: Any, standby_agent: Any, node: str,
                                                    needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(doc(agent, controller, standby_agent))
    message = err.value.message
    assert needle in message and f"node {node}:" in message
    assert "a standby could be promoted while" in message


def test_the_bound_counts_the_round_and_the_fence_itself() -> None:
    cfg = parse_config(doc({"fence_lease_s": 2, "check_interval_s": 0.5}, {"ttl_s": 8}))
    assert lease_problems([cfg.primary], 2 + 0.5 + FENCE_TIME_S) == []
    (problem,) = lease_problems([cfg.primary], 3.4, ttl_key="--ttl")
    assert "is longer than --ttl 3.4 s" in problem and "raise --ttl to at least 3.5 s" in problem
