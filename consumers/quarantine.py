"""Apply side of CRC retransmission (guarantee 4): quarantine a corrupt entry, ask for it again, wait.

An entry that is still corrupt after the apply runner re-read it is never applied. Instead:

1. its raw value bytes, its original headers and the reason go to the group's quarantine topic;
2. a ``retransmit`` intent asks the capture to republish everything after the standby's last
   *committed* commit position (the open target transaction is rolled back: the retransmission
   covers it too);
3. the standby awaits the retransmission: it applies nothing and never moves its state row, so a
   restart re-reads the corrupt entry and asks again. It reads on, skipping, until an entry tagged
   ``ark-retransmit-from: K`` with ``K <= applied key``: from there on the topic holds every commit
   above K, in order (:mod:`producers.retransmit`), and the runner's usual rule (skip commits at or
   below the applied key) makes the duplicates harmless.

If the capture answers ``retransmit-failed`` for the request (or for a position at or above it), the
standby stops with :class:`RetransmitFailed`, which says what is missing and that ``ark resync``
rebuilds it. A retransmission that does not come is waited for, with a warning: never skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from common.control import ControlChannel, ControlRecord
from common.errors import ArkError
from common.exit_codes import ExitCode
from common.redo import RedoLog, RedoRecord
from consumers.base import ApplyState
from consumers.hooks import ApplyHook
from schemas import envelope
from schemas.control import Retransmit, RetransmitDone
from schemas.control import RetransmitFailed as RetransmitRefused
from schemas.errors import CorruptEntry

log = logging.getLogger(__name__)

#: Warn (in the heartbeat and the log) when a retransmission has not arrived after this long.
WAIT_WARN_S = 300.0
#: Headers added to a quarantined entry (its own headers are kept as they were).
QUARANTINE_HEADERS = ("ark-q-topic", "ark-q-partition", "ark-q-offset", "ark-q-position", "ark-q-standby",
                      "ark-q-reason", "ark-q-at-us")


class RetransmitPending(Exception):
    """Ends the apply session: a corrupt entry was quarantined and requested again; the next session
    (built from the committed state row) awaits the retransmission."""


class RetransmitFailed(ArkError):
    """The capture cannot retransmit what this standby needs: the standby stops."""

    exit_code = ExitCode.RETRANSMIT_FAILED


class _Reports(Protocol):
    state: str
    message: str


@dataclass
class Awaiting:
    """A retransmission this standby waits for."""

    request_id: str
    where: str  # topic[partition]@offset of the corrupt entry
    offset: int
    after_position: str
    after_key: bytes
    reason: str
    since: float
    request_offset: int = -1  # where the request sits in the control topic, once seen
    warned: bool = False
    started: bool = False  # the capture said it republishes


def is_retransmission(headers: envelope.Headers, applied_key: bytes) -> bool:
    """Whether an entry starts (or continues) a retransmission this standby can apply from.

    True when it carries ``ark-retransmit-from`` whose key is at or below ``applied_key``: the topic
    then holds, from this entry on, every commit above that key.
    """
    tag = envelope.header_map(headers).get(envelope.H_RETRANSMIT_FROM)
    if tag is None:
        return False
    try:
        return bytes.fromhex(tag) <= applied_key
    except ValueError:
        return False


def answers(rec: ControlRecord, wait: Awaiting, standby: str) -> bool:
    """Whether a control record is the capture's refusal of ``wait``: it names the request, or it refuses a
    re-read for this standby from a key at or above ours (what cannot be re-read there cannot be here)."""
    body = rec.body
    if not isinstance(body, RetransmitRefused):
        return False
    if wait.request_id in body.request_ids:
        return True
    return rec.target == standby and bool(body.after_key) and body.after_key >= wait.after_key


class Retransmits(ApplyHook):
    """One standby's quarantine and retransmission state (kept across apply sessions of one process)."""

    def __init__(self, redo: RedoLog, standby: str, reports: _Reports, warn_after_s: float = WAIT_WARN_S) -> None:
        self.redo = redo
        self.standby = standby
        self.reports = reports
        self.warn_after_s = warn_after_s
        self.awaiting: Awaiting | None = None
        self._channel: ControlChannel | None = None
        self._failed: RetransmitFailed | None = None

    def attach(self, channel: ControlChannel) -> None:
        """The agent's control channel (requests are published on it)."""
        self._channel = channel

    # -- a corrupt entry ---------------------------------------------------------------------------
    def request(self, record: RedoRecord, error: CorruptEntry, state: ApplyState) -> RetransmitPending:
        """Quarantine ``record``, ask for a retransmission after ``state`` (the committed state row), and
        return the exception that ends the session."""
        assert self._channel is not None
        offset = record.offset
        self.quarantine(record, error)
        request_id = self._channel.publish(Retransmit(state.position, state.position_key, offset, error.reason),
                                           self.standby)
        where = f"{error.topic}[{error.partition}]@{offset}"
        self.awaiting = Awaiting(request_id, where, offset, state.position, state.position_key, error.reason,
                                 time.monotonic())
        text = (f"entry {where} is corrupt ({error.reason}): quarantined, "
                f"retransmission requested after {state.position or 'the start'} (request {request_id})")
        log.error("%s", text)
        self.reports.state, self.reports.message = "awaiting-retransmit", text
        return RetransmitPending(text)

    def quarantine(self, record: RedoRecord, error: CorruptEntry) -> None:
        """Write the raw bytes, the original headers and the reason to the quarantine topic."""
        raw = envelope.header_map(record.headers)
        headers: list[tuple[str, str | bytes | None]] = [(k, v.encode()) for k, v in raw.items()]
        headers += [("ark-q-topic", error.topic.encode()),
                    ("ark-q-partition", str(error.partition).encode()),
                    ("ark-q-offset", str(record.offset).encode()),
                    ("ark-q-position", error.source_position.encode()),
                    ("ark-q-standby", self.standby.encode()),
                    ("ark-q-reason", str(error).encode()),
                    ("ark-q-at-us", str(time.time_ns() // 1000).encode())]
        self.redo.quarantine(record.value, headers, f"{error.topic}:{error.partition}:{record.offset}")

    # -- waiting -----------------------------------------------------------------------------------
    def admit(self, record: RedoRecord | None, applied_key: bytes) -> bool:
        """While awaiting: False for everything before the retransmission (nothing is applied), True from
        the first retransmitted entry on. Raises RetransmitFailed when the capture refused."""
        wait = self.awaiting
        if wait is None:
            return True
        if self._failed is not None:
            failed, self._failed = self._failed, None
            raise failed
        # Only a retransmission published after the corrupt entry will do: an older one (an earlier
        # corruption's) lies before it in the log, and applying from there meets the same bad entry again.
        if record is not None and record.offset > wait.offset and is_retransmission(record.headers, applied_key):
            log.warning("retransmission found at offset %s (request %s): applying again from %s", record.offset,
                        wait.request_id, self.reports_position(wait))
            self.done()
            self.reports.state, self.reports.message = "running", ""
            return True
        self._report(wait, time.monotonic())
        return False

    @staticmethod
    def reports_position(wait: Awaiting) -> str:
        """The applied position a wait started from, for messages."""
        return wait.after_position or "the start"

    def done(self) -> None:
        """The retransmission arrived: stop waiting."""
        self.awaiting = None

    def on_control(self, records: Sequence[ControlRecord]) -> None:
        wait = self.awaiting
        if wait is None:
            return
        for rec in records:
            if isinstance(rec.body, Retransmit) and rec.request_id == wait.request_id:
                wait.request_offset = rec.offset
            elif isinstance(rec.body, RetransmitDone) and wait.request_id in rec.body.request_ids:
                wait.started = True
            elif wait.request_offset >= 0 and rec.offset > wait.request_offset and answers(rec, wait, self.standby):
                self.done()
                body = rec.body
                assert isinstance(body, RetransmitRefused)
                missing = body.reason or "the source no longer holds that log"
                floor = body.source_floor
                self._failed = RetransmitFailed(
                    f"standby {self.standby}: entry {wait.where} is corrupt ({wait.reason}) and the capture "
                    f"cannot retransmit the source log after {self.reports_position(wait)}: {missing}"
                    + (f" (the source keeps its log only from {floor})" if floor else "")
                    + f"; nothing after {self.reports_position(wait)} was applied",
                    fix=f"run 'ark resync {self.standby}' to rebuild the standby (the primary keeps running); "
                        "a longer capture.retransmit_window_s lets the capture heal this by itself next time")
                self.awaiting = wait  # still waiting: admit() raises the failure at the loop's next read
                return

    def _report(self, wait: Awaiting, now: float) -> None:
        waited = now - wait.since
        text = (f"awaiting retransmission of {wait.where} (corrupt: {wait.reason}); nothing applied after "
                f"{self.reports_position(wait)} (request {wait.request_id}"
                + ("; capture is republishing)" if wait.started else ")"))
        if waited >= self.warn_after_s:
            text = f"warning: no retransmission after {waited:.0f} s; is the capture running? " + text
            if not wait.warned:
                wait.warned = True
                log.warning("%s", text)
        self.reports.state, self.reports.message = "awaiting-retransmit", text
