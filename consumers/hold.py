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

:class:`VerifyHold` is an :class:`~consumers.hooks.ApplyHook`: it answers at transaction boundaries and
waits before the first chunk of a transaction (and before each checkpoint).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from common.control import ControlChannel, ControlRecord
from consumers.base import ApplyState
from consumers.hooks import ApplyHook, Boundary
from schemas.control import VerifyArmed, VerifyAt, VerifyHeld, VerifyRelease
from schemas.control import VerifyHold as VerifyHoldIntent
from schemas.entries import Position, TxnChunk
from schemas.positions import just_before

log = logging.getLogger(__name__)

#: Requests older than this when they arrive are ignored (a long-delayed record).
STALE_REQUEST_S = 120.0


def crosses(chunk: TxnChunk, floor: bytes) -> bool:
    """Whether ``chunk`` is at or after P, where ``floor`` is the key just below P.

    A transaction committed at or after P has a key above the floor. A checkpoint's key sits just
    below the idle position it records and says every commit up to its key was published: one at
    or above the floor says everything below P has been seen.
    """
    return chunk.commit.key >= floor if chunk.is_checkpoint else chunk.commit.key > floor


def floor_of(key: bytes, position_text: str = "") -> bytes:
    """The key just below P, from P's key (as carried by ``verify-at``)."""
    return just_before(Position(text=position_text, key=key)).key


@dataclass
class _Request:
    request_id: str
    max_hold_s: float
    acked_at: float = 0.0            # monotonic time of verify-armed (0: not yet)
    floor: bytes | None = None       # known once verify-at arrived
    position: str = ""
    armed_s: float = 0.0             # how long the first stop lasted
    held_at: float = 0.0             # monotonic time of verify-held (0: not yet)


class VerifyHold(ApplyHook):
    """The verify holds of one standby's applier (one request at a time; a newer one replaces it)."""

    def __init__(self, channel: ControlChannel | None, standby: str) -> None:
        self.standby = standby
        self._channel = channel
        self._req: _Request | None = None

    def attach(self, channel: ControlChannel) -> None:
        """The agent's control channel (answers are published on it)."""
        self._channel = channel

    def _send(self, body: VerifyArmed | VerifyHeld) -> None:
        assert self._channel is not None
        self._channel.publish(body, self.standby)

    @property
    def active(self) -> bool:
        """A request is in progress (the loop polls the control channel faster meanwhile)."""
        req = self._req
        if req is not None and req.acked_at and req.floor is None \
                and time.monotonic() - req.acked_at > req.max_hold_s:
            log.warning("verify %s: no position within %.0f s; resuming", req.request_id, req.max_hold_s)
            self._req = None
        return self._req is not None

    def urgent(self) -> bool:
        """While a hold is in progress every millisecond stops the standby: poll control often."""
        return self.active

    def on_control(self, records: Sequence[ControlRecord]) -> None:
        """Pick up holds, positions and releases addressed to this standby."""
        for rec in records:
            if rec.target != self.standby:
                continue
            req, body = self._req, rec.body
            if isinstance(body, VerifyHoldIntent):
                if time.time() - rec.issued_at_us / 1e6 > STALE_REQUEST_S:
                    continue
                if req is not None:
                    log.warning("verify %s replaced by %s", req.request_id, rec.request_id)
                self._req = _Request(rec.request_id, body.max_hold_s)
                log.info("verify %s requested by %s", rec.request_id, rec.issued_by)
            elif req is None or getattr(body, "request", None) != req.request_id:
                continue
            elif isinstance(body, VerifyAt) and req.acked_at:
                req.floor = floor_of(body.key, body.position)
                req.position = body.position
                req.armed_s = time.monotonic() - req.acked_at
            elif isinstance(body, VerifyRelease):
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
        self._send(VerifyArmed(req.request_id, state.position, state.next_offset))
        req.acked_at = time.monotonic()

    def at_boundary(self, b: Boundary) -> None:
        if self.needs_ack():
            b.commit()  # answer from a committed state, then nothing new until P is known
            self.ack(b.committed())
            return
        req = self._req
        if req is not None and req.floor is not None and not req.held_at:
            # Already at P: the last entry applied was a checkpoint at or past P's floor (an idle source, e.g. a
            # primary fenced for a cutover, whose one checkpoint at its final position arrived before the hold).
            # No later entry will come to stop before, so the hold is announced here.
            # Every transaction below P has a key at or below the floor and arrives in key order: a state at or past
            # the floor holds them all.
            b.commit()
            state = b.committed()
            if state.position_key >= req.floor:
                self._send(VerifyHeld(req.request_id, state.position, state.position_key, state.next_offset,
                                      round(req.armed_s, 3)))
                req.held_at = time.monotonic()

    def blocks(self, chunk: TxnChunk) -> bool:
        """Whether ``chunk`` (a new transaction or a checkpoint) must wait: P is not known yet, or it is at P."""
        req = self._req
        return req is not None and bool(req.acked_at) and (req.floor is None or crosses(chunk, req.floor))

    def before_txn(self, chunk: TxnChunk, b: Boundary) -> None:
        """Apply nothing until ``chunk`` may go: P arrived below it, a release, the time limit, or a stop.

        The loop has committed, so its committed state is the standby's state row; it is announced with
        ``verify-held`` once the hold sits at P.
        """
        req = self._req
        b.report("held for verify")
        try:
            while req is not None and self._req is req and not b.stopping.is_set():
                if req.floor is not None:
                    if not crosses(chunk, req.floor):
                        return  # below P: apply it
                    if not req.held_at:
                        state = b.committed()
                        self._send(VerifyHeld(req.request_id, state.position, state.position_key,
                                              state.next_offset, round(req.armed_s, 3)))
                        req.held_at = time.monotonic()
                started = req.held_at or req.acked_at
                if time.monotonic() - started > req.max_hold_s:
                    log.warning("verify %s: not released within %.0f s; resuming", req.request_id, req.max_hold_s)
                    self._req = None
                    return
                b.tick()
                time.sleep(0.002)
        finally:
            b.report("running")
