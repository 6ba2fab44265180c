"""The control topic: typed, signed operator intents and agent decisions, and the settings derived from them.

The CLI and the console only *write intents* here; agents read the topic and carry them out
(ARCHITECTURE.md). Settings such as a standby's delay are derived by replaying the topic, so a
restarted agent picks up the last word of the operator.

**Authenticated.** Every record is signed with the group's control key (HMAC-SHA256, header
``ark-sig``; :func:`schemas.envelope.sign`). A record that is unsigned, signed with another key, or a
replay of a request id already seen is refused: logged once per kind of refusal, counted in
:attr:`ControlChannel.refused`, and never handed to an agent. So anyone who can write to the topic but
does not hold the key cannot set a delay to 0 or stop the standbys with a forged gap record.

**One channel per agent.** :class:`ControlChannel` is the only way in and out: it publishes (waiting for
Kafka, or queued with :meth:`ControlChannel.publish_later` so an apply loop never waits), and polls.
The transport is a :class:`ControlBus`: Kafka in production, an in-memory list in fast tests
(tests/support/memory.py).
"""

from __future__ import annotations

import getpass
import logging
import queue
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaError, TopicPartition

from common.errors import ArkError, KafkaUnavailable
from common.kafka import ensure_topic, make_consumer, make_producer, unavailable, watermarks
from common.settings import KafkaSettings
from schemas import envelope
from schemas.control import (
    CONTROL_SCHEMA,
    Body,
    Pause,
    Resume,
    SetDelay,
    SourceGap,
    body_from_wire,
    kind_of,
    to_wire,
)
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import control_topic

if TYPE_CHECKING:
    from common.config import ArkConfig

log = logging.getLogger(__name__)

Wire = tuple[int, bytes | None, envelope.Headers]


@dataclass(frozen=True)
class ControlRecord:
    """One verified, decoded record of the control topic."""

    offset: int
    body: Body
    target: str
    issued_by: str
    issued_at_us: int
    request_id: str

    @property
    def kind(self) -> str:
        """The body's kind (``set-delay``, ``retransmit``...)."""
        return kind_of(self.body)


class ControlBus(ABC):
    """The transport of one group's control records."""

    @abstractmethod
    def send(self, value: bytes, headers: list[tuple[str, str | bytes | None]]) -> None:
        """Append one record and wait until it is durable (KafkaUnavailable otherwise)."""

    @abstractmethod
    def fetch(self, max_records: int) -> list[Wire]:
        """Records appended since the last fetch, in order (possibly none; never blocks long)."""

    @abstractmethod
    def end(self) -> int:
        """The offset the next record will get (everything below it can be fetched)."""

    @abstractmethod
    def position(self) -> int:
        """The offset the next fetch starts at."""

    def close(self) -> None:  # noqa: B027 - an optional hook
        """Release the transport."""


class KafkaBus(ControlBus):
    """``ark.<group>.control`` on Kafka: a long-lived producer, and a reader from ``start``."""

    def __init__(self, settings: KafkaSettings, group: str, start: int | None = 0) -> None:
        self._settings = settings
        self._topic = control_topic(group)
        ensure_topic(settings, self._topic, retention_ms=-1)
        self._producer: Any = None
        self._consumer = make_consumer(settings, group_id=f"ark-control-{uuid.uuid4().hex[:8]}")
        begin = self.end() if start is None else start
        self._consumer.assign([TopicPartition(self._topic, 0, begin)])
        self._next = begin

    def send(self, value: bytes, headers: list[tuple[str, str | bytes | None]]) -> None:
        if self._producer is None:
            extra: dict[str, Any] = {"message.timeout.ms": 15000, "linger.ms": 0}
            self._producer = make_producer(self._settings, **extra)
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(self._topic, value, headers=headers, on_delivery=on_delivery)
        if self._producer.flush(20) or errors:
            raise unavailable(self._settings, errors[0] if errors else "control record not delivered in 20 s")

    def fetch(self, max_records: int) -> list[Wire]:
        out: list[Wire] = []
        for msg in self._consumer.consume(num_messages=max_records, timeout=0):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("control topic: %s", error)
                continue
            offset = msg.offset() or 0
            self._next = offset + 1
            out.append((offset, msg.value(), msg.headers()))
        return out

    def end(self) -> int:
        return watermarks(self._consumer, self._topic, 0)[1]

    def position(self) -> int:
        return self._next

    def close(self) -> None:
        self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5)


