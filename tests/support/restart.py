"""Tools of the primary-restart fault cases (F11): a write probe, the walsender's CPU, timed stops.

* :class:`WriteProbe` commits one small row every ~20 ms on the primary and records the longest time
  between two successful commits: the application's write-unavailability across a restart.
* :func:`walsender_pids` / :func:`cpu_seconds` read ``/proc`` (no SQL: they work while the server is
  shutting down and refusing connections).
* :class:`CpuWatch` follows the walsenders during a stop, so the CPU they burnt is known even after they
  exited.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from deploy._proc import children
from deploy.postgres import PgInstance

_TICK = os.sysconf("SC_CLK_TCK")

PROBE_SQL = "CREATE TABLE IF NOT EXISTS f11_probe (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"


def walsender_pids(instance: PgInstance) -> list[int]:
    """Pids of the postmaster's walsender children (by process title, as ``ps`` shows them)."""
    pid = instance.pid
    if pid is None:
        return []
    out = []
    for kid in children(pid):
        try:
            title = Path(f"/proc/{kid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"walsender" in title:
            out.append(kid)
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` so far, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14 and 15 of stat(5))


class CpuWatch:
    """Sample the CPU of ``pids`` every 20 ms until :meth:`stop`; ``used`` is the CPU burnt meanwhile."""

    def __init__(self, pids: list[int]) -> None:
        """Starts sampling at once."""
        self._first = {p: cpu_seconds(p) for p in pids}
        self._last = dict(self._first)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self._last:
                value = cpu_seconds(pid)
                if value is not None:
                    self._last[pid] = value

    def stop(self) -> float:
        """Stop sampling; the CPU seconds the processes used since the start (up to their exit)."""
        self._stop.set()
        self._thread.join(5)
        return sum((self._last[p] or 0.0) - (self._first[p] or 0.0) for p in self._first)


class WriteProbe:
    """A client committing one row every ``interval`` s; ``longest_gap`` is its longest write outage.

    ``reconnect``: a new session for every write, as an application without a pool does; such a client
    lets a smart shutdown proceed, which waits for every open session to end.
    """

    def __init__(self, dsn: str, interval: float = 0.02, reconnect: bool = False) -> None:
        """Creates the probe table; nothing runs until :meth:`start`."""
        self.dsn = dsn
        self.interval = interval
        self.reconnect = reconnect
        self.commits = 0
        self._last_ok = 0.0
        self._max_gap = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-probe", daemon=True)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(PROBE_SQL)

    def start(self) -> WriteProbe:
        """Start committing."""
        self._last_ok = time.monotonic()
        self._thread.start()
        return self

    def reset(self) -> None:
        """Forget the gaps seen so far (call before an injection)."""
        with self._lock:
            self._max_gap = 0.0

    def longest_gap(self) -> float:
        """The longest time between two commits since :meth:`reset` (up to now, if none since)."""
        with self._lock:
            return max(self._max_gap, time.monotonic() - self._last_ok)

    def wait_commit(self, timeout: float) -> None:
        """Wait until the probe committed again (the primary takes writes)."""
        start = self.commits
        deadline = time.monotonic() + timeout
        while self.commits == start:
            if time.monotonic() > deadline:
                raise AssertionError(f"the primary took no write for {timeout:g} s")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop and join."""
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn: Any = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
                conn.execute("INSERT INTO f11_probe DEFAULT VALUES")
                now = time.monotonic()
                with self._lock:
                    self._max_gap = max(self._max_gap, now - self._last_ok)
                    self._last_ok = now
                    self.commits += 1
                if self.reconnect:
                    conn.close()
            except psycopg.Error:
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            conn.close()
