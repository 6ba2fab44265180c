"""The alert command: run once per event of the configured kinds, by the active controller, never in its tick.

**Who runs it: the active controller.** It holds the group's lease (failover/lease.py), so exactly one process
of the group alerts at a time, on a host the operator chose for automation; node agents would alert N times
for one failover, and a node agent whose node is cut off could not be heard anyway. A group without a running
controller gets no alerts, which ``ark status`` shows (no controller heard from).

**Once per event, across restarts and takeovers.** Every run is recorded on the control topic
(:class:`~schemas.control.AlertSent`, with the event's control offset). :class:`AlertCursor` folds the topic:
a controller alerts only events above the highest offset recorded, so a restarted controller, or another one that
takes the lease over, goes on where the last one stopped, including events that happened while no controller
held the lease. A group that never alerted starts at the end of the topic as the controller found it (its
history is not paged), and an event older than :data:`MAX_AGE_S` is recorded as skipped rather than paged hours
late. The one window left is a controller killed between the command's exit and the record: the next one runs
the command again for that event (an alert twice rather than never).

**Never blocks the tick.** The tick hands events to :class:`Alerter`, a bounded queue with one worker thread; a
full queue drops the event (logged, counted). The worker runs the command without a shell, in a session of its
own, with a minimal environment (PATH, HOME, LANG, TZ: never the controller's, which holds the secrets that
``{env: NAME}`` references point at) plus ``ARK_GROUP``, ``ARK_EVENT_KIND``, ``ARK_EVENT_NODE``,
``ARK_EVENT_TIME``, ``ARK_EVENT_MESSAGE`` (and ``ARK_EVENT_EPOCH``, ``ARK_EVENT_OFFSET``), and the same as one
JSON object on stdin. Event messages are decision sentences and check results: node names, states, offsets,
never row values. A run that exits non-zero or outlives ``alerts.timeout_s`` (its process group is killed) is
logged with its exit status and the last line of its error output (redacted), counted, and retried once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from common.automation_settings import AlertSettings
from common.control import ControlRecord
from common.events import Event, event_of
from common.monitor import redact
from schemas.control import AlertSent

log = logging.getLogger(__name__)

#: Events waiting for the command at most (more are dropped, logged and counted: a storm must not grow memory).
QUEUE_SIZE: Final = 100
#: An event older than this when its turn comes is recorded as skipped, not paged.
MAX_AGE_S: Final = 3600.0
#: Wait before the one retry.
RETRY_AFTER_S: Final = 1.0
#: Variables of the controller's environment the command gets (none of them holds a secret).
PASSED_ENV: Final = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME")


@dataclass(frozen=True)
class Outcome:
    """How the command ended for one event: ``ok``, a sentence (``exited 0``, ``killed after 10 s``), the runs."""

    ok: bool
    said: str
    attempts: int


def command_environment(event: Event, group: str) -> dict[str, str]:
    """The command's environment: a few harmless variables of ours, and the event's."""
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(event.environment(group))
    return env


def run_once(argv: tuple[str, ...], event: Event, group: str, timeout_s: float) -> tuple[bool, str]:
    """One run of the command for ``event``: (exited 0, what happened)."""
    stdin = json.dumps(event.document(group)) + "\n"
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=command_environment(event, group), start_new_session=True)
    except OSError as exc:
        return False, f"could not run: {exc.strerror or exc}"
    try:
        _out, err = proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started
        except ProcessLookupError:
            pass
        proc.communicate()
        return False, f"did not finish in {timeout_s:g} s (killed)"
    said = f"exited {proc.returncode}"
    lines = (err or "").strip().splitlines()
    if proc.returncode != 0 and lines:
        said += f": {redact(lines[-1])}"
    return proc.returncode == 0, said


def run_alert(settings: AlertSettings, event: Event, group: str, *,
              run: Callable[[tuple[str, ...], Event, str, float], tuple[bool, str]] = run_once,
              sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """Run the command for ``event``, retried once when it fails."""
    ok, said = run(settings.command, event, group, settings.timeout_s)
    if ok:
        return Outcome(True, said, 1)
    log.warning("alert command for %s event at offset %d %s; retrying once", event.kind, event.offset, said)
    sleep(RETRY_AFTER_S)
    ok, again = run(settings.command, event, group, settings.timeout_s)
    return Outcome(ok, again if ok else f"{said}; retried: {again}", 2)


class AlertCursor:
    """Which events still need an alert (pure; see the module docstring)."""

    def __init__(self, kinds: tuple[str, ...], floor: int) -> None:
        self.kinds = kinds
        #: Events at or below this offset are done (alerted, skipped, or from before alerting began).
        self.done = floor - 1
        self._recorded = False
        self.pending: dict[int, Event] = {}

    @classmethod
    def of(cls, kinds: tuple[str, ...], backlog: list[ControlRecord], end: int) -> AlertCursor:
        """After replaying ``backlog`` (the control topic up to ``end``): go on after the last recorded alert, or
        from ``end`` when the group never alerted."""
        cursor = cls(kinds, floor=0)
        cursor.update(backlog)
        if not cursor._recorded:
            cursor.done = max(cursor.done, end - 1)
            cursor.pending.clear()
        return cursor

    def update(self, records: list[ControlRecord]) -> None:
        """Fold newer records: events of the kinds wait, a recorded alert settles everything up to its event."""
        for rec in records:
            if isinstance(rec.body, AlertSent):
                self._recorded = True
                self.done = max(self.done, rec.body.event_offset)
                self.pending = {o: e for o, e in self.pending.items() if o > self.done}
                continue
            event = event_of(rec)
            if event is not None and event.kind in self.kinds and rec.offset > self.done:
                self.pending[rec.offset] = event

    def due(self) -> list[Event]:
        """The events that wait, oldest first."""
        return [self.pending[o] for o in sorted(self.pending)]


class Alerter:
    """The worker: a bounded queue of events, one thread running the command (see the module docstring).

    ``record`` is called from the worker thread after each event with its outcome (the controller records it on
    the control topic); ``may_run`` is asked before each run (the controller: do I still hold the lease?)."""

    def __init__(self, settings: AlertSettings, group: str, *, record: Callable[[Event, Outcome], None],
                 may_run: Callable[[], bool] = lambda: True, run: Callable[[Event], Outcome] | None = None) -> None:
        self.settings = settings
        self.group = group
        self._record = record
        self._may_run = may_run
        self._run = run or (lambda event: run_alert(settings, event, group))
        self._queue: queue.Queue[Event] = queue.Queue(QUEUE_SIZE)
        self._offered: set[int] = set()
        self._lock = threading.Lock()
        #: Counters for the heartbeat: alerts.sent, alerts.failed, alerts.retried, alerts.dropped, alerts.skipped.
        self.counts = {"sent": 0, "failed": 0, "retried": 0, "dropped": 0, "skipped": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="alerts", daemon=True)
        self._thread.start()

    def offer(self, event: Event) -> None:
        """Queue ``event`` once (never blocks)."""
        with self._lock:
            if event.offset in self._offered:
                return
            try:
                self._queue.put_nowait(event)
            except queue.Full:
                self.counts["dropped"] += 1
                log.error("alert queue full (%d events): %s event at offset %d not alerted", QUEUE_SIZE, event.kind,
                          event.offset)
                return
            self._offered.add(event.offset)

    def forget(self) -> None:
        """Drop what waits (the lease was lost: the next holder alerts it); the run in progress finishes."""
        with self._lock:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                self._queue.task_done()
            self._offered.clear()

    def idle(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until every queued event was handled."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        return not self._queue.unfinished_tasks

    def close(self) -> None:
        """Stop the worker after the run in progress."""
        self._stop.set()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._handle(event)
            except Exception:  # noqa: BLE001 - the worker outlives one bad event (a failing record callback)
                log.exception("alert for %s event at offset %d", event.kind, event.offset)
            finally:
                self._queue.task_done()

    def _handle(self, event: Event) -> None:
        if not self._may_run():
            return
        age = time.time() - event.at_us / 1e6
        if age > MAX_AGE_S:
            self.counts["skipped"] += 1
            log.warning("%s event at offset %d is %.0f min old: recorded as skipped, not alerted", event.kind,
                        event.offset, age / 60)
            self._record(event, Outcome(False, f"skipped: {age / 60:.0f} min old", 0))
            return
        outcome = self._run(event)
        self.counts["retried"] += outcome.attempts > 1
        if outcome.ok:
            self.counts["sent"] += 1
            log.info("alert command for %s event of %s (offset %d) %s", event.kind, event.node or "the group",
                     event.offset, outcome.said)
        else:
            self.counts["failed"] += 1
            log.error("alert command for %s event of %s (offset %d) failed: %s", event.kind, event.node or "the group",
                      event.offset, outcome.said)
        self._record(event, outcome)


def sent_record(event: Event, outcome: Outcome, holder: str) -> AlertSent:
    """The control record of one handled event."""
    return AlertSent(event.offset, event.kind, outcome.said, outcome.attempts, holder)
