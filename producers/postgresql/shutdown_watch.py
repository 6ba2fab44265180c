"""Keep a busy capture from delaying a shutdown of the primary (issue 19).

At shutdown a logical walsender sends all the WAL there is, then pings its client and exits only once
the client answered that it received all of it (walsender.c, ``WalSndDone``). The capture answers from
its stream loop (see :meth:`PostgresCapture._send_status`). While that loop cannot read the socket, the
ping waits, and the whole shutdown with it (until ``wal_sender_timeout``, 60 s by default): the runner
may be blocked in a Kafka commit while the broker is away, or busy publishing a large transaction for
longer than the socket buffers can hold.

:class:`ShutdownWatch` is a thread that notices when the stream has not been drained for ``STALL_S``,
or has been inside one transaction for that long (a large transaction: the walsender may still be
decoding it, and at shutdown it would decode and send all of it first), and then asks whether the
server is going down: a new connection refused with "the database system is
shutting down" (SQLSTATE 57P03), or refused outright (no postmaster). Only then does it shut the
capture's sockets down. The walsender sees the connection end and exits, so the shutdown goes on; the
capture's next read fails, and the runner's next session starts again from the slot once the server is
back. Nothing is confirmed by this, so the slot keeps its position (nothing lost, the retransmit window
intact), and what Kafka already holds is skipped on resume (nothing duplicated).

Why not disconnect on every stall: a needless disconnect makes the next session decode up to the
retransmit window of WAL again. Why not answer the ping from this thread: a libpq connection must not be
used from two threads at once. ``socket.shutdown`` is a plain system call on the descriptor, safe from
any thread; the capture closes its connections under :attr:`ShutdownWatch.lock`, so a descriptor is
never cut after it was closed and reused.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

#: How long the stream may go without being drained before the server is probed.
STALL_S = 1.0
#: How often the server is probed while the stream stays stalled (one short connection each time).
PROBE_EVERY_S = 1.0
_TICK_S = 0.25


def cut(fd: int) -> None:
    """``shutdown(SHUT_RDWR)`` the socket behind ``fd`` (the descriptor itself stays open)."""
    dup = socket.fromfd(fd, socket.AF_INET, socket.SOCK_STREAM)  # a dup: closing it leaves ``fd`` alone
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer
    finally:
        dup.close()


class ShutdownWatch:
    """Cut the capture's connections when its stream is stalled and the server is going down.

    ``going_down()`` probes the server (True: it is shutting down or gone); ``sockets()`` lists the
    descriptors to cut and is called with :attr:`lock` held.
    """

    def __init__(self, going_down: Callable[[], bool], sockets: Callable[[], list[int]], where: str,
                 lock: threading.Lock) -> None:
        """Nothing runs until :meth:`start`."""
        self.lock = lock
        self.drained_at = time.monotonic()
        #: When the transaction being received began (None between transactions); set by the stream loop.
        self.txn_since: float | None = None
        self.cut_at: float | None = None
        self._going_down = going_down
        self._sockets = sockets
        self._where = where
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-shutdown-watch", daemon=True)

    def drained(self) -> None:
        """The stream loop read everything the server had sent (called by the stream loop, often)."""
        self.drained_at = time.monotonic()

    def start(self) -> ShutdownWatch:
        """Start watching."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (waits for a probe in progress, at most its connect timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)

    def _run(self) -> None:
        probed_at = 0.0
        while not self._stop.wait(_TICK_S):
            now, txn_since = time.monotonic(), self.txn_since
            busy = now - self.drained_at >= STALL_S or (txn_since is not None and now - txn_since >= STALL_S)
            if not busy or now - probed_at < PROBE_EVERY_S:
                continue
            probed_at = now
            try:
                down = self._going_down()
            except Exception as exc:  # noqa: BLE001 - loop boundary: a failed probe must not end the watch
                log.debug("shutdown probe failed: %s", exc)
                continue
            if not down or self._stop.is_set():
                continue
            with self.lock:
                fds = self._sockets()
                for fd in fds:
                    cut(fd)
            self.cut_at = time.monotonic()
            log.warning("PostgreSQL %s is shutting down while capture is busy (%s): closing capture's "
                        "connections so that the shutdown is not delayed; capture resumes from the slot when the "
                        "server is back", self._where,
                        f"stream not read for {now - self.drained_at:.0f} s" if now - self.drained_at >= STALL_S
                        else "inside a large transaction")
            return
