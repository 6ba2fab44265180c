"""One active controller (failover/lease.py), with real ``ark controller`` processes on the test broker.

Two controllers of one group: exactly one becomes active, and the other stands by for as long as both run;
after ``kill -9`` of the active one, the other takes over within about the lease ttl; a controller started
again stands by (it does not steal the lease); one stopped cleanly gives the lease up and the other takes
over at once. No database is needed: the group's primary is never heard from, so neither would fail over.
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from common.config import load_config
from common.control import ControlChannel
from deploy.agents import AgentProcess
from failover.view import HeartbeatView
from schemas.control import ControllerDecision
from tests.support.replication import wait_for

TTL = 3.0


def _config(path: Path, group: str, kafka: str) -> Path:
    def db(name: str, port: int) -> dict[str, object]:
        return {"name": name, "engine": "postgresql", "host": "127.0.0.1", "port": port, "dbname": "none",
                "user": "postgres"}

    doc = {"group": group, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka},
           "primary": {**db("node1", 1), "tables": ["public.*"]}, "standbys": [db("node2", 2)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _states(view: HeartbeatView) -> dict[str, str]:
    view.refresh(0.2)
    now = time.time()
    return {name: beat.state for (agent, name), beat in view.beats.items()
            if agent == "controller" and now - beat.sent_at < 2.5}


def _standby_beats(view: HeartbeatView, name: str, count: int, active: str) -> None:
    """Until ``name`` sent ``count`` more heartbeats saying standby, while ``active`` stays active throughout."""
    seen: set[float] = set()

    def enough() -> bool:
        view.refresh(0.2)
        beat, other = view.beats.get(("controller", name)), view.beats.get(("controller", active))
        assert beat is None or beat.state != "active", f"{name} became active while {active} runs"
        assert other is None or other.state in ("active", "stopped"), f"{active} lost the lease: {other.state}"
        if beat is not None and beat.state == "standby":
            seen.add(beat.sent_at)
        return len(seen) >= count

    wait_for(enough, 60, f"{count} standby heartbeats of {name}")


def _decisions(cfg_path: Path) -> list[tuple[str, str]]:
    channel = ControlChannel.for_config(load_config(cfg_path))
    try:
        return [(r.body.holder, r.body.action) for r in channel.replay() if isinstance(r.body, ControllerDecision)]
    finally:
        channel.close()


def test_one_controller_acts_and_another_takes_over_after_kill9(kafka_bootstrap: str, ark_tmp: Path,
                                                                unique_group: str) -> None:
    work = ark_tmp / "groups" / unique_group
    cfg_path = _config(work / "ark.yaml", unique_group, kafka_bootstrap)
    procs = {n: AgentProcess(cfg_path, ["controller", "--name", n, "--ttl", str(TTL)], work / f"{n}.log")
             for n in ("c1", "c2")}
    view = HeartbeatView(load_config(cfg_path))
    try:
        for p in procs.values():
            p.start()
        wait_for(lambda: sorted(_states(view).values()) == ["active", "standby"], 60,
                 "one controller active and the other standing by")
        active = next(n for n, s in _states(view).items() if s == "active")
        other = "c2" if active == "c1" else "c1"
        _standby_beats(view, other, int(3 * TTL), active)  # well past a lease ttl: still one acts

        killed_at = time.monotonic()
        procs[active].kill9()
        wait_for(lambda: _states(view).get(other) == "active", 30, f"{other} to take over")
        took = time.monotonic() - killed_at
        print(f"\ntakeover after kill -9 of the active controller: {took:.2f} s (ttl {TTL:g} s)")
        assert took < TTL + 2.5, f"{other} took {took:.1f} s to take over (ttl {TTL:g} s)"

        procs[active].start()  # back: it stands by, the lease stays where it is
        wait_for(lambda: _states(view).get(active) == "standby", 60, f"{active} back, standing by")
        _standby_beats(view, active, int(2 * TTL), other)

        stopped_at = time.monotonic()
        procs[other].stop()  # a clean stop gives the lease up: no ttl to wait
        wait_for(lambda: _states(view).get(active) == "active", 30, f"{active} to take over after a clean stop")
        handed = time.monotonic() - stopped_at
        print(f"takeover after a clean stop: {handed:.2f} s")
        assert handed < TTL, f"{active} took {handed:.1f} s after a clean stop of {other}"

        # Each became active once, in turn, and said so on the control topic (written just after the heartbeat).
        wait_for(lambda: len(_decisions(cfg_path)) >= 3, 30, "three 'active' decisions on the control topic")
        assert _decisions(cfg_path) == [(active, "active"), (other, "active"), (active, "active")]
    finally:
        view.close()
        for p in procs.values():
            p.stop()