class ControlChannel:
    """Signed records out; verified, typed records in (see the module docstring)."""

    def __init__(self, group: str, key: bytes, bus: ControlBus, who: str | None = None) -> None:
        self.group = group
        self._key = key
        self.bus = bus
        self._who = who or f"{getpass.getuser()}@{socket.gethostname()}"
        self._seen: set[str] = set()
        #: Refused records by reason: unsigned, bad-signature, replayed, unreadable.
        self.refused: Counter[str] = Counter()
        #: Records this channel wrote, by kind (an agent's quarantines and resyncs, for its metrics).
        self.published: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._later: queue.Queue[tuple[Body, str]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, cfg: ArkConfig, *, start: int | None = 0) -> ControlChannel:
        """The group's channel on Kafka, reading from offset ``start`` (None: from the current end)."""
        return cls(cfg.group, cfg.control_key_bytes(), KafkaBus(cfg.kafka, cfg.group, start))

    # -- out -----------------------------------------------------------------------------------------
    def publish(self, body: Body, target: str = "") -> str:
        """Sign and write one record, and wait until Kafka has it. Returns its request id."""
        request_id = uuid.uuid4().hex
        record = {"group": self.group, "kind": kind_of(body), "target": target, "args": {},
                  "issued_by": self._who, "issued_at_us": time.time_ns() // 1000, "request_id": request_id,
                  "body": to_wire(body)}
        env = envelope.sign(envelope.encode(CONTROL_SCHEMA, record), self._key)
        with self._lock:
            self.bus.send(env.value, env.headers)
            self.published[kind_of(body)] += 1
        return request_id

    def publish_later(self, body: Body, target: str = "") -> None:
        """Queue a record for a background thread (a loop that must never wait for Kafka); best effort,
        retried by the thread, logged when it cannot be written."""
        if self._later is None:
            self._later = queue.Queue()
            threading.Thread(target=self._drain_later, name="control-out", daemon=True).start()
        self._later.put((body, target))

    def _drain_later(self) -> None:
        assert self._later is not None
        while True:
            body, target = self._later.get()
            try:
                self.publish(body, target)
            except ArkError as exc:
                log.warning("could not record %s on the control topic: %s", kind_of(body), exc.message)
            finally:
                self._later.task_done()

    def flush_later(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until queued records are written."""
        deadline = time.monotonic() + timeout
        while self._later is not None and self._later.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- in ------------------------------------------------------------------------------------------
    def poll(self, max_records: int = 500) -> list[ControlRecord]:
        """Verified records that arrived since the last call (possibly none; never blocks long)."""
        out: list[ControlRecord] = []
        for offset, value, headers in self.bus.fetch(max_records):
            rec = self._accept(offset, value, headers)
            if rec is not None:
                out.append(rec)
        return out

    def replay(self, timeout: float = 10.0) -> list[ControlRecord]:
        """Everything up to the current end of the topic (at start-up)."""
        high = self.bus.end()
        out: list[ControlRecord] = []
        deadline = time.monotonic() + timeout
        while self.bus.position() < high:
            batch = self.poll()
            out.extend(batch)
            if self.bus.position() >= high:
                break
            if time.monotonic() >= deadline:
                raise KafkaUnavailable(f"could not replay the control topic of {self.group} in {timeout:g} s",
                                       fix="check the broker")
            time.sleep(0.02)
        return out

    def _refuse(self, reason: str, offset: int, detail: str) -> None:
        self.refused[reason] += 1
        if reason not in self._warned:
            self._warned.add(reason)
            log.error("refused control record at offset %d (%s): %s; further refusals are counted in the heartbeat",
                      offset, reason, detail)

    def _accept(self, offset: int, value: bytes | None, headers: envelope.Headers) -> ControlRecord | None:
        try:
            envelope.check_signature(value, headers, self._key)
            dec = envelope.decode(value, headers, topic=control_topic(self.group), partition=0, offset=offset,
                                  expect=CONTROL_SCHEMA)
            body = body_from_wire(dec.record)
        except NotAuthentic as exc:
            self._refuse(exc.reason, offset, str(exc))
            return None
        except (CorruptEntry, ValueError, KeyError) as exc:
            self._refuse("unreadable", offset, str(exc))
            return None
        rec = dec.record
        if rec["group"] != self.group:
            self._refuse("other-group", offset, f"the record names group {rec['group']!r}")
            return None
        if rec["request_id"] in self._seen:
            self._refuse("replayed", offset, f"request {rec['request_id']} was already seen")
            return None
        self._seen.add(rec["request_id"])
        if body is None:
            log.debug("control record of unknown kind %s at offset %d ignored", rec["kind"], offset)
            return None
        return ControlRecord(offset=offset, body=body, target=rec["target"], issued_by=rec["issued_by"],
                             issued_at_us=rec["issued_at_us"], request_id=rec["request_id"])

    def close(self) -> None:
        """Write what is queued, then release the transport."""
        self.flush_later(5.0)
        self.bus.close()


# -- settings derived by replaying the topic ----------------------------------------------------------
def current_delay(records: Iterable[ControlRecord], standby: str, default: float) -> float:
    """The delay in force for ``standby`` after ``records`` (the last set-delay for it, or for all)."""
    delay = default
    for rec in records:
        if isinstance(rec.body, SetDelay) and rec.target in ("", standby):
            delay = rec.body.seconds
    return delay


def is_paused(records: Iterable[ControlRecord], standby: str, default: bool = False) -> bool:
    """Whether the last pause/resume intent for ``standby`` (or all) was a pause."""
    paused = default
    for rec in records:
        if isinstance(rec.body, Pause | Resume) and rec.target in ("", standby):
            paused = isinstance(rec.body, Pause)
    return paused


def source_gaps(records: Sequence[ControlRecord]) -> list[SourceGap]:
    """The accepted source gaps among ``records``."""
    return [r.body for r in records if isinstance(r.body, SourceGap)]
