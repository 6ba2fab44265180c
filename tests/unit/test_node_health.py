"""The node agent's judgement (common/node_health.py: decide), its settings, and one agent's rounds with a fake
probe, a fake restart command and a fake clock (failover/node_agent.py): restart first, back off, give up,
recover, start over after a stable period, and never restart what a handover stopped on purpose."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from common.config import parse_config
from common.control import ControlRecord
from common.errors import ConfigError, SourceError
from common.node_health import DATABASE, NO_RESTART, Check, RestartBook, backoff_s, decide, disk_checks
from common.roles import Roles
from common.service_address import ServiceAddress, ServiceAddressError
from common.settings import NodeAgentSettings
from failover.node_agent import NodeAgent, hold_reason
from schemas.control import ControllerDecision, EpochBegun, HandoverStep, NodeFenced

S = NodeAgentSettings(restart_tries=3, failures_before_restart=2)
DB_OK = [Check("listener", True), Check("query", True)]
DB_DOWN = [Check("listener", False, "127.0.0.1:5432 Connection refused"), Check("query", False, "login failed")]
DISK_LOW = Check("disk /data", False, "2.0% free, below 5%", NO_RESTART, warning=True)
APP_DOWN = Check("service app port", False, "127.0.0.1:8080 Connection refused", "service:app")
READ_ONLY = Check("writable", False, "new sessions are read-only", NO_RESTART)
BOTH = frozenset({DATABASE, "service:app"})


def book(rounds: int = 2, **tries: int) -> RestartBook:
    return RestartBook({("service:app" if k == "app" else k): v for k, v in tries.items()}, rounds)


@pytest.mark.parametrize("checks, bk, kw, state, restart, needle", [
    (DB_OK, book(0), {}, "healthy", None, "all checks pass"),
    ([*DB_OK, DISK_LOW], book(0), {}, "healthy", None, "warning: disk /data: 2.0% free"),
    (DB_DOWN, book(1), {"restartable": BOTH}, "healthy", None, "a restart follows 2"),
    (DB_DOWN, book(1), {"restartable": BOTH, "previous": "restarting"}, "restarting", None, "in a row"),
    (DB_DOWN, book(1), {"restartable": BOTH, "previous": "failed"}, "healthy", None, "in a row"),
    (DB_DOWN, book(2), {"restartable": BOTH}, "restarting", DATABASE, "try 1 of 3"),
    (DB_DOWN, book(5, database=2), {"restartable": BOTH}, "restarting", DATABASE, "try 3 of 3"),
    (DB_DOWN, book(6, database=3), {"restartable": BOTH}, "failed", None, "3 local restart(s) of the database"),
    (DB_DOWN, book(2), {}, "failed", None, "no restart_command is configured"),
    ([*DB_DOWN, APP_DOWN], book(2), {"restartable": BOTH}, "restarting", DATABASE, "restarting the database"),
    ([*DB_OK, APP_DOWN], book(2), {"restartable": BOTH}, "restarting", "service:app", "try 1 of 3"),
    ([*DB_OK, APP_DOWN], book(2), {"restartable": frozenset({DATABASE})}, "failed", None,
     "no restart_command of service:app"),
    ([*DB_OK, APP_DOWN], book(9, app=3), {"restartable": BOTH}, "failed", None, "of the service:app did not help"),
    ([*DB_OK, READ_ONLY], book(2), {"restartable": BOTH}, "failed", None, "a local restart does not fix this"),
    (DB_DOWN, book(2), {"restartable": BOTH, "hold": "a handover fenced it"}, "failed", None,
     "not restarted: a handover fenced it"),
    ([*DB_OK, APP_DOWN], book(2), {"restartable": BOTH, "hold": "demoted"}, "restarting", "service:app", "try 1"),
])
def test_decide(checks: list[Check], bk: RestartBook, kw: dict[str, Any], state: str, restart: str | None,
                needle: str) -> None:
    got = decide(checks, bk, S, **kw)
    assert (got.state, got.restart) == (state, restart), got.message
    assert needle in got.message


def test_zero_tries_fails_at_once() -> None:
    got = decide(DB_DOWN, book(2), S.model_copy(update={"restart_tries": 0}), restartable=BOTH)
    assert got.state == "failed" and "0 local restart(s)" in got.message


def test_backoff_doubles() -> None:
    assert [backoff_s(S, n) for n in (1, 2, 3)] == [2.0, 4.0, 8.0]


def test_disk_check_warns_below_the_threshold(tmp_path: Path) -> None:
    assert disk_checks([str(tmp_path)], 0.0)[0].ok
    low = disk_checks([str(tmp_path)], 99.9999)[0]
    assert not low.ok and low.warning and "below 99.9999%" in low.detail
    assert not disk_checks([str(tmp_path / "missing")], 5)[0].ok


# -- settings -----------------------------------------------------------------------------------------------
PG = {"engine": "postgresql"}
MIN = {"group": "g1", "control_key": {"env": "ARK_CONTROL_KEY"}, "primary": {"name": "p", **PG},
       "standbys": [{"name": "s", **PG}]}


def with_agent(agent: object, where: str = "primary") -> dict[str, Any]:
    doc: dict[str, Any] = {**MIN}
    if where == "primary":
        doc["primary"] = {**MIN["primary"], "agent": agent}  # type: ignore[dict-item]
    else:
        doc["standbys"] = [{"name": "s", **PG, "agent": agent}]
    return doc


def test_agent_defaults_and_a_command_split_like_a_shell() -> None:
    cfg = parse_config(with_agent({"restart_command": "pg_ctl -D '/srv/pg data' -w start"}))
    a = cfg.primary.agent
    assert a.restart_command == ("pg_ctl", "-D", "/srv/pg data", "-w", "start")
    assert (a.restart_tries, a.restart_backoff_s, a.check_interval_s, a.check_timeout_s, a.disk_min_free_pct) == \
        (3, 2.0, 1.0, 3.0, 5.0)
    assert parse_config(MIN).standbys[0].agent.restart_command is None
    listed = parse_config(with_agent({"restart_command": ["systemctl", "restart", "pg"]}, "standby"))
    assert listed.standbys[0].agent.restart_command == ("systemctl", "restart", "pg")


@pytest.mark.parametrize("agent, needle", [
    ({"restart_tries": -1}, "primary.agent.restart_tries"),
    ({"restart_backoff_s": 0}, "primary.agent.restart_backoff_s"),
    ({"check_interval_s": 0}, "primary.agent.check_interval_s"),
    ({"disk_min_free_pct": 100}, "primary.agent.disk_min_free_pct"),
    ({"restart_command": ""}, "is empty"),
    ({"restart_command": "pg_ctl 'unclosed"}, "check its quotes"),
    ({"services": [{"name": "app"}]}, "give process:, port: or both"),
    ({"services": [{"name": "app", "port": 1}, {"name": "app", "process": "x"}]}, "repeated: app"),
    ({"services": [{"name": "app", "port": 70000}]}, "primary.agent.services.0.port"),
    ({"restart_tries": 3, "typo": 1}, "primary.agent.typo"),
])
def test_bad_agent_settings_name_the_key(agent: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(with_agent(agent))
    assert needle in err.value.message and err.value.fix


# -- one agent, faked ----------------------------------------------------------------------------------------
class FakeProbe:
    def __init__(self) -> None:
        self.up = True
        self.writable: bool | None = None  # None: no writability check (as before the node was demoted)
        self.offline_fences: list[str] = []

    def checks(self, *, primary: bool, timeout_s: float) -> list[Check]:
        out = [Check("query", self.up, "" if self.up else "login failed")]
        if primary and self.up and self.writable is not None:
            out.append(Check("writable", self.writable, "" if self.writable else "read-only", NO_RESTART))
        return out

    def directories(self) -> list[str]:
        return []

    def fence_offline(self, why: str) -> str:
        self.offline_fences.append(why)
        return "auto.conf makes it start read-only"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def agent_with(restart_ok: bool, **settings: Any) -> tuple[NodeAgent, FakeProbe, FakeClock, list[list[str]]]:
    agent_settings = {"restart_command": "start-db --now", "restart_tries": 2, "stable_s": 30, "self_fence": False,
                      **settings}
    cfg = parse_config(with_agent(agent_settings))
    probe, clock, ran = FakeProbe(), FakeClock(), []

    def run(argv: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append(argv)
        probe.up = restart_ok
        return subprocess.CompletedProcess(argv, 0 if restart_ok else 1, "", "" if restart_ok else "boom 'secret'")

    agent = NodeAgent(cfg, "p", probe=probe, run=run, clock=clock)  # type: ignore[arg-type]
    agent.run_checks = lambda: probe.checks(primary=True, timeout_s=1)  # type: ignore[method-assign]
    return agent, probe, clock, ran


def rounds(agent: NodeAgent, clock: FakeClock, n: int, step: float = 1.0) -> list[str]:
    out = []
    for _ in range(n):
        agent.round()
        out.append(agent.state)
        clock.now += step
    return out


def test_a_restart_that_works_brings_the_node_back() -> None:
    agent, probe, clock, ran = agent_with(restart_ok=True)
    beats: list[str] = []
    agent.beat_now = lambda: beats.append(agent.state)
    assert rounds(agent, clock, 1) == ["healthy"]
    probe.up = False
    assert rounds(agent, clock, 3) == ["healthy", "restarting", "healthy"]
    assert ran == [["start-db", "--now"]] and beats == ["healthy", "restarting", "restarting", "healthy"]  # + the try
    assert agent.book.tries == {DATABASE: 1}
    rounds(agent, clock, 31)  # stable for stable_s: the tries start over
    assert agent.book.tries == {}


def test_a_restart_that_fails_backs_off_then_gives_up() -> None:
    agent, probe, clock, ran = agent_with(restart_ok=False)
    probe.up = False
    states = rounds(agent, clock, 8)
    # round 2: try 1; backoff 2 s: rounds 3 wait, round 4: try 2; then the tries are used up.
    assert states == ["healthy", "restarting", "restarting", "restarting", "failed", "failed", "failed", "failed"]
    assert len(ran) == 2
    assert "2 local restart(s) of the database did not help" in agent.message
    assert "secret" not in agent.message  # the command's output is redacted
    probe.up = True
    assert rounds(agent, clock, 1) == ["healthy"]


def test_a_demoted_node_is_not_restarted() -> None:
    agent, probe, clock, ran = agent_with(restart_ok=True)
    rec = ControlRecord(1, EpochBegun(1, "s", "p", "failover", 10), "s", "", 0, "")
    agent.roles.update([rec])
    agent.role = agent.roles.role_of("p")
    probe.up = False
    assert rounds(agent, clock, 3) == ["healthy", "failed", "failed"] and ran == []
    assert "demoted" in agent.message and "ark reinstate p" in agent.message


def test_a_demoted_node_is_fenced_while_down_and_at_once_if_it_takes_writes() -> None:
    """Failed over while it was dead: its data directory is fenced while it is down (it starts read-only); if it
    comes up writable all the same (started before the agent), it is fenced at once. Never restarted."""
    agent, probe, clock, ran = agent_with(restart_ok=True)
    fences: list[float] = []
    agent._fence = lambda: fences.append(clock.now) or 3  # type: ignore[method-assign]
    agent.roles.update([ControlRecord(1, EpochBegun(1, "s", "p", "failover", 10), "s", "", 0, "")])
    agent.role = agent.roles.role_of("p")
    probe.up = False
    rounds(agent, clock, 3)
    assert len(probe.offline_fences) == 1 and "ark reinstate p" in probe.offline_fences[0] and ran == []
    probe.up, probe.writable = True, True  # started by hand, writable: fenced in the same round
    agent._judge()
    assert fences == [clock.now]
    probe.writable = False  # read-only now: on purpose, not a failure
    assert rounds(agent, clock, 2) == ["fenced", "fenced"] and len(fences) == 1  # read-only on purpose
    assert "demoted" in agent.message


def test_hold_reason_for_a_primary_fenced_this_epoch() -> None:
    roles = Roles("p")
    assert hold_reason(roles, "p") == ""
    roles.update([ControlRecord(1, NodeFenced(0, "read-only (switchover)", 0), "p", "", 0, "")])
    assert "fenced in epoch 0: read-only (switchover)" in hold_reason(roles, "p")


def test_the_primary_fences_itself_when_kafka_is_silent_past_its_lease() -> None:
    agent, probe, clock, _ran = agent_with(restart_ok=True, self_fence=True, fence_lease_s=3)
    fences: list[float] = []
    agent._fence = lambda: fences.append(clock.now) or 4  # type: ignore[method-assign]
    delivered = {"at": clock.now}
    agent.beat_delivered_at = lambda: delivered["at"]
    assert rounds(agent, clock, 2) == ["healthy", "healthy"]
    delivered["at"] = clock.now  # a beat acknowledged: the lease is renewed
    assert rounds(agent, clock, 4) == ["healthy"] * 4 and fences == []  # silent 0..3 s: within the lease
    assert rounds(agent, clock, 2) == ["fenced", "fenced"] and fences == [delivered["at"] + 4]
    assert "no heartbeat reached Kafka for 4.0 s (lease 3 s)" in agent.message
    assert agent.self_fenced is not None and agent.self_fenced[2] == 4
    probe.up = False  # a self-fenced database is never restarted
    assert rounds(agent, clock, 3)[-1] == "failed" and "not restarted: it fenced itself" in agent.message


def test_a_self_fence_ends_when_a_newer_epoch_makes_the_node_primary_again() -> None:
    """Fenced itself in epoch 0, failed over, reinstated, then promoted again in epoch 2: healthy, not 'fenced'
    (a controller would fail over again on a stale 'fenced'); a new cut fences it again."""
    agent, _probe, clock, _ran = agent_with(restart_ok=True, self_fence=True, fence_lease_s=3)
    fences: list[float] = []
    agent._fence = lambda: fences.append(clock.now) or 2  # type: ignore[method-assign]
    delivered = {"at": clock.now}
    agent.beat_delivered_at = lambda: delivered["at"]
    assert rounds(agent, clock, 6)[-1] == "fenced" and len(fences) == 1
    agent.roles.update([ControlRecord(1, EpochBegun(1, "s", "p", "failover", 10), "s", "", 0, "")])
    agent.role = agent.roles.role_of("p")
    delivered["at"] = clock.now + 100  # Kafka answers again
    assert rounds(agent, clock, 1) == ["fenced"] and agent.self_fenced is not None  # demoted: still fenced
    agent.roles.update([ControlRecord(2, EpochBegun(2, "p", "s", "failover", 20), "p", "", 0, "")])
    agent.role = agent.roles.role_of("p")
    assert agent.role == "primary"
    assert rounds(agent, clock, 1) == ["fenced"]  # not on the control topic yet: kept until it is
    agent._fence_recorded = True
    assert rounds(agent, clock, 1) == ["healthy"] and agent.self_fenced is None
    clock.now = delivered["at"] + 5  # cut again, past the lease
    assert rounds(agent, clock, 1) == ["fenced"] and len(fences) == 2


def test_a_standby_or_a_disabled_self_fence_never_fences() -> None:
    for role, enabled in (("standby", True), ("primary", False)):
        agent, _probe, clock, _ran = agent_with(restart_ok=True, self_fence=enabled)
        agent.role = role
        agent._fence = lambda: pytest.fail("fenced")  # type: ignore[method-assign]
        assert set(rounds(agent, clock, 10)) == {"healthy"}


def test_a_fence_that_fails_says_failed_and_is_tried_again() -> None:
    agent, _probe, clock, _ran = agent_with(restart_ok=True, self_fence=True)
    agent.beat_delivered_at = lambda: None
    calls: list[int] = []

    def fence() -> int:
        calls.append(1)
        raise SourceError("node p cannot be reached", fix="x")

    agent._fence = fence  # type: ignore[method-assign]
    states = rounds(agent, clock, 6)
    assert states[-1] == "failed" and len(calls) >= 2 and "the fence failed" in agent.message
    _probe.up = False  # nor is a primary cut off from Kafka restarted: a standby may be promoted meanwhile
    assert rounds(agent, clock, 4)[-1] == "failed" and _ran == [] and "not restarted" in agent.message


def test_a_primary_fenced_by_a_handover_says_fenced_while_read_only_and_healthy_once_writable() -> None:
    agent, probe, clock, ran = agent_with(restart_ok=True)
    writable = {"ok": False}
    agent.run_checks = lambda: [*probe.checks(primary=True, timeout_s=1),  # type: ignore[method-assign]
                                Check("writable", writable["ok"], "" if writable["ok"] else "read-only", NO_RESTART)]
    agent.roles.update([ControlRecord(1, NodeFenced(0, "read-only (switchover)", 0), "p", "", 0, "")])
    assert rounds(agent, clock, 2) == ["fenced", "fenced"] and "read-only (switchover)" in agent.message
    writable["ok"] = True  # the switchover was given up and undone: the stale record does not make it 'fenced'
    assert rounds(agent, clock, 1) == ["healthy"]
    probe.up = False  # but its database is still not restarted
    assert rounds(agent, clock, 3)[-1] == "failed" and ran == [] and "not restarted" in agent.message


def test_status_lists_node_agents_and_says_down_when_silent() -> None:
    from ops.status import node_agents

    now = 1_000_000.0
    beat = {"state": "healthy", "role": "primary", "message": "all checks pass", "host": "h"}
    beats = {("node", "n1"): {**beat, "sent_at_us": int((now - 1) * 1e6)},
             ("node", "n2"): {**beat, "sent_at_us": int((now - 600) * 1e6)},
             ("apply", "n2"): {**beat, "sent_at_us": int(now * 1e6)}}
    assert [(a["name"], a["state"]) for a in node_agents(beats, now)] == [
        ("n1", "healthy"), ("n2", "down (last heard 600 s ago)")]


# -- the service address --------------------------------------------------------------------------------------
class FakeAddress(ServiceAddress):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    def claim(self) -> None:
        self._do("claim")

    def release(self) -> None:
        self._do("release")

    def _do(self, what: str) -> None:
        self.calls.append(what)
        if self.fail:
            raise ServiceAddressError(f"cannot {what} 10.0.0.100/24 on eth0: Operation not permitted", fix="root")

    def held(self) -> bool | None:
        return None

    def describe(self) -> str:
        return "10.0.0.100/24 on eth0"


def _with_address(**settings: Any) -> tuple[NodeAgent, FakeProbe, FakeClock, FakeAddress]:
    agent, probe, clock, _ran = agent_with(restart_ok=False, **settings)
    address = FakeAddress()
    agent.address = address
    agent.beat_now = lambda: None
    return agent, probe, clock, address


def test_a_working_primary_holds_the_service_address_and_a_failed_one_releases_it() -> None:
    agent, probe, clock, address = _with_address()
    rounds(agent, clock, 3)
    assert address.calls == ["claim"] and agent.address_held is True  # claimed once, not every round
    probe.up = False
    assert rounds(agent, clock, 8)[-1] == "failed"
    assert address.calls == ["claim", "release"] and agent.address_held is False


def test_a_standby_releases_the_address_at_start_and_never_claims_it() -> None:
    agent, _probe, clock, address = _with_address()
    agent.role = "standby"
    rounds(agent, clock, 5)
    assert address.calls == ["release"]  # what a crash of this node as primary may have left behind


def test_a_self_fenced_primary_releases_the_address_in_the_same_round() -> None:
    agent, _probe, clock, address = _with_address(self_fence=True, fence_lease_s=3)
    agent._fence = lambda: 0  # type: ignore[method-assign]
    delivered = {"at": clock.now}
    agent.beat_delivered_at = lambda: delivered["at"]
    assert rounds(agent, clock, 2) == ["healthy", "healthy"] and address.calls == ["claim"]
    states = rounds(agent, clock, 4)
    assert states[-1] == "fenced" and address.calls == ["claim", "release"]


def test_a_failed_claim_is_said_and_tried_again_next_round() -> None:
    agent, _probe, clock, address = _with_address()
    address.fail = True
    rounds(agent, clock, 2)
    assert address.calls == ["claim", "claim"] and agent.address_held is None
    assert "service address: cannot claim 10.0.0.100/24 on eth0" in agent.message
    address.fail = False
    rounds(agent, clock, 2)
    assert address.calls == ["claim"] * 3 and agent.address_held is True


def test_a_self_fence_is_lifted_when_the_controller_asks_within_the_lease() -> None:
    """A broker outage longer than the lease fences the primary; Kafka back, nobody promoted and no standby able to
    take over, the controller asks to lift it (failover/controller.py). Lifted only for a request of this epoch, made
    after the fence and younger than the lease (the controller makes no failover for its ttl after asking, so a
    failover's fence never comes before the lift); the lift goes on the control topic and clears the fence record."""
    agent, _probe, clock, _ran = agent_with(restart_ok=True, self_fence=True, fence_lease_s=3)
    wall = {"now": 1000.0}
    agent._wall = lambda: wall["now"]  # type: ignore[method-assign]
    agent._fence = lambda: 2  # type: ignore[method-assign]
    lifted: list[float] = []
    agent._unfence = lambda: lifted.append(wall["now"])  # type: ignore[method-assign]
    delivered = {"at": clock.now}
    agent.beat_delivered_at = lambda: delivered["at"]
    assert rounds(agent, clock, 6)[-1] == "fenced" and agent.self_fenced is not None
    fenced_at = agent._self_fenced_at
    delivered["at"] = clock.now + 100  # Kafka answers again

    def ask(epoch: int, at: float) -> None:
        agent._note_lift_requests([ControlRecord(7, ControllerDecision("lift-fence", epoch, "why", "ctl"), "p", "ctl",
                                                 int(at * 1e6), "r")])

    wall["now"] = fenced_at + 10
    for epoch, at in ((0, fenced_at - 1), (0, wall["now"] - 4), (1, wall["now"] - 1)):  # before, stale, other epoch
        ask(epoch, at)
        assert rounds(agent, clock, 1) == ["fenced"] and not lifted, (epoch, at)
    ask(0, wall["now"] - 1)
    assert rounds(agent, clock, 1) == ["healthy"] and lifted and agent.self_fenced is None
    agent.roles.update([ControlRecord(8, NodeFenced(0, "read-only (self-fenced)", 2), "p", "", 0, ""),
                        ControlRecord(9, HandoverStep("lift-fence", 0, "done", "lifted", 0.0), "p", "", 0, "")])
    assert "p" not in agent.roles.fenced and hold_reason(agent.roles, "p") == ""
