"""One active controller per group: a lease made of records on a single-partition Kafka topic.

Several ``ark controller`` processes may run (on different hosts); one *acts*. Kafka is the only shared
service, so the lease is built on what a single partition gives: one total order of records, stamped by the
partition leader's clock (``message.timestamp.type=LogAppendTime``). Every controller writes
:class:`~schemas.control.ControllerLease` records on ``ark.<group>.lease`` and folds them in order
(:class:`LeaseBook`, pure): the same records give every reader the same holder.

**The rules.**

* The holder renews every ``ttl/3``. A record by the holder renews its lease; a record by anyone else is void
  while the holder's lease runs (its last renewal is less than ``ttl`` older, in the leader's timestamps).
* A contender writes a claim only after the topic has been *quiet* (no record at all, valid or void) for
  ``ttl`` + a margin by its own clock, counted from when it *read* the last record. The first claim appended
  after the holder's lease ran out takes the lease; a racing second claim lands inside the new lease and is void;
  its writer reads that and stays a standby.
* A holder *acts* only while its last renewal that it read back as valid was **sent** less than
  ``ttl * HOLDER_MARGIN`` ago by its own monotonic clock. A renewal is appended after it is sent, and a contender
  counts from when it read the last record, so the holder stops acting before any contender can claim: the
  two clocks need the same *rate*, never the same time (the Gray-Cheriton lease argument).
* A controller that stops cleanly gives the lease up (``ttl_s`` 0): a standby controller claims at once, without
  waiting for quiet (racing claims are settled as above).

**Why not consumer-group membership** of a single-partition topic (the other way Kafka gives one owner)? The
group coordinator reassigns the partition when the member's session times out *on the broker*, and the member
learns that it lost it only later, on its own next failed heartbeat: both think they own it meanwhile, and the
old owner cannot bound that window (a paused process does not even run its timer). The lease gives the holder a
deadline it enforces itself, before anyone else may claim. The session timeout also has a broker-side floor
(``group.min.session.timeout.ms``, 6 s classic, 45 s for the KIP-848 protocol) above the 5 s ttl.

**Why a topic of its own and not the control topic**: renewals every ``ttl/3`` forever would make the control
topic (kept forever, replayed by every agent at start) grow by ~50 000 records a day. The lease topic keeps an
hour; the decisions that matter (a controller became active, a failover) go to the control topic, where
``ark status`` and the console show them.

**What two acting controllers could do anyway** (a bug, or clocks whose rates differ beyond the margin): each
failover closes the epoch with an end-of-epoch marker written with the group's ``transactional.id`` (the later
writer fences the earlier in Kafka), and the roles take the *first* ``epoch-begun`` of an epoch: the capture and
every applier follow that one primary. The damage is bounded to a second node promoted that nobody follows, which
``ark status`` then shows as a demoted former primary.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from common.config import ArkConfig
from common.kafka import ensure_topic, make_consumer, make_producer, offset_for_time
from schemas import envelope
from schemas.control import CONTROL_SCHEMA, ControllerLease, body_from_wire, kind_of, to_wire
from schemas.errors import CorruptEntry, NotAuthentic
from schemas.topics import lease_topic

log = logging.getLogger(__name__)

#: A holder acts for this fraction of ttl after sending its last renewal (room for clock-rate drift).
HOLDER_MARGIN = 0.8
#: A contender waits this much more than ttl of quiet before it claims.
CLAIM_MARGIN_S = 0.25
#: How far back a controller that starts reads the lease topic.
LOOKBACK_S = 60.0
LEASE_RETENTION_MS = 3_600_000
#: The lease thread reads, renews and claims this often (a takeover is late by at most about this much).
STEP_S = 0.1


@dataclass(frozen=True)
class LeaseRecord:
    """One record of the lease topic, with the partition leader's timestamp."""

    holder: str
    ttl_s: float
    at_ms: int
    offset: int
    request_id: str = ""


@dataclass
class LeaseBook:
    """The lease after the records folded so far (pure; every reader of the same records agrees)."""

    holder: str = ""
    term: int = 0
    renewed_ms: int = 0
    ttl_s: float = 0.0

    def expired_at(self, at_ms: int) -> bool:
        """Whether the holder's lease had run out at ``at_ms`` (leader time); True when nobody holds it."""
        return not self.holder or at_ms - self.renewed_ms > self.ttl_s * 1000

    def fold(self, rec: LeaseRecord) -> bool:
        """Apply one record in topic order; True when it counted (a claim that won, a renewal, a release)."""
        if rec.holder == self.holder and not self.expired_at(rec.at_ms):
            self.renewed_ms, self.ttl_s = rec.at_ms, rec.ttl_s  # ttl 0: given up, expired from now on
            return True
        if self.expired_at(rec.at_ms) and rec.ttl_s > 0:
            self.holder, self.term, self.renewed_ms, self.ttl_s = rec.holder, self.term + 1, rec.at_ms, rec.ttl_s
            return True
        return False


