"""Timing of passes: real-time watching (inotify through watchdog) with debounce, and schedules (APScheduler).

A :class:`PassTrigger` coalesces requests: any number of file events inside the debounce window,
plus schedule ticks, lead to one pass; a request arriving during a pass leads to one more pass
after it. Events under excluded paths still trigger (cheap: the pass finds nothing to ship).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from common.config_files import FileSetConfig

log = logging.getLogger(__name__)


class PassTrigger:
    """Debounced pass requests: :meth:`request` from any thread, :meth:`wait` in the pass loop."""

    def __init__(self, debounce_s: float) -> None:
        self.debounce_s = debounce_s
        self._cond = threading.Condition()
        self._due: float | None = None

    def request(self, delay: float | None = None) -> None:
        """Ask for a pass ``delay`` seconds from now (the debounce by default); later requests push it back."""
        with self._cond:
            self._due = time.monotonic() + (self.debounce_s if delay is None else delay)
            self._cond.notify_all()

    def wait(self, stop: threading.Event, poll: float = 0.2) -> bool:
        """Block until a requested pass is due (True) or ``stop`` is set (False)."""
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                if self._due is not None and now >= self._due:
                    self._due = None
                    return True
                timeout = poll if self._due is None else min(poll, self._due - now)
                self._cond.wait(max(timeout, 0.0))
        return False


class _Handler(FileSystemEventHandler):
    def __init__(self, trigger: PassTrigger) -> None:
        self.trigger = trigger

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        self.trigger.request()


def start_watch(config: FileSetConfig, trigger: PassTrigger) -> Callable[[], None]:
    """Watch the set's source recursively (inotify); returns a function that stops watching."""
    observer = Observer()
    observer.schedule(_Handler(trigger), config.source.path, recursive=True)
    observer.daemon = True
    observer.start()

    def stop() -> None:
        observer.stop()
        observer.join(timeout=5)

    return stop


def start_schedule(config: FileSetConfig, trigger: PassTrigger) -> Callable[[], None]:
    """Request passes on the set's schedule (interval or cron); returns a stop function (no-op without one)."""
    if config.schedule is None:
        return lambda: None
    scheduler = BackgroundScheduler(daemon=True)
    if config.schedule.interval_s is not None:
        scheduler.add_job(trigger.request, IntervalTrigger(seconds=config.schedule.interval_s), args=[0.0])
    else:
        assert config.schedule.cron is not None
        scheduler.add_job(trigger.request, CronTrigger.from_crontab(config.schedule.cron), args=[0.0])
    scheduler.start()
    return lambda: scheduler.shutdown(wait=False)


def run_sender_loop(run_pass: Callable[[], object], config: FileSetConfig, stop: threading.Event, *,
                    watch: bool, on_error: Callable[[BaseException], None] | None = None) -> None:
    """Run a first pass, then one pass per due request (file events when ``watch``, schedule ticks)."""
    trigger = PassTrigger(config.debounce_ms / 1000)
    stops = [start_schedule(config, trigger)]
    if watch:
        stops.append(start_watch(config, trigger))
    trigger.request(0.0)
    try:
        while trigger.wait(stop):
            try:
                run_pass()
            except Exception as exc:  # noqa: BLE001 - a failed pass is reported and retried on the next request
                log.error("filesync pass failed: %s", exc)
                if on_error is not None:
                    on_error(exc)
                trigger.request(max(config.debounce_ms / 1000, 1.0))
    finally:
        for fn in stops:
            fn()
