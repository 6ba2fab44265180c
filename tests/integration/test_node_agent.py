"""``ark agent NODE`` on a real PostgreSQL (its own instance: the test stops it) and the session's Kafka.

The heartbeat topic is read in order, every beat of the node agent kept, so the sequence of states is asserted
as the controller would see it: ``pg_ctl stop -m immediate`` → ``restarting`` → the agent's restart command
starts PostgreSQL → ``healthy``; a restart command that fails → ``failed`` after its tries; ``ark status`` shows
the node agent. Every wait is on a condition.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from common.kafka import make_consumer
from common.settings import KafkaSettings
from deploy.postgres import PG_BIN, PgInstance
from schemas import envelope
from schemas.topics import heartbeat_topic
from tests.support.replication import Group, wait_for


class NodeBeats:
    """Every heartbeat of one node agent, in topic order."""

    def __init__(self, bootstrap: str, group: str, node: str) -> None:
        self.topic, self.node = heartbeat_topic(group), node
        self.key = os.environ["ARK_CONTROL_KEY"].encode()
        self.consumer = make_consumer(KafkaSettings(bootstrap=bootstrap), group_id=f"t-{uuid.uuid4().hex[:8]}")
        self.consumer.assign([TopicPartition(self.topic, 0, 0)])
        self.beats: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        for msg in self.consumer.consume(num_messages=500, timeout=0.2):
            error = msg.error()
            if error is not None:
                assert error.code() in (KafkaError._PARTITION_EOF, KafkaError.UNKNOWN_TOPIC_OR_PART), error
                continue
            envelope.check_signature(msg.value(), msg.headers(), self.key)
            rec = envelope.decode(msg.value(), msg.headers(), topic=self.topic, offset=msg.offset()).record
            if (rec["agent"], rec["name"]) == ("node", self.node):
                self.beats.append(rec)
        return self.beats

    def states(self) -> list[str]:
        """The states in order, repeats collapsed, the skeleton's 'starting' left out."""
        out: list[str] = []
        for beat in self.read():
            if beat["state"] != "starting" and (not out or out[-1] != beat["state"]):
                out.append(beat["state"])
        return out

    def last(self) -> dict[str, Any]:
        return self.read()[-1]

    def close(self) -> None:
        self.consumer.close()


def start_command(pg: PgInstance) -> list[str]:
    """What an operator would configure: pg_ctl start, as the postgres OS user when the agent runs as root."""
    cmd = [str(PG_BIN / "pg_ctl"), "-D", str(pg.datadir), "-l", str(pg.log_file), "-w", "-t", "60", "start"]
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def agent_group(tmp: Path, name: str, kafka: str, pg: PgInstance, agent: dict[str, Any]) -> Group:
    group = Group(name, tmp / "groups" / name, kafka, pg, "postgres", [],
                  primary_extra={"agent": {"check_interval_s": 0.5, "data_dir": str(pg.datadir), **agent}})
    group.write_config()
    return group


def test_agent_restarts_a_stopped_primary_and_reports_each_state(kafka_bootstrap: str, pg_factory: Any,
                                                                 ark_tmp: Path, unique_group: str) -> None:
    pg = pg_factory("agent")
    group = agent_group(ark_tmp, unique_group, kafka_bootstrap, pg,
                        {"restart_command": start_command(pg), "restart_tries": 3, "restart_backoff_s": 1})
    beats = NodeBeats(kafka_bootstrap, unique_group, "primary")
    try:
        group.start("agent", "primary")
        wait_for(lambda: beats.states()[-1:] == ["healthy"], 60, "the node agent's first healthy beat")
        first = beats.last()
        assert first["role"] == "primary" and first["db_healthy"] and "host.cpu_pct" in first["metrics"]
        status = json.loads(group.ark_ok("status", "--json"))
        assert [(a["name"], a["state"]) for a in status["node_agents"]] == [("primary", "healthy")]

        pid = pg.pid
        pg.stop(mode="immediate")
        wait_for(lambda: "restarting" in beats.states(), 30, "a restarting beat")
        wait_for(lambda: beats.states()[-1] == "healthy" and pg.is_running(), 60, "healthy again")
        assert beats.states() == ["healthy", "restarting", "healthy"]
        assert pg.pid != pid, "PostgreSQL was started again by the agent's restart command"
        restarting = next(b for b in beats.beats if b["state"] == "restarting")
        assert "try 1 of 3" in restarting["message"] and not restarting["db_healthy"]
        assert beats.last()["metrics"]["agent.restarts"] == 1.0
        group.assert_agents_alive()
    finally:
        group.stop_all()
        beats.close()


def test_a_failing_restart_command_ends_in_failed(kafka_bootstrap: str, pg_factory: Any, ark_tmp: Path,
                                                  unique_group: str) -> None:
    pg = pg_factory("agentfail")
    group = agent_group(ark_tmp, unique_group, kafka_bootstrap, pg,
                        {"restart_command": "false", "restart_tries": 2, "restart_backoff_s": 0.5})
    beats = NodeBeats(kafka_bootstrap, unique_group, "primary")
    try:
        group.start("agent", "primary")
        wait_for(lambda: beats.states()[-1:] == ["healthy"], 60, "the node agent's first healthy beat")
        pg.stop(mode="immediate")
        wait_for(lambda: beats.states()[-1:] == ["failed"], 60, "a failed beat")
        assert beats.states() == ["healthy", "restarting", "failed"]
        tries = {b["message"].split("try ")[1][:6] for b in beats.beats if b["state"] == "restarting"}
        assert tries == {"1 of 2", "2 of 2"}, tries
        failed = beats.last()
        assert "2 local restart(s) of the database did not help" in failed["message"]
        assert failed["metrics"]["agent.restarts"] == 2.0 and not pg.is_running()
        status = json.loads(group.ark_ok("status", "--json"))
        assert any("node primary is failed" in w for w in status["warnings"])
        pg.start()  # an operator repairs it: the node is healthy again
        wait_for(lambda: beats.states()[-1] == "healthy", 30, "healthy after the repair")
        group.assert_agents_alive()
    finally:
        group.stop_all()
        beats.close()
