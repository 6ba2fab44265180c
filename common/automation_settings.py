"""The group-level settings of automatic failover: the controller's tuning, the alert command, and the rule that
ties the node agents' fence lease to the controller's ttl.

**Why the lease must stay below the ttl.** A primary's agent that cannot reach Kafka fences its database after
``agent.fence_lease_s`` without an acknowledged heartbeat; it notices at its next check round (every
``agent.check_interval_s``) and the fence itself takes a moment (:data:`FENCE_TIME_S`). A controller promotes a
standby once the primary has been silent for its ``ttl``. So the old primary is read-only before any promotion
only while ``fence_lease_s + check_interval_s + FENCE_TIME_S <= ttl`` (:func:`lease_problems`); the defaults,
3 + 1 + 1 = 5 s, just fit. The config model refuses a group that breaks it, naming both settings.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field, field_validator

from common.settings import DatabaseSettings, Frozen, command_argv

#: What a fence takes once the agent decided to make it (connect, ALTER ... read-only, end the sessions).
FENCE_TIME_S: Final = 1.0

#: Every event kind, with what it means (README, "Alerts"); common/events.py reads control records as these.
EVENT_KINDS: Final[dict[str, str]] = {
    "failover": "the active controller decided to fail over (the primary failed or went silent)",
    "failover-done": "an automatic failover finished: a new primary",
    "failover-failed": "an automatic failover did not finish (the controller tries again later)",
    "controller-active": "a controller took the group's lease and acts from now on",
    "controller-error": "a controller's session failed (it retries; the same error is said once in 10 min)",
    "node-failed": "a node agent reports its node failed (local restarts used up, or no restart possible)",
    "node-restarting": "a node agent restarts its database or a service locally",
    "node-recovered": "a node that was failed or restarting is healthy again",
    "node-fenced": "a primary fenced itself: it lost Kafka for longer than its lease and is read-only now",
    "handover-fence": "a switchover, failover or reinstatement made the old primary read-only",
    "primary-changed": "a node became the group's primary (switchover or failover, by hand or automatic)",
    "alert-test": "'ark alert test': checks the alert command's wiring",
}

#: What pages someone when ``alerts.kinds`` is not given: the events that need a human.
DEFAULT_ALERT_KINDS: Final = ("failover", "failover-done", "failover-failed", "node-failed", "node-fenced",
                               "controller-error")

DEFAULT_TTL_S: Final = 5.0
DEFAULT_ANTI_FLAPPING_S: Final = 300.0


class ControllerSettings(Frozen):
    """``ark controller``'s tuning for the group (its ``--ttl`` and ``--window`` override these)."""

    ttl_s: float = Field(default=DEFAULT_TTL_S, ge=0.5, description="fail over when every heartbeat of the primary "
                         "is older than this; also the controllers' lease")
    anti_flapping_s: float = Field(default=DEFAULT_ANTI_FLAPPING_S, ge=0,
                                   description="no second automatic failover within this long of the last one")


class AlertSettings(Frozen):
    """The command the active controller runs once per event of ``kinds`` (README, "Alerts")."""

    command: tuple[str, ...] = Field(description="the program and its arguments (a string split like a shell would, "
                                     "or a list); no shell runs it. It gets the event as ARK_* variables and as one "
                                     "JSON object on stdin")
    kinds: tuple[str, ...] = Field(default=DEFAULT_ALERT_KINDS, description="the event kinds that run it")
    timeout_s: float = Field(default=10.0, gt=0, le=300, description="a run that takes longer is killed (and "
                             "retried once)")

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, value: str | list[str]) -> tuple[str, ...]:
        argv = command_argv(value)
        assert argv is not None  # None is refused by the field's type
        return argv

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in value if k not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"unknown event kind(s) {', '.join(unknown)}: the kinds are {', '.join(EVENT_KINDS)}")
        if not value:
            raise ValueError("is empty: leave the key out for the default kinds, or remove the alerts block")
        return tuple(dict.fromkeys(value))


def fence_bound_s(db: DatabaseSettings) -> float:
    """The longest a primary's agent cut off from Kafka may keep its database writable (0: it never fences)."""
    agent = db.agent
    return agent.fence_lease_s + agent.check_interval_s + FENCE_TIME_S if agent.self_fence else 0.0


def lease_problems(nodes: list[DatabaseSettings], ttl_s: float, *, ttl_key: str = "controller.ttl_s") -> list[str]:
    """Why a promotion could overlap a writable old primary under ``ttl_s``: one sentence per node whose fence comes
    too late, naming both settings and the fix ([] when every node fences in time)."""
    out = []
    for db in nodes:
        bound = fence_bound_s(db)
        if bound > ttl_s:
            agent = db.agent
            longest = max(0.1, ttl_s - agent.check_interval_s - FENCE_TIME_S)
            out.append(f"node {db.name}: agent.fence_lease_s {agent.fence_lease_s:g} s + agent.check_interval_s "
                       f"{agent.check_interval_s:g} s + {FENCE_TIME_S:g} s for the fence = {bound:g} s is longer than "
                       f"{ttl_key} {ttl_s:g} s, so a standby could be promoted while {db.name} still takes writes; "
                       f"fix: lower {db.name}'s agent.fence_lease_s to at most {longest:.1f} s or raise {ttl_key} to "
                       f"at least {bound:g} s")
    return out
