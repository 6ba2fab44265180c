"""``ark agent NODE`` on a real MariaDB (its own instance: the test crashes it), through the engine registry's
MariaDB health probe: healthy; ``kill -9`` of ``mariadbd`` → ``restarting`` (the pid of its pid file is gone)
→ the configured restart command starts it → ``healthy``; a primary made read-only by hand (``SET GLOBAL
read_only``) → ``failed`` at once (a restart does not fix it) → ``healthy`` once writable again. Every wait is on
a condition.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from deploy.agents import AgentProcess
from deploy.mariadb import MariaDBInstance
from tests.integration.test_node_agent import NodeBeats
from tests.support.replication import wait_for

ROOT = Path(__file__).resolve().parents[2]


def start_command(inst: MariaDBInstance) -> list[str]:
    """What an operator would configure (systemctl start mariadb); here: start this instance, wait until it answers."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path; "
            f"from deploy.mariadb import MariaDBInstance as M; "
            f"M(Path({str(inst.datadir)!r}), {inst.port}, {inst.server_id}).start()")
    return [sys.executable, "-c", code]


def test_the_agent_restarts_a_crashed_mariadb_and_sees_a_read_only_primary(
        kafka_bootstrap: str, mariadb_factory: Any, ark_tmp: Path, unique_group: str) -> None:
    inst: MariaDBInstance = mariadb_factory("magent")
    work = ark_tmp / "groups" / unique_group
    work.mkdir(parents=True, exist_ok=True)
    config = work / "ark.yaml"
    config.write_text(yaml.safe_dump({
        "group": unique_group, "control_key": {"env": "ARK_CONTROL_KEY"}, "kafka": {"bootstrap": kafka_bootstrap},
        "primary": {"name": "primary", "engine": "mariadb", "host": "127.0.0.1", "port": inst.port,
                    "tables": ["bank.*"],
                    "agent": {"check_interval_s": 0.5, "data_dir": str(inst.datadir), "restart_tries": 3,
                              "restart_backoff_s": 1, "restart_command": start_command(inst)}},
    }, sort_keys=False))
    beats = NodeBeats(kafka_bootstrap, unique_group, "primary")
    agent = AgentProcess(config, ["agent", "primary"], work / "agent.log").start()
    try:
        wait_for(lambda: beats.states()[-1:] == ["healthy"], 60, "the node agent's first healthy beat")
        first = beats.last()
        assert first["role"] == "primary" and first["db_healthy"], first
        assert first["message"] == "all checks pass", first["message"]

        pid = inst.pid
        inst.kill9()  # a crash: the pid file stays behind, its pid is gone
        wait_for(lambda: "restarting" in beats.states(), 30, "a restarting beat")
        wait_for(lambda: beats.states()[-1] == "healthy" and inst.is_running(), 90, "healthy again")
        assert beats.states() == ["healthy", "restarting", "healthy"], beats.states()
        assert inst.pid not in (None, pid), "mariadbd was started again by the agent's restart command"
        restarting = next(b for b in beats.beats if b["state"] == "restarting")
        assert "try 1 of 3" in restarting["message"] and not restarting["db_healthy"]
        assert "process: pid" in restarting["message"] or "query: login failed" in restarting["message"]
        print(f"\nrestarting beat: {restarting['message']}")

        inst.sql("SET GLOBAL read_only = ON")  # read-only by hand, no handover fenced it: a restart does not help
        wait_for(lambda: beats.states()[-1] == "failed", 30, "failed: the primary refuses writes")
        assert "@@read_only is ON" in beats.last()["message"] and "a local restart does not fix this" in \
            beats.last()["message"]
        inst.sql("SET GLOBAL read_only = OFF")
        wait_for(lambda: beats.states()[-1] == "healthy", 30, "healthy once writable again")
        assert agent.alive(), agent.tail(40)
    finally:
        agent.stop()
        beats.close()
        if not inst.is_running():
            inst.start()