class KafkaLease:
    """This process's side of the lease (see the module docstring): a thread reads, renews and claims."""

    def __init__(self, cfg: ArkConfig, holder: str, ttl_s: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.holder = holder
        self.ttl_s = ttl_s
        self.book = LeaseBook()
        self._cfg = cfg
        self._key = cfg.control_key_bytes()
        self._topic = lease_topic(cfg.group)
        self._clock = clock
        ensure_topic(cfg.kafka, self._topic, retention_ms=LEASE_RETENTION_MS,
                     extra={"message.timestamp.type": "LogAppendTime", "segment.ms": str(LEASE_RETENTION_MS // 4)})
        start = offset_for_time(cfg.kafka, self._topic, int((time.time() - LOOKBACK_S) * 1000))
        self._consumer = make_consumer(cfg.kafka, group_id=f"ark-lease-{uuid.uuid4().hex[:8]}",
                                       **{"fetch.wait.max.ms": 50})
        self._consumer.assign([TopicPartition(self._topic, 0, start)])
        quick: dict[str, Any] = {"linger.ms": 0, "message.timeout.ms": max(1000, int(ttl_s * 1000))}
        self._producer = make_producer(cfg.kafka, **quick)
        #: Our records not read back yet: request id -> when it was sent (monotonic).
        self._sent: dict[str, float] = {}
        self._last_sent = -1e18
        #: When the last record of anyone was read (a starting controller first listens for one ttl).
        self._last_seen = clock()
        self._valid_until = -1e18
        #: When our last record that counted was sent (monotonic): the holder renews while this is within ttl.
        self._renewed_sent = -1e18
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost_at: float | None = None

    # -- questions -------------------------------------------------------------------------------------
    def active(self) -> bool:
        """True while this process holds the lease and may act (its own deadline, see the module docstring)."""
        return self.book.holder == self.holder and self._clock() < self._valid_until

    def describe(self) -> str:
        """Who holds the lease, for a log line."""
        if self.active():
            return f"active (lease term {self.book.term}, ttl {self.ttl_s:g} s)"
        if self.book.holder and self._clock() - self._last_seen <= self.ttl_s:
            return f"standing by: {self.book.holder} holds the lease (term {self.book.term})"
        return "standing by: nobody holds the lease yet"

    # -- the loop --------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run :meth:`step` in a background thread every :data:`STEP_S`."""
        self._thread = threading.Thread(target=self._run, name="controller-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(min(STEP_S, self.ttl_s / 10)):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - loop boundary: a lease thread that dies would hold nothing
                log.warning("controller lease: %s", exc)

    def step(self) -> None:
        """Read what arrived, then renew (holder) or claim (after quiet)."""
        self._read()
        now = self._clock()
        mine = self.book.holder == self.holder and now - self._renewed_sent < self.ttl_s
        if mine and now - self._last_sent >= self.ttl_s / 3:
            self._send(self.ttl_s)
        elif not mine and now - self._last_sent > self.ttl_s:
            released = bool(self.book.holder) and self.book.ttl_s == 0
            if released or now - self._last_seen > self.ttl_s + CLAIM_MARGIN_S:
                log.info("controller lease: %s, claiming it as %s", f"given up by {self.book.holder}" if released
                         else f"quiet for {now - self._last_seen:.1f} s", self.holder)
                self._send(self.ttl_s)

    def _read(self) -> None:
        for msg in self._consumer.consume(num_messages=500, timeout=0.05):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.debug("lease topic: %s", error)
                continue
            self._last_seen = self._clock()
            rec = self._decode(msg)
            if rec is None:
                continue
            was_active = self.active()
            counted = self.book.fold(rec)
            sent = self._sent.pop(rec.request_id, None)
            if counted and rec.holder == self.holder and sent is not None:
                self._renewed_sent = sent if rec.ttl_s > 0 else -1e18
                self._valid_until = sent + self.ttl_s * HOLDER_MARGIN if rec.ttl_s > 0 else -1e18
            if was_active and not self.active():
                self.lost_at = self._clock()
            self._sent = {k: v for k, v in self._sent.items() if self._clock() - v < 60}

    def _decode(self, msg: Any) -> LeaseRecord | None:
        try:
            envelope.check_signature(msg.value(), msg.headers(), self._key)
            dec = envelope.decode(msg.value(), msg.headers(), topic=self._topic, partition=0, offset=msg.offset(),
                                  expect=CONTROL_SCHEMA)
            body = body_from_wire(dec.record)
        except (NotAuthentic, CorruptEntry, ValueError, KeyError) as exc:
            log.warning("lease record at offset %s refused: %s", msg.offset(), exc)
            return None
        if not isinstance(body, ControllerLease) or dec.record["group"] != self._cfg.group:
            return None
        return LeaseRecord(body.holder, body.ttl_s, int(msg.timestamp()[1]), int(msg.offset() or 0),
                           dec.record["request_id"])

    def _send(self, ttl_s: float) -> None:
        request_id = uuid.uuid4().hex
        body = ControllerLease(self.holder, ttl_s)
        record = {"group": self._cfg.group, "kind": kind_of(body), "target": "", "args": {}, "issued_by": self.holder,
                  "issued_at_us": time.time_ns() // 1000, "request_id": request_id, "body": to_wire(body)}
        env = envelope.sign(envelope.encode(CONTROL_SCHEMA, record), self._key)
        sent = self._clock()
        self._sent[request_id] = sent
        self._last_sent = sent
        self._producer.produce(self._topic, env.value, headers=env.headers)
        self._producer.poll(0)

    def close(self) -> None:
        """Stop the thread and give the lease up when held (a standby controller takes over at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.book.holder == self.holder and self._clock() - self._renewed_sent < self.ttl_s:
            self._send(0.0)
            self._valid_until = -1e18
        self._producer.flush(3)
        self._consumer.close()
