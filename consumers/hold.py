"""Holding the applier at one source position for ``ark verify`` (the applier's side of the protocol).

A consistent compare needs the primary and the standby at the same source position P. On the primary
that is an exported snapshot, whose P PostgreSQL picks when the snapshot is created; on the standby
the applier must stop exactly between "every transaction before P" and "anything at or after P". The
applier runs close behind the primary and groups many source transactions per target transaction, so
by the time it heard of a P chosen first it would be past it. Hence two short stops, each bounded by
``max_hold_s`` so that a CLI that died never stops a standby for long:

1. ``verify-hold`` (CLI → applier): at the next transaction boundary the applier commits its batch,
   answers ``verify-armed`` and applies nothing new.
2. The CLI exports a primary snapshot at P and publishes ``verify-at`` P. Every transaction the
   applier has applied was in Kafka before, so it committed before P. The applier goes on with the
   entries below P and stops before the first transaction at or after P (or before a checkpoint that
   says every transaction below P was published: an idle source still gives a boundary), commits, and
   answers ``verify-held`` with its state row's next offset and position.
3. The CLI opens a REPEATABLE READ transaction on the standby, checks that the state row is the held
   one, and publishes ``verify-release`` (or keeps the hold while it repairs, then releases).

The runner calls :meth:`VerifyHold.on_control` with new control records, :meth:`VerifyHold.needs_ack`
/ :meth:`VerifyHold.ack` between transactions, and :meth:`VerifyHold.blocks` / :meth:`VerifyHold.wait`
before the first chunk of each transaction (and each checkpoint).
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaError, Producer

from common.config import KafkaSettings
from common.control import (
    CONTROL_SCHEMA,
    VERIFY_ARMED,
    VERIFY_AT,
    VERIFY_HELD,
    VERIFY_HOLD,
    VERIFY_RELEASE,
    ControlRecord,
)
from common.kafka import ensure_topic, make_producer, unavailable
from consumers.base import ApplyState
from schemas import envelope
from schemas.entries import Position, TxnChunk
from schemas.positions import just_before
from schemas.topics import control_topic

log = logging.getLogger(__name__)

#: Requests older than this when they arrive are ignored (a replayed or long-delayed record).
STALE_REQUEST_S = 120.0


class ControlSender:
    """A long-lived producer of control records (``publish_intent`` opens a client per call: too slow
    inside a hold, where every millisecond stops the standby)."""

    def __init__(self, settings: KafkaSettings, group: str) -> None:
        self._settings = settings
        self._group = group
        self._topic = control_topic(group)
        self._producer: Producer | None = None
        self._who = f"{getpass.getuser()}@{socket.gethostname()}"

    def send(self, kind: str, target: str, **args: Any) -> str:
        """Publish one record and wait until Kafka has it; returns its request id."""
        if self._producer is None:
            ensure_topic(self._settings, self._topic, retention_ms=-1)
            extra: dict[str, Any] = {"message.timeout.ms": 15000, "linger.ms": 0}
            self._producer = make_producer(self._settings, **extra)
        request_id = uuid.uuid4().hex
        record = {"group": self._group, "kind": kind, "target": target,
                  "args": {k: str(v) for k, v in args.items()}, "issued_by": self._who,
                  "issued_at_us": time.time_ns() // 1000, "request_id": request_id}
        env = envelope.encode(CONTROL_SCHEMA, record)
        errors: list[str] = []

        def on_delivery(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(self._topic, env.value, headers=env.headers, on_delivery=on_delivery)
        if self._producer.flush(20) or errors:
            raise unavailable(self._settings, errors[0] if errors else "control record not delivered in 20 s")
        return request_id

    def close(self) -> None:
        """Flush and drop the producer."""
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


def crosses(chunk: TxnChunk, floor: bytes) -> bool:
    """Whether ``chunk`` is at or after P, where ``floor`` is the key just below P.

    A transaction committed at or after P has a key above the floor. A checkpoint's key sits just
    below the idle position it records and says every commit up to its key was published: one at
    or above the floor says everything below P has been seen.
    """
    return chunk.commit.key >= floor if chunk.is_checkpoint else chunk.commit.key > floor


def floor_of(position_key_hex: str, position_text: str = "") -> bytes:
    """The key just below P, from P's key in hex (as carried by ``verify-at``)."""
    return just_before(Position(text=position_text, key=bytes.fromhex(position_key_hex))).key


class HoldHost(Protocol):
    """What the hold needs of the apply runner: its heartbeat state."""

    state: str

    def settings_changed(self) -> None:
        """Publish a heartbeat now."""


