"""The heartbeat publisher: a background thread that sends the agent's state about once a second.

Heartbeats are signed with the group's control key like control records (the failover controller
will act on them), and readers drop what is not signed with it. Each carries the agent's newest
monitoring facts (common/monitor.py: host, database, server log, service processes).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Producer

from common.agent import Agent, AgentBody, Heartbeat
from common.config import ArkConfig
from common.control import ControlChannel
from common.kafka import ensure_topic, make_producer
from common.monitor import Monitor, counters, monitor_for
from common.settings import KafkaSettings
from schemas import envelope
from schemas.topics import heartbeat_topic

log = logging.getLogger(__name__)

HEARTBEAT_SCHEMA = "heartbeat"
#: Heartbeats are operational state, not history: keep one day.
HEARTBEAT_RETENTION_MS = 24 * 3_600_000


def _host_metrics() -> dict[str, float]:
    metrics: dict[str, float] = {}
    with contextlib.suppress(OSError):
        metrics["load1"] = os.getloadavg()[0]
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            metrics["rss_bytes"] = float(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        pass
    return metrics


class HeartbeatPublisher(Heartbeat):
    """Publishes ``snapshot()`` (fields of the Heartbeat schema) every ``interval`` seconds.

    Heartbeats are best effort: a broker outage delays them (librdkafka retries) and is logged, but it
    never stops the agent. Call :meth:`beat_now` to publish an important state change at once.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group: str,
        *,
        key: bytes,
        agent: str,
        name: str,
        role: str,
        snapshot: Callable[[], dict[str, Any]],
        interval: float = 1.0,
        monitor: Monitor | None = None,
    ) -> None:
        self._settings = settings
        self._group = group
        self._key = key
        self._topic = heartbeat_topic(group)
        self._static = {
            "group": group, "agent": agent, "name": name, "host": socket.gethostname(),
            "pid": os.getpid(), "role": role,
        }
        self._snapshot = snapshot
        self._interval = interval
        self._monitor = monitor
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self._delivered_at: float | None = None

    def start(self) -> None:
        """Create the topic if needed and start the background thread."""
        if self._monitor is not None:
            self._monitor.start()
        ensure_topic(self._settings, self._topic, retention_ms=HEARTBEAT_RETENTION_MS)
        extra: dict[str, Any] = {"linger.ms": 0, "message.timeout.ms": 30000}
        self._producer = make_producer(self._settings, **extra)
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self._static['agent']}", daemon=True)
        self._thread.start()

    def beat_now(self) -> None:
        """Publish at once instead of at the next tick."""
        self._wake.set()

    def stop(self) -> None:
        """Send a last heartbeat and stop."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._producer is not None:
            self._producer.flush(3)
        if self._monitor is not None:
            self._monitor.stop()

    def delivered_at(self) -> float | None:
        """When (monotonic) the newest beat Kafka acknowledged was sent; None before the first."""
        return self._delivered_at

    def _acknowledged(self, sent_at: float) -> Callable[[Any, Any], None]:
        def on_delivery(err: Any, _msg: Any) -> None:
            if err is None and (self._delivered_at is None or sent_at > self._delivered_at):
                self._delivered_at = sent_at
        return on_delivery

    def record(self) -> dict[str, Any]:
        """The heartbeat record as it would be sent now."""
        rec: dict[str, Any] = {
            "epoch": 0, "state": "running", "message": "", "source_position": "", "produced_offset": -1,
            "applied_offset": -1, "applied_commit_time_us": 0, "lag_seconds": 0.0, "lag_entries": 0,
            "delay_seconds": 0.0, "db_healthy": True,
        }
        rec.update(self._static)
        snap = self._snapshot()
        metrics = {**_host_metrics(), **counters()}
        if self._monitor is not None:
            facts = self._monitor.latest()
            metrics.update(facts.metrics)
            rec.update(alerts=facts.alerts, processes=facts.processes)
            if facts.db_up is not None:
                rec["db_healthy"] = facts.db_up
        metrics.update(snap.pop("metrics", {}))
        rec.update(snap)
        rec["metrics"] = {k: float(v) for k, v in metrics.items()}
        rec["sent_at_us"] = time.time_ns() // 1000
        return rec

    def _run(self) -> None:
        assert self._producer is not None
        while True:
            try:
                env = envelope.sign(envelope.encode(HEARTBEAT_SCHEMA, self.record(), epoch=0), self._key)
                key = str(self._static["name"]).encode()
                self._producer.produce(self._topic, env.value, headers=env.headers, key=key,
                                       on_delivery=self._acknowledged(time.monotonic()))
                self._producer.poll(0)
            except Exception as exc:  # noqa: BLE001 - loop boundary: a heartbeat must never kill the agent
                log.warning("heartbeat not sent: %s", exc)
            if self._stop.is_set():
                return
            # Serve delivery reports while waiting (not only once a beat): delivered_at stays within ~50 ms.
            deadline = time.monotonic() + self._interval
            try:
                while not self._wake.is_set() and time.monotonic() < deadline:
                    self._producer.poll(0.05)
            except Exception as exc:  # noqa: BLE001 - loop boundary: a heartbeat must never kill the agent
                log.warning("heartbeat delivery reports not served: %s", exc)
                self._wake.wait(max(0.0, deadline - time.monotonic()))
            self._wake.clear()


def agent_on_kafka(cfg: ArkConfig, body: AgentBody, *, interval: float = 1.0, metrics_port: int | None = None,
                   metrics_host: str = "0.0.0.0") -> Agent:
    """An :class:`Agent` for ``body`` on the group's Kafka: its control channel, signed heartbeats with
    its monitoring facts, and (with ``metrics_port``) Prometheus ``/metrics``."""
    key = cfg.control_key_bytes()

    def heartbeat(snapshot: Callable[[], dict[str, Any]]) -> HeartbeatPublisher:
        return HeartbeatPublisher(cfg.kafka, cfg.group, key=key, agent=body.kind, name=body.name, role=body.role,
                                  snapshot=snapshot, interval=interval, monitor=monitor_for(cfg, body.kind, body.name))

    return Agent(body, channel=lambda: ControlChannel.for_config(cfg), heartbeat=heartbeat,
                 metrics_port=metrics_port, metrics_host=metrics_host, group=cfg.group)
