"""Pure decisions: the delay gate, batch limits, lag, and what capture skips after a restart."""

from __future__ import annotations

import pytest

from consumers.gate import BatchLimits, batch_full, lag_seconds, wait_seconds
from producers.resume import ResumePoint
from schemas.positions import pg_lsn

T0 = 1_700_000_000_000_000  # µs


@pytest.mark.parametrize("delay, now, expected", [
    (0, T0 / 1e6, 0.0),
    (10, T0 / 1e6, 10.0),
    (10, T0 / 1e6 + 9.5, 0.5),
    (10, T0 / 1e6 + 11, 0.0),
    (3600, T0 / 1e6 + 60, 3540.0),
])
def test_wait_seconds(delay: float, now: float, expected: float) -> None:
    assert wait_seconds(T0, delay, now) == pytest.approx(expected)


@pytest.mark.parametrize("txns, rows, age, full", [
    (1, 1, 0.0, False), (10, 1, 0.0, True), (1, 100, 0.0, True), (1, 1, 0.6, True),
])
def test_batch_full(txns: int, rows: int, age: float, full: bool) -> None:
    assert batch_full(txns, rows, age, BatchLimits(max_txns=10, max_rows=100, max_seconds=0.5)) is full


@pytest.mark.parametrize("next_offset, end, expected", [(10, 10, 0.0), (5, 10, 30.0), (11, 10, 0.0)])
def test_lag(next_offset: int, end: int, expected: float) -> None:
    assert lag_seconds(T0, next_offset, end, T0 / 1e6 + 30) == pytest.approx(expected)


POINT = ResumePoint(complete_key=pg_lsn("0/200").key, partial_key=pg_lsn("0/300").key, partial_rows_done=7000,
                    partial_next_chunk=2)


@pytest.mark.parametrize("lsn, decision", [
    ("0/100", ("skip", 0, 0)),
    ("0/200", ("skip", 0, 0)),
    ("0/300", ("resume", 7000, 2)),
    ("0/301", ("new", 0, 0)),
])
def test_resume_decisions(lsn: str, decision: tuple[str, int, int]) -> None:
    assert POINT.decide(pg_lsn(lsn)) == decision


def test_empty_topic_publishes_everything() -> None:
    assert ResumePoint().decide(pg_lsn("0/1")) == ("new", 0, 0)