@dataclass
class _Request:
    request_id: str
    max_hold_s: float
    acked_at: float = 0.0            # monotonic time of verify-armed (0: not yet)
    floor: bytes | None = None       # known once verify-at arrived
    position: str = ""
    armed_s: float = 0.0             # how long the first stop lasted
    held_at: float = 0.0             # monotonic time of verify-held (0: not yet)


class VerifyHold:
    """The verify holds of one standby's applier (one request at a time; a newer one replaces it)."""

    def __init__(self, settings: KafkaSettings, group: str, standby: str,
                 sender: ControlSender | None = None) -> None:
        self.standby = standby
        self._sender = sender or ControlSender(settings, group)
        self._req: _Request | None = None

    @property
    def active(self) -> bool:
        """A request is in progress (the runner polls the control topic faster meanwhile)."""
        req = self._req
        if req is not None and req.acked_at and req.floor is None \
                and time.monotonic() - req.acked_at > req.max_hold_s:
            log.warning("verify %s: no position within %.0f s; resuming", req.request_id, req.max_hold_s)
            self._req = None
        return self._req is not None

    @property
    def control_interval(self) -> float:
        """Seconds between control polls: short while a request is in progress."""
        return 0.01 if self.active else 0.5

    def on_control(self, records: Iterable[ControlRecord]) -> None:
        """Pick up holds, positions and releases addressed to this standby."""
        for rec in records:
            if rec.target != self.standby:
                continue
            req = self._req
            if rec.kind == VERIFY_HOLD:
                if time.time() - rec.issued_at_us / 1e6 > STALE_REQUEST_S:
                    continue
                if req is not None:
                    log.warning("verify %s replaced by %s", req.request_id, rec.request_id)
                self._req = _Request(rec.request_id, float(rec.args.get("max_hold_s", "30")))
                log.info("verify %s requested by %s", rec.request_id, rec.issued_by)
            elif req is None or rec.args.get("request") != req.request_id:
                continue
            elif rec.kind == VERIFY_AT and req.acked_at:
                req.floor = floor_of(rec.args["key"], rec.args.get("position", ""))
                req.position = rec.args.get("position", "")
                req.armed_s = time.monotonic() - req.acked_at
            elif rec.kind == VERIFY_RELEASE:
                if req.held_at:
                    log.info("verify %s: stopped %.3f s before P=%s, held %.3f s at it", req.request_id,
                             req.armed_s, req.position, time.monotonic() - req.held_at)
                self._req = None

    def needs_ack(self) -> bool:
        """A hold arrived and has not been answered yet (answer it between transactions)."""
        return self._req is not None and not self._req.acked_at

    def ack(self, state: ApplyState) -> None:
        """Answer ``verify-armed`` with the committed state; from now on nothing new is applied until P."""
        req = self._req
        assert req is not None
        self._sender.send(VERIFY_ARMED, self.standby, request=req.request_id, position=state.position,
                          next_offset=state.next_offset)
        req.acked_at = time.monotonic()

    def blocks(self, chunk: TxnChunk) -> bool:
        """Whether ``chunk`` (a new transaction or a checkpoint) must wait: P is not known yet, or it is at P."""
        req = self._req
        return req is not None and bool(req.acked_at) and (req.floor is None or crosses(chunk, req.floor))

    def wait(self, chunk: TxnChunk, state: ApplyState, tick: Callable[[], None], host: HoldHost,
             stop: threading.Event) -> None:
        """Apply nothing until ``chunk`` may go: P arrived below it, a release, the time limit, or a stop.

        The caller has committed, so ``state`` is the standby's state row; it is announced with
        ``verify-held`` once the hold sits at P.
        """
        req = self._req
        previous = host.state
        host.state = "held for verify"
        host.settings_changed()
        try:
            while req is not None and self._req is req and not stop.is_set():
                if req.floor is not None:
                    if not crosses(chunk, req.floor):
                        return  # below P: apply it
                    if not req.held_at:
                        self._sender.send(VERIFY_HELD, self.standby, request=req.request_id,
                                          position=state.position, position_key=state.position_key.hex(),
                                          next_offset=state.next_offset, armed_s=f"{req.armed_s:.3f}")
                        req.held_at = time.monotonic()
                started = req.held_at or req.acked_at
                if time.monotonic() - started > req.max_hold_s:
                    log.warning("verify %s: not released within %.0f s; resuming", req.request_id, req.max_hold_s)
                    self._req = None
                    return
                tick()
                time.sleep(0.002)
        finally:
            host.state = previous if previous != "held for verify" else "running"
            host.settings_changed()

    def close(self) -> None:
        """Release the producer."""
        self._sender.close()
