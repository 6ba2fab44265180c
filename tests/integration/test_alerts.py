"""The alert command on a real group: a node agent on a real PostgreSQL whose restart command fails reports
``restarting`` then ``failed``; the active controller runs the configured command (a small script appending what
it got to a file) exactly once per event, with the right variables and JSON; ``ark status`` lists the events and
how their alerts ended; a controller killed with ``kill -9`` and started again does not alert them a second time,
and alerts the next event (the node repaired: ``node-recovered``). ``ark alert test`` fires through the same
command. Every wait is on a condition.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from common.config import load_config
from common.control import ControlChannel
from deploy.postgres import PgInstance
from schemas.control import AlertSent
from tests.integration.test_node_agent import agent_group
from tests.support.replication import wait_for

RECORDER = """#!{python}
import json, os, sys, time
doc = json.loads(sys.stdin.read())
env = {{k: v for k, v in os.environ.items() if k.startswith("ARK_") or "PASSWORD" in k}}
with open({out!r}, "a") as f:
    f.write(json.dumps({{"env": env, "stdin": doc, "at": time.time()}}) + "\\n")
"""


def recorder(tmp: Path) -> tuple[Path, Path]:
    """An alert command that appends one JSON line per run (what it got) to a file."""
    tmp.mkdir(parents=True, exist_ok=True)
    out = tmp / "alerts.jsonl"
    script = tmp / "record-alert"
    script.write_text(RECORDER.format(python=sys.executable, out=str(out)))
    script.chmod(0o755)
    return script, out


def runs(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def kinds(out: Path) -> list[str]:
    return [r["env"]["ARK_EVENT_KIND"] for r in runs(out)]


def alert_records(cfg_path: Path) -> list[AlertSent]:
    channel = ControlChannel.for_config(load_config(cfg_path))
    try:
        return [r.body for r in channel.replay() if isinstance(r.body, AlertSent)]
    finally:
        channel.close()


def controller_active(group: Any) -> bool:
    status = json.loads(group.ark_ok("status", "--json"))
    return any(c["state"] == "active" for c in status["automation"]["controllers"])


def test_a_failed_node_is_alerted_once_and_not_again_after_a_controller_restart(
        kafka_bootstrap: str, pg_factory: Any, ark_tmp: Path, unique_group: str) -> None:
    pg: PgInstance = pg_factory("alerts")
    work = ark_tmp / "groups" / unique_group
    work.mkdir(parents=True, exist_ok=True)
    script, out = recorder(work)
    group = agent_group(ark_tmp, unique_group, kafka_bootstrap, pg,
                        {"restart_command": "false", "restart_tries": 1, "restart_backoff_s": 0.5})
    group.write_config(alerts={"command": [str(script)], "timeout_s": 10,
                               "kinds": ["node-restarting", "node-failed", "node-recovered"]})
    try:
        test = group.ark_ok("alert", "test", "--node", "primary")
        assert "exited 0" in test and kinds(out) == ["alert-test"]
        out.unlink()

        ctl = group.start("controller", "--name", "ctl", name="controller")
        group.start("agent", "primary")
        wait_for(lambda: controller_active(group), 60, "the controller to take the lease")
        wait_for(lambda: any(a["state"] == "healthy" for a in
                             json.loads(group.ark_ok("status", "--json"))["node_agents"]), 60, "the agent healthy")

        pg.stop(mode="immediate")
        wait_for(lambda: len(alert_records(group.config)) >= 2, 90, "both events alerted and recorded")
        assert kinds(out) == ["node-restarting", "node-failed"], runs(out)
        failed = runs(out)[1]
        env, doc = failed["env"], failed["stdin"]
        assert env["ARK_GROUP"] == unique_group and env["ARK_EVENT_NODE"] == "primary"
        assert "1 local restart(s) of the database did not help" in env["ARK_EVENT_MESSAGE"]
        assert env["ARK_EVENT_TIME"].endswith("Z") and env["ARK_EVENT_TIME"] == doc["time"]
        assert (doc["group"], doc["kind"], doc["node"], doc["message"]) == (
            unique_group, "node-failed", "primary", env["ARK_EVENT_MESSAGE"])
        assert not [k for k in env if "PASSWORD" in k or k == "ARK_CONTROL_KEY"], "no secret reaches the command"
        assert [(a.event_kind, a.outcome, a.attempts, a.holder) for a in alert_records(group.config)] == [
            ("node-restarting", "exited 0", 1, "ctl"), ("node-failed", "exited 0", 1, "ctl")]

        status = json.loads(group.ark_ok("status", "--json"))
        events = [(e["kind"], e["node"], e["alert"]) for e in status["automation"]["events"]]
        assert ("node-failed", "primary", "exited 0") in events and ("controller-active", "ctl", None) in events
        text = group.ark_ok("status")
        assert "node-failed: " in text and "did not help" in text

        ctl.kill9()  # no clean give-up: the new process waits out the lease, then goes on where the records say
        ctl.start()
        wait_for(lambda: controller_active(group), 60, "the restarted controller to take the lease again")
        pg.start()  # the operator repairs the node: one more event, alerted by the restarted controller
        wait_for(lambda: "node-recovered" in kinds(out), 90, "the recovery alerted")
        assert kinds(out) == ["node-restarting", "node-failed", "node-recovered"], \
            "each event alerted once: nothing again after the restart"
        group.assert_agents_alive()
    finally:
        group.stop_all()
