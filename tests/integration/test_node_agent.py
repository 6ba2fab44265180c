"""``ark agent NODE`` on a real PostgreSQL (its own instance: the test stops it) and the session's Kafka.

The heartbeat topic is read in order, every beat of the node agent kept, so the sequence of states is asserted
as the controller would see it: ``pg_ctl stop -m immediate`` → ``restarting`` → the agent's restart command
starts PostgreSQL → ``healthy``; a restart command that fails → ``failed`` after its tries; ``ark status`` shows
the node agent; the broker paused or killed → the primary fences itself within its lease. Every wait is on a
condition.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import KafkaError, TopicPartition

from common.config import load_config
from common.control import ControlChannel
from common.kafka import make_consumer
from common.settings import KafkaSettings
from deploy.kafka import KafkaBroker
from deploy.postgres import PG_BIN, PgInstance
from schemas import envelope
from schemas.control import NodeFenced
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


def _read_only(pg: PgInstance) -> bool:
    try:
        return pg.psql("SHOW default_transaction_read_only") == "on"
    except RuntimeError:
        return False


@pytest.mark.parametrize("cut", ["pause", "kill"])
def test_the_primary_fences_itself_when_kafka_is_gone(cut: str, kafka_broker: KafkaBroker, kafka_bootstrap: str,
                                                      pg_factory: Any, ark_tmp: Path, unique_group: str) -> None:
    """The broker paused (connections hang) or killed (refused): within its 3 s lease, before a controller's 5 s
    ttl, the primary's agent makes its database read-only and ends the sessions that could still write; once Kafka
    is back its heartbeat says ``fenced`` and a ``node-fenced`` record is on the control topic."""
    pg = pg_factory(f"fence{cut}")
    group = agent_group(ark_tmp, unique_group, kafka_bootstrap, pg,
                        {"restart_command": start_command(pg), "fence_lease_s": 3})
    beats = NodeBeats(kafka_bootstrap, unique_group, "primary")
    client = psycopg.connect(pg.dsn(), autocommit=True)
    try:
        group.start("agent", "primary")
        wait_for(lambda: beats.states()[-1:] == ["healthy"], 60, "the node agent's first healthy beat")
        client.execute("CREATE TABLE fence_probe (i int)")
        cut_at = time.time()
        kafka_broker.pause() if cut == "pause" else kafka_broker.kill9()
        try:
            wait_for(lambda: _read_only(pg), 30, "the database made read-only", interval=0.05)
            fenced_at = time.time()
        finally:
            kafka_broker.resume() if cut == "pause" else kafka_broker.start(timeout=120)
        wait_for(lambda: beats.states()[-1:] == ["fenced"], 90, "a fenced beat once Kafka is back")
        last_heard = max(b["sent_at_us"] for b in beats.beats if b["sent_at_us"] / 1e6 <= cut_at) / 1e6
        # What a controller heard last was sent at last_heard; it waits its ttl (5 s) from there before promoting.
        print(f"broker {cut}: read-only {fenced_at - cut_at:.2f} s after the cut, {fenced_at - last_heard:.2f} s after "
              "the last heartbeat a controller could have heard")
        assert fenced_at - cut_at >= 2.0 and fenced_at - last_heard < 5.0, (cut_at, last_heard, fenced_at)
        assert "fenced itself" in beats.last()["message"]
        with pytest.raises(psycopg.Error):  # the session opened before the fence could still write: it was ended
            client.execute("INSERT INTO fence_probe VALUES (1)")
        cfg = load_config(group.config)

        def recorded() -> bool:
            channel = ControlChannel.for_config(cfg)
            try:
                return any(isinstance(r.body, NodeFenced) and r.target == "primary" for r in channel.replay())
            finally:
                channel.close()

        wait_for(recorded, 60, "the node-fenced record on the control topic", interval=1)
        group.assert_agents_alive()
    finally:
        group.stop_all()
        beats.close()
        client.close()
        with contextlib.suppress(RuntimeError):
            pg.psql("ALTER DATABASE postgres RESET default_transaction_read_only")
