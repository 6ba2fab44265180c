"""Pure decisions of the apply loop: the delay gate and batch closing. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


def due_at(commit_time_us: int, delay_seconds: float) -> float:
    """Unix time (seconds) at which an entry committed at ``commit_time_us`` may be applied."""
    return commit_time_us / 1e6 + delay_seconds


def wait_seconds(commit_time_us: int, delay_seconds: float, now: float) -> float:
    """How long to wait before applying (0 when due). Guarantee 5: never before commit + delay."""
    return max(0.0, due_at(commit_time_us, delay_seconds) - now)


@dataclass(frozen=True)
class BatchLimits:
    """When an open target transaction of grouped source transactions must commit.

    The apply loop commits as soon as the reader has nothing more ready; these limits bound a batch only while
    entries keep arriving (under load, or catching up). ``max_seconds`` is the longest a source transaction waits
    in an open batch for the ones behind it: every row of the batch is applied at its commit, so the lag under a
    steady load is about twice this (issue 13: p99 <= 0.2 s). A commit every 0.1 s costs the standby one fsync
    per 0.1 s of work, a few per cent of a catch-up's throughput at most.
    """

    max_txns: int
    max_rows: int
    max_seconds: float = 0.1


def batch_full(txns: int, rows: int, age_seconds: float, limits: BatchLimits) -> bool:
    """True when the batch reached any of its limits (checked only between source transactions)."""
    return txns >= limits.max_txns or rows >= limits.max_rows or age_seconds >= limits.max_seconds


def lag_seconds(applied_commit_us: int, next_offset: int, end_offset: int, now: float) -> float:
    """Apply lag: age of the last applied commit while entries wait, else 0."""
    if next_offset >= end_offset or applied_commit_us <= 0:
        return 0.0
    return max(0.0, now - applied_commit_us / 1e6)
