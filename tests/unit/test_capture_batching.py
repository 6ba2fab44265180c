"""The capture's batch window (issue 13 item 4): short while caught up, batch_max_ms while behind."""

from __future__ import annotations

import pytest

from producers.session import MIN_WINDOW_S, batch_window


@pytest.mark.parametrize(("commit_s", "behind_s", "window"), [
    (0.0, 0.0, MIN_WINDOW_S),   # no commit measured yet: the shortest window
    (0.004, 0.01, 0.008),       # caught up: two commit times
    (0.2, 0.01, 0.1),           # a slow broker: never past batch_max_ms
    (0.004, 0.1, 0.1),          # behind by batch_max_ms or more: batch for throughput
    (0.004, 5.0, 0.1),
])
def test_batch_window(commit_s: float, behind_s: float, window: float) -> None:
    assert batch_window(100, commit_s, behind_s) == pytest.approx(window)
