"""Issue 19 (a restart of the primary must never hang), the logic without a server:

* the status updates: write = WAL received, flush = invalid except on a confirm, apply = confirmed;
* the shutdown watch cuts the sockets only when the stream is stalled (or inside a long transaction)
  AND the server is going down, and then only once;
* what counts as "going down" in a refused connection, and the one-line error for it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import psycopg2
import pytest

from common import agent
from common.agent import AgentBody, Retry
from common.config import parse_config
from producers.errors import SourceDown
from producers.postgresql import catalog, shutdown_watch
from producers.postgresql.capture import PostgresCapture, lsn_position
from producers.postgresql.shutdown_watch import ShutdownWatch

_DB = {"engine": "postgresql", "host": "127.0.0.1", "dbname": "d", "user": "u"}
CFG = parse_config({"group": "g", "control_key": {"env": "ARK_CONTROL_KEY"},
                    "kafka": {"bootstrap": "127.0.0.1:1"},
                    "primary": {"name": "p", "port": 1, **_DB},
                    "standbys": [{"name": "s", "port": 2, **_DB}]})


class FakeStream:
    """Records the status updates a capture sends."""

    def __init__(self, received: int) -> None:
        self.received = received
        self.sent: list[tuple[int, int, int, bool]] = []

    def send_status(self, write: int, flush: int, apply: int, reply_requested: bool = False) -> None:
        self.sent.append((write, flush, apply, reply_requested))


def _capture(received: int, confirmed: int) -> tuple[PostgresCapture, FakeStream]:
    cap = PostgresCapture(CFG)
    ws = FakeStream(received)
    cap._ws = ws  # type: ignore[assignment]
    cap._confirmed = confirmed
    return cap, ws


def test_status_update_reports_received_as_write_and_no_flush() -> None:
    cap, ws = _capture(received=5000, confirmed=1000)
    cap._send_status()
    # write reaches the walsender's sentPtr (so it can exit at shutdown); flush 0 never moves the slot
    assert ws.sent == [(5000, 0, 1000, False)]


def test_confirm_sends_the_confirmed_position_as_flush_once() -> None:
    cap, ws = _capture(received=5000, confirmed=1000)
    cap.confirm(lsn_position(3000))
    cap.confirm(lsn_position(2000))  # older: nothing sent, the slot never goes back
    cap._send_status()
    assert ws.sent == [(5000, 3000, 3000, False), (5000, 0, 3000, False)]


def test_write_is_never_below_the_confirmed_position() -> None:
    cap, ws = _capture(received=0, confirmed=1000)
    cap._send_status()
    assert ws.sent == [(1000, 0, 1000, False)]


# -- the shutdown watch ------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutdown_watch, "STALL_S", 0.2)
    monkeypatch.setattr(shutdown_watch, "PROBE_EVERY_S", 0.1)
    monkeypatch.setattr(shutdown_watch, "_TICK_S", 0.02)


def _watch(down: bool, fds: list[int]) -> tuple[ShutdownWatch, list[float]]:
    probes: list[float] = []

    def going_down() -> bool:
        probes.append(time.monotonic())
        return down

    return ShutdownWatch(going_down, lambda: fds, "u@h:1/d", threading.Lock()), probes


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_stalled_stream_of_a_server_going_down_is_cut() -> None:
    ours, theirs = socket.socketpair()
    try:
        watch, probes = _watch(True, [ours.fileno()])
        watch.drained_at -= 1.0  # not drained for a second
        watch.start()
        assert _wait(lambda: watch.cut_at is not None)
        watch.stop()
        theirs.settimeout(2)
        assert theirs.recv(10) == b""  # the peer (the walsender) sees the connection end
        assert ours.fileno() >= 0  # the descriptor itself stays open: its owner closes it
        assert len(probes) == 1
    finally:
        ours.close()
        theirs.close()


def test_a_stalled_stream_of_a_running_server_is_left_alone() -> None:
    ours, theirs = socket.socketpair()
    try:
        watch, probes = _watch(False, [ours.fileno()])
        watch.drained_at -= 1.0
        watch.start()
        assert _wait(lambda: len(probes) >= 3)  # probed again and again while stalled, never cut
        watch.stop()
        assert watch.cut_at is None
        theirs.sendall(b"x")
        assert ours.recv(1) == b"x"
    finally:
        ours.close()
        theirs.close()


def test_a_stream_being_read_is_not_probed() -> None:
    watch, probes = _watch(True, [])
    watch.start()
    for _ in range(40):
        watch.drained()
        time.sleep(0.01)
    watch.stop()
    assert probes == [] and watch.cut_at is None


def test_a_long_transaction_is_probed_even_while_read() -> None:
    watch, probes = _watch(False, [])
    watch.txn_since = time.monotonic() - 1.0
    watch.start()
    for _ in range(40):
        watch.drained()
        time.sleep(0.01)
    watch.stop()
    assert probes


# -- going down? -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("message", "down"), [
    ("connection to server at \"127.0.0.1\", port 1 failed: FATAL:  the database system is shutting down", True),
    ("connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running", True),
    ("connection to server at \"127.0.0.1\", port 1 failed: timeout expired", False),
    ("connection to server at \"127.0.0.1\", port 1 failed: FATAL:  sorry, too many clients already", False),
    ("connection to server at \"127.0.0.1\", port 1 failed: FATAL:  the database system is starting up", False),
])
def test_going_down(monkeypatch: pytest.MonkeyPatch, message: str, down: bool) -> None:
    def refuse(**_kwargs: Any) -> Any:
        raise psycopg2.OperationalError(message)

    monkeypatch.setattr(psycopg2, "connect", refuse)
    assert catalog.going_down(CFG) is down


def test_a_restarting_server_is_a_clear_source_error() -> None:
    exc = psycopg2.OperationalError("connection to server failed: FATAL:  the database system is shutting down")
    err = catalog.source_error(CFG, exc)
    assert "is shutting down" in err.message and "resumes by itself" in err.message
    assert "restarts" in (err.fix or "")
    assert "starting up" in catalog.source_error(CFG, psycopg2.OperationalError(
        "FATAL:  the database system is starting up")).message


# -- retrying a restarting source ----------------------------------------------------------------------------
class _Failing(AgentBody):
    """A body whose sessions fail with ``errors`` in turn, each after ``ran`` seconds (a fake clock), then stop."""

    kind = name = role = "test"

    def __init__(self, errors: list[Exception], ran: list[float], clock: list[float]) -> None:
        super().__init__()
        self.errors, self.ran, self.clock = errors, ran, clock
        self.waits: list[float] = []
        self.stopping = _Waits(self.waits, clock)

    def attach(self, channel: Any, backlog: Any) -> None:
        pass

    def session(self, channel: Any) -> None:
        if not self.errors:
            self.stopping.set()
            return
        self.clock[0] += self.ran.pop(0)
        raise self.errors.pop(0)

    def recover(self, exc: Exception) -> Retry | Exception:
        return Retry.SOON if isinstance(exc, SourceDown) else Retry.LATER

    def heartbeat(self) -> dict[str, Any]:
        return {}


class _Waits(threading.Event):
    """A stop event whose waits are recorded on a fake clock instead of slept."""

    def __init__(self, waits: list[float], clock: list[float]) -> None:
        super().__init__()
        self.waits, self.clock = waits, clock

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0.0)
        self.clock[0] += timeout or 0.0
        return self.is_set()


def _backoffs(errors: list[Exception], ran: list[float], monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(agent.time, "monotonic", lambda: clock[0])
    body = _Failing(errors, ran, clock)

    class _Beat:
        def start(self) -> None: ...
        def beat_now(self) -> None: ...
        def stop(self) -> None: ...

    channel = type("Channel", (), {"replay": lambda self: [], "close": lambda self: None, "refused": {}})()
    agent.Agent(body, channel=lambda: channel, heartbeat=lambda _snap: _Beat()).run()  # type: ignore[arg-type]
    return body.waits


def test_a_restarting_source_is_retried_within_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    down = [SourceDown("PostgreSQL at h:1 is shutting down") for _ in range(6)]
    assert _backoffs(down, [0.0] * 6, monkeypatch) == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    other = [RuntimeError("broker") for _ in range(6)]
    assert _backoffs(other, [0.0] * 6, monkeypatch) == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0]


def test_a_session_that_ran_a_while_starts_the_backoff_over(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[Exception] = [RuntimeError("x")] * 5 + [SourceDown("down")]
    # five quick failures grow the backoff to 16 s; then a session runs an hour and the source restarts
    assert _backoffs(errors, [0.0] * 5 + [3600.0], monkeypatch) == [1.0, 2.0, 4.0, 8.0, 16.0, 1.0]
