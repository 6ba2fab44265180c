"""The heartbeat view: the newest authentic heartbeat of every agent of the group, kept current.

A switchover or failover waits on what the agents say (the capture drained, the target applied up to a
marker); the automatic controller of a later issue decides on the same view. Heartbeats that are not signed
with the group's control key are dropped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from common.config import ArkConfig
from common.kafka import ensure_topic, make_consumer, offset_for_time, watermarks
from schemas import envelope
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import heartbeat_topic

log = logging.getLogger(__name__)

#: A heartbeat older than this says nothing about the agent now.
FRESH_S = 5.0


@dataclass(frozen=True)
class Beat:
    """One agent's newest heartbeat."""

    agent: str
    name: str
    state: str
    epoch: int
    applied_offset: int
    delay_seconds: float
    message: str
    sent_at: float
    record: dict[str, Any]

    def fresh(self, now: float | None = None) -> bool:
        """Sent within :data:`FRESH_S`."""
        return (now or time.time()) - self.sent_at < FRESH_S


class HeartbeatView:
    """Follows ``ark.<group>.heartbeat`` from a little before now; :meth:`refresh` reads what arrived."""

    def __init__(self, cfg: ArkConfig, lookback_s: float = 10.0) -> None:
        self._key = cfg.control_key_bytes()
        self._topic = heartbeat_topic(cfg.group)
        ensure_topic(cfg.kafka, self._topic, retention_ms=24 * 3_600_000)
        start = offset_for_time(cfg.kafka, self._topic, int((time.time() - lookback_s) * 1000))
        self._consumer = make_consumer(cfg.kafka, group_id=f"ark-view-{cfg.group}")
        self._consumer.assign([TopicPartition(self._topic, 0, start)])
        self.beats: dict[tuple[str, str], Beat] = {}
        #: When the last heartbeat arrived here (wall clock; 0: none yet): a reader that heard nothing for seconds was
        #: cut off from Kafka itself, and what it did not hear says nothing of the others (failover/automation.py).
        self.last_heard = 0.0
        self._next = start

    def catch_up(self, timeout: float = 10.0) -> None:
        """Read everything the topic held when called (bounded by ``timeout``)."""
        high = watermarks(self._consumer, self._topic, 0)[1]
        deadline = time.monotonic() + timeout
        while self._next < high and time.monotonic() < deadline:
            self.refresh(0.2)

    def refresh(self, timeout: float = 0.2) -> None:
        """Read the heartbeats that arrived (waits at most ``timeout`` for the first)."""
        first = True
        while True:
            msgs = self._consumer.consume(num_messages=500, timeout=timeout if first else 0)
            first = False
            if not msgs:
                return
            for msg in msgs:
                self._next = max(self._next, (msg.offset() or 0) + 1)
                error = msg.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.debug("heartbeat topic: %s", error)
                    continue
                try:
                    envelope.check_signature(msg.value(), msg.headers(), self._key)
                    rec = envelope.decode(msg.value(), msg.headers(), topic=self._topic, offset=msg.offset()).record
                except (NotAuthentic, CorruptEntry):
                    continue
                self.last_heard = time.time()
                self.beats[(rec["agent"], rec["name"])] = Beat(
                    agent=rec["agent"], name=rec["name"], state=rec["state"], epoch=int(rec["epoch"]),
                    applied_offset=int(rec.get("applied_offset", -1)), delay_seconds=float(rec.get("delay_seconds", 0)),
                    message=rec.get("message", ""), sent_at=rec["sent_at_us"] / 1e6, record=rec)

    def applier(self, node: str) -> Beat | None:
        """The applier of ``node``, when it was heard from recently."""
        beat = self.beats.get(("apply", node))
        return beat if beat is not None and beat.fresh() else None

    def capture(self) -> Beat | None:
        """The group's capture (whatever node it reads), when heard from recently."""
        found = [b for (agent, _n), b in self.beats.items() if agent == "capture" and b.fresh()]
        return max(found, key=lambda b: b.sent_at) if found else None

    def close(self) -> None:
        """Release the consumer."""
        self._consumer.close()
