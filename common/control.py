"""The control topic: operator intents and controller decisions, and the settings derived from them.

The CLI and the console only *write intents* here; agents read the topic and carry them out
(ARCHITECTURE.md). Settings such as a standby's delay are derived by replaying the topic, so a
restarted agent picks up the last word of the operator.
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from common.config import KafkaSettings
from common.errors import KafkaUnavailable
from common.kafka import ensure_topic, make_consumer, make_producer, unavailable
from schemas import envelope
from schemas.errors import CorruptEntry
from schemas.topics import control_topic

log = logging.getLogger(__name__)

CONTROL_SCHEMA = "control"

# Intent kinds understood today.
SET_DELAY = "set-delay"
PAUSE = "pause"
RESUME = "resume"
# CRC retransmission (guarantee 4): applier → capture, then the capture's answers.
RETRANSMIT = "retransmit"
RETRANSMIT_DONE = "retransmit-done"
RETRANSMIT_FAILED = "retransmit-failed"
# ark verify (consumers/hold.py has the protocol): CLI → applier, then the applier's answers.
VERIFY_HOLD = "verify-hold"
VERIFY_AT = "verify-at"
VERIFY_RELEASE = "verify-release"
VERIFY_ARMED = "verify-armed"
VERIFY_HELD = "verify-held"
# Table resync (consumers/table_resync.py): CLI → applier, then the applier's decisions (never silent).
RESYNC_TABLE = "resync-table"
# The operator accepted a hole in the source's log (slot recreated): capture resumes past it, and
# every standby that has not been rebuilt since stops at it (producers/gap.py, consumers/gaps.py).
SOURCE_GAP = "source-gap"
TABLE_QUARANTINED = "table-quarantined"
TABLE_RESYNC_PROGRESS = "table-resync-progress"
TABLE_RESYNCED = "table-resynced"
TABLE_RESYNC_REFUSED = "table-resync-refused"


@dataclass(frozen=True)
class ControlRecord:
    """One decoded record of the control topic."""

    offset: int
    kind: str
    target: str
    args: dict[str, str]
    issued_by: str
    issued_at_us: int
    request_id: str


def publish_intent(settings: KafkaSettings, group: str, kind: str, target: str = "", **args: Any) -> str:
    """Write one intent and wait until Kafka has it. Returns the request id."""
    topic = control_topic(group)
    ensure_topic(settings, topic, retention_ms=-1)
    request_id = uuid.uuid4().hex
    record = {
        "group": group, "kind": kind, "target": target, "args": {k: str(v) for k, v in args.items()},
        "issued_by": f"{getpass.getuser()}@{socket.gethostname()}", "issued_at_us": time.time_ns() // 1000,
        "request_id": request_id,
    }
    env = envelope.encode(CONTROL_SCHEMA, record)
    extra: dict[str, Any] = {"message.timeout.ms": 15000}
    producer = make_producer(settings, **extra)
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic, env.value, headers=env.headers, on_delivery=on_delivery)
    remaining = producer.flush(20)
    if remaining or errors:
        raise unavailable(settings, errors[0] if errors else "control record not delivered in 20 s")
    return request_id


class ControlReader:
    """Follows the control topic from the beginning; call :meth:`poll` regularly (non-blocking)."""

    def __init__(self, settings: KafkaSettings, group: str, start_offset: int = 0) -> None:
        self._topic = control_topic(group)
        ensure_topic(settings, self._topic, retention_ms=-1)
        self._consumer = make_consumer(settings, group_id=f"ark-control-{uuid.uuid4().hex[:8]}")
        self._consumer.assign([TopicPartition(self._topic, 0, start_offset)])

    def poll(self, max_records: int = 500) -> list[ControlRecord]:
        """Records that arrived since the last call (possibly none)."""
        out: list[ControlRecord] = []
        for msg in self._consumer.consume(num_messages=max_records, timeout=0):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("control topic: %s", error)
                continue
            try:
                dec = envelope.decode(msg.value(), msg.headers(), topic=self._topic, partition=msg.partition(),
                                      offset=msg.offset(), expect=CONTROL_SCHEMA)
            except CorruptEntry as exc:
                log.error("ignoring unreadable control record: %s", exc)
                continue
            rec = dec.record
            out.append(ControlRecord(offset=msg.offset() or 0, kind=rec["kind"], target=rec["target"],
                                     args=dict(rec["args"]), issued_by=rec["issued_by"],
                                     issued_at_us=rec["issued_at_us"], request_id=rec["request_id"]))
        return out

    def replay(self, timeout: float = 10.0) -> list[ControlRecord]:
        """Everything up to the current end of the topic (used at start-up)."""
        low, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, 0), timeout=timeout, cached=False)
        out: list[ControlRecord] = []
        if high <= low:
            return out  # empty (or fully expired): nothing to replay, and no position to wait for
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self.poll()
            out.extend(batch)
            position = self._consumer.position([TopicPartition(self._topic, 0)])[0].offset
            if position is not None and position >= high:
                return out
            if not batch:
                time.sleep(0.05)
        if high > low and not out:
            raise KafkaUnavailable(f"could not replay {self._topic} in {timeout:g} s", fix="check the broker")
        return out

    def close(self) -> None:
        """Close the consumer."""
        self._consumer.close()


def current_delay(records: Iterable[ControlRecord], standby: str, default: float) -> float:
    """The delay in force for ``standby`` after ``records`` (the last set-delay for it, or for all)."""
    delay = default
    for rec in records:
        if rec.kind == SET_DELAY and rec.target in ("", standby):
            delay = float(rec.args["seconds"])
    return delay


def is_paused(records: Iterable[ControlRecord], standby: str, default: bool = False) -> bool:
    """Whether the last pause/resume intent for ``standby`` (or all) was a pause."""
    paused = default
    for rec in records:
        if rec.kind in (PAUSE, RESUME) and rec.target in ("", standby):
            paused = rec.kind == PAUSE
    return paused


@dataclass(frozen=True)
class SourceGapRecord:
    """An accepted hole in the source's log: Kafka's last complete position before it, and the first
    redo offset after it (written by ``ark capture --accept-gap``)."""

    after_key: bytes
    after_position: str
    first_offset: int
    hole: str


def source_gaps(records: Iterable[ControlRecord]) -> list[SourceGapRecord]:
    """The accepted source gaps among ``records``."""
    return [SourceGapRecord(bytes.fromhex(r.args.get("after_key", "")), r.args.get("after_position", ""),
                            int(r.args.get("offset", "0")), r.args.get("hole", ""))
            for r in records if r.kind == SOURCE_GAP]
