"""Lag from the source (ops/lag.py): a stalled capture makes every standby's lag grow."""

from __future__ import annotations

import pytest

from ops.lag import CaptureView, capture_stall, standby_lag

NOW = 1_000_000.0


def cap(state: str = "running", caught_up_ago: float | None = 0.5, offset: int = 100, heard_ago: float = 0.3,
        message: str = "") -> CaptureView:
    return CaptureView(state=state, message=message, heard_at_s=NOW - heard_ago,
                       caught_up_at_s=0.0 if caught_up_ago is None else NOW - caught_up_ago, caught_up_offset=offset)


@pytest.mark.parametrize(("applied_ago", "next_offset", "capture", "expected"), [
    # At the end of what a caught-up capture published: lag is how long ago the capture was caught up.
    (3600.0, 100, cap(caught_up_ago=0.5), 0.5),
    # Behind in Kafka: the age of its last applied commit.
    (12.0, 50, cap(caught_up_ago=0.5), 12.0),
    # The capture stalled 40 s ago: a standby at the topic's end still lags 40 s (the "lag 0" bug).
    (300.0, 100, cap(state="retrying", caught_up_ago=40.0), 40.0),
    # ... and one behind in Kafka lags by its own last commit when that is older.
    (90.0, 60, cap(state="retrying", caught_up_ago=40.0), 90.0),
    # Applied past the caught-up offset (a newer transaction): its own commit is newer.
    (2.0, 120, cap(caught_up_ago=40.0), 2.0),
    # A capture that never caught up since it started: the applied commit alone.
    (7.0, 100, cap(caught_up_ago=None), 7.0),
    # Nothing applied and no capture word: unknown.
    (None, 0, cap(caught_up_ago=None), None),
    (None, 0, None, None),
])
def test_standby_lag(applied_ago: float | None, next_offset: int, capture: CaptureView | None,
                     expected: float | None) -> None:
    applied_us = 0 if applied_ago is None else int((NOW - applied_ago) * 1e6)
    lag = standby_lag(NOW, applied_us, next_offset, capture)
    assert lag == (None if expected is None else pytest.approx(expected, abs=1e-3))


def test_lag_grows_with_time_while_the_capture_stalls() -> None:
    stalled = cap(state="retrying", caught_up_ago=5.0)
    applied = int((NOW - 3600) * 1e6)
    lags = [standby_lag(NOW + t, applied, 100, stalled) for t in (0, 10, 20)]
    assert lags == [pytest.approx(5.0), pytest.approx(15.0), pytest.approx(25.0)]


@pytest.mark.parametrize(("capture", "needle"), [
    (cap(), ""),
    (None, "capture not running: nothing the primary commits reaches any standby"),
    (cap(heard_ago=30.0, caught_up_ago=31.0), "capture down (last heard 30 s ago); last caught up with its "
                                              "source 31 s ago"),
    (cap(state="retrying", caught_up_ago=42.0, message="Broker: Message size too large"),
     "capture stalled for 42 s (retrying): Broker: Message size too large"),
    (cap(state="running", caught_up_ago=25.0), "capture behind its source; last caught up with its source 25 s ago"),
])
def test_capture_stall_sentence(capture: CaptureView | None, needle: str) -> None:
    assert capture_stall(NOW, capture) == needle
